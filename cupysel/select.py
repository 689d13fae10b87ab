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
# Inputs already validated: (config key, per-array dtype / shape / strides / device)
# -> (Config, device, Core). Validation is pure metadata, so equal keys give equal
# answers; select() pays it once per kind of call instead of on every call.
_checked = OrderedDict()
_MAX_CHECKED = 256


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


def _validated(arrays, sink, window, k, group_reduce, scale):
    """(Config, device id, Core) of the inputs, from the cache or by validating them."""
    # Types are part of the key: k=True must still be refused although True == 1.
    key = (type(sink), sink, type(window), window, type(k), k, type(group_reduce),
           group_reduce, type(scale), scale, validate.signature(arrays))
    try:
        hit = _checked.get(key)
    except TypeError:  # an unhashable parameter: validation names it
        key, hit = None, None
    if hit is not None:
        return hit
    cfg = validate.config_from_arrays(*arrays, sink, window, k, group_reduce, scale)
    hit = (cfg, validate.check_arrays(cfg, *arrays), _core_for(cfg))
    if key is not None:
        with _cores_lock:
            _checked[key] = hit
            while len(_checked) > _MAX_CHECKED:
                _checked.popitem(last=False)
    return hit


def select(q, centroids, codes, seq_lens, *, sink, window, k, group_reduce="softmax_sum",
           scale=None, check=False, stream=None):
    """Select sink + heavy + window tokens for every (sequence, kv head); see SPEC.md.

    Returns a :class:`Selection` of new CuPy arrays without waiting for the GPU.
    ``check=True`` also verifies that codes < C and 0 <= seq_lens <= N (one host read)
    and raises ValueError otherwise; without it such inputs are read safely but give
    undefined selections.
    """
    from .plan import convert_inputs

    arrays, stream = convert_inputs((q, centroids, codes, seq_lens), stream)
    cfg, dev, core = _validated(arrays, sink, window, k, group_reduce, scale)
    bufs = core.select_buffers(dev, stream)
    if check:
        core.check_contents(dev, *arrays, stream)
    core.enqueue(dev, arrays, bufs, stream)
    return Selection(bufs.indices, bufs.counts, bufs.weights)
