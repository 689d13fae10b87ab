"""Kernel launches with their argument blocks packed once.

A RawKernel call converts every argument on every call (tens of microseconds for
cupysel's 20-odd arguments). Here each launch keeps its arguments in ctypes cells and
an array of their addresses; a call only rewrites the cells that changed (the array
pointers) and calls cuLaunchKernel. cuLaunchKernel copies the values at the call, so a
cell may be rewritten right after.
"""

import ctypes

_CTYPES = {"p": ctypes.c_uint64, "i": ctypes.c_int32, "f": ctypes.c_float}


class Launch:
    """One kernel launch: function, grid, block, shared memory and packed arguments.

    `args` is a list of (kind, value) with kind "p" (device pointer), "i" (int32) or
    "f" (float32); a value may be a name (str) to be bound later with ``bind``.
    """

    __slots__ = ("fn", "grid", "block", "smem", "cells", "params", "slots", "name", "cooperative")

    def __init__(self, fn_ptr, grid, block, smem, args, name="", cooperative=False):
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

    def bind(self, values):
        for name, idx in self.slots.items():
            v = values[name]
            for i in idx:
                self.cells[i].value = v

    def __call__(self, stream_ptr):
        from cupy.cuda import driver

        try:
            if self.cooperative:
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
