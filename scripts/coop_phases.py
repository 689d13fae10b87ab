"""Phase timestamps (%globaltimer, ns -> us) of the cooperative kernel: row 0, every CTA.

    python3 scripts/coop_phases.py SHAPE[,SHAPE] [MODE[,MODE]] [MAX_CTAS_A_ROW]
CUPYSEL_COOP_KEYS=1 asks for the one-key-a-token layout (perf-notes v30).
"""
import os
import sys
sys.path.insert(0, ".")
import numpy as np, cupy
from cupysel import bench
names = {0: "start", 9: "lutload", 10: "qsync", 1: "lut", 2: "scored", 3: "keys", 4: "B1/2", 5: "L0find", 6: "gath/fin", 7: "finish", 8: "end"}
for shape in sys.argv[1].split(","):
    for mode in (sys.argv[2] if len(sys.argv) > 2 else "softmax_sum").split(","):
        plan = bench.plan_for(shape, mode)
        if len(sys.argv) > 3:
            plan._core.coop_ctas = int(sys.argv[3])
        if os.environ.get("CUPYSEL_COOP_KEYS") == "1":
            plan._core.coop_keys = True
        inp = bench.make_inputs(shape, "float16", 0)
        plan(*inp)
        geo = plan._core.geometry(0)
        rows = plan.config.rows
        cl = max(geo.coop, 1)
        plan._core.prof = cupy.zeros(cl * rows * 32, np.int64)
        for _ in range(3):
            plan._core.prof.fill(0)
            plan(*inp)
            cupy.cuda.Device().synchronize()
        allt = plan._core.prof.get().reshape(rows, cl, 32)
        t0 = allt[:, :, 0].min()
        print(shape, mode, "CL", geo.coop, "chunk", geo.chunk, "row ends (us):", " ".join("%.1f" % ((r[:, 8].max() - t0) / 1e3) for r in allt[:8]))
        t = allt[0]
        for ph in (0, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8):
            col = t[:, ph]
            if (col == 0).all():
                continue
            v = (col[col > 0] - t0) / 1e3
            print("  %-8s min %6.2f med %6.2f max %6.2f" % (names[ph], v.min(), np.median(v), v.max()))
