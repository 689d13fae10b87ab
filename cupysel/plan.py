"""Plans: launch geometry, buffers, the launch sequence, and CUDA graphs.

``Core`` holds what depends only on the sizes (geometry per device, kernel sets per
input dtypes) and queues the stages on a stream. ``Buffers`` is one set of outputs and
workspace. ``Selector`` is a Core with its own Buffers per device, reused by every
call; ``select()`` gives each call fresh Buffers, so calls never share memory.

The launch sequence, all on one stream with no host read in between:
  score (max/mean: one pass; softmax_sum: a filtered pass, then a rescoring pass over the
  tokens that pass the filter, or a statistics pass then a ranking pass over all)
  -> topk (threshold, then the merge-free index output) -> weights (max/mean only).
"""

import threading
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

import kernels_cu as kc

from . import validate
from .compile import get_function
from .launch import Launch
from .select import Selection

MIN_SPLIT = 512  # tokens a score block takes at least
TSPLIT_LEN = 16384  # measured: 4096 -> 16384 took the top-K stage 74.8 -> 65.8 us (batch16-128k)
MAX_SPLITS = 4096
WEIGHTS_MIN = 256  # entries a weights block takes at least
RESCORE_WARPS = kc.NT_SCORE // 32  # candidate segments a rescore block writes
STAGES = ("score", "topk", "weights", "coop")


@dataclass(frozen=True)
class Geometry:
    slots: int       # score blocks resident at once, which the kernel's partition fills
    nsc: int         # score blocks a row at most (softmax statistics kept per row and head)
    score_grid: int  # score blocks of a table pass (those past the partition return at once)
    tsplit: int      # top-K / index blocks (and candidate segments) per row
    tsplit_len: int  # tokens per top-K block
    save: bool       # softmax_sum keeps per-head scores for its second pass
    score_minb: int  # score blocks resident per SM (register cap of the score kernel)
    coop: int = 0     # > 0: cooperative path, this many CTAs per row ...
    chunk: int = 0    # ... each owning this many positions (a multiple of 32) ...
    coop_keys: bool = False  # ... keeping one key a token on chip, not per-head scores
    wsplit: int = 1   # weights blocks per row (max / mean, staged) ...
    wchunk: int = 0   # ... each taking this many output entries
    filt: bool = False  # softmax_sum filtered: cs_rescore scores only tokens above a cut
    fuse: bool = False  # filt, the rescoring in the first pass's launch (cooperative)


SAVE_LIMIT = 1 << 30  # bytes of saved per-head scores beyond which pass 2 recomputes them


