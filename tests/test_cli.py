"""The cupysel command line (CPU): options, parsing, and the no-GPU message."""

import pytest
from click.testing import CliRunner

from cli import main
from cupysel import bench

from .conftest import GPU_REASON


def test_help_lists_the_options():
    out = CliRunner().invoke(main, ["bench", "--help"])
    assert out.exit_code == 0
    for opt in ("--shape", "--mode", "--dtype", "--format", "--output", "--plot", "--check",
                "--repeat", "--topk", "--path", "--no-torch"):
        assert opt in out.output


@pytest.mark.parametrize("args", [["--shape", "llama-1m"], ["--mode", "sum"],
                                  ["--format", "xml"], ["--repeat", "3"], ["--dtype", "int8"]])
def test_bad_options_are_usage_errors(args):
    out = CliRunner().invoke(main, ["bench", *args])
    assert out.exit_code == 2
    assert "Invalid value" in out.output


def test_shapes_are_the_spec_shapes():
    assert list(bench.SHAPES) == ["pqcache-8k", "llama-32k", "llama-128k", "batch16-32k",
                                  "batch16-128k", "qwen-ragged"]
    assert bench.SHAPES["qwen-ragged"]["q_heads"] == 28 and bench.SHAPES["qwen-ragged"]["ragged"]


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is present: the no-GPU path cannot run")
def test_no_gpu_is_one_clear_line():
    out = CliRunner().invoke(main, ["bench", "--shape", "pqcache-8k"])
    assert out.exit_code == 1
    assert "needs a CUDA GPU" in out.output
    assert "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_table_and_csv_formats():
    from cupysel.plan import STAGES

    assert bench.STAGES == STAGES
    row = bench.Row("pqcache-8k", "max", "float16", gpu_us=10.0, stage_us={"score": 1.0})
    coop = bench.Row("llama-32k", "max", "float16", gpu_us=20.0, stage_us={"coop": 19.5})
    head = {"gpu": "X", "commit": "abc"}
    table = bench.format_table(head, [row, coop])
    assert "pqcache-8k" in table and "10.0" in table and "gpu=X" in table
    assert table.splitlines()[-2].endswith("1.0/-/-/-") and table.endswith("-/-/-/19.5")
    csv = bench.format_csv(head, [row]).splitlines()
    assert csv[0].startswith("shape,mode,path,gpu_us") and csv[1].startswith("pqcache-8k,max")
    assert '"header"' in bench.format_json(head, [row])
