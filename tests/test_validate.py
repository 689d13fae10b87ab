"""Bad input is refused before anything is launched, with clear messages (CPU)."""

import numpy as np
import pytest

import cupysel

GOOD = dict(batch=2, q_heads=8, kv_heads=2, head_dim=64, subspaces=8, n_centroids=64,
            capacity=1000, sink=4, window=8, k=16)


def test_good_plan_builds_without_a_gpu():
    plan = cupysel.Selector(**GOOD)
    assert plan.config.group == 4 and plan.config.total == 28
    assert "Selector(" in repr(plan)


@pytest.mark.parametrize("change, exc, match", [
    (dict(q_heads=7), ValueError, "q_heads: expected a multiple of kv_heads=2"),
    (dict(subspaces=7), ValueError, "head_dim=64 must be divisible"),
    (dict(n_centroids=257), ValueError, "n_centroids: codes are uint8"),
    (dict(n_centroids=0), ValueError, "n_centroids: expected an int >= 1, got 0"),
    (dict(sink=-1), ValueError, "sink: expected an int >= 0, got -1"),
    (dict(window=-3), ValueError, "window: expected an int >= 0"),
    (dict(k=-1), ValueError, "k: expected an int >= 0"),
    (dict(k=2.5), TypeError, "k: expected an int, got float"),
    (dict(k=True), TypeError, "k: expected an int, got bool"),
    (dict(batch=0), ValueError, "batch: expected an int >= 1"),
    (dict(capacity=0), ValueError, "capacity: expected an int >= 1"),
    (dict(group_reduce="sum"), ValueError, "group_reduce: expected one of"),
    (dict(scale="1"), TypeError, "scale: expected a float or None"),
    (dict(k=2**31), ValueError, "at most 2\\*\\*31 - 1"),
    (dict(sink=2**30, window=2**30, k=2**30), ValueError, "sink \\+ k \\+ window"),
    (dict(head_dim=256, subspaces=256, n_centroids=256), ValueError, "lookup table"),
])
def test_selector_rejects_bad_sizes(change, exc, match):
    with pytest.raises(exc, match=match):
        cupysel.Selector(**{**GOOD, **change})


def test_select_rejects_host_arrays():
    q = np.ones((1, 4, 16), np.float16)
    with pytest.raises((TypeError, ValueError), match="q"):
        cupysel.select(q, q, q, q, sink=1, window=1, k=1)


def test_select_rejects_other_types():
    with pytest.raises(TypeError, match="Invalid type of q: expected a CUDA array"):
        cupysel.select([[1.0]], None, None, None, sink=1, window=1, k=1)


def test_reference_rejects_bad_lengths():
    from cupysel import reference

    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 8))
    c = rng.standard_normal((1, 2, 4, 4))
    codes = rng.integers(0, 4, (1, 1, 10, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="seq_lens"):
        reference.select(q, c, codes, np.array([11]), sink=1, window=1, k=1)
