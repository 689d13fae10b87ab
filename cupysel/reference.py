"""The SPEC in NumPy float64: the definition every GPU result is compared with.

``select`` takes the same arguments as :func:`cupysel.select` (CuPy, NumPy or torch
arrays; they are copied to the host) and returns NumPy ``indices``, ``counts`` and
``weights``. ``verify`` applies the SPEC's correctness rule to a GPU result.

Special values, as the SPEC orders them: a NaN score counts as -inf everywhere (in
the softmax and in the ranking). If a head's largest valid score is +inf or -inf its
softmax is undefined and every p of that head is 0; otherwise
p = exp(s - logsumexp(s)).
"""

from typing import NamedTuple

import numpy as np

MODES = ("softmax_sum", "max", "mean")


def to_numpy(x):
    """Host copy of a CuPy / torch / NumPy array (bfloat16 comes back as float64)."""
    if hasattr(x, "get") and callable(x.get) and type(x).__module__.startswith("cupy"):
        x = x.get()
    elif type(x).__module__.startswith("torch"):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        x = t.numpy()
    return np.asarray(x)


class Reference(NamedTuple):
    indices: np.ndarray  # [B, Hkv, S+K+W] int32
    counts: np.ndarray   # [B, Hkv] int32
    weights: np.ndarray  # [B, Hkv, S+K+W] float64
    rank: np.ndarray     # [B, Hkv, N] ranking score r (NaN ranked as -inf), -inf past L
    prob: np.ndarray     # [B, Hkv, N] mean_h p, the weight of every position
    seq_lens: np.ndarray  # [B] int64


def scores(q, centroids, codes, seq_lens, scale=None):
    """s[b, h, n] for n < L_b (float64), as a list over b of arrays [Hq, L_b]."""
    q = to_numpy(q).astype(np.float64)
    cent = to_numpy(centroids).astype(np.float64)
    codes = to_numpy(codes)
    lens = to_numpy(seq_lens).astype(np.int64)
    B, Hq, D = q.shape
    _, Hkv, N, M = codes.shape
    G = Hq // Hkv
    ds = D // M
    if scale is None:
        scale = 1.0 / np.sqrt(D)
    out = []
    for b in range(B):
        L = int(lens[b])
        cb = cent[b] if cent.ndim == 5 else cent
        sb = np.empty((Hq, L))
        for g in range(Hkv):
            qg = q[b, g * G:(g + 1) * G].reshape(G, M, ds)
            lut = np.einsum("gmd,mcd->gmc", qg, cb[g])          # [G, M, C]
            idx = codes[b, g, :L, :].astype(np.int64)             # [L, M]
            sb[g * G:(g + 1) * G] = scale * lut[:, np.arange(M)[None, :], idx].sum(-1)
        out.append(sb)
    return out


def softmax_probs(s):
    """p = exp(s - logsumexp(s)) per head (rows of s), with the SPEC's special values."""
    s = np.where(np.isnan(s), -np.inf, s)
    p = np.zeros_like(s)
    if s.shape[1] == 0:
        return p
    m = s.max(axis=1, keepdims=True)
    ok = np.isfinite(m[:, 0])
    if ok.any():
        so = s[ok]
        mo = m[ok]
        lse = mo + np.log(np.exp(so - mo).sum(axis=1, keepdims=True))
        p[ok] = np.exp(so - lse)
    return p


