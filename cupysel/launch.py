"""Kernel launches with their argument blocks packed once.

A RawKernel call converts every argument on every call (tens of microseconds for
cupysel's 20-odd arguments). Here each launch keeps its arguments in ctypes cells and
an array of their addresses; a call only rewrites the cells that changed (the array
pointers) and calls cuLaunchKernel. cuLaunchKernel copies the values at the call, so a
cell may be rewritten right after.

A launch marked `pdl` goes through cuLaunchKernelEx with programmatic stream
serialization (sm_90+): it may start while the previous kernel of the stream drains,
and its kernel waits (griddepcontrol.wait, `cs_pdl_wait`) before it touches anything
that kernel writes. CuPy has no binding for cuLaunchKernelEx, hence ctypes.
"""

import ctypes

_CTYPES = {"p": ctypes.c_uint64, "i": ctypes.c_int32, "f": ctypes.c_float}
_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CUlaunchAttributeID


class _Attr(ctypes.Structure):  # CUlaunchAttribute: id, padding, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class _Config(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("smem", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_Attr)),
                ("nattrs", ctypes.c_uint)]


_launch_ex = None
_driver = None


def _cu_launch_kernel_ex():
    global _launch_ex
    if _launch_ex is None:
        fn = ctypes.CDLL("libcuda.so.1").cuLaunchKernelEx
        fn.argtypes = [ctypes.POINTER(_Config), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        _launch_ex = fn
    return _launch_ex


class Launch:
    """One kernel launch: function, grid, block, shared memory and packed arguments.

    `args` is a list of (kind, value) with kind "p" (device pointer), "i" (int32) or
    "f" (float32); a value may be a name (str) to be bound later with ``bind``.
    """

    __slots__ = ("fn", "grid", "block", "smem", "cells", "params", "slots", "name", "cooperative",
                 "attr", "config")

    def __init__(self, fn_ptr, grid, block, smem, args, name="", cooperative=False, pdl=False):
        self.name = name
        self.cooperative = cooperative  # every CTA resident at once, or the launch fails
        self.fn = int(fn_ptr)
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.block = tuple(block) + (1,) * (3 - len(block))
        self.smem = int(smem)
        self.cells = []
        self.slots = {}
        for i, (kind, value) in enumerate(args):
            cell = _CTYPES[kind]()
            if isinstance(value, str):
                self.slots.setdefault(value, []).append(i)
            else:
                cell.value = value
            self.cells.append(cell)
        self.params = (ctypes.c_void_p * len(self.cells))(
            *[ctypes.addressof(c) for c in self.cells])
        self.attr = self.config = None
        if pdl:
            self.attr = _Attr(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
            self.attr.value[0] = 1  # programmaticStreamSerializationAllowed
            self.config = _Config((ctypes.c_uint * 3)(*self.grid), (ctypes.c_uint * 3)(*self.block),
                                  self.smem, None, ctypes.pointer(self.attr), 1)

    def bind(self, values):
        """Set the named arguments found in `values` (a name not in `values` keeps its
        value; one this launch does not take is ignored)."""
        slots = self.slots
        for name, v in values.items():
            idx = slots.get(name)
            if idx is not None:
                for i in idx:
                    self.cells[i].value = v

    def __call__(self, stream_ptr):
        global _driver
        if _driver is None:
            from cupy.cuda import driver as _driver
        driver = _driver
        try:
            if self.config is not None:
                self.config.stream = stream_ptr or None
                rc = _cu_launch_kernel_ex()(ctypes.byref(self.config), self.fn,
                                            ctypes.addressof(self.params), None)
                if rc:
                    raise driver.CUDADriverError(rc)
            elif self.cooperative:
                driver.launchCooperativeKernel(self.fn, *self.grid, *self.block, self.smem,
                                               stream_ptr, ctypes.addressof(self.params))
            else:
                driver.launchKernel(self.fn, *self.grid, *self.block, self.smem, stream_ptr,
                                    ctypes.addressof(self.params), 0)
        except driver.CUDADriverError as e:
            attrs = {}
            for key, code in (("max_dynamic_smem", 8), ("static_smem", 1), ("regs", 4),
                              ("max_threads", 0)):
                try:
                    attrs[key] = driver.funcGetAttribute(code, self.fn)
                except Exception:
                    pass
            raise RuntimeError("launch of %s failed: %s (grid %s, block %s, dynamic shared "
                               "memory %d, function %s)" % (self.name, e, self.grid, self.block,
                                                           self.smem, attrs)) from e
