"""SPEC edge semantics, input errors on device arrays, memory safety and scale (GPU)."""

import numpy as np
import pytest

import cupysel
from cupysel import reference

from .inputs import host_inputs, poison, to_device

pytestmark = pytest.mark.gpu
PATHS = ("auto", "staged")
MODES = ("softmax_sum", "max", "mean")


def run(host, sizes, path, exact=False, **params):
    plan = cupysel.Selector(**sizes, **params)
    plan._core.path = path
    dev = to_device(*host)
    sel = plan(*dev)
    poison(sel)
    sel = plan(*dev)
    ref = reference.select(*host, **params)
    errors = reference.verify(sel, ref, sink=params["sink"], window=params["window"],
                              k=params["k"])
    assert not errors, "\n".join(errors)
    if exact:
        np.testing.assert_array_equal(sel.indices.get(), ref.indices)
    return sel, ref


BASE = dict(batch=2, q_heads=8, kv_heads=2, head_dim=32, subspaces=4, n_centroids=16,
            capacity=600)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [
    dict(sink=5, window=7, k=0, lens=[600, 300]),           # K = 0
    dict(sink=0, window=7, k=50, lens=[600, 300]),          # S = 0
    dict(sink=5, window=0, k=50, lens=[600, 300]),          # W = 0
    dict(sink=0, window=0, k=50, lens=[600, 51]),           # only heavy
    dict(sink=5, window=7, k=50, lens=[0, 600]),            # L = 0
    dict(sink=5, window=7, k=50, lens=[62, 63]),            # L = S+K+W, L = S+K+W+1
    dict(sink=5, window=7, k=50, lens=[1, 2]),              # tiny rows
    dict(sink=600, window=0, k=0, lens=[600, 599]),         # all sink
    dict(sink=0, window=0, k=600, lens=[600, 599]),         # K as large as the row
    dict(sink=0, window=0, k=0, lens=[600, 0]),             # nothing selected at all
])
def test_edge_parameters(case, mode, path):
    case = dict(case)
    rng = np.random.default_rng(len(str(case)) + len(mode))
    lens = case.pop("lens")
    host = host_inputs(rng, **BASE, seq_lens=lens)
    run(host, BASE, path, group_reduce=mode, **case)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("sizes", [
    dict(batch=1, q_heads=7, kv_heads=1, head_dim=64, subspaces=8, n_centroids=32, capacity=999),
    dict(batch=2, q_heads=28, kv_heads=4, head_dim=128, subspaces=16, n_centroids=256,
         capacity=3000),
    dict(batch=2, q_heads=4, kv_heads=2, head_dim=32, subspaces=1, n_centroids=200, capacity=800),
    dict(batch=3, q_heads=2, kv_heads=1, head_dim=16, subspaces=2, n_centroids=5, capacity=1),
], ids=["G7", "qwen", "M1", "N1"])
@pytest.mark.parametrize("mode", MODES)
def test_edge_shapes(sizes, mode, path):
    rng = np.random.default_rng(11)
    host = host_inputs(rng, **sizes)
    run(host, sizes, path, group_reduce=mode, sink=3, window=4, k=min(40, sizes["capacity"]))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("poison_kind", ["nan_q", "inf_q", "ninf_cent", "nan_cent", "negzero_q"])
