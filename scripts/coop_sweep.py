"""CTAs per row of the coop path: GPU time (graph replay, rotating inputs) and a check.

    python3 scripts/coop_sweep.py SHAPE[,SHAPE] MODE[,MODE] CL[,CL]   (e.g. pqcache-8k softmax_sum 1,2,4,8,16)
"""
import sys, time
sys.path.insert(0, ".")
import numpy as np, cupy
import cupysel
from cupysel import bench, reference
shapes = sys.argv[1].split(",")
modes = sys.argv[2].split(",")
cls = [int(x) for x in sys.argv[3].split(",")]
stream = cupy.cuda.Stream(non_blocking=True)
for shape in shapes:
    cfg = bench.SHAPES[shape]
    sets = [bench.make_inputs(shape, "float16", s) for s in range(8)]
    host = [cupy.asnumpy(x) for x in sets[0]]
    for mode in modes:
        kw = dict(sink=cfg["sink"], window=cfg["window"], k=cfg["k"])
        ref = reference.select(*host, **kw, group_reduce=mode)
        out = []
        for cl in cls:
            plan = bench.plan_for(shape, mode)
            plan._core.coop_ctas = cl
            geo = plan._core.geometry(0)
            with stream:
                sel = plan(*sets[0], stream=stream)
                stream.synchronize()
                errs = reference.verify(sel, ref, **kw)
                gs = [plan.capture(*s, stream=stream) for s in sets]
                for i in range(20): gs[i % 8].replay(stream)
                ev = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(200)]
                for i, (a, b) in enumerate(ev):
                    a.record(stream); gs[i % 8].replay(stream); b.record(stream)
                stream.synchronize()
                ts = [cupy.cuda.get_elapsed_time(a, b) * 1e3 for a, b in ev]
            out.append("CL%d(chunk %d) %.1f%s" % (geo.coop, geo.chunk, np.median(ts), "" if not errs else " FAIL " + errs[0]))
            del gs, plan
        print(shape, mode, " | ".join(out), flush=True)
