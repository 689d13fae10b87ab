"""Random inputs for the tests (fresh per call, never zeros) and a poisoning helper."""

import numpy as np

LLAMA = dict(q_heads=32, kv_heads=8, head_dim=128)


def host_inputs(rng, *, batch, q_heads, kv_heads, head_dim, subspaces, n_centroids, capacity,
                seq_lens=None, dtype="float16", c_dtype=None, len_dtype="int32",
                per_sequence_centroids=False, scale_q=1.0):
    """NumPy q, centroids, codes, seq_lens (standard normal values, uniform codes)."""
    c_dtype = c_dtype or dtype
    ds = head_dim // subspaces
    q = (rng.standard_normal((batch, q_heads, head_dim)) * scale_q).astype(np.float32)
    cshape = (kv_heads, subspaces, n_centroids, ds)
    if per_sequence_centroids:
        cshape = (batch,) + cshape
    cent = rng.standard_normal(cshape).astype(np.float32)
    codes = rng.integers(0, n_centroids, (batch, kv_heads, capacity, subspaces), dtype=np.uint8)
    if seq_lens is None:
        seq_lens = rng.integers(0, capacity + 1, batch)
    lens = np.asarray(seq_lens).astype(len_dtype)
    return cast(q, dtype), cast(cent, c_dtype), codes, lens


def cast(x, dtype):
    if dtype == "bfloat16":
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16)
    return x.astype(dtype)


def to_device(*arrays):
    import cupy

    return tuple(cupy.asarray(a) for a in arrays)


def poison(sel):
    """Fill outputs with values no kernel writes, so an unwritten element shows."""
    sel.indices.fill(-7)
    sel.counts.fill(-7)
    sel.weights.fill(float("nan"))
