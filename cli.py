"""The ``cupysel`` command: ``cupysel bench`` (a thin layer over cupysel.bench)."""

import sys

import click

from cupysel import bench


@click.group()
def main():
    """cupysel: sparse-attention token selection on CuPy."""


@main.command("bench")
@click.option("--shape", "shapes", multiple=True, type=click.Choice(list(bench.SHAPES)),
              help="Benchmark shape (repeatable; default: all six SPEC shapes).")
@click.option("--mode", default="softmax_sum", show_default=True,
              type=click.Choice(list(bench.MODES) + ["all"]), help="group_reduce, or all.")
@click.option("--dtype", default="float16", show_default=True,
              type=click.Choice(["float16", "bfloat16", "float32"]), help="q and centroids dtype.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]))
@click.option("--output", type=click.Path(dir_okay=False), help="Write the report here too.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="PNG of time per shape: cupysel, peers and the read floor (log scale).")
@click.option("--check", is_flag=True,
              help="Compare with the float64 reference before timing; exit 1 on a mismatch.")
@click.option("--repeat", default=200, show_default=True, type=click.IntRange(min=10),
              help="Timed calls per shape (median, p10, p90).")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch peers even if torch imports.")
@click.option("--topk", default="radix", show_default=True,
              type=click.Choice(["radix", "bitonic"]),
              help="Finish of the top-K stage: radix levels, or a bitonic sort of the tie bin "
                   "when it holds at most 2048 keys (for comparison).")
@click.option("--path", default="auto", show_default=True,
              type=click.Choice(["auto", "coop", "staged"]),
              help="Launch path: auto (the plan's choice), coop (one cooperative kernel, "
                   "CTAs of a row meeting in global memory) or staged (score, top-K, weights "
                   "kernels), for comparison.")
def bench_cmd(shapes, mode, dtype, fmt, output, plot, check, repeat, no_torch, topk, path):
    """Time select() on the SPEC's benchmark shapes (needs an NVIDIA GPU)."""
    shapes = list(shapes) or list(bench.SHAPES)
    modes = list(bench.MODES) if mode == "all" else [mode]
    try:
        head, rows = bench.run(shapes, modes, dtype, repeat, check, bench.progress_line,
                               with_torch=not no_torch, topk=topk, path=path)
    except bench.NoGPU as e:
        click.echo("error: %s" % e, err=True)
        sys.exit(1)
    sys.stderr.write("\n")
    text = {"table": bench.format_table, "json": bench.format_json,
            "csv": bench.format_csv}[fmt](head, rows)
    click.echo(text)
    if output:
        with open(output, "w") as f:
            f.write(text + "\n")
    if plot:
        bench.plot(head, rows, plot)
    if check and any(r.check != "ok" for r in rows):
        click.echo("error: a result differs from the reference: %s"
                   % "; ".join("%s/%s: %s" % (r.shape, r.mode, r.check) for r in rows
                               if r.check != "ok"), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
