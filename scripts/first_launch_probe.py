"""Diagnose: first fused launch in a fresh process (argv[1]: 'probe' uses the capacity query)."""
import sys
sys.path.insert(0, ".")
import numpy as np, cupy
from cupy.cuda import driver
import cupysel
from cupysel import plan as P
from tests.inputs import host_inputs, to_device
if sys.argv[1] == "noprobe":
    P.cluster_capacity = lambda *a: None
sizes = dict(batch=1, q_heads=1, kv_heads=1, head_dim=64, subspaces=2, n_centroids=256, capacity=513)
dev = to_device(*host_inputs(np.random.default_rng(0), **sizes, seq_lens=[0]))
for attempt in range(2):
    sel = cupysel.Selector(**sizes, sink=0, window=0, k=0)
    try:
        sel(*dev); cupy.cuda.Device().synchronize(); print(sys.argv[1], attempt, "ok", sel._core.geometry(0))
    except Exception as e:
        print(sys.argv[1], attempt, "FAIL", e, sel._core.geometry(0))
        from cupysel.compile import _functions, _smem_limit
        for k, fn in _functions.items():
            p = fn.kernel.ptr
            print("  ", k[2][:50], "smemlimit", _smem_limit[k], [driver.funcGetAttribute(a, p) for a in (0, 1, 4, 8, 10, 11, 12, 13, 14)])
        prog = list(sel._core._programs.values())[0]
        for st, L in prog:
            print("   launch", st, L.grid, L.block, L.smem, [c.value for c in L.cells])
