"""One selection per named shape (for ncu).

    python3 scripts/prof_run.py SHAPE[,SHAPE] [MODE]
CUPYSEL_LINEINFO=1 compiles the kernels with -lineinfo (ncu's source page then carries
line numbers; scripts/stall_lines.py maps its samples to CUDA lines offline).
"""
import os
import sys
sys.path.insert(0, ".")
import cupy
import kernels_cu
if os.environ.get("CUPYSEL_LINEINFO") == "1":
    kernels_cu.OPTIONS = tuple(kernels_cu.OPTIONS) + ("-lineinfo",)
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
