"""cupysel: sparse-attention token selection from product-quantized keys, on CuPy.

    sel = cupysel.select(q, centroids, codes, seq_lens, sink=S, window=W, k=K)
    plan = cupysel.Selector(batch=B, q_heads=Hq, kv_heads=Hkv, head_dim=D, subspaces=M,
                            n_centroids=C, capacity=N, sink=S, window=W, k=K)

The contract is SPEC.md; ``cupysel.reference`` is the same in NumPy float64.
"""

from . import reference
from .plan import CapturedSelection, Selector
from .select import Selection, TorchSelection, select

__version__ = "0.1.0"

__all__ = ["select", "Selector", "Selection", "TorchSelection", "CapturedSelection",
           "reference", "__version__"]
