"""The benchmark report: ``results.json`` (tidy rows), ``summary.json`` (means and SDs over
seeds, machine-readable), ``report.md`` and a self-contained ``report.html`` — the share of clean
ID test images each detector flags, tables of every detector on every set (mean ± std over
seeds), the paper's numbers side by side, attack statistics, costs and per-step wall times, ROC
curves, score histograms (overall and per predicted class) and a 2-D embedding of MDL
features."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tripwire.bench.results import (
    Aggregate,
    Key,
    aggregate,
    id_flagged,
    read_rows,
    suite_summary,
)
from tripwire.bench.runner import TIMINGS, TRANSDUCTIVE
from tripwire.bench.suites import Suite
from tripwire.detectors import DEFAULT_DETECTOR
from tripwire.report.markdown import table
from tripwire.report.plots import (
    embedding_figure,
    histogram_figure,
    per_class_histogram_figure,
    roc_figure,
)

# The paper's detector names → ours.
PAPER_DETECTORS = {
    "baseline": "msp",
    "odin": "odin",
    "mahalanobis": "mahalanobis",
    "elo": "elo",
    "uniform": "uniform",
    "kd_bu": "kd_bu",
    "lid": "lid",
}
FAMILIES = ("ood", "adversarial", "noise")
# Detectors whose scores the report splits by predicted class (when their scores are stored).
PER_CLASS_DETECTORS = tuple(dict.fromkeys((DEFAULT_DETECTOR, "uniform", "mahalanobis")))


def load_paper(suite: Suite) -> dict[str, Any] | None:
    """The paper's numbers for this suite (bundled JSON), or None."""
    if suite.paper is None:
        return None
    text = resources.files("tripwire.bench.paper").joinpath(suite.paper).read_text()
    return json.loads(text)


def write_report(suite: Suite, out: str | Path, command: str) -> Path:
    """Write ``results.json``, ``report.md`` and ``report.html`` into `out` from its
    ``results.jsonl``, with the suite's notes and deviations from the paper; returns the Markdown
    path."""
    folder = Path(out)
    rows = read_rows(folder / "results.jsonl")
    (folder / "results.json").write_text(json.dumps(rows, indent=1))
    (folder / "summary.json").write_text(json.dumps(suite_summary(rows), indent=1) + "\n")
    agg = aggregate(rows)
    flagged = id_flagged(rows)
    timings = _read_timings(folder)
    models = sorted({r["model"] for r in rows}, key=lambda m: (m != suite.models[0], m))
    seeds = sorted({r["seed"] for r in rows})
    detectors = _detector_order({r["detector"] for r in rows})
    order = [a.name for a in suite.anomalies]
    sets = sorted({r["anomaly_set"] for r in rows}, key=order.index)
    family = {a.name: a.family for a in suite.anomalies}

    seeded = "model training, attacks, detector fits"
    if suite.model_seed is not None:
        seeded = f"attacks, detector fits; every seed uses the zoo model of seed {suite.model_seed}"
    parts = [
        f"# tripwire bench — {suite.name}",
        f"Reproduce: `{command}`  \nSeeds: {', '.join(map(str, seeds))} ({seeded}). "
        f"Fast mode: {rows[0]['fast']}. Versions: "
        f"{json.dumps(rows[0]['versions'])}.",
        "## Protocol\n\n" + "\n".join(f"- {n}" for n in (*suite.notes, *suite.deviations)),
        _suite_time(timings),
    ]
    for model in models:
        parts.append(f"## {model}")
        parts.append("### Clean ID test images flagged % (target 5 ± 1)")
        parts.append(_flagged_table(flagged, model, detectors))
        for metric, title in (
            ("auroc", "AUROC % (pooled)"),
            ("auroc_class_weighted", "AUROC % (class-weighted, as the paper)"),
            ("tnr_at_tpr95", "TNR at 95 % TPR % (ID positive, pooled)"),
            ("tnr_at_tpr95_class_weighted", "TNR at 95 % TPR % (class-weighted)"),
        ):
            parts.append(f"### {title}")
            parts.append(_metric_table(agg, model, detectors, sets, family, metric))
        first = min(r["seed"] for r in rows if r["model"] == model)
        info = {
            r["anomaly_set"]: r["anomaly_info"]
            for r in rows
            if r["model"] == model and r["seed"] == first
        }
        parts.append("### Attack and noise sets")
        parts.append(_info_table(info, sets, first))
        parts.append("### Costs (seed means)")
        parts.append(_cost_table(rows, model, detectors))
        parts.append("### Wall time per step")
        parts.append(
            _timing_table(timings, model) if timings.get(model) else _step_table(rows, model)
        )
    paper = load_paper(suite)
    if paper is not None:
        parts.append(_paper_section(paper, agg, models, suite))
    parts.append(_figures(folder, models[0], seeds[0], sets))
    parts.append(_per_class_figures(folder, models, seeds[0], sets, family))
    parts.append(_embedding(folder, models[0], family))
    markdown_text = "\n\n".join(parts) + "\n"
    md = folder / "report.md"
    md.write_text(markdown_text)
    (folder / "report.html").write_text(_html(markdown_text, folder, suite.name))
    return md


