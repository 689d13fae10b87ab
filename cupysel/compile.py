"""Run-time compilation: one RawModule per (device, kernel set), memoised.

CuPy compiles the module with NVRTC for the current device's architecture and keeps
it on disk (CuPy >= 14.2 caches modules built with name_expressions), so a new
process pays only the module load. ``compile_for_arch`` does the same compilation
through ``cupy.cuda.nvrtc`` for an explicit ``-arch`` with no GPU: CI uses it.
"""

import threading

import kernels_cu

MAX_DYNAMIC_SHARED_SIZE_BYTES = 8  # CUfunction_attribute
NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14


def _set_attribute(fn, attribute, value):
    """Set a function attribute on the loaded CUfunction itself, through the driver.

    The kernels are launched with cuLaunchKernel on fn.kernel.ptr, not through CuPy;
    RawKernel's own setters were seen not to be in effect for the first such launch
    (the fuzzer found it: a first launch over 48 KiB failed, a second passed)."""
    from cupy.cuda import driver

    driver.funcSetAttribute(fn.kernel.ptr, attribute, int(value))
_modules = {}
_functions = {}
_smem_limit = {}
_lock = threading.Lock()


def get_function(device_id, kernel_set, name, dynamic_smem=0):
    """The compiled kernel `name` of `kernel_set` on `device_id`, its shared-memory limit
    raised to at least `dynamic_smem` (plans of other sizes share the function)."""
    key = (device_id, kernel_set, name)
    fn = _functions.get(key)
    if fn is not None and _smem_limit.get(key, 0) >= dynamic_smem:
        return fn
    import cupy

    with _lock:
        fn = _functions.get(key)
        if fn is not None:
            if _smem_limit.get(key, 0) < dynamic_smem:
                with cupy.cuda.Device(device_id):
                    _set_attribute(fn, MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic_smem)
                _smem_limit[key] = dynamic_smem
            return fn
        with cupy.cuda.Device(device_id):
            mkey = (device_id, kernel_set)
            mod = _modules.get(mkey)
            if mod is None:
                mod = cupy.RawModule(code=kernels_cu.SOURCE, options=kernels_cu.OPTIONS,
                                     name_expressions=list(kernel_set.names()))
                _modules[mkey] = mod
            fn = mod.get_function(name)
            if dynamic_smem:
                # Static + dynamic above 48 KiB needs the opt-in, whatever the split.
                _set_attribute(fn, MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic_smem)
            _smem_limit[key] = dynamic_smem
            if kernel_set.cluster > 8:
                # Clusters of 16 CTAs are beyond the portable size of 8: opt in.
                _set_attribute(fn, NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)
        _functions[key] = fn
        return fn


def compile_for_arch(kernel_set, arch):
    """Compile every kernel of `kernel_set` with NVRTC for `arch` (e.g. "sm_90"), no GPU.

    Returns the CUBIN bytes; raises RuntimeError with NVRTC's log on any error.
    """
    from cupy.cuda import nvrtc

    names = kernel_set.names()
    prog = nvrtc.createProgram(kernels_cu.SOURCE, "cupysel.cu", [], [])
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        try:
            nvrtc.compileProgram(prog, ["-arch=%s" % arch, *kernels_cu.OPTIONS])
        except nvrtc.NVRTCError as e:
            raise RuntimeError("NVRTC failed for %s on %s: %s\n%s"
                               % (names, arch, e, nvrtc.getProgramLog(prog))) from None
        for n in names:
            nvrtc.getLoweredName(prog, n)
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
