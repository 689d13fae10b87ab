"""``cupysel bench``: GPU time of the SPEC's benchmark shapes, its stages and its peers.

Per shape and mode: GPU time of one selection (CUDA events around graph replays of a
plan, so launch gaps from Python are not counted; median, p10, p90 over --repeat
calls, rotating over enough input sets that the codes do not sit in L2), the GPU time
of each stage the plan launches (one graph per stage; the cooperative path is one
stage, "coop"), host time of an eager plan call,
call+sync latency of ``select()`` and of a plan, replay+sync latency of a graph,
bytes of codes read, GB/s, and the read floor (code bytes over the device-to-device
copy bandwidth measured in the same run). With torch importable: a plain PyTorch
pipeline of the same step (checked against the reference) and ``torch.topk`` alone on
precomputed float32 scores, and cupysel's speedup over each.
"""

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

LLAMA = dict(q_heads=32, kv_heads=8, head_dim=128)
QWEN = dict(q_heads=28, kv_heads=4, head_dim=128)

SHAPES = {
    "pqcache-8k": dict(LLAMA, batch=1, capacity=8192, subspaces=2, n_centroids=64,
                       sink=32, k=410, window=410),
    "llama-32k": dict(LLAMA, batch=1, capacity=32768, subspaces=16, n_centroids=256,
                      sink=32, k=2048, window=64),
    "llama-128k": dict(LLAMA, batch=1, capacity=131072, subspaces=16, n_centroids=256,
                       sink=32, k=2048, window=64),
    "batch16-32k": dict(LLAMA, batch=16, capacity=32768, subspaces=16, n_centroids=256,
                        sink=32, k=2048, window=64),
    "batch16-128k": dict(LLAMA, batch=16, capacity=131072, subspaces=16, n_centroids=256,
                         sink=32, k=2048, window=64),
    "qwen-ragged": dict(QWEN, batch=16, capacity=131072, subspaces=16, n_centroids=256,
                        sink=32, k=2048, window=64, ragged=True),
}
MODES = ("softmax_sum", "max", "mean")
STAGES = ("score", "topk", "weights", "coop")  # as cupysel.plan.STAGES (a test checks)


class NoGPU(RuntimeError):
    """Raised when no CUDA GPU is usable; the CLI prints one line and exits 1."""


def require_gpu():
    try:
        import cupy
    except Exception as e:
        raise NoGPU("cupysel bench needs a CUDA GPU and CuPy (import cupy failed: %s)" % e)
    try:
        ok = cupy.is_available()
    except Exception:
        ok = False
    if not ok:
        raise NoGPU("cupysel bench needs a CUDA GPU: none is visible to CuPy "
                    "(cupy.is_available() is False)")


@dataclass
class Row:
    shape: str
    mode: str
    dtype: str
    gpu_us: float = math.nan
    gpu_p10_us: float = math.nan
    gpu_p90_us: float = math.nan
    stage_us: dict = field(default_factory=dict)
    host_us: float = math.nan
    select_sync_us: float = math.nan
    plan_sync_us: float = math.nan
    replay_sync_us: float = math.nan
    torch_io_sync_us: float = math.nan
    code_mb: float = math.nan
    gbps: float = math.nan
    floor_us: float = math.nan
    pct_floor: float = math.nan
    torch_pipeline_us: float = math.nan
    torch_topk_us: float = math.nan
    speedup_pipeline: float = math.nan
    speedup_topk: float = math.nan
    check: str = "-"
    path: str = "-"


def seq_lens_for(shape, rng):
    cfg = SHAPES[shape]
    if cfg.get("ragged"):
        return rng.integers(8192, cfg["capacity"] + 1, cfg["batch"]).astype(np.int32)
    return np.full(cfg["batch"], cfg["capacity"], np.int32)