def _detector_order(names: set[str]) -> list[str]:
    first = [DEFAULT_DETECTOR, TRANSDUCTIVE]
    return [n for n in first if n in names] + sorted(names - set(first))


def _metric_table(
    agg: dict[Key, Aggregate],
    model: str,
    detectors: list[str],
    sets: list[str],
    family: Mapping[str, str],
    metric: str,
) -> str:
    body = []
    for s in sets:
        values = {d: agg.get((model, d, s, metric)) for d in detectors}
        best = max((v.mean for v in values.values() if v is not None), default=None)
        row: list[object] = [f"{s} ({family[s]})"]
        for d in detectors:
            v = values[d]
            text = "—" if v is None else v.percent()
            row.append(f"**{text}**" if v is not None and v.mean == best else text)
        body.append(row)
    return table(["set", *detectors], body)


def _info_table(info: dict[str, dict[str, Any]], sets: list[str], seed: int) -> str:
    body = []
    for s in sets:
        i = info.get(s, {})
        rate = i.get("success_rate")
        body.append(
            [
                s,
                i.get("n", "—"),
                "—" if rate is None else f"{100 * rate:.1f}",
                _fmt(i.get("mean_linf")),
                _fmt(i.get("mean_l2")),
                _fmt(i.get("mean_l0")),
                _fmt(i.get("mean_confidence")),
            ]
        )
    header = ["set", "n made", "success %", "mean L∞", "mean L2", "mean L0", "mean confidence"]
    return table(header, body) + f"\n\n(seed {seed}; only successful inputs are scored.)"


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) and np.isfinite(v) else "—"


def _cost_table(rows: list[dict[str, Any]], model: str, detectors: list[str]) -> str:
    body = []
    for d in detectors:
        rs = [
            r for r in rows if r["model"] == model and r["detector"] == d and r["metric"] == "auroc"
        ]
        if not rs:
            continue
        per_fit = {(r["seed"]): r for r in rs}.values()
        fit = np.mean([r["fit_seconds"] for r in per_fit])
        speed = np.mean([r["id_scoring_images_per_second"] for r in per_fit])
        trained_on = next(iter(per_fit))["fitted_on_anomalies"] or "ID only"
        row = [d, f"{fit:.1f}", f"{speed:,.0f}", trained_on]
        body.append([*row, _fit_choices(list(per_fit))])
    header = [
        "detector",
        "fit s",
        "scoring images/s",
        "fitted on",
        "chosen by fit (per seed)",
    ]
    return table(header, body)


def _flagged_table(
    flagged: dict[tuple[str, str], Aggregate], model: str, detectors: list[str]
) -> str:
    """Per detector, the share of clean ID test images its thresholds flag (mean ± SD over
    seeds), marked where it misses the 5 ± 1 % that a 95 % TPR calibration promises."""
    body = []
    for d in detectors:
        a = flagged.get((model, d))
        if a is None:
            continue
        mark = "" if abs(a.mean - 0.05) <= 0.01 else " (outside 4–6)"
        body.append([d, a.percent() + mark])
    return table(["detector", "flagged %"], body)


