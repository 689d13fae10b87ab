"""Write the cubin of a bench shape's kernel set, compiled by NVRTC for this device's
architecture with -lineinfo: NVRTC with the kernel options and -arch of the module CuPy
loads when scripts/prof_run.py runs with CUPYSEL_LINEINFO=1, so its line table should
match the SASS that ncu samples (scripts/stall_lines.py warns where the instruction
counts differ). Run it on the device machine and bring the cubin back.

    python3 scripts/lineinfo_cubin.py SHAPE MODE OUT.cubin
"""
import sys
sys.path.insert(0, ".")
import cupy
import kernels_cu
from cupysel import bench
from cupysel.compile import compile_for_arch

shape, mode, out = sys.argv[1:4]
kernels_cu.OPTIONS = tuple(kernels_cu.OPTIONS) + ("-lineinfo",)
plan = bench.plan_for(shape, mode)
ks = plan._core.kernel_set(0, *bench.make_inputs(shape, "float16", 0))
cc = cupy.cuda.Device().compute_capability
with open(out, "wb") as f:
    f.write(compile_for_arch(ks, "sm_%s" % cc))
print(shape, mode, "sm_%s" % cc, ks.names())
