"""GPU time of one source tree's plans: graph replays with events around each, inputs
rotating over 8 sets, median of 200; each result checked against the reference. For an
A/B of two trees run it once per tree, alternating, on one machine; with CL, once per
number of CTAs a row on the cooperative path instead of the plan's choice.

    python3 scripts/ab_graph.py TREE SHAPE[,SHAPE] MODE[,MODE] [CL[,CL]]
    (e.g. . pqcache-8k softmax_sum 1,2,4,8,16)
CUPYSEL_COOP_KEYS=1 asks for the cooperative path's one-key-a-token layout (perf-notes v30),
=0 refuses it; CUPYSEL_PATH=staged|coop|auto (default) picks the path.
CUPYSEL_REF_DIR=DIR keeps each shape's and mode's reference there, so that the runs of
several trees (the same inputs: bench.make_inputs) compute it once.
"""
import os
import pickle
import sys

tree = os.path.abspath(sys.argv[1])
sys.path.insert(0, tree)
import numpy as np  # noqa: E402
import cupy  # noqa: E402
import cupysel  # noqa: E402
from cupysel import bench, reference  # noqa: E402

assert os.path.dirname(os.path.abspath(cupysel.__file__)) == os.path.join(tree, "cupysel")
ctas = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else [None]
stream = cupy.cuda.Stream(non_blocking=True)
for shape in sys.argv[2].split(","):
    cfg = bench.SHAPES[shape]
    sets = [bench.make_inputs(shape, "float16", s) for s in range(8)]
    host = [cupy.asnumpy(x) for x in sets[0]]
    kw = dict(sink=cfg["sink"], window=cfg["window"], k=cfg["k"])
    for mode in sys.argv[3].split(","):
        ref_dir = os.environ.get("CUPYSEL_REF_DIR")
        ref_path = ref_dir and os.path.join(ref_dir, "%s.%s.pkl" % (shape, mode))
        if ref_path and os.path.exists(ref_path):
            with open(ref_path, "rb") as f:
                ref = pickle.load(f)
        else:
            ref = reference.select(*host, **kw, group_reduce=mode)
            if ref_path:
                os.makedirs(ref_dir, exist_ok=True)
                with open(ref_path, "wb") as f:
                    pickle.dump(ref, f)
        out = []
        for cl in ctas:
            plan = bench.plan_for(shape, mode, path=os.environ.get("CUPYSEL_PATH", "auto"))
            if cl is not None:
                plan._core.coop_ctas = cl  # before the first call builds anything
            if os.environ.get("CUPYSEL_COOP_KEYS") in ("0", "1"):
                plan._core.coop_keys = os.environ["CUPYSEL_COOP_KEYS"] == "1"
            with stream:
                sel = plan(*sets[0], stream=stream)
                stream.synchronize()
                errs = reference.verify(sel, ref, **kw)
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
            geo = plan._core.geometry(0)
            label = "" if cl is None else "CL%d(chunk %d) " % (geo.coop, geo.chunk)
            out.append("%s%6.1f us%s" % (label, np.median(ts),
                                         "" if not errs else " FAIL " + errs[0]))
            del gs, plan
        print("%-13s %-11s %s" % (shape, mode, " | ".join(out)), flush=True)
