import os

import pytest


def _gpu_reason():
    try:
        import cupy
    except Exception as e:  # pragma: no cover - depends on the machine
        return "CuPy is not importable: %s" % e
    try:
        if not cupy.is_available():
            return "no CUDA GPU (cupy.is_available() is False)"
    except Exception as e:  # pragma: no cover
        return "no CUDA GPU: %s" % e
    return None


GPU_REASON = _gpu_reason()


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped with a reason otherwise)")
    if GPU_REASON is None and os.environ.get("CUPYSEL_NO_POOL"):
        import cupy

        # Under compute-sanitizer: every array its own cudaMalloc, so that an
        # out-of-bounds access cannot land inside a pooled block unseen.
        cupy.cuda.set_allocator(None)


def pytest_collection_modifyitems(config, items):
    if GPU_REASON is None:
        return
    skip = pytest.mark.skip(reason=GPU_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