def test_special_values(poison_kind, mode, path):
    """NaN, +-inf and -0 in q or centroids follow the reference's rules exactly."""
    rng = np.random.default_rng(12)
    q, c, codes, lens = host_inputs(rng, **BASE, seq_lens=[600, 450], dtype="float32")
    if poison_kind == "nan_q":
        q[0, 1, 3] = np.nan               # head 1 of group 0: every score NaN
    elif poison_kind == "inf_q":
        q[1, 5, 0] = np.inf               # head 5 (group 1): +-inf scores, some NaN
    elif poison_kind == "ninf_cent":
        c[0, 2, 7, :] = -np.inf           # code 7 of sub-space 2: -inf / NaN scores
    elif poison_kind == "nan_cent":
        c[1, 0, 3, 1] = np.nan            # code 3 of sub-space 0 in group 1: NaN scores
    else:
        q[:] = -0.0                       # every score is +-0: all tie
    run((q, c, codes, lens), BASE, path, exact=True, group_reduce=mode, sink=3, window=5, k=40)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_wide_score_range(mode, path):
    """Scores spread over hundreds (q scaled by 30): most probabilities underflow, and
    a CTA's own maximum can lie far below its row's LSE (as a ranking that factors
    p = exp(s - m_cta) * exp(m_cta - LSE) must survive: perf-notes v51); the selection
    and the weights still follow the reference."""
    sizes = dict(batch=1, q_heads=8, kv_heads=2, head_dim=64, subspaces=8, n_centroids=64,
                 capacity=16384)
    rng = np.random.default_rng(17)
    host = host_inputs(rng, **sizes, seq_lens=[16000], scale_q=30.0)
    sel, _ = run(host, sizes, path, group_reduce=mode, sink=4, window=8, k=300)
    if path == "auto":
        import cupy

        plan = cupysel.Selector(**sizes, sink=4, window=8, k=300, group_reduce=mode)
        assert plan._core.geometry(cupy.cuda.Device().id).coop > 1  # several CTAs a row
    w = sel.weights.get()
    assert np.isfinite(w).all() and w.max() > 1e-3


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_all_ties_never_pad_inside_the_count(mode, path):
    """Equal scores everywhere (C = 1): smallest positions win, no -1 inside counts."""
    sizes = dict(BASE, n_centroids=1, capacity=5000)
    rng = np.random.default_rng(13)
    host = host_inputs(rng, **sizes, seq_lens=[5000, 4444])
    sel, ref = run(host, sizes, path, exact=True, group_reduce=mode, sink=2, window=3, k=2000)
    idx = sel.indices.get()
    assert (idx >= 0).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ties,need", [(6, 1), (6, 3), (6, 6), (40, 1), (40, 17), (40, 40)])
def test_ties_at_the_kth_value_are_cut_by_position(ties, need, mode, path):
    """`ties` tokens score exactly alike (equal codes, positions 32 apart so every kernel
    sums their sub-spaces in the same order) and K ends inside them: the first `need` of
    them by position are heavy, the rest are not. Six equal keys are few enough for the
    finishes that sort the K-th key's group in one warp (the cooperative kernel, the
    staged list finish) to take that branch; forty are more than a warp, so the same
    finishes take a further radix level and the ordered tie cut."""
    sizes = dict(batch=1, q_heads=4, kv_heads=1, head_dim=32, subspaces=4, n_centroids=16,
                 capacity=2048)
    rng = np.random.default_rng(17)
    q, c, codes, lens = host_inputs(rng, **sizes, seq_lens=[2048], dtype="float32")
    tied = [100 + 32 * j for j in range(ties)]
    codes[0, 0, tied] = codes[0, 0, tied[0]]
    S, W = 4, 8
    r = reference.select(q, c, codes, lens, sink=S, window=W, k=1,
                         group_reduce=mode).rank[0, 0, S:2048 - W]
    v = r[tied[0] - S]
    assert (r[np.array(tied) - S] == v).all()
    k = int((r > v).sum()) + need
    sel, _ = run((q, c, codes, lens), sizes, path, group_reduce=mode, sink=S, window=W, k=k)
    heavy = set(sel.indices.get()[0, 0, S:S + k].tolist())
    assert [p in heavy for p in tied] == [j < need for j in range(ties)]