def rank_scores(s, p, G, mode):
    """Ranking score r per group: [Hkv, L] from s, p of shape [Hq, L]."""
    Hq, L = s.shape
    sc = np.where(np.isnan(s), -np.inf, s).reshape(Hq // G, G, L)
    if mode == "softmax_sum":
        r = p.reshape(Hq // G, G, L).sum(axis=1)
    elif mode == "max":
        r = sc.max(axis=1)
    elif mode == "mean":
        with np.errstate(invalid="ignore"):
            r = sc.mean(axis=1)
    else:
        raise ValueError("Invalid group_reduce: expected one of %s, got %r" % (MODES, mode))
    return np.where(np.isnan(r), -np.inf, r)


def select(q, centroids, codes, seq_lens, *, sink, window, k, group_reduce="softmax_sum",
           scale=None, check=False, stream=None):
    """Float64 reference of :func:`cupysel.select` (``check`` and ``stream`` are ignored)."""
    del check, stream
    S, W, K = int(sink), int(window), int(k)
    codes_np = to_numpy(codes)
    lens = to_numpy(seq_lens).astype(np.int64)
    B, Hkv, N, _ = codes_np.shape
    Hq = to_numpy(q).shape[1]
    G = Hq // Hkv
    if np.any(lens < 0) or np.any(lens > N):
        raise ValueError("seq_lens must lie in [0, %d], got %s" % (N, lens))
    KT = S + K + W
    indices = np.full((B, Hkv, KT), -1, np.int32)
    counts = np.zeros((B, Hkv), np.int32)
    weights = np.zeros((B, Hkv, KT), np.float64)
    rank = np.full((B, Hkv, N), -np.inf)
    prob = np.zeros((B, Hkv, N))
    all_s = scores(q, centroids, codes_np, lens, scale)
    for b in range(B):
        L = int(lens[b])
        s = all_s[b]
        p = softmax_probs(s)
        r = rank_scores(s, p, G, group_reduce)
        w = p.reshape(Hkv, G, L).mean(axis=1)
        rank[b, :, :L] = r
        prob[b, :, :L] = w
        for g in range(Hkv):
            if L <= KT:
                sel = np.arange(L)
            else:
                cand = np.arange(S, L - W)
                order = np.lexsort((cand, -r[g, cand]))     # larger r first, then position
                heavy = np.sort(cand[order[:K]])
                sel = np.concatenate([np.arange(S), heavy, np.arange(L - W, L)])
            indices[b, g, :len(sel)] = sel
            counts[b, g] = len(sel)
            weights[b, g, :len(sel)] = w[g, sel]
    return Reference(indices, counts, weights, rank, prob, lens)


def verify(result, ref, *, sink, window, k, rtol=1e-4, atol=1e-6):
    """Check a GPU result against the reference with the SPEC's rule.

    ``result`` is anything with ``indices``, ``counts``, ``weights`` (CuPy or NumPy).
    Returns a list of human-readable failures (empty when it passes).
    """
    S, W, K = int(sink), int(window), int(k)
    KT = S + K + W
    idx = to_numpy(result.indices).astype(np.int64)
    cnt = to_numpy(result.counts).astype(np.int64)
    wts = to_numpy(result.weights).astype(np.float64)
    B, Hkv = ref.counts.shape
    errors = []

    def fail(b, g, msg):
        if len(errors) < 20:
            errors.append("(b=%d, g=%d): %s" % (b, g, msg))

    if idx.shape != (B, Hkv, KT) or wts.shape != (B, Hkv, KT) or cnt.shape != (B, Hkv):
        return ["shapes %s %s %s, expected %s" % (idx.shape, cnt.shape, wts.shape, (B, Hkv, KT))]
    for b in range(B):
        L = int(ref.seq_lens[b])
        for g in range(Hkv):
            c = int(ref.counts[b, g])
            if cnt[b, g] != c:
                fail(b, g, "count %d, expected %d" % (cnt[b, g], c))
                continue
            row, rw = idx[b, g], wts[b, g]
            if np.any(row[c:] != -1) or np.any(rw[c:] != 0):
                fail(b, g, "padding not -1 / 0")
            if L <= KT:
                if not np.array_equal(row[:c], np.arange(L)):
                    fail(b, g, "short row: expected every position 0..%d" % (L - 1))
            else:
                if not np.array_equal(row[:S], np.arange(S)):
                    fail(b, g, "sink positions wrong")
                if not np.array_equal(row[S + K:KT], np.arange(L - W, L)):
                    fail(b, g, "window positions wrong")
                heavy = row[S:S + K]
                if K:
                    errors_before = len(errors)
                    if np.any(np.diff(heavy) <= 0):
                        fail(b, g, "heavy indices not strictly ascending")
                    if heavy.min() < S or heavy.max() >= L - W:
                        fail(b, g, "heavy index outside [%d, %d)" % (S, L - W))
                    if len(errors) == errors_before:
                        _check_heavy(ref.rank[b, g], heavy, S, L - W, K,
                                     ref.indices[b, g, S:S + K], lambda m: fail(b, g, m))
            valid = row[:c]
            if np.all((valid >= 0) & (valid < max(L, 1))):
                want = ref.prob[b, g, valid]
                bad = ~np.isclose(rw[:c], want, rtol=rtol, atol=atol)
                if bad.any():
                    j = int(np.argmax(bad))
                    fail(b, g, "weight at %d (pos %d): %r, expected %r (%d bad)"
                         % (j, valid[j], rw[j], want[j], int(bad.sum())))
    return errors


def _check_heavy(r, heavy, lo, hi, K, ref_heavy, fail):
    cand_r = r[lo:hi]
    t = np.sort(cand_r)[::-1][K - 1]
    eps = 1e-5 * max(1.0, abs(t)) if np.isfinite(t) else 0.0
    chosen = np.zeros(hi - lo, bool)
    chosen[heavy - lo] = True
    if np.any(cand_r[chosen] < t - eps):
        fail("a chosen token ranks below the K-th value %r - eps" % t)
    if np.any(cand_r[~chosen] > t + eps):
        fail("a left-out token ranks above the K-th value %r + eps" % t)
    near = np.abs(cand_r - t) <= eps if np.isfinite(t) else cand_r == t
    if near.sum() <= 1 and not np.array_equal(np.sort(heavy), ref_heavy):
        fail("heavy set differs from the reference (no near-ties)")
    if not np.isfinite(t):
        # Ties at +-inf are exact: the smallest positions must win.
        if not np.array_equal(np.sort(heavy), ref_heavy):
            fail("ties at %r not broken by position" % t)
