"""CUDA C sources of cupysel, and the names of their compile-time specialisations.

The stages, in launch order: ``score`` (lookup-table scores, softmax statistics,
radix level 1), ``topk`` (block top-K to an exact threshold, by radix levels or a
bitonic sort in shared memory, then the merge-free sink/heavy/window index output),
and for max/mean ``weights`` (index.py). One module string holds them all; a plan asks
NVRTC only for the template instances it launches.
"""

import itertools
from dataclasses import dataclass

from .common import COMMON
from .coop import COOP
from .index import INDEX
from .score import SCORE
from .topk import TOPK

SOURCE = COMMON + SCORE + TOPK + INDEX + COOP

OPTIONS = ("-std=c++17",)

MODES = {"softmax_sum": 0, "max": 1, "mean": 2}
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
SEQLEN_CODES = {"int32": 0, "int64": 1}

#: Shared memory a lookup-table tile may take. 128 KiB leaves room for the 16 KiB
#: histogram within the per-block limit of sm_80 (163 KiB) and sm_90 (227 KiB).
LUT_BUDGET = 128 * 1024
HIST_BYTES = 4096 * 4
NT_SCORE = 512
NT_TOPK = 512
NT_WEIGHTS = 512
WEIGHTS_PER_THREAD = 8  # CS_WPER of index.py: entries a weights thread takes in one round
NT_COOP = 512
RESCORE_WARP_LIST = 768  # CS_RS_LIST of score.py: list entries (16-bit) a rescore warp keeps
COOP_GATHER_CAP = 2048  # CS_COOP_GATHER_CAP of coop.py
COOP_MAX_CL = 32   # CS_COOP_MAX_CL: CTAs per row of the cooperative path
COOP_X_STRIDE = 128 + 2 * 4096 + 2 * 64  # CS_X_STRIDE: ints of one CTA's exchange record
COOP_MAX_CHUNK = 65535  # a chunk's counts fit the 16 bits of a tagged exchange word
TOPK_MAX_SEGMENTS = 8192  # candidate segments a row at most (cs_topk's segment offsets)