@pytest.mark.parametrize("mode", ["softmax_sum", "max"])
def test_cooperative_exchange_tags_over_their_wrap(mode):
    """The cooperative kernel's CTAs exchange statistics and counts as words tagged with
    a 13-bit launch number that their readers poll: one plan's two graphs, over two input
    sets, replayed in turn past the wrap (8192 launches), each result checked around the
    wrap against its own input's reference. A stale word taken for a current one (a
    previous launch's, made from the other input) would change the selection."""
    import cupy

    sizes = dict(batch=1, q_heads=8, kv_heads=2, head_dim=32, subspaces=4, n_centroids=16,
                 capacity=4096)
    params = dict(sink=4, window=8, k=300, group_reduce=mode)
    plan = cupysel.Selector(**sizes, **params)
    assert plan._core.geometry(0).coop > 1, "a cooperative launch of several CTAs a row"
    rng = np.random.default_rng(29)
    hosts = [host_inputs(rng, **sizes, seq_lens=[n]) for n in (4096, 3001)]
    graphs = [plan.capture(*to_device(*h)) for h in hosts]
    refs = [reference.select(*h, **params) for h in hosts]
    checked = 0
    for i in range(8192 + 64):
        check = i < 8 or i >= 8192 - 48
        if check:
            poison(graphs[i % 2].selection)  # an unwritten output shows
        sel = graphs[i % 2].replay()
        if check:
            cupy.cuda.Device().synchronize()
            errors = reference.verify(sel, refs[i % 2], sink=4, window=8, k=300)
            assert not errors, "launch %d:\n%s" % (i, "\n".join(errors))
            checked += 1
    assert checked == 8 + 112


def test_cooperative_bin_list_buffers_take_no_stale_entry():
    """The cooperative kernel's CTAs poll the gathered bin list until each entry is
    written (nonzero), in one of two buffers by the launch's parity, and clear the other
    for the next launch. Three graphs of one plan over three inputs of other lengths,
    replayed in turn (so each buffer sees a different input each time it is used), every
    result checked: an entry left from two launches before, taken for this launch's,
    would change the selection."""
    import cupy

    sizes = dict(batch=1, q_heads=8, kv_heads=2, head_dim=32, subspaces=4, n_centroids=16,
                 capacity=4096)
    params = dict(sink=4, window=8, k=300, group_reduce="softmax_sum")
    plan = cupysel.Selector(**sizes, **params)
    assert plan._core.geometry(0).coop > 1
    rng = np.random.default_rng(37)
    hosts = [host_inputs(rng, **sizes, seq_lens=[n]) for n in (4096, 2900, 3700)]
    graphs = [plan.capture(*to_device(*h)) for h in hosts]
    refs = [reference.select(*h, **params) for h in hosts]
    for i in range(60):
        poison(graphs[i % 3].selection)
        sel = graphs[i % 3].replay()
        cupy.cuda.Device().synchronize()
        errors = reference.verify(sel, refs[i % 3], sink=4, window=8, k=300)
        assert not errors, "launch %d:\n%s" % (i, "\n".join(errors))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_top_scores_in_sink_and_window_are_not_heavy(mode, path):
    """The sink and window tokens score highest, and the sink ends off an 8-token boundary:
    the compactions read keys 8 at a time from an aligned start, so the masks at both
    ends of the candidate range must hold (coop path: chunks of 224 tokens)."""
    sizes = dict(BASE)
    rng = np.random.default_rng(21)
    lens = [600, 333]
    q, c, codes, lens = host_inputs(rng, **sizes, seq_lens=lens, dtype="float32")
    G = sizes["q_heads"] // sizes["kv_heads"]
    ds = sizes["head_dim"] // sizes["subspaces"]
    for g in range(sizes["kv_heads"]):
        q[:, g * G:(g + 1) * G] = q[:, g * G:g * G + 1]  # one query a group
        for m in range(sizes["subspaces"]):
            sub = q[0, g * G, m * ds:(m + 1) * ds]
            c[g, m, 0] = 3.0 * sub / np.linalg.norm(sub)  # code 0: the largest dot product
    q[1] = q[0]
    codes[codes == 0] = 1
    S, W = 5, 7
    for b, L in enumerate(lens):
        codes[b, :, :S] = 0
        codes[b, :, L - W:L] = 0
    run((q, c, codes, lens), sizes, path, group_reduce=mode, sink=S, window=W, k=50)


