"""PyTorch hand-off, streams, plans, CUDA graphs, concurrency and devices."""

import threading

import numpy as np
import pytest

import cupysel
from cupysel import reference

from .inputs import host_inputs, poison, to_device

pytestmark = pytest.mark.gpu

SIZES = dict(batch=2, q_heads=8, kv_heads=2, head_dim=64, subspaces=8, n_centroids=64,
             capacity=4000)
PARAMS = dict(sink=4, window=16, k=200)


def check(sel, host, **params):
    kw = {**PARAMS, **params}
    ref = reference.select(*host, **kw)
    errors = reference.verify(sel, ref, sink=kw["sink"], window=kw["window"], k=kw["k"])
    assert not errors, "\n".join(errors)


def torch_or_skip():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


def test_torch_inputs_and_outputs_share_memory():
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    host = host_inputs(rng, **SIZES, seq_lens=[4000, 1234], dtype="bfloat16")
    q, c, codes, lens = (torch.from_dlpack(x) for x in to_device(*host))
    assert q.dtype == torch.bfloat16
    sel = cupysel.select(q, c, codes, lens, **PARAMS)
    check(sel, host)
    t = sel.to_torch()
    assert t.indices.data_ptr() == sel.indices.data.ptr
    assert t.weights.data_ptr() == sel.weights.data.ptr
    assert t.counts.data_ptr() == sel.counts.data.ptr
    np.testing.assert_array_equal(t.indices.cpu().numpy(), sel.indices.get())


def test_cuda_array_interface_inputs():
    import cupy

    rng = np.random.default_rng(1)
    host = host_inputs(rng, **SIZES, seq_lens=[4000, 10])

    class CAI:  # only __cuda_array_interface__, like numba or older libraries
        def __init__(self, a):
            self.__cuda_array_interface__ = a.__cuda_array_interface__
            self._a = a

    dev = [CAI(cupy.asarray(x)) for x in host]
    check(cupysel.select(*dev, **PARAMS), host)


def test_side_stream_without_manual_synchronisation():
    """Inputs written by torch on a side stream, selection queued on that stream."""
    torch = torch_or_skip()
    import cupy

    side = torch.cuda.Stream()
    rng = np.random.default_rng(2)
    shapes = dict(SIZES, capacity=20000)
    q = torch.empty(2, 8, 64, device="cuda", dtype=torch.float16)
    c = torch.empty(2, 8, 64, 8, device="cuda", dtype=torch.float16)
    codes = torch.empty(2, 2, 20000, 8, device="cuda", dtype=torch.uint8)
    lens = torch.empty(2, device="cuda", dtype=torch.int32)
    plan = cupysel.Selector(**shapes, **PARAMS)
    for it in range(20):
        host = host_inputs(rng, **shapes, seq_lens=rng.integers(0, 20001, 2))
        with torch.cuda.stream(side):
            # pinned host -> device copies on the side stream; big enough to take a while
            for dst, src in zip((q, c, codes, lens), host):
                dst.copy_(torch.from_numpy(np.ascontiguousarray(src)).pin_memory(),
                          non_blocking=True)
            sel = plan(q, c, codes, lens, stream=side)
            out = sel.to_torch()
            idx = out.indices.clone()  # on the side stream, after the selection
        side.synchronize()
        check(cupysel.Selection(cupy.asarray(idx), sel.counts, sel.weights), host)


def test_stream_argument_kinds():
    torch = torch_or_skip()
    import cupy

    rng = np.random.default_rng(3)
    host = host_inputs(rng, **SIZES, seq_lens=[3000, 4000])
    dev = to_device(*host)
    ts = torch.cuda.Stream()
    for stream in (cupy.cuda.Stream(non_blocking=True), ts,
                   cupy.cuda.Stream.from_external(ts)):
        sel = cupysel.select(*dev, **PARAMS, stream=stream)
        stream.synchronize()
        check(sel, host)
    with pytest.raises(TypeError, match="stream"):
        cupysel.select(*dev, **PARAMS, stream="default")


