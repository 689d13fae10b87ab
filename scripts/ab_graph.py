"""GPU time of the default plans of one source tree (for an A/B of two trees, run it
once per tree, alternating, on one machine): graph replays with events around each,
inputs rotating over 8 sets, median of 200; each result checked against the reference.

    python3 scripts/ab_graph.py TREE SHAPE[,SHAPE] MODE[,MODE]
"""
import os
import sys

tree = os.path.abspath(sys.argv[1])
sys.path.insert(0, tree)
import numpy as np  # noqa: E402
import cupy  # noqa: E402
import cupysel  # noqa: E402
from cupysel import bench, reference  # noqa: E402

assert os.path.dirname(os.path.abspath(cupysel.__file__)) == os.path.join(tree, "cupysel")
stream = cupy.cuda.Stream(non_blocking=True)
for shape in sys.argv[2].split(","):
    cfg = bench.SHAPES[shape]
    sets = [bench.make_inputs(shape, "float16", s) for s in range(8)]
    host = [cupy.asnumpy(x) for x in sets[0]]
    kw = dict(sink=cfg["sink"], window=cfg["window"], k=cfg["k"])
    for mode in sys.argv[3].split(","):
        plan = bench.plan_for(shape, mode)
        with stream:
            sel = plan(*sets[0], stream=stream)
            stream.synchronize()
            errs = reference.verify(sel, reference.select(*host, **kw, group_reduce=mode), **kw)
            gs = [plan.capture(*s, stream=stream) for s in sets]
            for i in range(20):
                gs[i % 8].replay(stream)
            ev = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(200)]
            for i, (a, b) in enumerate(ev):
                a.record(stream)
                gs[i % 8].replay(stream)
                b.record(stream)
            stream.synchronize()
            ts = [cupy.cuda.get_elapsed_time(a, b) * 1e3 for a, b in ev]
        print("%-13s %-11s %6.1f us%s" % (shape, mode, np.median(ts),
                                          "" if not errs else "  FAIL " + errs[0]), flush=True)
        del gs, plan
