"""Hypothesis fuzzing of select() against the reference (GPU).

Shapes, parameters, dtypes, paths and value distributions (heavy ties, NaN, +-inf,
tiny and huge scales) are drawn at random. The kernel-shaping sizes are kept to a
small set so that a long run is not spent compiling. CUPYSEL_FUZZ_EXAMPLES sets the
examples per shard (default 25); the device run of issue 5 used 1250 x 8 shards.
"""

import os

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cupysel  # noqa: E402
from cupysel import reference  # noqa: E402

from .inputs import cast, to_device  # noqa: E402

pytestmark = pytest.mark.gpu
EXAMPLES = int(os.environ.get("CUPYSEL_FUZZ_EXAMPLES", "25"))


@st.composite
def problems(draw):
    G = draw(st.sampled_from([1, 4]))
    Hkv = draw(st.integers(1, 3))
    D = 64
    M = draw(st.sampled_from([2, 16]))
    C = draw(st.sampled_from([3, 200, 256]))
    B = draw(st.integers(1, 3))
    N = draw(st.integers(1, 3000))
    S = draw(st.integers(0, 40))
    W = draw(st.integers(0, 40))
    K = draw(st.integers(0, min(N, 600)))
    lens = draw(st.lists(st.integers(0, N), min_size=B, max_size=B))
    dtype = draw(st.sampled_from(["float16", "bfloat16", "float32"]))
    mode = draw(st.sampled_from(["softmax_sum", "max", "mean"]))
    path = draw(st.sampled_from(["auto", "staged"]))
    values = draw(st.sampled_from(["normal", "ties", "nan", "inf", "small", "large"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(G=G, Hkv=Hkv, D=D, M=M, C=C, B=B, N=N, S=S, W=W, K=K, lens=lens,
                dtype=dtype, mode=mode, path=path, values=values, seed=seed)


def make(p):
    rng = np.random.default_rng(p["seed"])
    B, Hkv, G, D, M, C, N = p["B"], p["Hkv"], p["G"], p["D"], p["M"], p["C"], p["N"]
    q = rng.standard_normal((B, Hkv * G, D))
    cent = rng.standard_normal((Hkv, M, C, D // M))
    hi = 2 if p["values"] == "ties" else C
    codes = rng.integers(0, hi, (B, Hkv, N, M), dtype=np.uint8)
    if p["values"] == "small":
        q *= 1e-3
    elif p["values"] == "large":
        q *= 30.0
    elif p["values"] == "nan":
        q[rng.integers(0, B), rng.integers(0, Hkv * G), rng.integers(0, D)] = np.nan
    elif p["values"] == "inf":
        cent[rng.integers(0, Hkv), rng.integers(0, M), rng.integers(0, hi)] = -np.inf
    return (cast(q.astype(np.float32), p["dtype"]), cast(cent.astype(np.float32), p["dtype"]),
            codes, np.asarray(p["lens"], np.int32))


@pytest.mark.parametrize("shard", range(8))
def test_fuzz(shard):
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(problems())
    def check(p):
        host = make(p)
        kw = dict(sink=p["S"], window=p["W"], k=p["K"], group_reduce=p["mode"])
        plan = cupysel.Selector(batch=p["B"], q_heads=p["Hkv"] * p["G"], kv_heads=p["Hkv"],
                                head_dim=p["D"], subspaces=p["M"], n_centroids=p["C"],
                                capacity=p["N"], **kw)
        plan._core.path = p["path"]
        dev = to_device(*host)
        sel = plan(*dev)
        ref = reference.select(*host, **kw)
        errors = reference.verify(sel, ref, sink=p["S"], window=p["W"], k=p["K"])
        assert not errors, "%s\n%s" % (p, "\n".join(errors))

    check()
