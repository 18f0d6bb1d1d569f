"""Markdown tables for docs/benchmarks.md from the committed suite summaries: per model, the
default's pooled AUROC per set against the best registered detector there, the highest mean
AUROC over the sets, and the share of clean evaluation images flagged.

Usage: python research/summary_tables.py docs/reports/cifar10-resnet/summary.json [...]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

DEFAULT = "uniform-fusion"


def tables(path: Path) -> str:
    summary = json.loads(path.read_text())
    auroc: dict[str, dict[str, dict[str, tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for row in summary["metrics"]:  # the paper's transductive variant is no registered detector
        if row["metric"] == "auroc" and not row["detector"].endswith("-transductive"):
            auroc[row["model"]][row["detector"]][row["set"]] = (100 * row["mean"], 100 * row["sd"])
    flagged = {
        (r["model"], r["detector"]): (100 * r["mean"], 100 * r["sd"]) for r in summary["id_flagged"]
    }
    seeds = ", ".join(str(s) for s in summary["seeds"])
    band = 0.5 if summary["suite"].startswith("mnist") else 1.0  # the targets of each suite
    out = [f"### `{summary['suite']}` (seeds {seeds})", ""]
    for model, detectors in auroc.items():
        sets = list(detectors[DEFAULT])
        means = {d: sum(v[0] for v in per.values()) / len(per) for d, per in detectors.items()}
        ranked = sorted(means, key=means.get, reverse=True)  # type: ignore[arg-type]
        within = 0
        out += [
            f"**{model}** — {len(detectors)} detectors. Mean AUROC over the {len(sets)} sets: "
            + ", ".join(f"`{d}` {means[d]:.2f}" for d in ranked[:4])
            + ".",
            "",
        ]
        out += ["| set | default | best registered | gap |", "|---|---:|---|---:|"]
        for s in sets:
            value, sd = detectors[DEFAULT][s]
            best = max(detectors, key=lambda d: detectors[d].get(s, (-1.0, 0.0))[0])
            gap = detectors[best][s][0] - value
            within += gap <= band
            spread = f" ± {sd:.2f}" if len(summary["seeds"]) > 1 else ""
            out.append(
                f"| {s} | {value:.2f}{spread} | `{best}` {detectors[best][s][0]:.2f} | {gap:.2f} |"
            )
        f_mean, f_sd = flagged[(model, DEFAULT)]
        spread = f" ± {f_sd:.2f}" if len(summary["seeds"]) > 1 else ""
        out += ["", f"Within {band} point of the best on {within} of {len(sets)} sets. Clean "
                f"evaluation images flagged by the default: {f_mean:.2f}{spread} % "
                "(target 5 %).", ""]  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summaries", nargs="+", type=Path)
    for path in ap.parse_args().summaries:
        print(tables(path))


if __name__ == "__main__":
    main()
