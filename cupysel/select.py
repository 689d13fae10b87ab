"""``select()``: one selection, fresh outputs, queued on one stream; and ``Selection``."""

import threading
from collections import OrderedDict
from typing import NamedTuple

from . import validate


class TorchSelection(NamedTuple):
    indices: object
    counts: object
    weights: object


class Selection:
    """The three outputs (CuPy arrays): ``indices`` [B, Hkv, S+K+W] int32, ``counts``
    [B, Hkv] int32, ``weights`` [B, Hkv, S+K+W] float32. They are ready once the stream
    they were queued on reaches them; reading them on that stream (or through
    ``to_torch``, which waits on it) is safe without a synchronisation."""

    __slots__ = ("indices", "counts", "weights")

    def __init__(self, indices, counts, weights):
        self.indices = indices
        self.counts = counts
        self.weights = weights

    def to_torch(self):
        """The same three as torch tensors sharing this memory (DLPack, no copy)."""
        import torch

        return TorchSelection(torch.from_dlpack(self.indices), torch.from_dlpack(self.counts),
                              torch.from_dlpack(self.weights))

    def __iter__(self):
        return iter((self.indices, self.counts, self.weights))

    def __repr__(self):
        return "Selection(indices=%s, counts=%s, weights=%s)" % (
            tuple(self.indices.shape), tuple(self.counts.shape), tuple(self.weights.shape))


_cores = OrderedDict()
_cores_lock = threading.Lock()
_MAX_CORES = 64


def _core_for(cfg):
    from .plan import Core

    with _cores_lock:
        core = _cores.get(cfg)
        if core is None:
            core = _cores[cfg] = Core(cfg)
            while len(_cores) > _MAX_CORES:
                _cores.popitem(last=False)
        else:
            _cores.move_to_end(cfg)
        return core


def select(q, centroids, codes, seq_lens, *, sink, window, k, group_reduce="softmax_sum",
           scale=None, check=False, stream=None):
    """Select sink + heavy + window tokens for every (sequence, kv head); see SPEC.md.

    Returns a :class:`Selection` of new CuPy arrays without waiting for the GPU.
    ``check=True`` also verifies that codes < C and 0 <= seq_lens <= N (one host read)
    and raises ValueError otherwise; without it such inputs are read safely but give
    undefined selections.
    """
    from .plan import Buffers, convert_inputs

    arrays, stream = convert_inputs((q, centroids, codes, seq_lens), stream)
    cfg = validate.config_from_arrays(*arrays, sink, window, k, group_reduce, scale)
    dev = validate.check_arrays(cfg, *arrays)
    core = _core_for(cfg)
    bufs = Buffers(cfg, core.geometry(dev), dev, stream)
    if check:
        core.check_contents(dev, *arrays, stream)
    core.enqueue(dev, arrays, bufs, stream)
    return Selection(bufs.indices, bufs.counts, bufs.weights)