def make_inputs(shape, dtype, seed):
    """One input set on the GPU: standard normal q / centroids, uniform codes."""
    import cupy

    cfg = SHAPES[shape]
    rng = np.random.default_rng(seed)
    B, Hq, Hkv, D = cfg["batch"], cfg["q_heads"], cfg["kv_heads"], cfg["head_dim"]
    M, C, N = cfg["subspaces"], cfg["n_centroids"], cfg["capacity"]
    g = cupy.random.default_rng(seed)
    q = g.standard_normal((B, Hq, D), dtype=np.float32)
    cent = g.standard_normal((Hkv, M, C, D // M), dtype=np.float32)
    codes = g.integers(0, C, (B, Hkv, N, M), dtype=np.uint8)
    lens = cupy.asarray(seq_lens_for(shape, rng))
    return _cast(q, dtype), _cast(cent, dtype), codes, lens


def _cast(x, dtype):
    import cupy

    if dtype == "bfloat16":
        bits = x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)  # round to nearest even
        return (bits >> 16).astype(np.uint16).view(_bf16())
    return x.astype(dtype)


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def plan_for(shape, mode, topk="radix", path="auto"):
    import cupysel

    cfg = {k: v for k, v in SHAPES[shape].items() if k != "ragged"}
    plan = cupysel.Selector(**cfg, group_reduce=mode)
    plan._core.topk = topk  # "radix" or "bitonic": the staged path's top-K finish
    plan._core.path = path  # "auto", "coop" or "staged"
    return plan


def copy_bandwidth():
    """Device-to-device copy bandwidth in bytes/s (read + write), median of 20."""
    import cupy

    n = 1 << 30
    a = cupy.empty(n, np.uint8)
    b = cupy.empty(n, np.uint8)
    a.fill(1)
    ts = []
    for _ in range(22):
        e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
        e0.record()
        b.data.copy_from_device(a.data, n)
        e1.record()
        e1.synchronize()
        ts.append(cupy.cuda.get_elapsed_time(e0, e1) * 1e-3)
    del a, b
    return 2 * n / float(np.median(ts[2:]))


def _pcts(ts):
    ts = np.asarray(ts)
    return float(np.median(ts)), float(np.percentile(ts, 10)), float(np.percentile(ts, 90))


def bench_shape(shape, mode, dtype, repeat, bw, check, with_torch, progress, topk="radix",
                path="auto"):
    import cupy

    import cupysel
    from cupysel import reference

    cfg = SHAPES[shape]
    row = Row(shape, mode, dtype)
    probe = make_inputs(shape, dtype, 0)
    code_bytes = int(cupy.asnumpy(probe[3]).astype(np.int64).sum()) * cfg["kv_heads"] * cfg["subspaces"]
    n_sets = int(min(32, max(1, math.ceil(150e6 / max(probe[2].nbytes, 1)))))
    sets = [probe] + [make_inputs(shape, dtype, s) for s in range(1, n_sets)]
    plan = plan_for(shape, mode, topk, path)
    kw = dict(sink=cfg["sink"], window=cfg["window"], k=cfg["k"], group_reduce=mode)
    stream = cupy.cuda.Stream(non_blocking=True)

    if check:
        progress("%s/%s: checking against the reference" % (shape, mode))
        sel = cupysel.select(*probe, **kw, stream=stream)
        stream.synchronize()
        host = [cupy.asnumpy(x) for x in probe]
        ref = reference.select(*host, **kw)
        errs = reference.verify(sel, ref, sink=cfg["sink"], window=cfg["window"], k=cfg["k"])
        row.check = "ok" if not errs else "FAIL: " + errs[0]
        if errs:
            return row

    progress("%s/%s: timing" % (shape, mode))
    with stream:
        graphs = []
        for s in sets:
            graphs.append(plan.capture(*s, stream=stream))
        # GPU time per selection: events around single replays, inputs rotating.
        ev = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(repeat)]
        for i in range(10):
            graphs[i % len(graphs)].replay(stream)
        for i in range(repeat):
            ev[i][0].record(stream)
            graphs[i % len(graphs)].replay(stream)
            ev[i][1].record(stream)
        stream.synchronize()
        ts = [cupy.cuda.get_elapsed_time(a, b) * 1e3 for a, b in ev]
        row.gpu_us, row.gpu_p10_us, row.gpu_p90_us = _pcts(ts)

        # Stage times: a graph with events captured between the stages.
        row.stage_us = stage_times(plan, sets, stream, min(repeat, 100))

        # Host time of an eager plan call, and call+sync latencies.
        hs, ps, ss, rs = [], [], [], []
        for i in range(max(repeat // 2, 20)):
            s = sets[i % len(sets)]
            stream.synchronize()
            t0 = time.perf_counter()
            plan(*s, stream=stream)
            t1 = time.perf_counter()
            stream.synchronize()
            t2 = time.perf_counter()
            hs.append((t1 - t0) * 1e6)
            ps.append((t2 - t0) * 1e6)
            t0 = time.perf_counter()
            cupysel.select(*s, **kw, stream=stream)
            stream.synchronize()
            ss.append((time.perf_counter() - t0) * 1e6)
            t0 = time.perf_counter()
            graphs[i % len(graphs)].replay(stream)
            stream.synchronize()
            rs.append((time.perf_counter() - t0) * 1e6)
        row.host_us = float(np.median(hs[2:]))
        row.plan_sync_us = float(np.median(ps[2:]))
        row.select_sync_us = float(np.median(ss[2:]))
        row.replay_sync_us = float(np.median(rs[2:]))

    geo = plan._core.geometry(probe[0].device.id)
    # coop/CL (per-head scores on chip) or coop/CLk (one key a token)
    row.path = "coop/%d%s" % (geo.coop, "k" if geo.coop_keys else "") if geo.coop else "staged"
    row.code_mb = code_bytes / 1e6
    row.gbps = code_bytes / (row.gpu_us * 1e-6) / 1e9
    row.floor_us = code_bytes / bw * 1e6
    row.pct_floor = 100.0 * row.floor_us / row.gpu_us
    if with_torch:
        torch_peers(row, plan, probe, cfg, mode, repeat, progress)
    del graphs, sets
    return row


def stage_times(plan, sets, stream, repeat):
    """GPU time of each stage: one graph per stage, events around its replays."""
    import cupy

    arrays = list(sets[0])
    dev = arrays[0].device.id
    core = plan._core
    prog = core.program(dev, core.kernel_set(dev, *arrays))
    stages = [st for st in STAGES if any(s == st for s, _ in prog)]  # those it launches
    graphs = []
    for st in stages:
        cap = cupy.cuda.Stream(non_blocking=True)
        cap.begin_capture()
        plan._core.enqueue(dev, arrays, plan._buffers[dev], cap, stages=(st,))
        graphs.append(cap.end_capture())
    acc = {st: [] for st in stages}
    for i in range(repeat + 5):
        for st, g in zip(stages, graphs):
            e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
            e0.record(stream)
            g.launch(stream)
            e1.record(stream)
            e1.synchronize()
            if i >= 5:
                acc[st].append(cupy.cuda.get_elapsed_time(e0, e1) * 1e3)
    return {st: float(np.median(v)) for st, v in acc.items()}


def torch_peers(row, plan, probe, cfg, mode, repeat, progress):
    try:
        import torch
    except Exception:
        return
    import cupy

    from cupysel import reference

    progress("%s/%s: torch peers" % (row.shape, mode))
    q, cent, codes, lens = (torch.from_dlpack(x) for x in probe)
    S, K, W = cfg["sink"], cfg["k"], cfg["window"]
    scale = 1.0 / math.sqrt(cfg["head_dim"])
    fn = lambda: torch_pipeline(q, cent, codes, lens, S, K, W, mode, scale)  # noqa: E731
    out = fn()
    torch.cuda.synchronize()
    host = [cupy.asnumpy(x) for x in probe]
    ref = reference.select(*host, sink=S, window=W, k=K, group_reduce=mode) if row.check == "ok" \
        else None
    if ref is not None:
        class _R:  # verify() takes anything with the three attributes
            indices, counts, weights = (o.cpu().numpy() for o in out)
        errs = reference.verify(_R, ref, sink=S, window=W, k=K)
        if errs:
            row.check += "; torch pipeline differs: " + errs[0]
    row.torch_pipeline_us = _torch_time(fn, max(10, repeat // 10))
    # torch in, torch out: tensors through DLPack on torch's stream, to_torch(), sync
    ts = []
    tstream = torch.cuda.current_stream()
    for i in range(max(20, repeat // 5)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = plan(q, cent, codes, lens, stream=tstream).to_torch()
        tstream.synchronize()
        ts.append((time.perf_counter() - t0) * 1e6)
    row.torch_io_sync_us = float(np.median(ts[2:]))
    del out
    Hkv, N = cfg["kv_heads"], cfg["capacity"]
    scores = torch.randn(cfg["batch"] * Hkv, N, device=q.device)
    row.torch_topk_us = _torch_time(lambda: torch.topk(scores, K, dim=-1), repeat)
    row.speedup_pipeline = row.torch_pipeline_us / row.gpu_us
    row.speedup_topk = row.torch_topk_us / row.gpu_us


def _torch_time(fn, repeat):
    import torch

    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    return float(np.median(ts))


def torch_pipeline(q, cent, codes, lens, S, K, W, mode, scale):
    """The same step in plain PyTorch: einsum LUT, gather, softmax/max/mean, topk, sort, cat.

    Long rows only (every L > S + K + W), as in the benchmark shapes.
    """
    import torch

    B, Hq, D = q.shape
    _, Hkv, N, M = codes.shape
    G, ds = Hq // Hkv, D // M
    qf = q.float().view(B, Hkv, G, M, ds)
    lut = torch.einsum("bgjmd,gmcd->bgjmc", qf, cent.float()) * scale      # [B,Hkv,G,M,C]
    idx = codes.long()
    s = torch.zeros(B, Hkv, G, N, device=q.device)
    for m in range(M):
        s += torch.gather(lut[:, :, :, m, :], 3,
                          idx[:, :, None, :, m].expand(B, Hkv, G, N))
    pos = torch.arange(N, device=q.device)
    L = lens.long()[:, None, None, None]
    s = s.masked_fill(pos >= L, float("-inf"))
    p = torch.softmax(s, dim=-1)
    if mode == "softmax_sum":
        r = p.sum(2)
    elif mode == "max":
        r = s.max(2).values
    else:
        r = s.mean(2)
    Lr = lens.long()[:, None, None]
    cand = (pos >= S) & (pos < Lr - W)
    heavy = torch.topk(r.masked_fill(~cand, float("-inf")), K, dim=-1).indices
    heavy = torch.sort(heavy, dim=-1).values
    sink = pos[:S].expand(B, Hkv, S)
    win = (Lr - W + pos[:W]).expand(B, Hkv, W)
    indices = torch.cat([sink, heavy, win], dim=-1)
    weights = torch.gather(p.mean(2), 2, indices)
    counts = torch.full((B, Hkv), S + K + W, device=q.device, dtype=torch.int32)
    return indices.int(), counts, weights


def header():
    import cupy

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    # CUPYSEL_COMMIT first: a copy of the tree (a device machine's) may carry a stale .git.
    commit = os.environ.get("CUPYSEL_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5).stdout.strip()
        except Exception:
            commit = ""
    commit = commit or "unknown"
    try:
        from cupy.cuda import nvrtc

        nv = "%d.%d" % nvrtc.getVersion()
    except Exception:
        nv = "?"
    drv = cupy.cuda.runtime.driverGetVersion()
    return {
        "gpu": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "sms": props["multiProcessorCount"],
        "driver_cuda": "%d.%d" % (drv // 1000, (drv % 1000) // 10),
        "runtime": "%d.%d" % divmod(cupy.cuda.runtime.runtimeGetVersion() // 10, 100),
        "cupy": cupy.__version__, "nvrtc": nv, "commit": commit,
    }


def run(shapes, modes, dtype, repeat, check, progress=lambda s: None, with_torch=True,
        topk="radix", path="auto"):
    require_gpu()
    head = header()
    progress("measuring copy bandwidth")
    bw = copy_bandwidth()
    head["copy_GBps"] = round(bw / 1e9, 1)
    head["topk"] = topk
    head["path"] = path
    rows = []
    for shape in shapes:
        for mode in modes:
            rows.append(bench_shape(shape, mode, dtype, repeat, bw, check, with_torch, progress,
                                    topk, path))
    return head, rows


COLUMNS = [("shape", "%-13s"), ("mode", "%-11s"), ("path", "%-9s"), ("gpu_us", "%8.1f"), ("gpu_p10_us", "%7.1f"),
           ("gpu_p90_us", "%7.1f"), ("floor_us", "%7.1f"), ("pct_floor", "%6.1f"),
           ("gbps", "%7.0f"), ("host_us", "%7.1f"), ("plan_sync_us", "%8.1f"),
           ("select_sync_us", "%8.1f"), ("replay_sync_us", "%8.1f"), ("torch_io_sync_us", "%8.1f"),
           ("torch_pipeline_us", "%9.1f"), ("torch_topk_us", "%8.1f"),
           ("speedup_pipeline", "%7.1f"), ("speedup_topk", "%6.2f"), ("check", "%s")]
SHORT = {"gpu_p10_us": "p10", "gpu_p90_us": "p90", "floor_us": "floor", "pct_floor": "%floor",
         "gbps": "GB/s", "host_us": "host", "plan_sync_us": "plan+sync",
         "select_sync_us": "sel+sync", "replay_sync_us": "replay+sync",
         "torch_io_sync_us": "torch_io+sync",
         "torch_pipeline_us": "torch_pipe", "torch_topk_us": "topk", "speedup_pipeline": "x_pipe",
         "speedup_topk": "x_topk", "gpu_us": "gpu_us"}


def format_table(head, rows):
    lines = ["# " + ", ".join("%s=%s" % kv for kv in head.items()),
             "# times in us (GPU time: median of graph replays; p10/p90; floor = code bytes / copy "
             "bandwidth); stages: " + "/".join(STAGES)]
    names = [SHORT.get(c, c) for c, _ in COLUMNS] + ["stages"]
    lines.append(" | ".join(names))
    for r in rows:
        d = asdict(r)
        cells = []
        for c, f in COLUMNS:
            v = d[c]
            cells.append(f % v if not (isinstance(v, float) and math.isnan(v)) else "-")
        cells.append("/".join("%.1f" % r.stage_us[s] if s in r.stage_us else "-" for s in STAGES))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def format_csv(head, rows):
    cols = [c for c, _ in COLUMNS] + ["stage_" + s for s in STAGES]
    out = [",".join(cols)]
    for r in rows:
        d = asdict(r)
        vals = [str(d[c]) for c, _ in COLUMNS] + [str(r.stage_us.get(s, "")) for s in STAGES]
        out.append(",".join('"%s"' % v if "," in v else v for v in vals))
    return "\n".join(out)


def format_json(head, rows):
    return json.dumps({"header": head, "rows": [asdict(r) for r in rows]}, indent=2)


def plot(head, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5.5))
    labels = ["%s %s" % (r.shape, r.mode) for r in rows]
    x = np.arange(len(rows))
    series = [("cupysel", "gpu_us"), ("read floor", "floor_us"),
              ("torch pipeline", "torch_pipeline_us"), ("torch.topk alone", "torch_topk_us")]
    w = 0.2
    for i, (name, attr) in enumerate(series):
        ax.bar(x + (i - 1.5) * w, [getattr(r, attr) for r in rows], w, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("GPU time per call (us)")
    ax.set_xticks(x)
    # Slanted, so that 18 labels of up to 24 characters do not run into each other.
    ax.set_xticklabels(labels, fontsize=7, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_title("cupysel bench on %s (commit %s)" % (head["gpu"], head["commit"]))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def progress_line(msg):
    sys.stderr.write("\r\033[K[cupysel bench] %s" % msg)
    sys.stderr.flush()