def _fit_choices(per_seed: list[dict[str, Any]]) -> str:
    """What each seed's fit chose by itself (`Detector.fit_summary`), e.g. "layer relu1 / pool1";
    "—" where nothing was chosen or the rows predate the record."""
    summaries = [r.get("fit_summary") or {} for r in sorted(per_seed, key=lambda r: r["seed"])]
    keys = sorted({k for s in summaries for k in s})
    return (
        "; ".join(f"{k} " + " / ".join(str(s.get(k, "—")) for s in summaries) for k in keys) or "—"
    )


def _suite_time(timings: dict[str, dict[int, dict[str, Any]]]) -> str:
    """One line: the whole suite's wall and CPU time, summed over its (model, seed) runs."""
    runs = [r for by_seed in timings.values() for r in by_seed.values()]
    if not runs:
        return "Wall time: not recorded (rows from before per-step timing was added)."
    wall = sum(sum(r["wall_seconds"].values()) for r in runs) / 60
    cpu = sum(sum(r["cpu_seconds"].values()) for r in runs) / 60
    loads = [x for r in runs for x in (r["load_average_at_start"][1], r["load_average_at_end"][1])]
    return (
        f"Wall time of the {len(runs)} (model, seed) runs: {wall:.1f} min in all ({cpu:.1f} CPU "
        f"min; machine load {min(loads):.1f}–{max(loads):.1f} on 2 cores); per-step times below."
    )


