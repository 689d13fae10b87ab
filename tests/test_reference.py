"""The reference against a brute-force reading of the SPEC, token by token (CPU)."""

import itertools
import math

import numpy as np
import pytest

from cupysel import reference

from .inputs import host_inputs


def brute(q, cent, codes, lens, S, K, W, mode, scale=None):
    q = q.astype(np.float64)
    cent = cent.astype(np.float64)
    B, Hq, D = q.shape
    _, Hkv, N, M = codes.shape
    G, ds = Hq // Hkv, D // M
    scale = 1 / math.sqrt(D) if scale is None else scale
    KT = S + K + W
    idx = np.full((B, Hkv, KT), -1)
    wts = np.zeros((B, Hkv, KT))
    for b, g in itertools.product(range(B), range(Hkv)):
        L = int(lens[b])
        cg = cent[b, g] if cent.ndim == 5 else cent[g]
        s = np.zeros((G, L))
        for h, n in itertools.product(range(G), range(L)):
            for m in range(M):
                s[h, n] += q[b, g * G + h, m * ds:(m + 1) * ds] @ cg[m, codes[b, g, n, m]]
        s *= scale
        lse = [max(s[h]) + math.log(sum(math.exp(x - max(s[h])) for x in s[h])) if L else 0
               for h in range(G)]
        p = np.array([[math.exp(s[h, n] - lse[h]) for n in range(L)] for h in range(G)])
        p = p.reshape(G, L)
        r = {"softmax_sum": p.sum(0), "max": s.max(0) if L else s.sum(0), "mean": s.mean(0) if L else s.sum(0)}[mode]
        if L <= KT:
            sel = list(range(L))
        else:
            cand = sorted(range(S, L - W), key=lambda n: (-r[n], n))[:K]
            sel = list(range(S)) + sorted(cand) + list(range(L - W, L))
        idx[b, g, :len(sel)] = sel
        wts[b, g, :len(sel)] = [p[:, n].mean() for n in sel]
    return idx, wts


@pytest.mark.parametrize("mode", ["softmax_sum", "max", "mean"])
@pytest.mark.parametrize("seed", range(4))
def test_reference_matches_brute_force(mode, seed):
    rng = np.random.default_rng(seed)
    G = [1, 2, 3, 4][seed]
    host = host_inputs(rng, batch=2, q_heads=2 * G, kv_heads=2, head_dim=8, subspaces=[1, 2, 4, 8][seed],
                       n_centroids=5, capacity=40, seq_lens=[40, [0, 3, 11, 25][seed]],
                       dtype="float32", per_sequence_centroids=seed % 2 == 1)
    ref = reference.select(*host, sink=2, window=3, k=6, group_reduce=mode)
    idx, wts = brute(*host, 2, 6, 3, mode)
    np.testing.assert_array_equal(ref.indices, idx)
    np.testing.assert_allclose(ref.weights, wts, rtol=1e-12, atol=1e-15)
    assert not reference.verify(ref, ref, sink=2, window=3, k=6)


def test_special_values():
    """NaN ranks as -inf and weighs 0; an infinite maximum zeroes that head's p."""
    s = np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]])
    p = reference.softmax_probs(s)
    e = np.exp([1.0, 2.0])
    np.testing.assert_allclose(p[0], [e[0] / e.sum(), 0, e[1] / e.sum()])
    assert not p[1:].any()
    r = reference.rank_scores(np.array([[np.nan, 1.0], [np.nan, np.inf]]), p[:2, :2], 2, "max")
    assert r[0, 0] == -np.inf and r[0, 1] == np.inf


def test_verify_catches_wrong_results():
    rng = np.random.default_rng(1)
    host = host_inputs(rng, batch=1, q_heads=4, kv_heads=1, head_dim=16, subspaces=4,
                       n_centroids=64, capacity=300, seq_lens=[300], dtype="float32")
    ref = reference.select(*host, sink=2, window=4, k=20)
    kw = dict(sink=2, window=4, k=20)

    def mutated(fn):
        out = reference.Reference(ref.indices.copy(), ref.counts.copy(), ref.weights.copy(),
                                  ref.rank, ref.prob, ref.seq_lens)
        fn(out)
        return reference.verify(out, ref, **kw)

    # swap the weakest heavy token for the strongest left-out candidate
    cand = np.arange(2, 296)
    r = ref.rank[0, 0, cand]
    heavy = set(ref.indices[0, 0, 2:22].tolist())
    out_best = max((c for c in cand if c not in heavy), key=lambda c: ref.rank[0, 0, c])

    def swap(o):
        h = sorted(heavy, key=lambda c: ref.rank[0, 0, c])
        new = sorted((heavy - {h[0]}) | {out_best})
        o.indices[0, 0, 2:22] = new
        o.weights[0, 0, 2:22] = ref.prob[0, 0, new]

    assert mutated(swap)
    assert mutated(lambda o: o.indices.__setitem__((0, 0, 0), 5))
    assert mutated(lambda o: o.counts.__setitem__((0, 0), 3))
    assert mutated(lambda o: o.weights.__setitem__((0, 0, 7), o.weights[0, 0, 7] * 1.001))
    assert mutated(lambda o: o.indices.__setitem__((0, 0, slice(2, 22)), o.indices[0, 0, 2:22][::-1]))
    assert not mutated(lambda o: None)
    assert r.size


def test_bfloat16_inputs():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(2)
    host = host_inputs(rng, batch=1, q_heads=2, kv_heads=1, head_dim=8, subspaces=2,
                       n_centroids=4, capacity=30, seq_lens=[30], dtype="bfloat16")
    assert host[0].dtype == ml_dtypes.bfloat16
    ref = reference.select(*host, sink=1, window=1, k=3)
    idx, wts = brute(host[0].astype(np.float64), host[1].astype(np.float64), *host[2:], 1, 3, 1,
                     "softmax_sum")
    np.testing.assert_array_equal(ref.indices, idx)
