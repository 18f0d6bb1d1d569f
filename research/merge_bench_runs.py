"""Merge the outputs of several `tripwire bench` runs of one suite into one output folder.

A suite's detectors and seeds can be run apart — new detectors added to a finished run, one
detector rerun after a change of its defaults, a seed run on another day — each into its own
``--out``. This folder then holds the rows of all of them: for each (model, seed, detector) the
rows, scores file and step times of the LAST run given that has it, so a rerun replaces what it
reran. Then ``tripwire bench --suite S --report-only --out MERGED`` writes the report.

Usage:
    python research/merge_bench_runs.py --out MERGED RUN1 RUN2 ...   (later runs replace earlier)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

Key = tuple[str, int, str]


def _rows(run: Path) -> dict[Key, list[str]]:
    rows: dict[Key, list[str]] = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault((r["model"], r["seed"], r["detector"]), []).append(line)
    return rows


def _timings(runs: list[Path], owner: dict[Key, Path]) -> list[dict[str, Any]]:
    """Per (model, seed): the first run's record, with each detector's step times taken from the
    run whose rows were kept, and the shared feature pass added where a kept run had one."""
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        path = run / "timings.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            r = json.loads(line)
            base = records.setdefault((r["model"], r["seed"]), r)
            kept = [d for d in r["detectors"] if owner.get((r["model"], r["seed"], d)) == run]
            for field in ("wall_seconds", "cpu_seconds"):
                for d in kept:
                    if f"detector {d}" in r[field]:
                        base[field][f"detector {d}"] = r[field][f"detector {d}"]
                if kept and base is not r and "shared feature pass" in r[field]:
                    shared = base[field].get("shared feature pass", 0.0)
                    base[field]["shared feature pass"] = shared + r[field]["shared feature pass"]
            base["detectors"] = list(dict.fromkeys([*base["detectors"], *kept]))
    return list(records.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("runs", type=Path, nargs="+", help="bench output folders, oldest first")
    args = ap.parse_args()
    owner: dict[Key, Path] = {}
    rows: dict[Key, list[str]] = {}
    for run in args.runs:
        for key, lines in _rows(run).items():
            owner[key], rows[key] = run, lines
    (args.out / "scores").mkdir(parents=True, exist_ok=True)
    for (model, seed, detector), run in owner.items():
        scores = run / "scores" / f"{model}-seed{seed}-{detector}.npz"
        if scores.exists():
            shutil.copy(scores, args.out / "scores" / scores.name)
    for run in args.runs:  # embeddings and other side files: the last run's copy
        for extra in run.glob("*.npz"):
            shutil.copy(extra, args.out / extra.name)
    with open(args.out / "results.jsonl", "w") as f:
        f.writelines(line + "\n" for key in sorted(rows) for line in rows[key])
    with open(args.out / "timings.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in _timings(args.runs, owner))
    print(
        f"{sum(map(len, rows.values()))} rows of {len(rows)} (model, seed, detector) → {args.out}"
    )


if __name__ == "__main__":
    main()