def topk_smem(segments):
    """Dynamic shared memory of cs_topk for rows of at most `segments` candidate
    segments: (CS_STAGE + CS_BITONIC_CAP) u64 and segments + 1 ints. Sized per launch:
    at TOPK_MAX_SEGMENTS (82 KB) only 2 compaction blocks fit an SM, at a few splits
    (49 KB) 3 do (the registers allow 3)."""
    if not 1 <= segments <= TOPK_MAX_SEGMENTS:
        raise ValueError("cs_topk takes 1..%d segments a row, got %d"
                         % (TOPK_MAX_SEGMENTS, segments))
    return -(-((4096 + 2048) * 8 + (segments + 1) * 4) // 16) * 16


def padded_heads(gt):
    """Heads per lookup-table entry as stored (vector loads want 1, 2 or a multiple of 4)."""
    return gt if gt <= 2 else -(-gt // 4) * 4


def table_planes(gt, subspaces):
    """Whether a head tile's lookup table is kept in planes (CsLayout::PLANES, common.py)."""
    return 3 <= gt <= 7 and gt != 4 and subspaces % 16 == 0


def pow2_at_least(c):
    p = 1
    while p < c:
        p *= 2
    return p


def table_smem(subspaces, n_centroids, sub_dim, gt):
    """Bytes of a head tile's lookup table and its q slice in shared memory."""
    table = subspaces * pow2_at_least(n_centroids) * padded_heads(gt)
    return (table + gt * subspaces * sub_dim) * 4


def rescore_smem(subspaces, n_centroids, sub_dim, gt):
    """Dynamic shared memory of cs_rescore: table, q, histogram, the warps' lists."""
    return (table_smem(subspaces, n_centroids, sub_dim, gt) + HIST_BYTES
            + (NT_SCORE // 32) * RESCORE_WARP_LIST * 2)


def head_tiles(group, subspaces, n_centroids):
    """Split a group's heads into tiles whose lookup table fits LUT_BUDGET.

    Returns [(h0, gt), ...], or None when even one head's table does not fit.
    """
    p = pow2_at_least(n_centroids)
    best = 0
    for gt in range(1, group + 1):
        if subspaces * p * padded_heads(gt) * 4 <= LUT_BUDGET:
            best = gt
    if best == 0:
        return None
    return [(h0, min(best, group - h0)) for h0 in range(0, group, best)]


@dataclass(frozen=True)
class KernelSet:
    """Everything that selects template instances for one plan."""

    subspaces: int
    n_centroids: int
    sub_dim: int
    q_dtype: str
    c_dtype: str
    len_dtype: str
    mode: str
    vec: bool
    tiles: tuple
    cvec: bool = False      # centroid rows 16-byte aligned with D/M % 8 == 0: wide loads
    save: bool = False      # softmax_sum: pass 1 stores per-head scores, pass 2 reads them
    bitonic: bool = False   # finish top-K with the bitonic sort when the tie bin is small
    minb: int = 2           # score blocks per SM the register budget must allow
    coop: bool = False      # the cooperative path (cs_coop), CTAs per row set at launch
    filt: bool = False      # softmax_sum, one head tile: filtered first pass, cs_rescore,
                            # and the top-K on the rescored candidate list
    fuse: bool = False      # filt, with the rescoring in the first pass's cooperative launch
    keys: bool = False      # coop keeping one key a token, not its per-head scores (rows
                            # too long for those; softmax_sum: filtered, one CTA a row)

    @property
    def p(self):
        return pow2_at_least(self.n_centroids)

    def _lut_args(self, gt):
        return (gt, padded_heads(gt), self.subspaces, self.p, self.sub_dim,
                DTYPE_CODES[self.q_dtype], DTYPE_CODES[self.c_dtype], int(self.cvec))

    def save_mode(self, pass_bits):
        if not self.save:
            return 0
        return 1 if pass_bits == 1 else 2

    def score(self, gt, pass_bits):
        a = self._lut_args(gt) + (SEQLEN_CODES[self.len_dtype], MODES[self.mode], pass_bits,
                                  int(self.vec), self.save_mode(pass_bits), NT_SCORE, self.minb)
        return "cs_score<%s>" % ",".join(map(str, a))

    def topk(self):
        return "cs_topk<%d,%d,%d,%d,%d>" % (SEQLEN_CODES[self.len_dtype], MODES[self.mode],
                                            int(self.bitonic), int(self.filt), NT_TOPK)

    def rescore(self, gt):
        a = self._lut_args(gt) + (SEQLEN_CODES[self.len_dtype], int(self.vec), NT_SCORE,
                                  self.minb)
        return "cs_rescore<%s>" % ",".join(map(str, a))

    def weights(self, gt):
        a = self._lut_args(gt) + (int(self.vec), NT_WEIGHTS)
        return "cs_weights<%s>" % ",".join(map(str, a))

    def coop_kernel(self):
        gt = self.tiles[0][1]
        a = self._lut_args(gt) + (SEQLEN_CODES[self.len_dtype], MODES[self.mode], int(self.vec),
                                  NT_COOP, int(self.keys))
        return "cs_coop<%s>" % ",".join(map(str, a))

    def score_passes(self):
        """(pass_bits per launch, in order): softmax_sum needs LSE before ranking, unless
        filtered (then cs_rescore follows, or, fused, pass 7 rescores in the same launch)."""
        if self.fuse:
            return (7,)
        return (1, 2) if self.mode == "softmax_sum" and not self.filt else (3,)

    def names(self):
        if self.coop:
            return (self.coop_kernel(),)
        out = []
        for bits in self.score_passes():
            for _, gt in self.tiles:
                out.append(self.score(gt, bits))
        if self.filt and not self.fuse:
            out.append(self.rescore(self.tiles[0][1]))
        out.append(self.topk())
        if self.mode != "softmax_sum":
            out += [self.weights(gt) for _, gt in self.tiles]
        return tuple(dict.fromkeys(out))

    def score_smem(self, gt, pass_bits):
        if pass_bits == 7:
            return self.rescore_smem(gt)
        if self.save_mode(pass_bits) == 2:
            return HIST_BYTES
        return table_smem(self.subspaces, self.n_centroids, self.sub_dim, gt) + HIST_BYTES

    def rescore_smem(self, gt):
        return rescore_smem(self.subspaces, self.n_centroids, self.sub_dim, gt)

    def coop_layout(self, chunk):
        """(region1 floats, dynamic shared memory bytes) of the cooperative kernel: the
        table (later the keys), chunk * GP scores, 4096 counts, the gathered bin; keys:
        the table, which stays, then the chunk's keys."""
        gp = padded_heads(self.tiles[0][1])
        table = self.subspaces * self.p * gp
        region1 = -(-(table if self.keys else max(table, chunk)) // 4) * 4
        per_token = 1 if self.keys else gp
        return region1, (region1 + chunk * per_token) * 4 + HIST_BYTES + COOP_GATHER_CAP * 8

    def weights_smem(self, gt):
        return table_smem(self.subspaces, self.n_centroids, self.sub_dim, gt)


def specializations():
    """Kernel sets that together instantiate every code path of the templates.

    The benchmark shapes in every mode and dtype (as plans build them: wide centroid
    loads, softmax_sum filtered; the saved-score path too), plus each code-load width
    (M = 1, 2, 3, 4, 8, 16, 32, 64, aligned or not), each head padding (G = 1, 2, 3, 5, 7,
    8), the skewed, planes and plain table layouts, head tiling (a table too big for one
    tile), scalar centroid loads, the radix-only top-K, mixed dtypes and int64 lengths. CI compiles
    all of them for sm_80 and sm_90.
    """
    sets = []
    shapes = [(2, 64, 64, 4), (16, 256, 8, 4), (16, 256, 8, 7)]  # M, C, D/M, G
    for (m, c, ds, g), mode, dt in itertools.product(shapes, MODES, DTYPE_CODES):
        for flavour in (("filt", "save") if mode == "softmax_sum" else ("",)):
            sets.append(KernelSet(m, c, ds, dt, dt, "int32", mode, True,
                                  tuple(head_tiles(g, m, c)), cvec=True, save=flavour == "save",
                                  filt=flavour == "filt", minb=1, fuse=flavour == "filt"))
    # Two score blocks an SM (more rows than SMs), Llama's table.
    for mode, flavour in (("max", ""), ("mean", ""), ("softmax_sum", "filt")):
        sets.append(KernelSet(16, 256, 8, "float16", "float16", "int32", mode, True,
                              tuple(head_tiles(4, 16, 256)), cvec=True, minb=2,
                              filt=flavour == "filt", fuse=flavour == "filt"))
    extra = [  # M, C, D/M, G, q, c, lens, mode, vec, cvec, save ("filt": filtered), bitonic
        (1, 256, 64, 1, "float32", "float16", "int64", "softmax_sum", False, True, "filt", True),
        (3, 5, 32, 2, "bfloat16", "float32", "int64", "softmax_sum", False, False, "filt", False),
        (1, 256, 64, 1, "float32", "float16", "int64", "softmax_sum", False, True, False, True),
        (3, 5, 32, 2, "bfloat16", "float32", "int32", "max", False, False, False, True),
        (4, 100, 16, 3, "float16", "bfloat16", "int64", "mean", True, True, False, False),
        (8, 2, 8, 5, "float32", "float32", "int32", "softmax_sum", True, False, True, True),
        (16, 256, 8, 4, "float16", "float16", "int32", "softmax_sum", True, True, False, False),
        (32, 256, 8, 7, "float16", "float16", "int32", "softmax_sum", True, True, False, True),
        (32, 256, 8, 7, "bfloat16", "float16", "int64", "max", True, False, False, True),
        (32, 17, 2, 8, "float16", "float32", "int32", "mean", False, False, False, True),
        (16, 1, 16, 4, "float16", "float16", "int32", "max", False, True, False, True),
        (64, 128, 4, 1, "float32", "float32", "int32", "softmax_sum", True, False, True, False),
        # planes: G = 3 (q in registers), 5 (saved scores), 6 (M = 32, entry by entry)
        (16, 256, 8, 3, "float16", "float16", "int32", "softmax_sum", True, True, "filt", False),
        (16, 256, 8, 5, "float32", "float16", "int32", "softmax_sum", True, True, True, False),
        (32, 200, 4, 6, "bfloat16", "float32", "int64", "max", True, False, False, False),
    ]
    for m, c, ds, g, qd, cd, ld, mode, vec, cvec, save, bitonic in extra:
        sets.append(KernelSet(m, c, ds, qd, cd, ld, mode, vec, tuple(head_tiles(g, m, c)),
                              cvec=cvec, save=save is True, bitonic=bitonic,
                              filt=save == "filt"))
        if save == "filt":  # and the same with the rescoring fused into the first pass
            sets.append(KernelSet(m, c, ds, qd, cd, ld, mode, vec, tuple(head_tiles(g, m, c)),
                                  cvec=cvec, bitonic=bitonic, filt=True, fuse=True))
    coop = [  # M, C, D/M, G, q, c, lens, mode, vec, cvec, keys (one key a token, v30)
        (2, 64, 64, 4, "float16", "float16", "int32", "softmax_sum", True, True, False),
        (16, 256, 8, 4, "float16", "float16", "int32", "softmax_sum", True, True, False),
        (16, 256, 8, 4, "bfloat16", "bfloat16", "int32", "max", True, True, False),
        (16, 256, 8, 4, "float32", "float32", "int32", "mean", True, True, False),
        (16, 256, 8, 7, "float16", "float16", "int64", "softmax_sum", True, True, False),
        (1, 256, 64, 1, "float32", "float16", "int64", "softmax_sum", False, True, False),
        (3, 5, 32, 2, "bfloat16", "float32", "int32", "max", False, False, False),
        (8, 2, 8, 5, "float32", "float32", "int32", "mean", True, False, False),
        (32, 17, 2, 8, "float16", "float32", "int32", "softmax_sum", False, False, False),
        (16, 256, 8, 3, "float16", "float16", "int32", "mean", True, True, False),
        (32, 100, 4, 6, "float16", "float16", "int32", "softmax_sum", True, False, False),
        (16, 256, 8, 4, "float16", "float16", "int32", "softmax_sum", True, True, True),
        (16, 256, 8, 4, "float16", "float16", "int32", "max", True, True, True),
        (16, 256, 8, 4, "bfloat16", "bfloat16", "int64", "mean", True, True, True),
        (2, 64, 64, 4, "float32", "float16", "int32", "softmax_sum", True, True, True),
        (16, 256, 8, 7, "float16", "float16", "int32", "softmax_sum", True, True, True),
        (3, 5, 32, 2, "bfloat16", "float32", "int32", "max", False, False, True),
        (32, 17, 2, 8, "float16", "float32", "int64", "mean", False, False, True),
        (8, 2, 8, 5, "float32", "float32", "int32", "softmax_sum", True, False, True),
    ]
    for m, c, ds, g, qd, cd, ld, mode, vec, cvec, keys in coop:
        sets.append(KernelSet(m, c, ds, qd, cd, ld, mode, vec, tuple(head_tiles(g, m, c)),
                              cvec=cvec, coop=True, keys=keys))
    return sets
