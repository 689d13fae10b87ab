"""Would the cooperative kernel's rows fit as thread block clusters? (sm_90)

A cluster version of the cooperative kernel (perf-notes, "What one exchange costs") needs
every row's CTAs in one cluster and all rows resident at once. Asks the driver
(cuOccupancyMaxActiveClusters) how many clusters of CL CTAs of the real kernel, with
its block size, registers and shared memory, can be resident at once, against the
rows the shape launches.

    python3 scripts/cluster_fit.py [SHAPE[,SHAPE]] [MODE]

On a lent H100 80GB HBM3 (the three B=1 shapes, softmax_sum and max): 66 clusters of 2,
30 of 4, 15 of 8 and 7 of 16 resident at once (perf-notes, "What one exchange costs").
"""
import ctypes
import sys

sys.path.insert(0, ".")
import cupy  # noqa: E402

from cupysel import bench  # noqa: E402
from cupysel.launch import _Attr, _Config  # noqa: E402

CLUSTER_DIMENSION = 4  # CUlaunchAttributeID
NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14  # CUfunction_attribute


def main():
    shapes = (sys.argv[1] if len(sys.argv) > 1 else "pqcache-8k,llama-32k,llama-128k").split(",")
    mode = sys.argv[2] if len(sys.argv) > 2 else "softmax_sum"
    occ = ctypes.CDLL("libcuda.so.1").cuOccupancyMaxActiveClusters
    occ.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, ctypes.POINTER(_Config)]
    occ.restype = ctypes.c_int
    dev = cupy.cuda.Device()
    print(cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode(),
          "SMs", dev.attributes["MultiProcessorCount"])
    for shape in shapes:
        plan = bench.plan_for(shape, mode)
        plan(*bench.make_inputs(shape, "float16", 0))
        cupy.cuda.runtime.deviceSynchronize()
        (prog,) = plan._core._programs.values()
        stage, launch = prog[0]
        assert stage == "coop", "%s does not take the cooperative path" % shape
        regs = cupy.cuda.driver.funcGetAttribute(4, launch.fn)  # NUM_REGS
        cupy.cuda.driver.funcSetAttribute(launch.fn, NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)
        rows = launch.grid[1]
        line = []
        for cl in (2, 4, 8, 16):
            attr = _Attr(id=CLUSTER_DIMENSION)
            attr.value[0], attr.value[1], attr.value[2] = cl, 1, 1
            cfg = _Config((ctypes.c_uint * 3)(cl, rows, 1), (ctypes.c_uint * 3)(*launch.block),
                          launch.smem, None, ctypes.pointer(attr), 1)
            n = ctypes.c_int(-1)
            rc = occ(ctypes.byref(n), launch.fn, ctypes.byref(cfg))
            line.append("CL=%d: %s" % (cl, n.value if rc == 0 else "error %d" % rc))
        print("%s %s: grid %s block %s smem %d B, %d registers; rows %d (CTAs a row now %d); "
              "clusters resident at once: %s" % (shape, mode, launch.grid[:2], launch.block[0],
                                                 launch.smem, regs, rows, launch.grid[0],
                                                 ", ".join(line)), flush=True)


if __name__ == "__main__":
    main()