@pytest.mark.parametrize("group", [2, 3, 4, 7])
def test_saved_scores_in_every_layout(group):
    """softmax_sum on the staged path keeps each head's scores between its two passes:
    a token's side by side where G is a multiple of 4 (G = 4), else one plane a head
    (G = 2, 3, 7). The second pass has no table, so it may take more blocks
    than the first: with G = 7 (a 128 KiB table, one block an SM) it must."""
    import cupy

    sizes = dict(batch=2, q_heads=2 * group, kv_heads=2, head_dim=128, subspaces=16,
                 n_centroids=256, capacity=40000)
    plan = cupysel.Selector(**sizes, sink=3, window=5, k=700)
    plan._core.path = "staged"
    plan._core.softmax_filter = False
    dev = cupy.cuda.Device().id
    assert plan._core.geometry(dev).save
    rng = np.random.default_rng(group)
    host = host_inputs(rng, **sizes, seq_lens=[40000, 23457])
    arrays = to_device(*host)
    sel = plan(*arrays)
    poison(sel)
    sel = plan(*arrays)
    ref = reference.select(*host, sink=3, window=5, k=700)
    errors = reference.verify(sel, ref, sink=3, window=5, k=700)
    assert not errors, "\n".join(errors)
    prog = plan._core.program(dev, plan._core.kernel_set(dev, *arrays))
    grids = [launch.grid[0] for stage, launch in prog if stage == "score"]
    assert len(grids) == 2
    if group == 7:
        assert grids[1] > grids[0]


@pytest.mark.parametrize("mode", ("max", "mean"))
@pytest.mark.parametrize("capacity", [49152, 49153, 49154, 49155])
def test_topk_compaction_over_splits_at_every_row_alignment(capacity, mode):
    """The max / mean top-K compacts each split of a row's ranking scores. Rows of a
    multiple of 4 tokens read them as float4 from the aligned position at or below the
    split's first token (here the sinks end at 5, inside a float4, and the shorter row's
    heavy range ends inside one); other rows read one float a token. Several splits a
    row, every capacity mod 4."""
    import cupy

    sizes = dict(batch=2, q_heads=4, kv_heads=1, head_dim=32, subspaces=4, n_centroids=16,
                 capacity=capacity)
    params = dict(sink=5, window=3, k=500, group_reduce=mode)
    rng = np.random.default_rng(capacity)
    host = host_inputs(rng, **sizes, seq_lens=[capacity, capacity - 7])
    run(host, sizes, "staged", **params)
    plan = cupysel.Selector(**sizes, **params)
    plan._core.path = "staged"
    dev = cupy.cuda.Device().id
    prog = plan._core.program(dev, plan._core.kernel_set(dev, *to_device(*host)))
    assert [launch.grid[0] for stage, launch in prog if stage == "topk"][0] >= 3


def _staged(sizes, filt, fuse=True, **params):
    plan = cupysel.Selector(**sizes, **params)
    plan._core.path = "staged"
    plan._core.softmax_filter = filt
    plan._core.fuse_rescore = fuse
    return plan


def _selected(plan, dev):
    sel = plan(*dev)
    poison(sel)
    sel = plan(*dev)
    return sel.indices.get(), sel.counts.get(), sel.weights.get()