def test_plan_reuses_buffers_and_allocates_nothing():
    import cupy

    rng = np.random.default_rng(4)
    plan = cupysel.Selector(**SIZES, **PARAMS)
    host = host_inputs(rng, **SIZES, seq_lens=[4000, 3999])
    dev = to_device(*host)
    sel = plan(*dev)
    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    used = pool.used_bytes()
    for _ in range(5):
        poison(sel)
        again = plan(*dev)
        assert again.indices is sel.indices and again.weights is sel.weights
        check(again, host)
    assert pool.used_bytes() == used


def test_plan_checks_rotating_buffers_once_and_reads_each(monkeypatch):
    """Inputs of one kind in new buffers are checked once (the check reads metadata,
    not pointers) and every call reads its own buffers; a non-contiguous array of the
    same shape is still refused."""
    import cupy

    from cupysel import validate

    calls = []
    real = validate.check_arrays
    monkeypatch.setattr(validate, "check_arrays", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(14)
    plan = cupysel.Selector(**SIZES, **PARAMS)
    hosts = [host_inputs(rng, **SIZES, seq_lens=rng.integers(3000, 4001, 2)) for _ in range(3)]
    devs = [to_device(*h) for h in hosts]
    for _ in range(2):
        for d, h in zip(devs, hosts):
            sel = plan(*d)
            check(sel, h)
            poison(sel)  # an element the next call leaves unwritten shows
    assert len(calls) == 1
    q, c, codes, lens = devs[0]
    wide = cupy.empty((codes.shape[0], codes.shape[1], codes.shape[2], 2 * codes.shape[3]),
                      codes.dtype)
    with pytest.raises(ValueError, match="layout of codes"):
        plan(q, c, wide[..., ::2], lens)


@pytest.mark.parametrize("path", ["auto", "staged"])
def test_graph_replay_reads_current_inputs(path):
    import cupy

    rng = np.random.default_rng(5)
    plan = cupysel.Selector(**SIZES, **PARAMS)
    plan._core.path = path
    host = list(host_inputs(rng, **SIZES, seq_lens=[4000, 2500]))
    dev = to_device(*host)
    graph = plan.capture(*dev)
    for it in range(4):
        new = host_inputs(rng, **SIZES, seq_lens=rng.integers(0, 4001, 2))
        # rewrite codes and seq_lens (and q) in place; the graph must see them
        for d, h in zip(dev, new):
            d.set(h)
        poison(graph.selection)
        sel = graph.replay()
        cupy.cuda.Device().synchronize()
        check(sel, new)


def test_torch_cuda_graph_capture():
    torch = torch_or_skip()
    import cupy

    rng = np.random.default_rng(6)
    plan = cupysel.Selector(**SIZES, **PARAMS)
    host = host_inputs(rng, **SIZES, seq_lens=[4000, 321])
    q, c, codes, lens = (torch.from_dlpack(x) for x in to_device(*host))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        plan(q, c, codes, lens, stream=s)  # warm-up: compile, load, allocate
    s.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        sel = plan(q, c, codes, lens, stream=torch.cuda.current_stream())
    for it in range(3):
        new = host_inputs(rng, **SIZES, seq_lens=rng.integers(0, 4001, 2))
        for d, h in zip((q, c, codes, lens), new):
            d.copy_(torch.from_numpy(np.ascontiguousarray(h)))
        g.replay()
        torch.cuda.synchronize()
        check(cupysel.Selection(sel.indices, sel.counts, sel.weights), new)
    assert isinstance(sel.indices, cupy.ndarray)


def test_two_plans_do_not_share_workspace():
    """Two plans queued on two streams at once, ten calls each with no sync between.
    The inputs are made once and synchronised first: copied on the null stream and freed
    after each call (as this test first did), CuPy's pool could hand one plan's freed
    input to the next copy while the other stream's kernels still read it: a race of the
    test's own, which failed once on an H200 (at 5a904ec, whose change the staged path
    did not run)."""
    rng = np.random.default_rng(7)
    import cupy

    plans = [cupysel.Selector(**SIZES, **PARAMS) for _ in range(2)]
    for p in plans:
        p._core.path = "staged"
    hosts = [host_inputs(rng, **SIZES, seq_lens=[4000, 4000]) for _ in range(2)]
    devs = [to_device(*h) for h in hosts]
    cupy.cuda.Device().synchronize()
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
    for _ in range(11):
        sels = [p(*d, stream=s) for p, d, s in zip(plans, devs, streams)]
    for s in streams:
        s.synchronize()
    for sel, h in zip(sels, hosts):
        check(sel, h)


@pytest.mark.parametrize("path", ["auto", "staged"])
@pytest.mark.parametrize("stream_kind", ["cupy", "legacy", "per-thread"])
def test_select_calls_queued_back_to_back(path, stream_kind, monkeypatch):
    """select() keeps its workspace for the next call on a stream it can hold (a CuPy
    stream, the legacy default stream) and not on the per-thread default stream; calls
    queued with no sync in between each get fresh, correct outputs."""
    import importlib
    from collections import OrderedDict

    import cupy

    from cupysel import plan as plan_mod
    from cupysel.plan import Core

    selmod = importlib.import_module("cupysel.select")
    made = []

    def core_for(cfg):
        made.append(Core(cfg, path=path))
        return made[-1]

    monkeypatch.setattr(selmod, "_core_for", core_for)
    monkeypatch.setattr(selmod, "_checked", OrderedDict())
    stream = {"cupy": cupy.cuda.Stream(non_blocking=True), "legacy": cupy.cuda.Stream.null,
              "per-thread": cupy.cuda.Stream.ptds}[stream_kind]
    rng = np.random.default_rng(11)
    hosts = [host_inputs(rng, **SIZES, seq_lens=rng.integers(3000, 4001, 2)) for _ in range(6)]
    devs = [to_device(*h) for h in hosts]
    cupy.cuda.Device().synchronize()
    sels = [cupysel.select(*d, **PARAMS, stream=stream) for d in devs]
    stream.synchronize()
    assert len(made) == 1
    assert bool(made[0].geometry(0).coop) == (path == "auto")
    kept = [k for k in plan_mod._select_ws if k[0] is made[0]]
    assert len(kept) == (0 if stream_kind == "per-thread" else 1)
    assert len({sel.indices.data.ptr for sel in sels}) == len(sels)
    for sel, h in zip(sels, hosts):
        check(sel, h)


def test_select_on_eight_streams_at_once():
    """Different shapes on 8 streams, queued from 8 threads, all correct."""
    import cupy

    results = {}
    cases = []
    for i in range(8):
        rng = np.random.default_rng(100 + i)
        sizes = dict(batch=1 + i % 3, q_heads=4 * (1 + i % 2), kv_heads=1 + i % 2,
                     head_dim=64, subspaces=[4, 8, 16][i % 3], n_centroids=[16, 64, 256][i % 3],
                     capacity=[3000, 20000, 70000][i % 3])
        sizes["q_heads"] = sizes["kv_heads"] * (1 + i % 4)
        host = host_inputs(rng, **sizes)
        cases.append((sizes, host))

    def work(i):
        sizes, host = cases[i]
        s = cupy.cuda.Stream(non_blocking=True)
        with s:
            dev = to_device(*host)
            out = [cupysel.select(*dev, **PARAMS, stream=s) for _ in range(5)]
        s.synchronize()
        results[i] = out

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (sizes, host) in enumerate(cases):
        for sel in results[i]:
            check(sel, host)


def test_second_device():
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs (this machine has one)")
    rng = np.random.default_rng(8)
    host = host_inputs(rng, **SIZES, seq_lens=[4000, 77])
    with cupy.cuda.Device(1):
        dev = to_device(*host)
        plan = cupysel.Selector(**SIZES, **PARAMS)
        sel = plan(*dev)
        assert sel.indices.device.id == 1
        cupy.cuda.Device(1).synchronize()
    check(sel, host)


def test_arrays_on_another_device_than_the_stream():
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs (this machine has one)")
    rng = np.random.default_rng(9)
    host = host_inputs(rng, **SIZES)
    dev = to_device(*host)
    with cupy.cuda.Device(1):
        s = cupy.cuda.Stream(non_blocking=True)
    with pytest.raises(ValueError, match="device of stream"):
        cupysel.select(*dev, **PARAMS, stream=s)
