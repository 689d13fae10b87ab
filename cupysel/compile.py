"""Run-time compilation: one RawModule per (device, kernel set), memoised.

CuPy compiles the module with NVRTC for the current device's architecture and keeps
it on disk (CuPy >= 14.2 caches modules built with name_expressions), so a new
process pays only the module load. ``compile_for_arch`` does the same compilation
through ``cupy.cuda.nvrtc`` for an explicit ``-arch`` with no GPU: CI uses it.
"""

import threading

import kernels_cu

MAX_DYNAMIC_SHARED_SIZE_BYTES = 8  # CUfunction_attribute


def _set_attribute(fn, attribute, value):
    """Set an attribute on the loaded CUfunction that cupysel launches (fn.kernel.ptr)."""
    from cupy.cuda import driver

    driver.funcSetAttribute(fn.kernel.ptr, attribute, int(value))
_modules = {}
_functions = {}
_smem_limit = {}  # CUfunction pointer -> dynamic shared memory limit set
_lock = threading.Lock()


def get_function(device_id, kernel_set, name, dynamic_smem=0):
    """The compiled kernel `name` of `kernel_set` on `device_id`, its shared-memory limit
    raised to at least `dynamic_smem`.

    The limit is kept per CUfunction and only ever raised: kernel sets that differ only
    in fields a kernel does not use load the same CUfunction (CuPy caches modules by
    source and names), so a plan must never lower a limit another plan relies on (the
    fuzzer found exactly that: a launch asking 37376 bytes of a function left at 37248)."""
    key = (device_id, kernel_set, name)
    fn = _functions.get(key)
    if fn is None:
        fn = _load(device_id, kernel_set, name, key)
    ptr = fn.kernel.ptr
    if _smem_limit.get(ptr, 0) < dynamic_smem:
        with _lock:
            if _smem_limit.get(ptr, 0) < dynamic_smem:
                # Static + dynamic above 48 KiB needs the opt-in, whatever the split.
                _set_attribute(fn, MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic_smem)
                _smem_limit[ptr] = dynamic_smem
    return fn


def _load(device_id, kernel_set, name, key):
    import cupy

    with _lock:
        fn = _functions.get(key)
        if fn is not None:
            return fn
        with cupy.cuda.Device(device_id):
            mkey = (device_id, kernel_set)
            mod = _modules.get(mkey)
            if mod is None:
                mod = cupy.RawModule(code=kernels_cu.SOURCE, options=kernels_cu.OPTIONS,
                                     name_expressions=list(kernel_set.names()))
                _modules[mkey] = mod
            fn = mod.get_function(name)
        _functions[key] = fn
        return fn


# What CuPy's RawModule adds to every NVRTC compile (cupy/cuda/compiler.py), so that the
# machine code here is what runs: without it pqcache-8k's cooperative kernel has 328 more
# instructions (7768 against 7440 with NVRTC 12.9), and a line table made here did not
# match ncu's samples of the running kernel.
CUPY_ADDS = ("-ftz=true",)


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
            nvrtc.compileProgram(prog, ["-arch=%s" % arch, *kernels_cu.OPTIONS, *CUPY_ADDS])
        except nvrtc.NVRTCError as e:
            raise RuntimeError("NVRTC failed for %s on %s: %s\n%s"
                               % (names, arch, e, nvrtc.getProgramLog(prog))) from None
        for n in names:
            nvrtc.getLoweredName(prog, n)
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