@pytest.mark.parametrize("group,subspaces,capacity,lens", [
    (4, 16, 40000, [40000, 23457, 2000, 700]),  # skewed table; short rows
    (7, 16, 40000, [31000, 8191, 40000, 9]),    # Qwen's group: a plane a head when saved
    (1, 16, 40003, [40003, 12345, 5, 0]),       # N % 4 != 0: scalar loads of v
    (2, 4, 40001, [40000, 39999, 1000, 701]),   # plain table layout
    (5, 8, 40000, [40000, 30000, 20000, 10000]),
])
def test_filtered_softmax_sum_equals_saved_scores(group, subspaces, capacity, lens):
    """The filtered softmax_sum (cs_rescore scores only the tokens above the cut), with
    the rescoring in its own launch or fused into the first pass's, gives the same bits
    as the pass that saves every per-head score: same scores (rotation n % 8), same LSE,
    same r, and the filter never drops a heavy token. All match the reference."""
    sizes = dict(batch=len(lens), q_heads=2 * group, kv_heads=2, head_dim=64,
                 subspaces=subspaces, n_centroids=256, capacity=capacity)
    params = dict(sink=3, window=5, k=600)
    rng = np.random.default_rng(100 + group)
    host = host_inputs(rng, **sizes, seq_lens=lens)
    dev = to_device(*host)
    filt, saved = _staged(sizes, True, **params), _staged(sizes, False, **params)
    apart = _staged(sizes, True, fuse=False, **params)
    d = cupy_device()
    assert filt._core.geometry(d).filt and not filt._core.geometry(d).save
    assert filt._core.kernel_set(d, *dev).fuse and not apart._core.kernel_set(d, *dev).fuse
    assert saved._core.geometry(d).save
    a, b, c = _selected(filt, dev), _selected(saved, dev), _selected(apart, dev)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(z, y)
    ref = reference.select(*host, **params)
    sel = filt(*dev)
    errors = reference.verify(sel, ref, **params)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group,subspaces,n_centroids,head_dim", [
    (3, 16, 256, 128),   # a float2 and a float plane
    (5, 16, 256, 128),   # float4 and float
    (6, 32, 200, 128),   # two tiles of 3 heads (float2 and float), two sub-space halves
    (7, 16, 256, 128),   # Qwen's group: all three planes
    (7, 32, 77, 64),     # C < P: zero entries, a float plane per half
])
def test_table_planes(group, subspaces, n_centroids, head_dim, mode):
    """Groups of 3, 5, 6 or 7 heads with M % 16 == 0 keep their lookup table in planes
    (heads 0-3 as float4, the next two as float2, an odd last head as a float stored
    twice) and walk a token's sub-spaces from n % 16. Every path matches the reference
    on ragged rows (tokens of every phase), and for softmax_sum the filtered pass (fused
    or with its own rescoring launch) and the saved-score pass give the same bits."""
    import kernels_cu

    assert kernels_cu.table_planes(group, subspaces)
    sizes = dict(batch=3, q_heads=2 * group, kv_heads=2, head_dim=head_dim,
                 subspaces=subspaces, n_centroids=n_centroids, capacity=6000)
    params = dict(sink=3, window=5, k=300, group_reduce=mode)
    rng = np.random.default_rng(7 * group + subspaces + len(mode))
    host = host_inputs(rng, **sizes, seq_lens=[6000, 3333, 77])
    dev = to_device(*host)
    ref = reference.select(*host, **params)
    checks = {"auto": cupysel.Selector(**sizes, **params), "staged": _staged(sizes, True, **params)}
    paired = mode == "softmax_sum" and checks["staged"]._core.geometry(cupy_device()).filt
    if paired:  # one head tile (G = 6, M = 32 takes two tiles of 3 heads: no filter)
        checks["apart"] = _staged(sizes, True, fuse=False, **params)
        checks["saved"] = _staged(sizes, False, **params)
        assert checks["saved"]._core.geometry(cupy_device()).save
    got = {}
    for name, plan in checks.items():
        got[name] = _selected(plan, dev)
        errors = reference.verify(plan(*dev), ref, sink=3, window=5, k=300)
        assert not errors, name + ":\n" + "\n".join(errors)
    if paired:
        for name in ("apart", "saved"):
            for x, y in zip(got["staged"], got[name]):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("head_scales", [
    [1.0, 3.0, 0.3, 8.0],      # LSEs far apart: a looser cut, more tokens rescored
    [1.0, 1.0, 1.0, 400.0],    # one head dominates (spread past the cut's range: no filter)
    [1e-4, 1e-4, 1e-4, 1e-4],  # nearly equal scores everywhere: most tokens pass
])
def test_filter_under_spread_heads(head_scales):
    """The filter's bound holds whatever the heads' LSEs: exact against the reference."""
    sizes = dict(batch=2, q_heads=8, kv_heads=2, head_dim=64, subspaces=16, n_centroids=256,
                 capacity=20000)
    params = dict(sink=4, window=6, k=500)
    rng = np.random.default_rng(31)
    q, c, codes, lens = host_inputs(rng, **sizes, seq_lens=[20000, 15555], dtype="float32")
    q = q * np.asarray(head_scales * 2, np.float32)[None, :, None]
    plan = _staged(sizes, True, **params)
    assert plan._core.geometry(cupy_device()).filt
    sel = plan(*to_device(q, c, codes, lens))
    poison(sel)
    sel = plan(*to_device(q, c, codes, lens))
    ref = reference.select(q, c, codes, lens, **params)
    errors = reference.verify(sel, ref, **params)
    assert not errors, "\n".join(errors)


