import sys
sys.path.insert(0, ".")
import numpy as np, cupy
from cupy.cuda import driver
import cupysel
from cupysel import plan as P
from tests.inputs import host_inputs, to_device
for n in (16 * 4096, 16 * 6144, 16 * 7168, 16 * 8192):
    rng = np.random.default_rng(0)
    sizes = dict(batch=1, q_heads=32, kv_heads=8, head_dim=128, subspaces=16, n_centroids=256, capacity=n)
    dev = to_device(*host_inputs(rng, **sizes, seq_lens=[n]))
    sel = cupysel.Selector(**sizes, sink=32, window=64, k=2048)
    sel._core.path = "fused"
    try:
        out = sel(*dev)
        cupy.cuda.Device().synchronize()
        print(n, "ok", sel._core.geometry(0))
    except Exception as e:
        geo = sel._core.geometry(0)
        ks = list(sel._core._sets.values())[0]
        from cupysel.compile import _functions
        for key, fn in _functions.items():
            if key[1] is ks:
                k = fn.kernel.ptr
                print("  attrs: regs", driver.funcGetAttribute(4, k), "static", driver.funcGetAttribute(1, k),
                      "maxdyn", driver.funcGetAttribute(8, k), "maxthreads", driver.funcGetAttribute(0, k))
        print(n, "FAILED", e, geo, ks.fused_layout(geo.chunk))
