"""One selection per named shape (for ncu)."""
import sys
sys.path.insert(0, ".")
import cupy
from cupysel import bench
mode = sys.argv[2] if len(sys.argv) > 2 else "softmax_sum"
for shape in sys.argv[1].split(","):
    plan = bench.plan_for(shape, mode)
    inp = bench.make_inputs(shape, "float16", 0)
    plan(*inp)
    cupy.cuda.Device().synchronize()
    cupy.cuda.nvtx.RangePush("measure") if hasattr(cupy.cuda, "nvtx") else None
    plan(*inp)
    cupy.cuda.Device().synchronize()
