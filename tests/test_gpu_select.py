"""select() and Selector against the float64 reference, under the SPEC's rule."""

import numpy as np
import pytest

import cupysel
from cupysel import reference

from .inputs import host_inputs, poison, to_device

pytestmark = pytest.mark.gpu

DTYPES = ("float16", "bfloat16", "float32")
MODES = ("softmax_sum", "max", "mean")
N_RANDOM = 240
# The reference costs about rows * N * G * M gathers in NumPy: keep each case cheap.
WORK_BUDGET = 4e7


def random_case(i):
    """Case i of the random sweep: sizes, parameters, dtypes and value shapes."""
    rng = np.random.default_rng(1000 + i)
    G = int(rng.choice([1, 4, 7]))
    Hkv = int(rng.integers(1, 9))
    D = int(rng.choice([64, 128, 256]))
    M = int(rng.choice([m for m in (1, 2, 4, 8, 16, 32) if D % m == 0]))
    C = int(rng.integers(2, 257)) if rng.random() < 0.8 else int(rng.choice([2, 3, 4]))
    B = int(rng.integers(1, 17))
    logn = rng.uniform(0, 18)
    N = max(1, int(2 ** logn))
    while B * Hkv * N * G * M > WORK_BUDGET and N > 1:
        if B > 1 and rng.random() < 0.5:
            B = max(1, B // 2)
        else:
            N = max(1, N // 2)
    S = int(rng.choice([0, 0, 1, 4, 32, int(rng.integers(0, 100))]))
    W = int(rng.choice([0, 0, 1, 16, 64, int(rng.integers(0, 200))]))
    K = int(rng.choice([0, 1, 7, 64, 410, 2048, int(rng.integers(0, max(2, N)))]))
    mode = MODES[i % 3]
    dtype = DTYPES[(i // 3) % 3]
    c_dtype = dtype if rng.random() < 0.7 else str(rng.choice(DTYPES))
    lens_kind = rng.choice(["full", "ragged", "short"])
    if lens_kind == "full":
        lens = np.full(B, N)
    elif lens_kind == "ragged":
        lens = rng.integers(0, N + 1, B)
    else:
        lens = np.minimum(N, rng.integers(0, S + K + W + 2, B))
    return dict(batch=B, q_heads=G * Hkv, kv_heads=Hkv, head_dim=D, subspaces=M,
                n_centroids=C, capacity=N, sink=S, window=W, k=K, group_reduce=mode,
                dtype=dtype, c_dtype=c_dtype, seq_lens=lens,
                len_dtype=str(rng.choice(["int32", "int64"])),
                per_sequence_centroids=bool(rng.random() < 0.25),
                scale=None if rng.random() < 0.8 else float(rng.uniform(0.01, 1.0)),
                seed=int(rng.integers(1 << 30)))


def split_case(case):
    sizes = {k: case[k] for k in ("batch", "q_heads", "kv_heads", "head_dim", "subspaces",
                                   "n_centroids", "capacity", "per_sequence_centroids")}
    params = {k: case[k] for k in ("sink", "window", "k", "group_reduce", "scale")}
    return sizes, params


def run_case(case, path="auto", topk="radix", **core):
    """Case against the reference, then a second run bit-identical. core: plan knobs
    (coop_ctas, coop_keys) set before the first call builds anything; returns the plan."""
    sizes, params = split_case(case)
    rng = np.random.default_rng(case["seed"])
    host = host_inputs(rng, **sizes, seq_lens=case["seq_lens"], dtype=case["dtype"],
                       c_dtype=case["c_dtype"], len_dtype=case["len_dtype"])
    dev = to_device(*host)
    plan = cupysel.Selector(**sizes, **params)
    plan._core.path, plan._core.topk = path, topk  # before the first call builds anything
    for name, value in core.items():
        setattr(plan._core, name, value)
    sel = plan(*dev)  # first call allocates the plan's buffers
    poison(sel)
    sel = plan(*dev)
    first = [x.copy() for x in sel]
    ref = reference.select(*host, **params)
    errors = reference.verify(sel, ref, sink=case["sink"], window=case["window"], k=case["k"])
    assert not errors, "case %s:\n%s" % ({k: v for k, v in case.items() if k != "seq_lens"},
                                          "\n".join(errors))
    poison(sel)
    sel = plan(*dev)
    for a, b in zip(first, sel):
        assert a.dtype == b.dtype
        assert bool((a.view(np.int32) == b.view(np.int32)).all()), "second run differs"
    return plan


@pytest.mark.parametrize("i", range(N_RANDOM))
def test_random_case(i):
    run_case(random_case(i))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_select_function(mode, dtype):
    """select() (fresh outputs each call) on a ragged batch, memory pool pre-poisoned."""
    import cupy

    rng = np.random.default_rng(7)
    sizes = dict(batch=3, q_heads=8, kv_heads=2, head_dim=64, subspaces=8, n_centroids=32,
                 capacity=3000)
    host = host_inputs(rng, **sizes, seq_lens=[3000, 1500, 40], dtype=dtype)
    dev = to_device(*host)
    junk = cupy.full(64 << 20, 0xFF, np.uint8)  # freed blocks come back full of 0xFF
    del junk
    sel = cupysel.select(*dev, sink=4, window=16, k=100, group_reduce=mode)
    ref = reference.select(*host, sink=4, window=16, k=100, group_reduce=mode)
    assert not reference.verify(sel, ref, sink=4, window=16, k=100)


def test_all_equal_scores_take_smallest_positions():
    """C = 1: every score ties, so heavy must be exactly the first K candidates."""
    rng = np.random.default_rng(3)
    sizes = dict(batch=2, q_heads=8, kv_heads=2, head_dim=64, subspaces=4, n_centroids=1,
                 capacity=5000)
    host = host_inputs(rng, **sizes, seq_lens=[5000, 4321])
    for mode in MODES:
        sel = cupysel.select(*to_device(*host), sink=3, window=5, k=700, group_reduce=mode)
        ref = reference.select(*host, sink=3, window=5, k=700, group_reduce=mode)
        np.testing.assert_array_equal(sel.indices.get(), ref.indices)
        assert not reference.verify(sel, ref, sink=3, window=5, k=700)


def test_many_ties_take_the_radix_path():
    """Few distinct scores and a large K: the tie bin exceeds the bitonic capacity."""
    rng = np.random.default_rng(5)
    sizes = dict(batch=1, q_heads=4, kv_heads=1, head_dim=16, subspaces=1, n_centroids=3,
                 capacity=60000)
    host = host_inputs(rng, **sizes, seq_lens=[60000])
    for mode in MODES:
        sel = cupysel.select(*to_device(*host), sink=2, window=2, k=25000, group_reduce=mode)
        ref = reference.select(*host, sink=2, window=2, k=25000, group_reduce=mode)
        np.testing.assert_array_equal(sel.indices.get(), ref.indices)
        assert not reference.verify(sel, ref, sink=2, window=2, k=25000)


@pytest.mark.parametrize("i", range(0, N_RANDOM, 2))
def test_random_case_staged(i):
    """The same cases on the staged path (score, top-K and weights kernels)."""
    run_case(random_case(i), path="staged")


PARTITION_CASES = {
    # 320 rows, more than the 264 score blocks an H100 holds: one block a row.
    "rows_beyond_slots": dict(batch=40, q_heads=8, kv_heads=8, capacity=700,
                              seq_lens=np.random.default_rng(11).integers(0, 701, 40)),
    # Two long rows among empty and tiny ones: each long row takes ~60 blocks.
    "skewed": dict(batch=12, q_heads=8, kv_heads=2, capacity=40000,
                   seq_lens=[40000, 0, 0, 1, 0, 0, 0, 0, 0, 0, 33, 39999]),
    # 320 rows of one length (no search: one block a row), and rows all empty.
    "equal_beyond_slots": dict(batch=40, q_heads=8, kv_heads=8, capacity=700,
                               seq_lens=[700] * 40),
    "all_empty": dict(batch=3, q_heads=8, kv_heads=2, capacity=5000, seq_lens=[0, 0, 0]),
    # 100 rows, fewer than the SMs: one score block an SM, so each row of one length has
    # a single block (its statistics and histogram stay on chip), and of uneven lengths
    # some rows have one block and some two.
    "one_block_a_row": dict(batch=25, q_heads=8, kv_heads=4, capacity=3000,
                            seq_lens=[3000] * 25),
    "one_or_two_blocks_a_row": dict(batch=25, q_heads=8, kv_heads=4, capacity=3000,
                                    seq_lens=np.random.default_rng(12).integers(1200, 3001, 25)),
    # Every row empty but one of 31 tokens (shorter than one block).
    "nearly_empty": dict(batch=5, q_heads=4, kv_heads=4, capacity=9000,
                         seq_lens=[0, 0, 31, 0, 0]),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(PARTITION_CASES))
def test_score_partition_extremes(name, mode):
    """The score kernel cuts the rows into blocks from the lengths on the device: rows
    beyond the resident blocks, very uneven rows and empty rows, against the reference
    (and a second run bit-identical)."""
    case = dict(head_dim=64, subspaces=8, n_centroids=32, sink=4, window=8, k=64,
                group_reduce=mode, dtype="float16", c_dtype="float16", len_dtype="int32",
                per_sequence_centroids=False, scale=None, seed=5)
    case.update(PARTITION_CASES[name])
    run_case(case, path="staged")


def keys_knobs(case, sm_count=132, smem_per_block=227 * 1024):
    """Plan knobs that put a case on the cooperative path with one key a token (one CTA
    a row for softmax_sum, two for max / mean where the rows allow), or None where that
    layout does not apply (an H100's SMs and shared memory)."""
    from cupysel import plan, validate

    sizes, params = split_case(case)
    cfg = validate.make_config(**sizes, **params)
    ctas = 1 if case["group_reduce"] == "softmax_sum" or cfg.rows * 2 > sm_count else 2
    cl, _, keys = plan.coop_geometry(cfg, sm_count, smem_per_block, ctas=ctas, keys=True)
    return (dict(coop_ctas=ctas, coop_keys=True), cl) if cl and keys else None


KEYS_CASES = [i for i in range(N_RANDOM) if keys_knobs(random_case(i))][:90]


@pytest.mark.parametrize("i", KEYS_CASES)
def test_random_case_coop_keys(i):
    """The random cases on the cooperative path keeping one key a token (per-head scores
    scored again from the table for the weights, or above softmax_sum's filter cut)."""
    case = random_case(i)
    knobs, cl = keys_knobs(case)
    plan = run_case(case, path="coop", **knobs)
    geo = plan._core.geometry(0)
    assert geo.coop_keys and geo.coop == cl, "the keys layout ran"


@pytest.mark.parametrize("mode", MODES)
def test_rows_of_one_cta_with_one_key_a_token(mode):
    """batch16-32k's keys layout at a testable size: one CTA a row of 32768 tokens (whose
    per-head scores would not fit), a ragged batch, the bench's S / K / W."""
    case = dict(batch=2, q_heads=32, kv_heads=8, head_dim=128, subspaces=16, n_centroids=256,
                capacity=32768, seq_lens=[32768, 20001], sink=32, window=64, k=2048,
                group_reduce=mode, dtype="float16", c_dtype="float16", len_dtype="int32",
                per_sequence_centroids=False, scale=None, seed=21)
    plan = run_case(case, coop_ctas=1, coop_keys=True)
    geo = plan._core.geometry(0)
    assert (geo.coop, geo.chunk, geo.coop_keys) == (1, 32768, True)


@pytest.mark.parametrize("mode", MODES)
def test_coop_keys_with_ties(mode):
    """One key a token where the K-th key's bin is crowded (three centroids: the
    crowded-bin levels) and where every score ties (one centroid: the first K
    candidates), against the reference."""
    for c, n, k in ((3, 40000, 20000), (1, 30000, 700)):
        case = dict(batch=1, q_heads=4, kv_heads=1, head_dim=16, subspaces=1, n_centroids=c,
                    capacity=n, seq_lens=[n], sink=2, window=3, k=k, group_reduce=mode,
                    dtype="float16", c_dtype="float16", len_dtype="int32",
                    per_sequence_centroids=False, scale=None, seed=c)
        plan = run_case(case, path="coop", coop_ctas=1, coop_keys=True)
        assert plan._core.geometry(0).coop_keys


@pytest.mark.parametrize("i", range(1, N_RANDOM, 6))
def test_random_case_staged_bitonic(i):
    """The staged path with the top-K finished by the bitonic sort where the bin is small."""
    run_case(random_case(i), path="staged", topk="bitonic")


def test_plans_of_growing_size_share_kernels():
    """A second plan with the same kernels but a larger shared-memory need (regression:
    the kernel's shared-memory limit was set once, for the first plan's size)."""
    for n in (4096, 65536, 131072):
        rng = np.random.default_rng(n)
        sizes = dict(batch=1, q_heads=8, kv_heads=2, head_dim=128, subspaces=16,
                     n_centroids=256, capacity=n)
        host = host_inputs(rng, **sizes, seq_lens=[n])
        sel = cupysel.select(*to_device(*host), sink=4, window=8, k=300)
        ref = reference.select(*host, sink=4, window=8, k=300)
        assert not reference.verify(sel, ref, sink=4, window=8, k=300)


def test_plans_sharing_a_function_never_lower_its_limit():
    """Regression (found by the fuzzer): plan B, whose kernel set differs from plan A's
    only in a field its kernels ignore (the staged top-K finish), loads the same
    CUfunction; B's smaller shared-memory need must not lower the limit A relies on."""
    sizes = dict(batch=1, q_heads=4, kv_heads=1, head_dim=64, subspaces=2, n_centroids=256)
    rng = np.random.default_rng(21)
    plans = []
    for n, topk in ((1700, "radix"), (600, "bitonic")):
        plan = cupysel.Selector(**sizes, capacity=n, sink=3, window=2, k=50)
        plan._core.topk = topk
        host = host_inputs(rng, **sizes, capacity=n, seq_lens=[n])
        plans.append((plan, host))
        sel = plan(*to_device(*host))
        assert not reference.verify(sel, reference.select(*host, sink=3, window=2, k=50),
                                    sink=3, window=2, k=50)
    plan, host = plans[0]
    sel = plan(*to_device(*host))  # plan A again, after plan B set the limit
    assert not reference.verify(sel, reference.select(*host, sink=3, window=2, k=50),
                                sink=3, window=2, k=50)


@pytest.mark.parametrize("wsplit", [1, 2])
def test_weights_blocks_of_several_rounds(wsplit):
    """max / mean weights blocks that take more entries than one round of their threads
    (the plan never asks for it: forced here so the loop stays exercised)."""
    import dataclasses

    import kernels_cu as kc

    rng = np.random.default_rng(31 + wsplit)
    sizes = dict(batch=2, q_heads=8, kv_heads=2, head_dim=64, subspaces=8, n_centroids=64,
                 capacity=20000)
    host = host_inputs(rng, **sizes, seq_lens=[20000, 15000])
    dev = to_device(*host)
    kw = dict(sink=5, window=40, k=9000)
    total = 9045
    assert -(-total // wsplit) > kc.NT_WEIGHTS * kc.WEIGHTS_PER_THREAD
    for mode in ("max", "mean"):
        plan = cupysel.Selector(**sizes, **kw, group_reduce=mode)
        plan._core.path = "staged"
        geo = plan._core.geometry(dev[0].device.id)
        plan._core._geo[dev[0].device.id] = dataclasses.replace(
            geo, wsplit=wsplit, wchunk=-(-total // wsplit))
        sel = plan(*dev)
        poison(sel)
        sel = plan(*dev)
        ref = reference.select(*host, **kw, group_reduce=mode)
        assert not reference.verify(sel, ref, **kw)



@pytest.mark.parametrize("i", range(2, N_RANDOM, 24))
def test_programmatic_dependent_launch(i):
    """Staged kernels launched as programmatic dependents (sm_90+; every stage, the top-K
    too, which the plan leaves out by default) give the same bits as ordinary launches,
    eagerly and replayed from a CUDA graph, and pass the reference."""
    import cupy

    case = random_case(i)
    sizes, params = split_case(case)
    rng = np.random.default_rng(case["seed"])
    host = host_inputs(rng, **sizes, seq_lens=case["seq_lens"], dtype=case["dtype"],
                       c_dtype=case["c_dtype"], len_dtype=case["len_dtype"])
    dev = to_device(*host)
    outs = {}
    for pdl in ((), ("score", "topk", "weights")):
        plan = cupysel.Selector(**sizes, **params)
        plan._core.path, plan._core.pdl = "staged", pdl
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            sel = plan(*dev, stream=stream)
            poison(sel)
            sel = plan(*dev, stream=stream)
            eager = [x.copy() for x in sel]
            graph = plan.capture(*dev, stream=stream)
            poison(sel)
            graph.replay(stream)
            stream.synchronize()
        for a, b in zip(eager, sel):
            assert bool((a.view(np.int32) == b.view(np.int32)).all()), "graph replay differs"
        ks = plan._core.kernel_set(dev[0].device.id, *dev)
        prog = plan._core.program(dev[0].device.id, ks)
        if pdl and plan._core.compute_capability(dev[0].device.id) >= 90:
            assert [launch.config is not None for _, launch in prog] == \
                [j > 0 for j in range(len(prog))]
        else:
            assert all(launch.config is None for _, launch in prog)
        outs[pdl] = eager
    errors = reference.verify(sel, reference.select(*host, **params), sink=case["sink"],
                              window=case["window"], k=case["k"])
    assert not errors, "\n".join(errors)
    for a, b in zip(*outs.values()):
        assert bool((a.view(np.int32) == b.view(np.int32)).all()), "programmatic launch differs"


@pytest.mark.parametrize("path,mode,stages", [
    ("auto", "max", ["coop"]),
    ("staged", "softmax_sum", ["score", "topk"]),
    ("staged", "mean", ["score", "topk", "weights"]),
])
def test_bench_times_the_stages_a_plan_launches(path, mode, stages):
    """cupysel bench times one graph per stage the plan launches, and no empty one."""
    import cupy

    from cupysel import bench

    sizes = dict(batch=1, q_heads=8, kv_heads=2, head_dim=64, subspaces=8, n_centroids=64,
                 capacity=5000)
    plan = cupysel.Selector(**sizes, sink=2, window=3, k=100, group_reduce=mode)
    plan._core.path = path
    arrays = to_device(*host_inputs(np.random.default_rng(7), **sizes, seq_lens=[4321]))
    stream = cupy.cuda.Stream(non_blocking=True)
    plan(*arrays, stream=stream)
    stream.synchronize()
    times = bench.stage_times(plan, [arrays], stream, 3)
    assert list(times) == stages
    assert all(t > 0 for t in times.values())