def plan_geometry(cfg, sm_count, smem_per_sm=228 * 1024, path="auto", cooperative=True,
                  smem_per_block=227 * 1024, coop_ctas=None, softmax_filter=True,
                  fuse_rescore=True, coop_keys=False):
    """Score blocks fill the GPU in one wave (as many as fit on the SMs at once, by
    shared memory), their length chosen by the kernel from the lengths; top-K and
    index blocks take TSPLIT_LEN tokens each, many waves, to hide latency. softmax_sum
    saves its per-head scores for the second pass (which then reads 4 bytes a head
    instead of re-scoring) up to SAVE_LIMIT, unless it is filtered (one head tile: the
    second pass scores only the tokens that can be heavy, so nothing is saved).
    Where the cooperative path applies ("auto" or "coop") it is taken instead."""
    n = cfg.capacity
    tiles = kc.head_tiles(cfg.group, cfg.subspaces, cfg.n_centroids)
    gp = kc.padded_heads(tiles[0][1])
    lut = cfg.subspaces * kc.pow2_at_least(cfg.n_centroids) * gp * 4 + kc.HIST_BYTES + 4096
    # One score block an SM where the rows allow one wave of it: two blocks sharing an SM
    # scored its tokens ~15% slower than one alone (phase marks, batch16-32k max: 2.6
    # against 2.25 clk a token), and one finished 11-30 us before the other (perf-notes
    # v27). More rows than SMs keep two an SM, so that one wave still holds them.
    per_sm = 1 if cfg.rows <= sm_count else max(1, min(2, smem_per_sm // lut))
    # The score kernel sizes its blocks from the lengths on the device (cs_score_part):
    # at most `slots` blocks (one a row where even that does not fit), each of at least
    # MIN_SPLIT tokens. Measured against fixed blocks of at most 32768 tokens:
    # qwen-ragged max 233 -> 178 us, batch16-128k max 308 -> 288, batch16-32k equal.
    slots = per_sm * sm_count
    nsc = max(1, min(slots, -(-n // MIN_SPLIT)))
    # softmax_sum with one head tile is filtered (cs_rescore's candidate segments, one a
    # rescore warp, are cs_topk's list); else its first pass saves the per-head scores.
    rescore_smem = kc.rescore_smem(cfg.subspaces, cfg.n_centroids, cfg.sub_dim, tiles[0][1])
    filt = (softmax_filter and cfg.group_reduce == "softmax_sum" and len(tiles) == 1
            and nsc * RESCORE_WARPS <= kc.TOPK_MAX_SEGMENTS
            and rescore_smem <= smem_per_block - COOP_STATIC_SMEM)
    save = (cfg.group_reduce == "softmax_sum" and len(tiles) == 1 and not filt
            and cfg.rows * n * cfg.group * 4 <= SAVE_LIMIT)
    tlen = _round_len(n, max(1, min(-(-n // TSPLIT_LEN), MAX_SPLITS)))
    coop, chunk, keys = 0, 0, False
    if path in ("auto", "coop"):
        coop, chunk, keys = coop_geometry(cfg, sm_count, smem_per_block, cooperative, coop_ctas,
                                          coop_keys, softmax_filter)
        if path == "coop" and not coop:
            raise ValueError("the cooperative path does not fit this configuration on this device")
    # Weights: one block a row where the rows fill the GPU (each block builds a whole
    # table), more where they do not, never more than one round of entries a thread.
    total = max(cfg.total, 1)
    wsplit = max(-(-total // (kc.NT_WEIGHTS * kc.WEIGHTS_PER_THREAD)),
                 min(-(-total // WEIGHTS_MIN), max(1, sm_count // cfg.rows)))
    # Fused rescoring: the first pass's blocks wait for their row's LSE, so every block
    # must be resident at once: a cooperative launch of one wave (rows <= slots), with
    # the rescoring's lists in shared memory at the same blocks an SM.
    fuse = (filt and fuse_rescore and cooperative and cfg.rows <= slots
            and per_sm * (rescore_smem + COOP_STATIC_SMEM) <= smem_per_sm)
    return Geometry(slots, nsc, max(slots, cfg.rows), -(-n // tlen), tlen, save, per_sm, coop,
                    chunk, keys, wsplit, -(-total // wsplit), filt, fuse)


COOP_MIN_CHUNK = 256   # tokens: smaller chunks add CTAs (and exchange work) for nothing
COOP_STATIC_SMEM = 2048  # bytes kept for the cooperative kernel's static shared memory


def coop_geometry(cfg, sm_count, smem_per_block, cooperative=True, ctas=None, keys=False,
                  softmax_filter=True):
    """(CTAs per row, chunk, keys) of the cooperative path, or (0, 0, False) where it does
    not apply.

    Every CTA of the launch must be resident at once (one per SM: the kernel takes 128
    registers a thread), so rows * CL <= SMs; the largest such CL (at most 32) gives the
    smallest chunk. The chunk's per-head scores must fit in shared memory next to the
    table. keys (not the default: slower than the staged path where it applies, perf-notes
    v30): one key a token instead, the per-head scores scored again from the table where
    needed: the heavy tokens' weights (max, mean), or the tokens above softmax_sum's
    filter cut, which needs the row's whole histogram in one CTA (CL = 1). One
    lookup-table tile only, with q of the tile (GT * D floats) fitting in the 4096 counts
    it is staged in."""
    tiles = kc.head_tiles(cfg.group, cfg.subspaces, cfg.n_centroids)
    if not cooperative or len(tiles) != 1 or cfg.group * cfg.head_dim > 4096 or cfg.group > 32:
        return 0, 0, False
    cl = min(kc.COOP_MAX_CL, sm_count // cfg.rows, -(-cfg.capacity // COOP_MIN_CHUNK))
    if ctas is not None:
        cl = min(cl, ctas)
    if cl < 1:
        return 0, 0, False
    chunk = -(-(-(-cfg.capacity // cl)) // 32) * 32
    if chunk > kc.COOP_MAX_CHUNK:
        return 0, 0, False
    keys = bool(keys)
    if keys and cfg.group_reduce == "softmax_sum" and (cl != 1 or not softmax_filter):
        return 0, 0, False
    probe = kc.KernelSet(cfg.subspaces, cfg.n_centroids, cfg.sub_dim, "float32", "float32",
                         "int32", cfg.group_reduce, False, tuple(tiles), coop=True, keys=keys)
    if probe.coop_layout(chunk)[1] > smem_per_block - COOP_STATIC_SMEM:
        return 0, 0, False
    return cl, chunk, keys


def _round_len(n, parts):
    length = -(-(-(-n // parts)) // 32) * 32
    while -(-n // length) > MAX_SPLITS:
        length += 32
    return length


def convert_inputs(inputs, stream):
    """(CuPy views of the four inputs, the launch stream as a CuPy stream).

    The device comes from q's metadata, the stream is resolved on it, and DLPack
    inputs are converted on that stream."""
    import cupy

    if all(type(x) is cupy.ndarray for x in inputs):  # the common case: nothing to convert
        return list(inputs), resolve_stream(stream, inputs[0].data.device_id)
    names = ("q", "centroids", "codes", "seq_lens")
    dev = validate.device_of(inputs[0], "q")
    if dev is None:
        dev = cupy.asarray(inputs[0]).device.id
    s = resolve_stream(stream, dev)
    with cupy.cuda.Device(dev):
        arrays = [validate.as_device_array(x, n, s) for x, n in zip(inputs, names)]
    return arrays, s


def resolve_stream(stream, device_id):
    """A CuPy stream from None (CuPy's current), a CuPy stream, a torch stream or any
    object with ``__cuda_stream__``; checked against the arrays' device."""
    import cupy

    if stream is None:
        s = cupy.cuda.get_current_stream(device_id)
    elif isinstance(stream, (cupy.cuda.Stream, cupy.cuda.ExternalStream)):
        s = stream
    elif hasattr(stream, "__cuda_stream__") or hasattr(stream, "cuda_stream"):
        s = _external(stream)
    else:
        raise TypeError("Invalid type of stream: expected a CuPy stream, a torch stream or an "
                        "object with __cuda_stream__, got %s" % type(stream).__name__)
    sdev = validate.stream_device(s)
    if sdev is None:
        sdev = _torch_stream_device(stream)
    if sdev is not None and sdev != device_id:
        raise ValueError("Invalid device of stream: the arrays are on cuda:%d, the stream on "
                         "cuda:%d" % (device_id, sdev))
    return s


def _torch_stream_device(stream):
    dev = getattr(stream, "device", None)
    idx = getattr(dev, "index", None)
    return int(idx) if idx is not None else None


def _external(stream):
    import cupy

    try:
        return cupy.cuda.Stream.from_external(stream)
    except Exception:
        ptr = getattr(stream, "cuda_stream", None)
        if ptr is None:
            raise
        dev = _torch_stream_device(stream)
        return cupy.cuda.ExternalStream(int(ptr), -1 if dev is None else dev)


_ALIGN = 256


def _carve(parts):
    """Offsets of (name, bytes) parts packed into one block, each 256-byte aligned."""
    offs, size = {}, 0
    for name, nbytes in parts:
        offs[name] = size
        size += -(-max(int(nbytes), 1) // _ALIGN) * _ALIGN
    return offs, size


class Layout(NamedTuple):
    out_offs: dict
    out_size: int
    ws_offs: dict
    ws_size: int
    zero_bytes: int  # the workspace's leading bytes that start at zero
    shape: tuple  # (B, Hkv)
    total: int  # S + K + W
    out_shape: tuple  # (B, Hkv, S + K + W)


def _layout(cfg, geo):
    """Where the outputs and the workspace parts lie in their two allocations (Core.layout
    keeps it per device)."""
    rows, total, n = cfg.rows, cfg.total, cfg.capacity
    i4 = 4
    if geo.coop:
        # Row barrier counters (they only grow: zeroed here once), one 64-byte line a
        # row; an exchange record per CTA (tagged words: zeroed here once, so that no
        # stale tag from memory used before can match); two buffers a row for the
        # gathered bin, polled (zeroed here once: each launch clears the other one).
        zero = [("bars", rows * 64), ("xch", rows * geo.coop * kc.COOP_X_STRIDE * i4),
                ("glist", rows * 2 * kc.COOP_GATHER_CAP * 8)]
        rest = []
    else:
        # Kept zero between launches by the kernels themselves (the last block that uses
        # them resets them), so they are cleared only here.
        zero = [("counters", rows * i4), ("hist", rows * 4096 * i4),
                ("gens", rows * 8 if geo.fuse else 8)]  # barrier generations: only grow
        # sbuf: the saved per-head scores (save), or the filter's 16-bit bounds (filt).
        sbuf = rows * n * cfg.group * i4 if geo.save else (rows * n * 2 if geo.filt else i4)
        rest = [("rbuf", rows * n * i4), ("sbuf", sbuf),
                ("cand", rows * n * 8),  # a candidate: key (or r's bits) << 32 | position
                ("stats", rows * cfg.group * geo.nsc * 2 * i4),
                ("lse", rows * cfg.group * i4),
                ("segcnt", rows * (geo.nsc * RESCORE_WARPS if geo.filt else geo.tsplit) * i4),
                ("rowstate", rows * 4 * i4)]
    out_offs, out_size = _carve([("indices", rows * total * i4), ("counts", rows * i4),
                                 ("weights", rows * total * i4)])
    ws_offs, ws_size = _carve(zero + rest)
    return Layout(out_offs, out_size, ws_offs, ws_size, ws_offs[rest[0][0]] if rest else ws_size,
                  (cfg.batch, cfg.kv_heads), total, (cfg.batch, cfg.kv_heads, total))


def _current(device_id, stream):
    """Whether device_id and stream are already the current device and its current stream.

    select() is usually called on the current device and stream; entering CuPy's Device
    and Stream contexts anyway cost ~1 us each on every call (host profile, perf-notes
    "Host side")."""
    import cupy

    return (cupy.cuda.runtime.getDevice() == device_id
            and cupy.cuda.get_current_stream().ptr == stream.ptr)


def _alloc(device_id, stream, out_size, ws_size=None, zero_bytes=0):
    """(out, workspace or None): blocks from CuPy's pool on device_id, in `stream`'s arena
    (the pool files blocks by the current stream, so memory freed there is reused only in
    that stream's order); a new workspace's first zero_bytes cleared on `stream`."""
    import cupy

    def alloc():
        out = cupy.cuda.alloc(out_size)
        if ws_size is None:
            return out, None
        ws = cupy.cuda.alloc(ws_size)
        ws.memset_async(0, zero_bytes, stream)
        return out, ws

    if _current(device_id, stream):
        return alloc()
    with cupy.cuda.Device(device_id), stream:
        return alloc()


class Buffers:
    """Outputs, and the workspace of either path, on one device.

    Two allocations (allocation costs host time on every select() call): the three
    outputs are views of one block; the workspace is another, its parts known only by
    their pointers (``ws_ptrs``). The parts that must start at zero come first and are
    cleared by one memset on the launch stream. A ``workspace`` passed in was made here
    before and has been used only by launches of the same plan (the kernels leave its
    zeroed parts as they found them), so it is taken as it is."""

    __slots__ = ("workspace", "indices", "counts", "weights", "ws_ptrs", "out_ptrs", "key")

    def __init__(self, layout, device_id, stream, workspace=None, ws_ptrs=None):
        import cupy

        if workspace is None:
            out, workspace = _alloc(device_id, stream, layout.out_size, layout.ws_size,
                                    layout.zero_bytes)
        else:
            out, _ = _alloc(device_id, stream, layout.out_size)
        self.workspace = workspace
        offs = layout.out_offs
        nd, i4, f4 = cupy.ndarray, _INT32, _FLOAT32
        self.indices = nd(layout.out_shape, i4, out + offs["indices"])
        self.counts = nd(layout.shape, i4, out + offs["counts"])
        self.weights = nd(layout.out_shape, f4, out + offs["weights"])
        base = workspace.ptr
        if ws_ptrs is None:
            ws_ptrs = {name: base + off for name, off in layout.ws_offs.items()}
        self.ws_ptrs = ws_ptrs
        o = out.ptr
        self.out_ptrs = {name: o + off for name, off in offs.items()}
        # What the launches' pointer arguments depend on (see Core.enqueue).
        self.key = (base, o)

    @property
    def ptrs(self):
        """Every part's pointer by name: the workspace's and the outputs'."""
        return dict(self.ws_ptrs, **self.out_ptrs)


_INT32, _FLOAT32 = np.dtype(np.int32), np.dtype(np.float32)


# select()'s workspaces kept for reuse on the stream that last used them:
# (core, device, stream pointer) -> (stream, workspace). Only streams that cannot be
# destroyed while an entry holds them qualify: a CuPy-owned stream (the entry holds it)
# or the legacy default stream (one per device, shared by every thread). The per-thread
# default stream is one handle for many streams, and an external handle can be destroyed
# and its value reused for another stream whose work would then overlap: those get a
# fresh workspace each call. Calls on one stream are ordered, and Core.enqueue holds the
# core's lock over a whole launch sequence, so two calls never use one workspace at once.
_select_ws = OrderedDict()
_select_ws_lock = threading.Lock()
SELECT_WS_MAX_BYTES = 16 << 20  # a workspace is kept only up to this size
SELECT_WS_MAX_TOTAL = 64 << 20  # and the least recently used go beyond this in all


def _reusable_stream(stream):
    import cupy

    ptr = stream.ptr
    # 1 and 0: the legacy default stream; 2: the per-thread default stream (CuPy's
    # Stream.ptds is a cupy.cuda.Stream too).
    return ptr != 2 and (type(stream) is cupy.cuda.Stream or ptr in (0, 1))


class Core:
    """Geometry, kernels and the launch sequence for one Config."""

    def __init__(self, cfg, topk="radix", path="auto"):
        self.cfg = cfg
        self.path = path  # "auto" (cooperative where it applies), "coop" or "staged"
        self.topk = topk  # "radix" (measured faster) or "bitonic": finish of the top-K stage
        self.tiles = tuple(kc.head_tiles(cfg.group, cfg.subspaces, cfg.n_centroids))
        self._geo = {}
        self._sets = {}
        self._programs = {}
        self._layouts = {}  # device -> Layout
        self._resolved = {}  # (device, pdl, dtypes, alignments) -> program (see enqueue)
        self._bound = {}  # id(program) -> the pointers its launches were last bound to
        self._lock = threading.Lock()
        self.prof = None  # a device int64 array [rows * CTAs * 32]: phase timestamps
        self.coop_ctas = None  # at most this many CTAs a row on the cooperative path
        self.coop_keys = False  # True: its one-key-a-token layout (not the default: v30)
        # Stages whose kernels (after a call's first) are programmatic dependents on sm_90+:
        # their prologue (the partition, the table build) overlaps the previous kernel's
        # tail (see launch.py). Measured on the H100: softmax_sum's second pass -3.4 us,
        # the weights -3 to -8.5 us; the top-K +4.3 us on batch16-32k (its one wave of
        # blocks lands on the SMs the score frees first), so not the top-K.
        self.pdl = ("score", "weights")
        # softmax_sum's second pass reading saved scores has no table, so it takes as many
        # blocks as fit (by registers), not the first pass's one wave of table blocks.
        # Measured: qwen-ragged (a 128 KiB table, one block an SM) 222 -> 208 us; shapes
        # whose first pass already fills two blocks an SM are unchanged.
        self.fill_second_pass = True
        # softmax_sum with one head tile: filtered first pass and a rescoring pass over the
        # tokens that can be heavy (False: the first pass saves every per-head score).
        self.softmax_filter = True
        # ... with the rescoring in the first pass's (cooperative) launch where every block
        # fits at once: no second launch rebuilding a table a block (~16 us of prologue).
        self.fuse_rescore = True

    @staticmethod
    def compute_capability(device_id):
        import cupy

        return int(cupy.cuda.Device(device_id).compute_capability)

    def geometry(self, device_id):
        geo = self._geo.get(device_id)
        if geo is None:
            import cupy

            attrs = cupy.cuda.Device(device_id).attributes
            cc = self.compute_capability(device_id) // 10
            geo = self._geo[device_id] = plan_geometry(
                self.cfg, attrs["MultiProcessorCount"], attrs["MaxSharedMemoryPerMultiprocessor"],
                self.path, bool(attrs.get("CooperativeLaunch", 1)) and cc >= 7,
                attrs["MaxSharedMemoryPerBlockOptin"], self.coop_ctas, self.softmax_filter,
                self.fuse_rescore, self.coop_keys)
        return geo

    def kernel_set(self, device_id, q, centroids, codes, seq_lens):
        m, ds = self.cfg.subspaces, self.cfg.sub_dim
        width = 16 if m % 16 == 0 else (m if m in (4, 8) else 0)
        vec = width > 0 and codes.data.ptr % width == 0
        cvec = ds % 8 == 0 and centroids.data.ptr % 16 == 0
        key = (q.dtype, centroids.dtype, seq_lens.dtype, vec, cvec, device_id)
        ks = self._sets.get(key)
        if ks is None:
            geo = self.geometry(device_id)
            ks = self._sets[key] = kc.KernelSet(
                m, self.cfg.n_centroids, ds, q.dtype.name, centroids.dtype.name,
                seq_lens.dtype.name, self.cfg.group_reduce, vec, self.tiles, cvec, geo.save,
                self.topk == "bitonic", geo.score_minb, bool(geo.coop), geo.filt and not geo.coop,
                geo.fuse and not geo.coop, geo.coop_keys)
            if ks.fuse:
                # The driver decides residency (registers too): fall back to two launches
                # where the fused pass's one wave would not fit at once.
                gt = ks.tiles[0][1]
                name, smem = ks.score(gt, 7), ks.score_smem(gt, 7)
                if self._resident(device_id, ks, name, smem) < geo.score_grid:
                    ks = self._sets[key] = dataclasses.replace(ks, fuse=False)
        return ks

    def check_contents(self, device_id, q, centroids, codes, seq_lens, stream):
        """check=True: codes < C and 0 <= seq_lens <= N, with one host read."""
        import cupy

        cfg = self.cfg
        with cupy.cuda.Device(device_id), stream:
            flags = cupy.stack([
                (codes.max() >= cfg.n_centroids) if codes.size else cupy.asarray(False),
                seq_lens.min() < 0, seq_lens.max() > cfg.capacity]).get()
        if flags[0]:
            raise ValueError("Invalid codes: expected every code < n_centroids=%d"
                             % cfg.n_centroids)
        if flags[1] or flags[2]:
            raise ValueError("Invalid seq_lens: expected every length in [0, %d]" % cfg.capacity)

    def program(self, device_id, ks):
        """The launch sequence of kernel set `ks` on a device: [(stage, Launch)], arrays
        left as named slots."""
        key = (device_id, ks, tuple(self.pdl))
        prog = self._programs.get(key)
        if prog is not None:
            return prog
        cfg, geo = self.cfg, self.geometry(device_id)
        rows, last = cfg.rows, len(ks.tiles) - 1
        P, I, F = "p", "i", "f"
        dims = [(I, cfg.kv_heads), (I, cfg.group), (I, cfg.capacity)]
        sk = [(I, cfg.sink), (I, cfg.k), (I, cfg.window)]
        per_seq = (I, int(cfg.per_sequence_centroids))
        prog = []

        pdl = self.pdl if self.compute_capability(device_id) >= 90 else ()

        def add(stage, name, grid, block, smem, args, cooperative=False):
            fn = get_function(device_id, ks, name, smem)
            prog.append((stage, Launch(fn.kernel.ptr, grid, block, smem, args, name,
                                       cooperative, stage in pdl and bool(prog))))

        if geo.coop:
            region1, smem = ks.coop_layout(geo.chunk)
            add("coop", ks.coop_kernel(), (geo.coop, rows), (kc.NT_COOP,), smem,
                [(P, "q"), (P, "cent"), (P, "codes"), (P, "lens"), (P, "indices"),
                 (P, "weights"), (P, "counts"), (P, "bars"), (P, "xch"), (P, "glist")] + dims +
                [(I, cfg.n_centroids)] + sk +
                [(F, cfg.scale), (I, geo.chunk), (I, region1), per_seq, (P, "prof")],
                cooperative=True)
            return self._keep_program(key, device_id, prog)
        for bits in ks.score_passes():
            for t, (h0, gt) in enumerate(ks.tiles):
                name, smem = ks.score(gt, bits), ks.score_smem(gt, bits)
                slots, grid = geo.slots, geo.score_grid
                if ks.save_mode(bits) == 2 and self.fill_second_pass:
                    slots = max(slots, self._resident(device_id, ks, name, smem))
                    grid = max(slots, rows)
                add("score", name, (grid,), (kc.NT_SCORE,), smem,
                    [(P, "q"), (P, "cent"), (P, "codes"), (P, "lens"), (P, "rbuf"), (P, "sbuf"),
                     (P, "stats"), (P, "lse"), (P, "hist"), (P, "counters"), (P, "rowstate")]
                    + dims + [(I, cfg.n_centroids)] + sk +
                    [(F, cfg.scale), (I, h0), (I, cfg.batch), (I, slots), (I, MIN_SPLIT),
                     (I, geo.nsc), per_seq, (I, int(t == 0)),
                     (I, int(t == last)), (P, "cand"), (P, "segcnt"),
                     (P, "gens"), (I, geo.nsc * RESCORE_WARPS)], cooperative=bits == 7)
        if ks.filt and not ks.fuse:
            gt = ks.tiles[0][1]
            add("score", ks.rescore(gt), (geo.score_grid,), (kc.NT_SCORE,), ks.rescore_smem(gt),
                [(P, "q"), (P, "cent"), (P, "codes"), (P, "lens"), (P, "rbuf"), (P, "sbuf"),
                 (P, "lse"), (P, "hist"), (P, "counters"), (P, "rowstate"), (P, "cand"),
                 (P, "segcnt")] + dims + [(I, cfg.n_centroids)] + sk +
                [(F, cfg.scale), (I, cfg.batch), (I, geo.slots), (I, MIN_SPLIT),
                 (I, geo.nsc * RESCORE_WARPS), per_seq])
        if ks.filt:
            # One block a row on the rescored candidate list (a segment a rescore warp).
            tgrid, tlen, stride = 1, cfg.capacity, geo.nsc * RESCORE_WARPS
        else:
            tgrid, tlen, stride = geo.tsplit, geo.tsplit_len, geo.tsplit
        add("topk", ks.topk(), (tgrid, rows), (kc.NT_TOPK,), kc.topk_smem(stride),
            [(P, "lens"), (P, "rbuf"), (P, "cand"), (P, "segcnt"),
             (P, "counters"), (P, "rowstate"), (P, "indices"), (P, "weights"), (P, "counts")]
            + dims + sk + [(I, tlen), (I, stride)])
        if cfg.group_reduce != "softmax_sum" and cfg.total > 0:
            for t, (h0, gt) in enumerate(ks.tiles):
                add("weights", ks.weights(gt), (geo.wsplit, rows), (kc.NT_WEIGHTS,),
                    ks.weights_smem(gt),
                    [(P, "q"), (P, "cent"), (P, "codes"), (P, "lse"), (P, "indices"),
                     (P, "weights")] + dims +
                    [(I, cfg.n_centroids), (I, cfg.total), (F, cfg.scale), (I, h0),
                     (I, geo.wchunk), per_seq, (I, int(t == 0)), (I, int(t == last))])
        return self._keep_program(key, device_id, prog)

    def _keep_program(self, key, device_id, prog):
        # enqueue binds the names it knows; a name nothing provides would stay unbound.
        lay = self.layout(device_id)
        names = set(lay.ws_offs) | set(lay.out_offs) | {"q", "cent", "codes", "lens", "prof"}
        for _, launch in prog:
            missing = set(launch.slots) - names
            if missing:
                raise AssertionError("%s takes unknown arguments %s" % (launch.name, missing))
        self._programs[key] = prog
        return prog

    @staticmethod
    def _resident(device_id, ks, name, smem):
        """Blocks of kernel `name` resident on the whole device at once."""
        import cupy
        from cupy.cuda import driver

        fn = get_function(device_id, ks, name, smem)
        per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.kernel.ptr, kc.NT_SCORE, smem)
        return max(1, per_sm) * cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]

    def layout(self, device_id):
        lay = self._layouts.get(device_id)
        if lay is None:
            lay = self._layouts[device_id] = _layout(self.cfg, self.geometry(device_id))
        return lay

    def select_buffers(self, device_id, stream):
        """Fresh outputs for one select() call; the workspace is reused where that is safe
        (see _select_ws)."""
        lay = self.layout(device_id)
        if lay.ws_size > SELECT_WS_MAX_BYTES or not _reusable_stream(stream):
            return Buffers(lay, device_id, stream)
        key = (self, device_id, stream.ptr)
        with _select_ws_lock:
            hit = _select_ws.get(key)
            if hit is not None:
                _select_ws.move_to_end(key)
                return Buffers(lay, device_id, stream, hit[1], hit[2])
            # The memset of a new workspace is queued before the entry can be seen, so
            # every later call's launches come after it on the stream.
            b = Buffers(lay, device_id, stream)
            _select_ws[key] = (stream, b.workspace, b.ws_ptrs)
            total = sum(e[1].mem.size for e in _select_ws.values())
            while total > SELECT_WS_MAX_TOTAL:
                total -= _select_ws.popitem(last=False)[1][1].mem.size
        return b

    def enqueue(self, device_id, arrays, b, stream, stages=STAGES):
        """Queue the whole selection on `stream`; no host read, no synchronisation.

        `stages` limits the launch to some of STAGES (the benchmark times them apart)."""
        import cupy

        q, cent, codes, lens = arrays
        qp, cp, kp, lp = q.data.ptr, cent.data.ptr, codes.data.ptr, lens.data.ptr
        # Everything the kernel set depends on besides the sizes: dtypes and alignments.
        key = (device_id, self.pdl, q.dtype, cent.dtype, lens.dtype, kp % 16, cp % 16)
        prog = self._resolved.get(key)
        if prog is None:
            ks = self.kernel_set(device_id, *arrays)
            with cupy.cuda.Device(device_id), self._lock:
                prog = self._resolved[key] = self.program(device_id, ks)
        prof = self.prof.data.ptr if self.prof is not None else 0
        bound = (qp, cp, kp, lp, prof, b.key[0], b.key[1])
        if cupy.cuda.runtime.getDevice() == device_id:  # the usual case: no context to enter
            self._launch(prog, b, bound, stream.ptr, stages)
        else:
            with cupy.cuda.Device(device_id):
                self._launch(prog, b, bound, stream.ptr, stages)

    def _launch(self, prog, b, bound, sp, stages):
        """Bind what changed since the program's last launch, then launch its stages."""
        with self._lock:
            last = self._bound.get(id(prog))
            if last != bound:
                # select() changes only the outputs from call to call: rebind just those.
                if last is not None and last[:6] == bound[:6]:
                    values = b.out_ptrs
                else:
                    qp, cp, kp, lp, prof = bound[:5]
                    values = dict(b.ws_ptrs, **b.out_ptrs, q=qp, cent=cp, codes=kp, lens=lp,
                                  prof=prof)
                for _, launch in prog:
                    launch.bind(values)
                self._bound[id(prog)] = bound
            for stage, launch in prog:
                if stage in stages:
                    launch(sp)


class Selector:
    """A reusable plan: sizes checked once, buffers owned and reused (see SPEC.md).

    Every call returns the plan's one :class:`Selection` (the same output arrays,
    overwritten by the next call on this plan). Calls on one plan must be ordered
    (one stream, or the caller's synchronisation); separate plans never share memory.
    """

    def __init__(self, *, batch, q_heads, kv_heads, head_dim, subspaces, n_centroids, capacity,
                 sink, window, k, group_reduce="softmax_sum", scale=None,
                 per_sequence_centroids=False):
        self.config = validate.make_config(
            batch=batch, q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim,
            subspaces=subspaces, n_centroids=n_centroids, capacity=capacity, sink=sink,
            window=window, k=k, group_reduce=group_reduce, scale=scale,
            per_sequence_centroids=per_sequence_centroids)
        self._core = Core(self.config)
        self._buffers = {}
        self._lock = threading.Lock()
        self._checked = (None, None)  # (signature, device) of the last inputs checked

    def __repr__(self):
        return "Selector(%s)" % ", ".join("%s=%r" % kv for kv in self.config.__dict__.items())

    def _prepare(self, q, centroids, codes, seq_lens, stream):
        arrays, stream = convert_inputs((q, centroids, codes, seq_lens), stream)
        sig = validate.signature(arrays)
        last_sig, dev = self._checked
        if sig != last_sig:
            dev = validate.check_arrays(self.config, *arrays)
            self._checked = (sig, dev)
        bufs = self._buffers.get(dev)
        if bufs is None:
            with self._lock:
                bufs = self._buffers.get(dev)
                if bufs is None:
                    bufs = Buffers(self._core.layout(dev), dev, stream)
                    stream.synchronize()  # the zeroed counters are in place before any use
                    self._buffers[dev] = bufs
        return arrays, dev, bufs, stream

    def __call__(self, q, centroids, codes, seq_lens, *, stream=None, check=False):
        arrays, dev, bufs, stream = self._prepare(q, centroids, codes, seq_lens, stream)
        if check:
            self._core.check_contents(dev, *arrays, stream)
        self._core.enqueue(dev, arrays, bufs, stream)
        return Selection(bufs.indices, bufs.counts, bufs.weights)

    def capture(self, q, centroids, codes, seq_lens, *, stream=None):
        """Capture the launch sequence over these input buffers into a CUDA graph.

        ``replay()`` re-reads the buffers' current contents and writes this plan's
        outputs. The kernels are compiled and loaded here, before the capture.
        """
        import cupy

        arrays, dev, bufs, stream = self._prepare(q, centroids, codes, seq_lens, stream)
        with cupy.cuda.Device(dev):
            # Load every kernel outside the capture (compile + module load are not
            # stream work), then capture on a private stream.
            self._core.enqueue(dev, arrays, bufs, stream)
            stream.synchronize()
            cap = cupy.cuda.Stream(non_blocking=True)
            cap.begin_capture()
            try:
                self._core.enqueue(dev, arrays, bufs, cap)
            finally:
                graph = cap.end_capture()
        return CapturedSelection(graph, arrays, Selection(bufs.indices, bufs.counts, bufs.weights),
                                 dev)


class CapturedSelection:
    """A captured launch sequence; ``replay()`` runs it again on a stream."""

    def __init__(self, graph, arrays, selection, device_id):
        self.graph = graph
        self._arrays = arrays  # the captured inputs must outlive the graph
        self.selection = selection
        self.device_id = device_id

    def replay(self, stream=None):
        s = resolve_stream(stream, self.device_id)
        self.graph.launch(s)
        return self.selection