def test_bound16_rounds_up():
    """softmax_sum's filter keeps v in 16 bits for the rescoring (cs_bound16). The stored
    value must never be below v, or a token at the cut would be dropped: rounded up, at
    most 2^-7 relative above, exact where v's low 16 bits are zero, order kept."""
    import cupy
    import kernels_cu

    probe = r"""
extern "C" __global__ void bound16_probe(const float* v, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = cs_bound16_value(cs_bound16(v[i]));
}
"""
    mod = cupy.RawModule(code=kernels_cu.SOURCE + probe, options=("-std=c++17",))
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 0x7F800000, 200000, dtype=np.uint32)  # every finite v >= 0
    edges = np.array([0.0, 1.0, 2.0 ** -149, 2.0 ** -126, 3.0e38,
                      np.finfo(np.float32).max, np.inf], np.float32)
    v = np.concatenate([bits.view(np.float32), edges, (bits & 0xFFFF0000).view(np.float32)])
    out = cupy.full(v.size, np.nan, np.float32)
    dv = cupy.asarray(v)
    mod.get_function("bound16_probe")(((v.size + 255) // 256,), (256,), (dv, out, np.int32(v.size)))
    got = out.get()
    assert not np.isnan(got).any()
    assert (got >= v).all()
    exact = (v.view(np.uint32) & 0xFFFF) == 0
    np.testing.assert_array_equal(got[exact], v[exact])
    normal = (v >= np.finfo(np.float32).tiny) & (got < np.inf)
    assert (got[normal] <= v[normal].astype(np.float64) * (1 + 2.0 ** -7)).all()
    ranked = got[np.argsort(v, kind="stable")]
    assert (ranked[1:] >= ranked[:-1]).all()  # (inf - inf is NaN: no np.diff)


def test_filter_keeps_few_tokens():
    """On the benchmark's kind of input (Llama's group, M = 16, C = 256) the cut leaves
    little more than K candidates a row (about 1.1-1.5 K in a NumPy model of the bound):
    the filter works, not just the fallback that rescores every token."""
    import cupy

    sizes = dict(batch=2, q_heads=8, kv_heads=2, head_dim=128, subspaces=16, n_centroids=256,
                 capacity=65536)
    params = dict(sink=32, window=64, k=2048)
    rng = np.random.default_rng(41)
    host = host_inputs(rng, **sizes, seq_lens=[65536, 50000])
    plan = _staged(sizes, True, **params)
    d = cupy_device()
    sel = plan(*to_device(*host))
    cupy.cuda.Device(d).synchronize()
    geo = plan._core.geometry(d)
    ptrs = plan._buffers[d].ptrs
    rows = 4
    mem = lambda name, n: cupy.ndarray((n,), np.int32, cupy.cuda.MemoryPointer(  # noqa: E731
        cupy.cuda.UnownedMemory(ptrs[name], n * 4, plan), 0))
    from cupysel.plan import RESCORE_WARPS

    stride = geo.nsc * RESCORE_WARPS  # a candidate segment a rescore warp
    state = mem("rowstate", rows * 4).get().reshape(rows, 4)
    segcnt = mem("segcnt", rows * stride).get().reshape(rows, stride)
    lens = np.repeat(host[3], 2)
    for r in range(rows):
        seg_len = int(state[r, 3])
        nseg = -(-int(lens[r]) // seg_len)
        kept = int(segcnt[r, :nseg].sum())
        assert params["k"] <= kept <= 2 * params["k"], (r, kept)
    ref = reference.select(*host, **params)
    errors = reference.verify(sel, ref, **params)
    assert not errors, "\n".join(errors)


def cupy_device():
    import cupy

    return cupy.cuda.Device().id


def test_errors_on_device_arrays():
    import cupy

    rng = np.random.default_rng(14)
    q, c, codes, lens = to_device(*host_inputs(rng, **BASE, seq_lens=[600, 600]))
    kw = dict(sink=1, window=1, k=5)
    cases = [
        ((q.astype(cupy.int8), c, codes, lens), TypeError,
         "Invalid dtype of q: expected one of \\(float16, bfloat16, float32\\), got int8"),
        ((q, c, codes.astype(cupy.int32), lens), TypeError, "Invalid dtype of codes"),
        ((q, c, codes, lens.astype(cupy.float32)), TypeError, "Invalid dtype of seq_lens"),
        ((q[0], c, codes, lens), ValueError, "Invalid rank of q"),
        ((q, c[0], codes, lens), ValueError, "Invalid rank of centroids"),
        ((q[:1], c, codes, lens), ValueError, "Invalid shape of"),
        ((q, c[:, :, :8], codes, lens), ValueError, "Invalid (shape|layout) of centroids"),
        ((q, c, codes[:, :, :, :2], lens), ValueError, "Invalid shape of centroids"),
        ((q, c, codes, lens[:1]), ValueError, "Invalid shape of seq_lens"),
        ((q[:, ::2], c, codes, lens), ValueError, "q_heads|Invalid"),
        ((cupy.asfortranarray(q), c, codes, lens), ValueError,
         "Invalid layout of q: expected a C-contiguous array"),
        ((q, c, codes[:, :, ::2], lens), ValueError, "Invalid layout of codes|Invalid shape"),
    ]
    cupysel.select(q, c, codes, lens, **kw)  # valid: its validation is now cached
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            cupysel.select(*args, **kw)
    # Arguments equal to a cached valid call's but of another type are still refused.
    for bad, match in ((dict(k=True), "Invalid type of k"), (dict(sink=1.0), "Invalid type of sink"),
                       (dict(group_reduce=["max"]), "Invalid group_reduce")):
        with pytest.raises((TypeError, ValueError), match=match):
            cupysel.select(q, c, codes, lens, **{**kw, **bad})
    with pytest.raises(ValueError, match="Invalid group_reduce"):
        cupysel.select(q, c, codes, lens, **kw, group_reduce="median")
    plan = cupysel.Selector(**BASE, **kw)
    with pytest.raises(ValueError, match="Invalid shape of codes"):
        plan(q, c, codes[:, :, :300], lens)


@pytest.mark.parametrize("path", PATHS)
def test_bad_contents_are_safe_and_check_raises(path):
    """codes >= C and seq_lens outside [0, N]: no out-of-bounds access (the sanitizer run
    covers this test), defined output shape; check=True raises ValueError."""
    import cupy

    sizes = dict(BASE, n_centroids=10)
    rng = np.random.default_rng(15)
    q, c, codes, lens = host_inputs(rng, **sizes, seq_lens=[600, 600])
    codes[0, 0, ::7] = 255
    bad_lens = np.array([-5, 10**6], np.int32)
    dev = to_device(q, c, codes, lens)
    for args in ((dev[0], dev[1], dev[2], dev[3]),
                 (dev[0], dev[1], to_device(np.minimum(codes, 9))[0], cupy.asarray(bad_lens))):
        plan = cupysel.Selector(**sizes, sink=3, window=4, k=30)
        plan._core.path = path
        sel = plan(*args)
        cupy.cuda.Device().synchronize()
        idx, cnt = sel.indices.get(), sel.counts.get()
        assert ((idx >= -1) & (idx < sizes["capacity"])).all()
        assert ((cnt >= 0) & (cnt <= 37)).all()
        with pytest.raises(ValueError, match="Invalid (codes|seq_lens)"):
            plan(*args, check=True)
        with pytest.raises(ValueError, match="Invalid (codes|seq_lens)"):
            cupysel.select(*args, sink=3, window=4, k=30, check=True)
    good = cupysel.select(*to_device(q, c, np.minimum(codes, 9), lens), sink=3, window=4, k=30,
                          check=True)
    assert good.counts.get().tolist() == [[37, 37], [37, 37]]


def test_more_than_2_31_code_bytes():
    """B * Hkv * N * M = 2^31 + : positions past 2^27 in the last rows are exact.

    Codes are 0 except K planted tokens per row with every code 1, whose scores are far
    higher; the heavy set must be exactly the planted positions and the weights match
    the closed form (float64)."""
    import cupy

    B, Hkv, G, D, M, N = 1, 8, 4, 64, 16, 2**24 + 64
    S, W, K = 3, 5, 64
    ds = D // M
    rng = np.random.default_rng(16)
    # heads of a group alike, so the planted code scores high for every head
    q = np.repeat(rng.standard_normal((B, Hkv, 1, D)), G, axis=2).reshape(B, Hkv * G, D)
    q = (q + 0.01 * rng.standard_normal(q.shape)).astype(np.float32)
    cent = np.zeros((Hkv, M, 2, ds), np.float32)
    for g in range(Hkv):
        direction = q[0, g * G:(g + 1) * G].sum(0).reshape(M, ds)
        cent[g, :, 1] = direction / np.linalg.norm(direction) * 2.0
        cent[g, :, 0] = -cent[g, :, 1] * 0.01
    codes = cupy.zeros((B, Hkv, N, M), np.uint8)
    # the very end of every row (past 2^31 code bytes in the last rows) is planted too
    planted = np.sort(np.stack([np.concatenate([
        rng.choice(np.arange(S, N - W - 4), size=K - 4, replace=False),
        np.arange(N - W - 4, N - W)]) for _ in range(Hkv)]), axis=1)
    for g in range(Hkv):
        codes[0, g, cupy.asarray(planted[g])] = 1
    lens = cupy.asarray([N], np.int32)
    sel = cupysel.select(cupy.asarray(q), cupy.asarray(cent), codes, lens, sink=S, window=W, k=K)
    idx = sel.indices.get()
    for g in range(Hkv):
        np.testing.assert_array_equal(idx[0, g, :S], np.arange(S))
        np.testing.assert_array_equal(idx[0, g, S:S + K], planted[g])
        np.testing.assert_array_equal(idx[0, g, S + K:], np.arange(N - W, N))
    # weights in closed form: two score values per head
    w = sel.weights.get()
    scale = 1.0 / np.sqrt(D)
    for g in range(Hkv):
        cg = cent[g].astype(np.float64)
        heads = q[0, g * G:(g + 1) * G].astype(np.float64).reshape(G, M, ds)
        s1 = scale * np.einsum("hmd,md->h", heads, cg[:, 1])
        s0 = scale * np.einsum("hmd,md->h", heads, cg[:, 0])
        lse = np.logaddexp(np.log(K) + s1, np.log(N - K) + s0)
        np.testing.assert_allclose(w[0, g, S:S + K], np.exp(s1 - lse).mean(), rtol=1e-4)
        np.testing.assert_allclose(w[0, g, :S], np.exp(s0 - lse).mean(), rtol=1e-4, atol=1e-9)
