"""Pool the `summary.json` files of one suite run on disjoint seeds into one, exactly.

Each summary holds, per (model, detector, set, metric) and per (model, detector) flagged share,
the mean and sample standard deviation over its seeds. Where the per-seed rows of an earlier run
are gone, its summary is still enough: for groups of n_i seeds with means m_i and sample SDs s_i,
the pooled mean is M = Σ n_i m_i / N and the pooled sample SD is
sqrt((Σ (n_i − 1) s_i² + Σ n_i (m_i − M)²) / (N − 1)), N = Σ n_i (the parallel form of the sum
of squares, Chan et al. 1979). Rows present in some summaries only are left out, and said so.

``--replace R1 R2 …``: summaries of a rerun of some detectors (pooled the same way, over the
same seeds as the result): their (model, detector) rows replace those of the pooled result — a
detector rerun after a change of its defaults, where the other detectors' rows are gone.

Usage:
    python research/merge_summaries.py --out docs/reports/S/summary.json A/summary.json B/... \
        [--replace RERUN/summary.json ...]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

METRIC_KEY = ("model", "detector", "set", "metric")
FLAGGED_KEY = ("model", "detector", "target")


def pool(groups: list[tuple[int, float, float | None]]) -> tuple[float, float | None, int]:
    """Mean, sample SD (None for one seed) and count of the union of (n, mean, sd) groups."""
    total = sum(n for n, _, _ in groups)
    mean = sum(n * m for n, m, _ in groups) / total
    if total < 2:
        return mean, None, total
    within = sum((n - 1) * (s or 0.0) ** 2 for n, _, s in groups)
    between = sum(n * (m - mean) ** 2 for n, m, _ in groups)
    return mean, math.sqrt((within + between) / (total - 1)), total


def merge_rows(tables: list[list[dict[str, Any]]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    indexed = [{tuple(r[k] for k in key): r for r in rows} for rows in tables]
    common = set.intersection(*(set(t) for t in indexed))
    dropped = set.union(*(set(t) for t in indexed)) - common
    if dropped:
        print(f"left out {len(dropped)} rows not in every summary, e.g. {sorted(dropped)[0]}")
    merged = []
    for k in (k for k in indexed[0] if k in common):
        rows = [t[k] for t in indexed]
        mean, sd, n = pool([(r["n_seeds"], r["mean"], r["sd"]) for r in rows])
        merged.append({**rows[0], "mean": mean, "sd": sd, "n_seeds": n})
    return merged


def replace_detectors(
    rows: list[dict[str, Any]], newer: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`rows` with those of every (model, detector) that `newer` has replaced by `newer`'s."""
    rerun = {(r["model"], r["detector"]) for r in newer}
    return [r for r in rows if (r["model"], r["detector"]) not in rerun] + newer


def pooled(parts: list[dict[str, Any]], paths: list[Path]) -> dict[str, Any]:
    """The summaries of disjoint seeds of one suite, pooled."""
    if len({p["suite"] for p in parts}) != 1 or any(p["fast"] for p in parts):
        raise SystemExit("the summaries must be full runs of one suite")
    seeds = [s for p in parts for s in p["seeds"]]
    if len(seeds) != len(set(seeds)):
        raise SystemExit(f"the summaries share seeds: {seeds}")
    return {
        "suite": parts[0]["suite"],
        "fast": False,
        "seeds": sorted(seeds),
        "versions": parts[-1]["versions"],
        "merged_from": [
            {"seeds": p["seeds"], "versions": p["versions"], "file": str(path)}
            for p, path in zip(parts, paths, strict=True)
        ],
        "metrics": merge_rows([p["metrics"] for p in parts], METRIC_KEY),
        "id_flagged": merge_rows([p["id_flagged"] for p in parts], FLAGGED_KEY),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replace", nargs="+", type=Path, default=[])
    args = parser.parse_args()
    merged = pooled([json.loads(p.read_text()) for p in args.summaries], args.summaries)
    if args.replace:
        rerun = pooled([json.loads(p.read_text()) for p in args.replace], args.replace)
        if rerun["suite"] != merged["suite"] or rerun["seeds"] != merged["seeds"]:
            parser.error(f"the reruns cover seeds {rerun['seeds']}, not {merged['seeds']}")
        for key in ("metrics", "id_flagged"):
            merged[key] = replace_detectors(merged[key], rerun[key])
        detectors = sorted({r["detector"] for r in rerun["id_flagged"]})
        merged["replaced"] = {"detectors": detectors, "by": rerun["merged_from"]}
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {args.out}: seeds {merged['seeds']}, {len(merged['metrics'])} metric rows")


if __name__ == "__main__":
    main()
