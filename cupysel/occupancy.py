"""How many clusters of a kernel fit on the GPU at once (cuOccupancyMaxActiveClusters).

CuPy has no binding for it; this calls the driver through ctypes. A cluster of CTAs
must fit inside one GPC, so on an H100 a 16-CTA cluster of one-CTA-per-SM blocks fits
only where a GPC has 16 free SMs: the plan uses this to size its clusters.
"""

import ctypes


class _LaunchConfig(ctypes.Structure):
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint),
                ("gridDimZ", ctypes.c_uint), ("blockDimX", ctypes.c_uint),
                ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.c_void_p), ("numAttrs", ctypes.c_uint)]


_lib = None


def max_active_clusters(fn_ptr, cluster, threads, smem):
    """Clusters of `fn_ptr` (compiled cluster dims) that can be resident at once, or None."""
    global _lib
    try:
        if _lib is None:
            _lib = ctypes.CDLL("libcuda.so.1")
        cfg = _LaunchConfig(cluster, 1, 1, threads, 1, 1, smem, None, None, 0)
        n = ctypes.c_int(0)
        rc = _lib.cuOccupancyMaxActiveClusters(ctypes.byref(n), ctypes.c_void_p(fn_ptr),
                                               ctypes.byref(cfg))
        return n.value if rc == 0 else None
    except (OSError, AttributeError):
        return None


_probes = {}


def cluster_capacity(device_id, cluster, smem):
    """Clusters of `cluster` one-CTA-per-SM blocks with `smem` bytes that fit at once on
    the device (the fused kernel's footprint), or None if the driver cannot tell."""
    import cupy

    import kernels_cu

    key = (device_id, cluster)
    fn = _probes.get(key)
    if fn is None:
        with cupy.cuda.Device(device_id):
            mod = cupy.RawModule(code=kernels_cu.SOURCE, options=kernels_cu.OPTIONS,
                                 name_expressions=["cs_cluster_probe<%d>" % c
                                                   for c in kernels_cu.CLUSTER_SIZES])
            for c in kernels_cu.CLUSTER_SIZES:
                from .compile import (MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                      NON_PORTABLE_CLUSTER_SIZE_ALLOWED, _set_attribute)

                f = mod.get_function("cs_cluster_probe<%d>" % c)
                attrs = cupy.cuda.Device(device_id).attributes
                _set_attribute(f, MAX_DYNAMIC_SHARED_SIZE_BYTES,
                               attrs["MaxSharedMemoryPerBlockOptin"])
                if c > 8:
                    _set_attribute(f, NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)
                _probes[(device_id, c)] = f
        fn = _probes[key]
    with cupy.cuda.Device(device_id):
        # At least 116 KiB: one block per SM, as the fused kernel's registers force.
        return max_active_clusters(fn.kernel.ptr, cluster, 512, max(smem, 116 * 1024))
