"""`tripwire bench`: every registered detector against every anomaly set of a suite."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from tripwire.cli import app
from tripwire.cli.options import CACHE_DIR, DATA_DIR, THREADS, set_threads

_OUT = typer.Option(Path("results"), "--out", help="Folder for results.json and the reports.")
_DETECTORS = typer.Option([], "--detector", help="Only these detectors (repeatable).")
_MODELS = typer.Option([], "--model", help="Only these models of the suite (repeatable).")


DEFAULT_SEEDS = "0,1,2"
_SEEDS = typer.Option(
    [DEFAULT_SEEDS],
    help="Seeds of the attacks, image subsets and detector fits (and of the zoo model in "
    "mnist-lenet; the CIFAR-10 suites use model seed 0 throughout): comma-separated, or the "
    "option repeated (--seeds 0 --seeds 1).",
)


def parse_seeds(values: list[str]) -> list[int]:
    """The seeds of ``--seeds`` values, each comma-separated: ["0", "1,2"] → [0, 1, 2]."""
    seeds = []
    for part in (p.strip() for v in values for p in v.split(",")):
        if part:
            try:
                seeds.append(int(part))
            except ValueError:
                message = f"{part!r} is not an integer seed"
                raise typer.BadParameter(message, param_hint="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise typer.BadParameter(f"give distinct seeds, got {values}", param_hint="--seeds")
    return seeds


@app.command("bench")
def bench_command(
    suite: str = typer.Option(
        "mnist-lenet",
        "--suite",
        help="Benchmark suite: mnist-lenet (LeNet-5 and its OE twin on MNIST), cifar10-resnet "
        "(the stored ResNet-44), cifar10-vgg16 (VGG-16; needs its weights).",
    ),
    out: Path = _OUT,
    fast: bool = typer.Option(False, "--fast", help="Subsets and one seed: a quick check."),
    seeds: list[str] = _SEEDS,
    detector: list[str] = _DETECTORS,
    model: list[str] = _MODELS,
    report_only: bool = typer.Option(False, help="Only rebuild the report from results.jsonl."),
    threads: int | None = THREADS,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
) -> None:
    """Run a benchmark suite and write results.json, report.md and report.html.

    Interrupted runs resume: rows already in `OUT/results.jsonl` are not recomputed.
    """
    from tripwire.bench import get_suite, run_suite, write_report

    set_threads(threads)
    s = get_suite(suite)
    seed_list = [0] if fast and seeds == [DEFAULT_SEEDS] else parse_seeds(seeds)
    if not report_only:
        run_suite(
            s,
            out,
            seeds=seed_list,
            fast=fast,
            detectors=detector or None,
            models=model or None,
            data_dir=data_dir,
            cache_dir=cache_dir,
        )
    command = "tripwire " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = write_report(s, out, command)
    Console().print(f"report: {md} and {md.with_suffix('.html')}")
