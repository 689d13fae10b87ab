"""Phase timestamps of the fused kernel (row 0, every CTA of its cluster), in ns."""
import sys
sys.path.insert(0, ".")
import numpy as np, cupy
from cupysel import bench
for shape in sys.argv[1].split(","):
    plan = bench.plan_for(shape, sys.argv[2] if len(sys.argv) > 2 else "softmax_sum")
    inp = bench.make_inputs(shape, "float16", 0)
    plan(*inp)
    geo = plan._core.geometry(0)
    rows = plan.config.rows
    plan._core.prof = cupy.zeros(max(geo.cluster, 1) * rows * 32, np.int64)
    for _ in range(3):
        plan._core.prof.fill(0)
        plan(*inp)
        cupy.cuda.Device().synchronize()
    allt = plan._core.prof.get().reshape(rows, -1, 32)
    t0 = allt[:, :, 0].min()
    print("row start/end (us):", " ".join("%.1f/%.1f" % ((r[:, 0].min() - t0) / 1e3, (r[:, 21].max() - t0) / 1e3) for r in allt[:16]))
    t = allt[0]
    print(shape, "cluster", geo.cluster, "chunk", geo.chunk)
    from cupysel.occupancy import max_active_clusters
    from cupysel.compile import _functions
    for key, fn in _functions.items():
        if "cs_fused" in key[2]:
            print("  ", key[2][:60], "max active clusters:", max_active_clusters(fn.kernel.ptr, key[1].cluster, 512, key[1].fused_layout(geo.chunk)[1]))
    names = {0: "start", 1: "lut", 2: "scored", 3: "statred", 4: "sync1", 5: "lse", 6: "rkeys",
             7: "L0local", 8: "L0A", 9: "L0B", 10: "L0find", 11: "L1local", 12: "L1A", 13: "L1B",
             14: "L1find", 15: "L2local", 16: "L2A", 17: "L2B", 18: "L2find", 19: "C", 20: "D", 21: "end"}
    for ph in range(22):
        col = t[:, ph]
        if (col == 0).all():
            continue
        print("  %-8s" % names[ph], " ".join("%6.2f" % ((v - t0) / 1e3) if v else "   -  " for v in col[:8]))
