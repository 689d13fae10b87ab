"""Every kernel specialisation compiles with NVRTC for sm_80 and sm_90, with no GPU (and
the exchange microbenchmark's kernels for sm_90)."""

import pytest

import kernels_cu
from cupysel.compile import compile_for_arch

SETS = kernels_cu.specializations()


def _nvrtc_reason():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as e:  # pragma: no cover - depends on the machine
        return "NVRTC is not loadable: %s" % e
    return None


pytestmark = pytest.mark.skipif(_nvrtc_reason() is not None, reason=str(_nvrtc_reason()))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("ks", SETS, ids=lambda ks: "-".join(n.split("<")[1].rstrip(">") for n in ks.names()[:1]) + "-" + ks.mode)
def test_compiles(ks, arch):
    cubin = compile_for_arch(ks, arch)
    assert len(cubin) > 1000


def test_specializations_cover_the_paths():
    names = {n for ks in SETS for n in ks.names()}
    assert any(ks.vec is False for ks in SETS) and any(ks.vec for ks in SETS)
    assert {ks.subspaces for ks in SETS} >= {1, 2, 3, 4, 8, 16, 32, 64}
    assert {ks.cvec for ks in SETS} == {True, False} and {ks.save for ks in SETS} == {True, False}
    assert {ks.bitonic for ks in SETS} == {True, False}
    assert any(len(ks.tiles) > 1 for ks in SETS), "a head-tiled set"
    assert {ks.coop for ks in SETS} == {True, False}
    assert {ks.keys for ks in SETS if ks.coop} == {True, False}, "both coop layouts"
    assert {ks.mode for ks in SETS if ks.keys} == {"softmax_sum", "max", "mean"}
    assert {ks.minb for ks in SETS if not ks.coop} == {1, 2}, "score blocks 1 and 2 an SM"
    planes = {(gt, ks.coop) for ks in SETS for _, gt in ks.tiles
              if kernels_cu.table_planes(gt, ks.subspaces)}
    assert {3, 5, 6, 7} <= {gt for gt, _ in planes} and {True, False} <= {c for _, c in planes}
    for prefix in ("cs_score<", "cs_topk<", "cs_weights<", "cs_coop<"):
        assert any(n.startswith(prefix) for n in names)


def test_broken_source_fails_loudly(monkeypatch):
    monkeypatch.setattr(kernels_cu, "SOURCE", kernels_cu.SOURCE + "\n this is not C++;\n")
    with pytest.raises(RuntimeError, match="NVRTC failed"):
        compile_for_arch(SETS[0], "sm_90")


def test_exchange_microbenchmark_compiles():
    """scripts/xchg_latency.py's kernels (clusters, DSMEM: sm_90) stay compilable."""
    import importlib.util
    import pathlib

    from cupy.cuda import nvrtc

    path = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "xchg_latency.py"
    spec = importlib.util.spec_from_file_location("xchg_latency", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    prog = nvrtc.createProgram(mod.SRC, "xchg_latency.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, ["-arch=sm_90", "-std=c++17"])
        except nvrtc.NVRTCError as e:
            pytest.fail("NVRTC failed: %s\n%s" % (e, nvrtc.getProgramLog(prog)))
        assert len(nvrtc.getCUBIN(prog)) > 1000
    finally:
        nvrtc.destroyProgram(prog)
