"""Metadata checks: shape, dtype, layout and device, turned into clear errors.

Everything here reads attributes only (never array contents), so it costs no device
work; it runs before any launch. Messages name the argument, what was expected and
what was given.
"""

import math
import numbers
from dataclasses import dataclass

MODES = ("softmax_sum", "max", "mean")
FLOAT_DTYPES = ("float16", "bfloat16", "float32")
LEN_DTYPES = ("int32", "int64")
MAX_INT32 = 2**31 - 1


_NAMES = {}


def _dtype_name(x):
    dt = getattr(x, "dtype", None)
    name = _NAMES.get(dt)
    if name is None:
        name = str(dt if dt is not None else type(x).__name__).replace("torch.", "")
        if dt is not None:
            _NAMES[dt] = name
    return name


def signature(arrays):
    """What check_arrays depends on (not the pointers: a plan fed rotating buffers of one
    kind checks them once): equal signatures need no second check."""
    return tuple((a.dtype, a.shape, a.strides, a.data.device_id) for a in arrays)


def _type_error(x, name):
    return TypeError("Invalid type of %s: expected a CUDA array (cupy.ndarray, or an object with "
                     "__dlpack__ or __cuda_array_interface__ on a GPU), got %s"
                     % (name, type(x).__module__ + "." + type(x).__name__))


def device_of(x, name):
    """CUDA device id of an input, read from metadata (None if only a conversion can tell)."""
    import cupy

    if isinstance(x, cupy.ndarray):
        return x.device.id
    if hasattr(x, "__dlpack_device__"):
        dev_type, dev_id = x.__dlpack_device__()
        if int(dev_type) not in (2, 13):  # kDLCUDA, kDLCUDAManaged
            raise ValueError("Invalid device of %s: expected a CUDA device, got a %s array on "
                             "the host (DLPack device type %d)"
                             % (name, type(x).__name__, int(dev_type)))
        return int(dev_id)
    if hasattr(x, "__cuda_array_interface__"):
        return None
    raise _type_error(x, name)


