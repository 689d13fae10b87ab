"""GPU time of each stage (score, topk, weights, coop) of one source tree's plans, as
`cupysel bench` times them (one graph per stage, events around each replay, median of
REPEAT), with no check against the reference: for diagnostic trees whose results are
wrong on purpose (e.g. docs/patches/diag-*.patch). For an A/B, run it once per tree,
alternating, on one machine.

    python3 scripts/stage_ab.py TREE SHAPE[,SHAPE] MODE[,MODE] [REPEAT]

Prints one line per shape and mode: TREE SHAPE MODE stage=us ...
"""
import os
import sys

tree = os.path.abspath(sys.argv[1])
sys.path.insert(0, tree)
import cupy  # noqa: E402
import cupysel  # noqa: E402
from cupysel import bench  # noqa: E402

assert os.path.dirname(os.path.abspath(cupysel.__file__)) == os.path.join(tree, "cupysel")
repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 100
stream = cupy.cuda.Stream(non_blocking=True)
for shape in sys.argv[2].split(","):
    sets = [bench.make_inputs(shape, "float16", 0)]  # stage_times replays the first set
    for mode in sys.argv[3].split(","):
        plan = bench.plan_for(shape, mode, path=os.environ.get("CUPYSEL_PATH", "auto"))
        with stream:
            plan(*sets[0], stream=stream)  # compiles, allocates
            stream.synchronize()
            st = bench.stage_times(plan, sets, stream, repeat)
        print("%s %s %s %s" % (os.path.basename(tree), shape, mode,
                               " ".join("%s=%.1f" % kv for kv in st.items())), flush=True)
        del plan
