"""What a group of detectors adds to a benchmark run's wall time, from the run's own step times.

Reads ``<out>/timings.jsonl`` of a `tripwire bench` run (one record per model × seed) and
compares the whole run's wall time with the same run less the steps of the named detectors and
the shared feature pass:

    ratio = total / (total − Σ_named "detector NAME" − "shared feature pass")

The subtraction over-states the saving (without the shared pass, the remaining logit-only
detectors would run forward passes of their own), so the ratio is an upper bound of what the
named detectors cost relative to a run without them. Both terms come from one run, on one
machine state.

Usage (the 13 detectors of the modern-detectors issue):
    python research/suite_cost_of_detectors.py results/fast-cifar10-resnet \\
        maxlogit entropy gen knn vim rmds react ash-b ash-s scale fdbd nnguide gram
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the run's --out folder")
    parser.add_argument("detectors", nargs="+")
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.out / "timings.jsonl").read_text().splitlines()]
    for r in records:
        wall = r["wall_seconds"]
        total = sum(wall.values())
        named = sum(wall.get(f"detector {d}", 0.0) for d in args.detectors)
        shared = wall.get("shared feature pass", 0.0)
        ratio = total / (total - named - shared)
        print(
            f"{r['model']} seed {r['seed']}: whole run {total:.1f} s; "
            f"named detectors {named:.1f} s + shared pass {shared:.1f} s; "
            f"ratio ≤ {ratio:.3f} "
            f"(load at start {r['load_average_at_start'][0]})"
        )


if __name__ == "__main__":
    main()