def _read_timings(folder: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """model → seed → the last complete timing record of that run (``timings.jsonl``)."""
    path = folder / TIMINGS
    out: dict[str, dict[int, dict[str, Any]]] = {}
    if path.exists():
        for r in read_rows(path):
            out.setdefault(r["model"], {})[r["seed"]] = r
    return out


def _timing_table(timings: dict[str, dict[int, dict[str, Any]]], model: str) -> str:
    """Wall and CPU seconds of each step of one (model, seed) run, mean over seeds."""
    runs = timings[model]
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for r in runs.values():
        steps = {k: v for k, v in r["wall_seconds"].items() if k != "anomaly sets"}
        steps |= {f"make {k}": v for k, v in r["set_seconds"].items()}
        cpus = {k: v for k, v in r["cpu_seconds"].items() if k != "anomaly sets"}
        cpus |= {f"make {k}": v for k, v in r["set_cpu_seconds"].items()}
        for k, v in steps.items():
            wall.setdefault(k, []).append(v)
            cpu.setdefault(k, []).append(cpus.get(k, float("nan")))
    total = sum(float(np.mean(v)) for v in wall.values())
    total_cpu = sum(float(np.mean(v)) for v in cpu.values())
    body = [
        [k, f"{np.mean(v):.1f}", f"{np.mean(cpu[k]):.1f}", f"{100 * np.mean(v) / total:.1f}"]
        for k, v in sorted(wall.items(), key=lambda kv: -float(np.mean(kv[1])))
    ]
    body.append(["total (one seed)", f"{total:.1f}", f"{total_cpu:.1f}", "100.0"])
    loads = [r["load_average_at_start"][1] for r in runs.values()]
    loads += [r["load_average_at_end"][1] for r in runs.values()]
    note = (
        f"\n\nMean over seeds {', '.join(map(str, sorted(runs)))}; CPU = this process, all "
        f"threads. Machine load (5-min average) during these runs: {min(loads):.1f}–"
        f"{max(loads):.1f} on 2 cores, so wall times are inflated where the load exceeds 2. "
        "A set loaded from the cache of an earlier run shows its load time, not its making "
        "time; zoo model training is not included (models come trained from the zoo cache)."
    )
    return table(["step", "wall s", "CPU s", "% of wall"], body) + note


def _step_table(rows: list[dict[str, Any]], model: str) -> str:
    """Wall time of each step of a (model, seed) run, in seconds: loading, making each anomaly
    set, FGSM of training images, and per detector fit + scoring; mean over seeds."""
    runs: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["model"] == model and r["metric"] == "auroc":
            runs.setdefault(r["seed"], []).append(r)
    timed = {seed: rs for seed, rs in runs.items() if "step_seconds" in rs[0]}
    if not timed:
        return "Not recorded (rows from before per-step timing was added)."
    steps: dict[str, list[float]] = {}
    for rs in timed.values():
        seen: dict[str, float] = {}
        for r in rs:
            for k, v in r["step_seconds"].items():
                seen[k] = max(seen.get(k, 0.0), v)  # fit_anomalies is set once it has run
        for r in rs:
            seen[f"make {r['anomaly_set']}"] = r["anomaly_info"].get("seconds", 0.0)
        detectors: dict[str, float] = {}
        for r in rs:
            if r["detector"] != r["fitted_detector"]:
                continue  # the transductive variant reuses the uniform detector's fit
            d = r["detector"]
            if d not in detectors:
                id_s = r["n_id"] / r["id_scoring_images_per_second"]
                detectors[d] = r["fit_seconds"] + id_s
            detectors[d] += r.get("scoring_seconds", 0.0)
        for d, v in detectors.items():
            seen[f"detector {d} (fit + scoring)"] = v
        for k, v in seen.items():
            steps.setdefault(k, []).append(v)
    total = sum(float(np.mean(v)) for v in steps.values())
    body = [
        [k, f"{np.mean(v):.1f}", f"{100 * np.mean(v) / total:.1f}"]
        for k, v in sorted(steps.items(), key=lambda kv: -float(np.mean(kv[1])))
    ]
    body.append(["total (one seed)", f"{total:.1f}", "100.0"])
    note = (
        f"\n\nSeconds, mean over seeds {', '.join(map(str, sorted(timed)))}; a set loaded from "
        "the cache of an earlier run shows its load time, not its generation time. Zoo model "
        "training is not included (models come trained from the zoo cache)."
    )
    return table(["step", "seconds", "% of total"], body) + note


def _paper_section(
    paper: dict[str, Any], agg: dict[Key, Aggregate], models: list[str], suite: Suite
) -> str:
    out = [
        "## Side by side with the paper",
        "Paper numbers from " + paper["source"] + ". Ours: mean ± std over seeds; the uniform "
        "detector and the paper's transductive variant are compared on class-weighted values "
        "(as the paper reports its own method), the other detectors on pooled values. "
        "Δ = ours − paper.",
    ]
    plain, oe = models[0], next((m for m in models if m.endswith("-oe")), None)
    rows_of: dict[str, list[str]] = {}  # paper row → our sets (TinyIm: resize and crop)
    for a in suite.anomalies:
        if a.paper_row:
            rows_of.setdefault(a.paper_row, []).append(a.name)
    for key, tab in paper["tables"].items():
        model = oe if "outlier_exposure" in key else plain
        title = key.split("_", 1)[1].replace("_", " ")
        out.append(f"### Table {key.split('_')[0]}: {title}")
        if model is None:
            out.append("Not run: no Outlier-Exposure model in the zoo yet.")
            continue
        body = []
        for row, cells, ours_set in _paper_rows(tab, suite.paper_model.get(model), rows_of):
            for metric, values in cells.items():
                for det, paper_value in zip(tab["detectors"], values, strict=True):
                    ours_det = PAPER_DETECTORS[det]
                    weighted = ours_det == "uniform"
                    m = metric + ("_class_weighted" if weighted else "")
                    label = f"{row} / {metric}"
                    if ours_set is not None and ours_set != row:
                        label += f" ({ours_set})"
                    candidates = [(ours_det, m)]
                    if weighted:
                        candidates.append((TRANSDUCTIVE, m))
                    for d, mm in candidates:
                        v = agg.get((model, d, ours_set or "", mm))
                        ours = "not run" if v is None else v.percent()
                        if ours_set is None:
                            ours = "set not available here"
                        delta = "" if v is None else f"{100 * v.mean - paper_value:+.2f}"
                        body.append([label, d, f"{paper_value:.2f}", ours, delta])
        out.append(table(["set / metric", "detector", "paper %", "ours %", "Δ"], body))
    return "\n\n".join(out)


def _paper_rows(
    tab: dict[str, Any], paper_key: str | None, rows_of: dict[str, list[str]]
) -> list[tuple[str, dict[str, Any], str | None]]:
    """(paper row, its cells, our set) for each comparison: a single-model table keeps its
    ``rows``, a multi-model one (the CIFAR file) the rows under the suite's `paper_model` key;
    a paper row that several of our sets rebuild appears once per set."""
    rows = (tab.get("rows") if "rows" in tab else tab.get(paper_key or "")) or {}
    out: list[tuple[str, dict[str, Any], str | None]] = []
    for row, cells in rows.items():
        ours_sets: list[str | None] = [*rows_of.get(row, [])] or [None]
        for ours in ours_sets:
            out.append((row, cells, ours))
    return out


def _figures(folder: Path, model: str, seed: int, sets: list[str]) -> str:
    path = folder / "scores" / f"{model}-seed{seed}-{DEFAULT_DETECTOR}.npz"
    if not path.exists():
        return ""
    data = np.load(path)
    anomaly = {s: data[s] for s in sets if s in data}
    roc_figure(data["id"], anomaly, folder / "roc.png", f"{DEFAULT_DETECTOR}, {model}, seed {seed}")
    histogram_figure(data["id"], anomaly, folder / "histograms.png", f"{DEFAULT_DETECTOR} scores")
    return (
        f"## Figures ({DEFAULT_DETECTOR} detector, {model}, seed {seed})\n\n"
        "![ROC curves](roc.png)\n\n![score histograms](histograms.png)"
    )


def _per_class_figures(
    folder: Path, models: list[str], seed: int, sets: list[str], family: Mapping[str, str]
) -> str:
    """Per-predicted-class score histograms of the chosen detectors, anomalies pooled by family."""
    out = []
    for model in models:
        for det in PER_CLASS_DETECTORS:
            path = folder / "scores" / f"{model}-seed{seed}-{det}.npz"
            if not path.exists():
                continue
            data = np.load(path)
            if "id_pred" not in data:
                continue
            groups = {}
            for fam in FAMILIES:
                names = [s for s in sets if family[s] == fam and s in data and f"{s}_pred" in data]
                if names:
                    groups[fam] = (
                        np.concatenate([data[s] for s in names]),
                        np.concatenate([data[f"{s}_pred"] for s in names]),
                    )
            png = f"per-class-{model}-{det}.png"
            per_class_histogram_figure(
                data["id"], data["id_pred"], groups, folder / png, f"{det}, {model}, seed {seed}"
            )
            out.append(f"![per-class histograms, {det}, {model}]({png})")
    if not out:
        return ""
    intro = (
        "## Score histograms per predicted class\n\nOne panel per class the model predicts: "
        "ID test scores (grey) against the scores of each anomaly family (all its sets pooled) "
        "that the model assigns to that class; the dashed line is the 95th percentile of the "
        "class's ID scores (the per-class threshold at 95 % TPR). Counts are in each panel's "
        "corner. Detectors: " + ", ".join(PER_CLASS_DETECTORS) + "."
    )
    return "\n\n".join([intro, *out])


def _embedding(folder: Path, model: str, family: Mapping[str, str]) -> str:
    path = folder / f"embedding-{model}.npz"
    if not path.exists():
        return ""
    data = np.load(path)
    features = {k: data[k] for k in data.files}
    png = f"embedding-{model}.png"
    embedding_figure(features, family, folder / png, f"MDL features, {model} (t-SNE)")
    return (
        "## 2-D embedding of MDL features (t-SNE)\n\nThe uniform detector's MDL features of "
        "ID test images and of each anomaly set (first seed), as the paper's figures 2–6.\n\n"
        f"![embedding]({png})"
    )


def _html(markdown_text: str, folder: Path, title: str) -> str:
    """Self-contained HTML: the Markdown rendered, images inlined as data URIs."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def inline(match: re.Match[str]) -> str:
        png = folder / match.group(1)
        if not png.exists():
            return match.group(0)
        data = base64.b64encode(png.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#f3f3f3}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>"
    )
