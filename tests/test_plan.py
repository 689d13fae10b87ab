"""Launch geometry (CPU): which shapes take the cooperative path, and how they split."""

import pytest

from cupysel import validate
from cupysel.plan import coop_geometry, plan_geometry
from cupysel.bench import SHAPES

H100 = dict(sm_count=132, smem_per_block=227 * 1024)


def config(shape, mode="softmax_sum", **over):
    cfg = {k: v for k, v in SHAPES[shape].items() if k != "ragged"}
    cfg.update(over)
    return validate.make_config(**cfg, group_reduce=mode)


@pytest.mark.parametrize("mode", ["softmax_sum", "max", "mean"])
@pytest.mark.parametrize("shape,cl,chunk", [
    ("pqcache-8k", 16, 512), ("llama-32k", 16, 2048), ("llama-128k", 16, 8192),
    ("batch16-32k", 0, 0), ("batch16-128k", 0, 0), ("qwen-ragged", 0, 0)])
def test_which_shapes_take_the_cooperative_path(shape, cl, chunk, mode):
    """B = 1 rows split over 16 CTAs (128 of 132 SMs, all resident) with their per-head
    scores on chip; big batches, whose rows cannot keep those with one CTA per SM, stay
    staged (batch16-32k's keys would fit, but that layout was slower: perf-notes v30)."""
    assert coop_geometry(config(shape, mode), **H100) == (cl, chunk, False)
    geo = plan_geometry(config(shape, mode), 132)
    assert (geo.coop, geo.chunk, geo.coop_keys) == (cl, chunk, False)


def test_one_key_a_token_where_asked_and_where_it_fits():
    """The keys layout only where asked; softmax_sum only with one CTA a row (its filter
    cut needs the row's whole histogram) and the filter on; one that does not fit is
    refused."""
    assert coop_geometry(config("batch16-32k"), **H100, keys=True) == (1, 32768, True)
    cfg = config("llama-32k", batch=4)  # 32 rows: 4 CTAs a row, 8192 tokens each
    assert coop_geometry(cfg, **H100) == (4, 8192, False)
    assert coop_geometry(cfg, **H100, keys=True) == (0, 0, False)  # softmax_sum, CL 4
    assert coop_geometry(config("llama-32k", "max", batch=4), **H100, keys=True) == (4, 8192, True)
    assert coop_geometry(cfg, **H100, ctas=1, keys=True) == (1, 32768, True)
    assert coop_geometry(cfg, **H100, ctas=1, keys=True, softmax_filter=False) == (0, 0, False)
    assert coop_geometry(cfg, **H100, ctas=1) == (0, 0, False)  # 2 MB of scores
    big = config("llama-32k", "mean", batch=4, capacity=60000)  # keys: 240 KB, too many
    assert coop_geometry(big, **H100, ctas=1, keys=True) == (0, 0, False)
    geo = plan_geometry(config("llama-32k", "max", batch=4), 132, coop_keys=True)
    assert (geo.coop, geo.chunk, geo.coop_keys) == (4, 8192, True)


def test_cooperative_geometry_respects_residency_and_shared_memory():
    cfg = config("llama-128k")
    cl, chunk, _ = coop_geometry(cfg, sm_count=132, smem_per_block=160 * 1024)  # sm_80-sized
    assert cl == 0  # 8192-token chunks' scores do not fit next to the table
    cl, chunk, _ = coop_geometry(config("llama-32k", batch=4), **H100)
    assert cl * 32 <= 132 and cl == 4 and chunk == 8192  # rows * CL never exceeds the SMs
    assert coop_geometry(cfg, **H100, cooperative=False) == (0, 0, False)
    short = config("pqcache-8k", capacity=300)
    assert coop_geometry(short, **H100) == (2, 160, False)  # at least 256 tokens a CTA, 32-aligned
    with pytest.raises(ValueError, match="cooperative path does not fit"):
        plan_geometry(config("batch16-128k"), 132, path="coop")


def test_weights_blocks():
    """One weights block a row where the rows fill the GPU; more for fewer rows; never
    more entries a block than one round of its threads."""
    import kernels_cu as kc

    geo = plan_geometry(config("batch16-32k", "max"), 132)
    assert (geo.wsplit, geo.wchunk) == (1, 2144)
    geo = plan_geometry(config("qwen-ragged", "mean"), 132)
    assert (geo.wsplit, geo.wchunk) == (2, 1072)
    geo = plan_geometry(config("llama-32k", "max"), 132, path="staged")
    assert geo.wsplit == 9 and geo.wchunk * 9 >= 2144 and geo.wchunk >= 238
    big = config("llama-32k", "max", k=30000)
    geo = plan_geometry(big, 132, path="staged")
    assert geo.wchunk <= kc.NT_WEIGHTS * kc.WEIGHTS_PER_THREAD
    assert geo.wsplit * geo.wchunk >= big.total



def test_score_blocks_fill_one_wave():
    """Score blocks: one wave over the SMs (1 an SM where the rows fit, else 2 with a
    64 KiB table, 1 with Qwen's 128 KiB), the kernel sizing them from the lengths; the
    statistics hold a row's blocks at most, and the grid has room for one block a row
    when rows exceed slots."""
    from cupysel import plan

    geo = plan_geometry(config("batch16-32k"), 132, path="staged")
    assert (geo.slots, geo.score_grid, geo.score_minb, geo.nsc) == (132, 132, 1, 64)
    geo = plan_geometry(config("qwen-ragged"), 132, path="staged")
    assert (geo.slots, geo.score_grid, geo.score_minb, geo.nsc) == (132, 132, 1, 132)
    geo = plan_geometry(config("batch16-32k", batch=20), 132, path="staged")
    assert (geo.slots, geo.score_grid, geo.score_minb) == (264, 264, 2)  # 160 rows
    geo = plan_geometry(config("qwen-ragged", batch=40), 132, path="staged")
    assert (geo.slots, geo.score_grid, geo.score_minb) == (132, 160, 1)  # 128 KiB tables
    geo = plan_geometry(config("batch16-32k", batch=64), 132, path="staged")
    assert geo.score_grid == 512  # 512 rows, 264 slots: one block a row
    geo = plan_geometry(config("llama-32k", capacity=1000), 132, path="staged")
    assert geo.nsc == 2 and 2 * plan.MIN_SPLIT >= 1000