def as_device_array(x, name, stream=None):
    """A CuPy view of a GPU array (CuPy, DLPack or CUDA array interface), never a copy.

    DLPack producers are asked for the data on `stream` (the launch stream), so a torch
    tensor written on torch's current stream is ordered before our kernels, and inside
    a graph capture no other stream is touched."""
    import cupy

    if isinstance(x, cupy.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        device_of(x, name)
        if stream is None:
            return cupy.from_dlpack(x)
        with stream:
            return cupy.from_dlpack(x)
    if hasattr(x, "__cuda_array_interface__"):
        return cupy.asarray(x)
    raise _type_error(x, name)


def check_int(value, name, minimum=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("Invalid type of %s: expected an int, got %s" % (name, type(value).__name__))
    value = int(value)
    if value < minimum:
        raise ValueError("Invalid %s: expected an int >= %d, got %d" % (name, minimum, value))
    if value > MAX_INT32:
        raise ValueError("Invalid %s: expected at most 2**31 - 1, got %d" % (name, value))
    return value


def check_mode(group_reduce):
    if group_reduce not in MODES:
        raise ValueError("Invalid group_reduce: expected one of (%s), got %r"
                         % (", ".join(MODES), group_reduce))
    return group_reduce


def check_scale(scale, head_dim):
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError("Invalid type of scale: expected a float or None, got %s"
                        % type(scale).__name__)
    return float(scale)


@dataclass(frozen=True)
class Config:
    """Sizes and parameters of one selection problem (no arrays)."""

    batch: int
    q_heads: int
    kv_heads: int
    head_dim: int
    subspaces: int
    n_centroids: int
    capacity: int
    sink: int
    window: int
    k: int
    group_reduce: str
    scale: float
    per_sequence_centroids: bool

    @property
    def group(self):
        return self.q_heads // self.kv_heads

    @property
    def sub_dim(self):
        return self.head_dim // self.subspaces

    @property
    def total(self):
        return self.sink + self.k + self.window

    @property
    def rows(self):
        return self.batch * self.kv_heads

    def expected_shapes(self):
        cshape = (self.kv_heads, self.subspaces, self.n_centroids, self.sub_dim)
        if self.per_sequence_centroids:
            cshape = (self.batch,) + cshape
        return {
            "q": (self.batch, self.q_heads, self.head_dim),
            "centroids": cshape,
            "codes": (self.batch, self.kv_heads, self.capacity, self.subspaces),
            "seq_lens": (self.batch,),
        }


def make_config(*, batch, q_heads, kv_heads, head_dim, subspaces, n_centroids, capacity,
                sink, window, k, group_reduce="softmax_sum", scale=None,
                per_sequence_centroids=False):
    """Check sizes and parameters (pure Python: no GPU needed) and return a Config."""
    from kernels_cu import head_tiles

    batch = check_int(batch, "batch", 1)
    kv_heads = check_int(kv_heads, "kv_heads", 1)
    q_heads = check_int(q_heads, "q_heads", 1)
    head_dim = check_int(head_dim, "head_dim", 1)
    subspaces = check_int(subspaces, "subspaces", 1)
    n_centroids = check_int(n_centroids, "n_centroids", 1)
    capacity = check_int(capacity, "capacity", 1)
    sink = check_int(sink, "sink")
    window = check_int(window, "window")
    k = check_int(k, "k")
    if q_heads % kv_heads:
        raise ValueError("Invalid q_heads: expected a multiple of kv_heads=%d (GQA), got %d"
                         % (kv_heads, q_heads))
    if head_dim % subspaces:
        raise ValueError("Invalid subspaces: head_dim=%d must be divisible by it, got %d"
                         % (head_dim, subspaces))
    if n_centroids > 256:
        raise ValueError("Invalid n_centroids: codes are uint8, expected 1..256, got %d"
                         % n_centroids)
    if sink + k + window > MAX_INT32:
        raise ValueError("Invalid sink + k + window: expected at most 2**31 - 1, got %d"
                         % (sink + k + window))
    group_reduce = check_mode(group_reduce)
    scale = check_scale(scale, head_dim)
    if head_tiles(q_heads // kv_heads, subspaces, n_centroids) is None:
        raise ValueError("Invalid subspaces * n_centroids: one head's lookup table "
                         "(%d x %d floats) exceeds the 128 KiB shared-memory budget"
                         % (subspaces, n_centroids))
    return Config(batch, q_heads, kv_heads, head_dim, subspaces, n_centroids, capacity, sink,
                  window, k, group_reduce, scale, bool(per_sequence_centroids))


def config_from_arrays(q, centroids, codes, seq_lens, sink, window, k, group_reduce, scale):
    """Infer a Config from array shapes (arrays already CuPy views)."""
    for name, x, rank in (("q", q, (3,)), ("centroids", centroids, (4, 5)),
                          ("codes", codes, (4,)), ("seq_lens", seq_lens, (1,))):
        if x.ndim not in rank:
            raise ValueError("Invalid rank of %s: expected %s dimensions, got shape %s"
                             % (name, " or ".join(map(str, rank)), tuple(x.shape)))
    B, Hq, D = q.shape
    _, Hkv, N, M = codes.shape
    C = centroids.shape[-2]
    return make_config(batch=B, q_heads=Hq, kv_heads=Hkv, head_dim=D, subspaces=M,
                       n_centroids=C, capacity=N, sink=sink, window=window, k=k,
                       group_reduce=group_reduce, scale=scale,
                       per_sequence_centroids=centroids.ndim == 5)


def check_arrays(cfg, q, centroids, codes, seq_lens):
    """Dtype, shape, layout and device of the four inputs against cfg. Returns the device id."""
    arrays = {"q": q, "centroids": centroids, "codes": codes, "seq_lens": seq_lens}
    want_dtypes = {"q": FLOAT_DTYPES, "centroids": FLOAT_DTYPES, "codes": ("uint8",),
                   "seq_lens": LEN_DTYPES}
    for name, x in arrays.items():
        dt = _dtype_name(x)
        if dt not in want_dtypes[name]:
            raise TypeError("Invalid dtype of %s: expected one of (%s), got %s"
                            % (name, ", ".join(want_dtypes[name]), dt))
    shapes = cfg.expected_shapes()
    if centroids.ndim == 4 and cfg.per_sequence_centroids:
        raise ValueError("Invalid shape of centroids: this plan has per-sequence centroids, "
                         "expected %s, got %s" % (shapes["centroids"], tuple(centroids.shape)))
    for name, x in arrays.items():
        if tuple(x.shape) != shapes[name]:
            raise ValueError("Invalid shape of %s: expected %s, got %s"
                             % (name, shapes[name], tuple(x.shape)))
    for name, x in arrays.items():
        if not x.flags.c_contiguous:
            raise ValueError("Invalid layout of %s: expected a C-contiguous array, got strides %s"
                             % (name, tuple(x.strides)))
    dev = q.device.id
    for name, x in arrays.items():
        if x.device.id != dev:
            raise ValueError("Invalid device of %s: expected cuda:%d (the device of q), got cuda:%d"
                             % (name, dev, x.device.id))
    return dev


def stream_device(stream):
    """Device id of a CuPy stream, or None if it cannot be told."""
    dev = getattr(stream, "device_id", None)
    return None if dev is None or dev < 0 else int(dev)
