"""Running a benchmark suite: every registered detector against every anomaly set, per seed.

For each model of the suite and each seed: the zoo model trained with that seed; detectors fitted
(seeded) on ID training images and calibrated on the validation half of the ID test split; the ID
test images and the attacks' starting points from its evaluation half; the anomaly sets generated
with that seed (cached on disk by `make_anomalies`); every detector scores the ID test images and
each set. Detectors that read only logits and penultimate features (`FeatureDetector`) share one
forward pass per image set (`SharedFeatures`). Each (model, seed, detector) appends its rows to
``results.jsonl`` and its scores to ``scores/``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tripwire import __version__, metrics
from tripwire.anomalies import make_anomalies
from tripwire.anomalies.fitting import fgsm_of_training_images
from tripwire.bench.suites import AnomalySpec, Sizes, Suite
from tripwire.data import load_source as _load_source
from tripwire.data.base import ImageSet
from tripwire.data.transforms import conform
from tripwire.detectors import create_detector, get_detector_class, list_detectors
from tripwire.detectors.base import Detector
from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.uniform import UniformDetector, transductive_scores
from tripwire.errors import InvalidInputError, TripwireError
from tripwire.features import Features, extract_features
from tripwire.locking import exclusive_lock
from tripwire.models.info import model_info
from tripwire.models.zoo import list_models, load_model
from tripwire.progress import track

logger = logging.getLogger(__name__)

TRANSDUCTIVE = "uniform-paper-transductive"
TIMINGS = "timings.jsonl"  # one line per (model, seed) run: wall and CPU seconds of each step


@dataclass
class AnomalyData:
    """One evaluated anomaly set and what is known about how it was made."""

    spec: AnomalySpec
    images: torch.Tensor
    info: dict[str, Any]


@dataclass
class StepClock:
    """Wall and CPU (this process, all threads) seconds of the named steps of one run."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the body of a ``with`` block as step `name` (times of repeated steps add up)."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


class SharedFeatures:
    """The features of each image set of one run, extracted in one forward pass before the first
    `FeatureDetector` runs and handed to all of them, and the seconds each pass took."""

    def __init__(self, model: nn.Module, penultimate: bool, clock: StepClock) -> None:
        self.model, self.penultimate, self.clock = model, penultimate, clock
        self.features: dict[str, Features] = {}
        self.seconds: dict[str, float] = {}

    def extract(self, sets: dict[str, ImageSet | torch.Tensor]) -> None:
        """Extract the features of every set not extracted yet (keys: the run's set names),
        timed as the run's step "shared feature pass"."""
        with self.clock.step("shared feature pass"):
            for key, images in sets.items():
                if key in self.features:
                    continue
                data = images if isinstance(images, ImageSet) else ImageSet(key, images)
                start = time.perf_counter()
                features = extract_features(
                    self.model, data.batches(256), penultimate=self.penultimate
                )
                self.seconds[key] = time.perf_counter() - start
                self.features[key] = replace(features, labels=data.labels)

    def of(self, key: str) -> Features:
        """The features of the set `key` (extracted by `extract`)."""
        return self.features[key]


def score_set(
    det: Detector,
    model: nn.Module,
    shared: SharedFeatures,
    key: str,
    images: ImageSet | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Scores and predicted classes of `images` (run key `key`) by the fitted `det`, and the
    seconds they cost: for a `FeatureDetector`, its share of the forward pass included."""
    start = time.perf_counter()
    if isinstance(det, FeatureDetector):
        scores, predicted = det.score_features(shared.of(key))
        return scores, predicted, time.perf_counter() - start + shared.seconds[key]
    scores, predicted = det.score_and_predict(model, images)
    return scores, predicted, time.perf_counter() - start


@functools.lru_cache(maxsize=32)
def load_source(name: str, split: str | None, data_dir: str | Path | None) -> ImageSet:
    """`tripwire.data.load_source`, kept in memory for the whole run: every (model, seed) of a
    suite reads the same ID and OOD files (decoding them took 0.5–8 s a set, per seed)."""
    return _load_source(name, split, data_dir)


def versions() -> dict[str, str]:
    """Library versions and machine, recorded with every result row."""
    import sklearn

    return {
        "tripwire": __version__,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }


def build_anomaly_sets(
    suite: Suite,
    model: nn.Module,
    id_test: ImageSet,
    sizes: Sizes,
    seed: int,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
    fast: bool = False,
) -> list[AnomalyData]:
    """Every anomaly set of the suite (of its `fast` subset when `fast`) for this model and seed
    (generated sets come from the `make_anomalies` cache when already made)."""
    shape = id_test.image_shape
    attacked = id_test.take(sizes.attacked, seed=seed)
    out = []
    for spec in track(suite.sets(fast), "anomaly sets"):
        start, cpu = time.perf_counter(), time.process_time()
        if spec.family == "ood":
            data = load_source(spec.source, None, data_dir).take(sizes.per_set, seed=seed)
            images = conform(data.as_float(), shape)
            info: dict[str, Any] = {"n": len(images), "source": spec.source}
        elif spec.family == "adversarial":
            adv = make_anomalies(
                spec.source,
                model,
                attacked.as_float(),
                attacked.require_labels(),
                seed=seed,
                cache_dir=cache_dir,
                **spec.params,
            )
            images = adv.successful().images
            info = _summary(adv.summary())
        elif spec.per_target:
            images, info = _per_target(spec, model, shape, sizes, seed, cache_dir)
        else:
            n = sizes.per_set
            if spec.source.startswith("fooling"):
                n = sizes.fooling_per_class * model_info(model, shape).num_classes
            made = make_anomalies(
                spec.source,
                model,
                n=n,
                shape=list(shape),
                seed=seed,
                cache_dir=cache_dir,
                **spec.params,
            )
            images = made.successful().images
            info = _summary(made.summary())
        # wall time to make (or load from the cache) this set
        info["seconds"] = round(time.perf_counter() - start, 2)
        info["cpu_seconds"] = round(time.process_time() - cpu, 2)
        if len(images) == 0:
            logger.warning("%s: no successful inputs; the set is left out", spec.name)
            continue
        out.append(AnomalyData(spec, images, info))
    return out


def _per_target(
    spec: AnomalySpec,
    model: nn.Module,
    shape: tuple[int, ...],
    sizes: Sizes,
    seed: int,
    cache_dir: str | Path | None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A targeted source-free set (fooling images) made one target class at a time.

    Made in one batch, every population evolves until the *slowest* class reaches the goal; one
    class at a time, each class stops at its own goal — the same algorithm, settings and success
    rule, for a fraction of the generations. Class `c` uses seed ``seed * K + c`` (K classes).
    """
    c, h, w = shape
    k = model_info(model, (c, h, w)).num_classes
    parts = [
        make_anomalies(
            spec.source,
            model,
            n=sizes.fooling_per_class,
            shape=list(shape),
            targets=[c],
            seed=seed * k + c,
            cache_dir=cache_dir,
            **spec.params,
        )
        for c in range(k)
    ]
    images = torch.cat([p.successful().images for p in parts])
    return images, merge_summaries([p.summary() for p in parts])


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several parts of a set (`AnomalySet.summary` of each): counts add up,
    rates are recomputed, means over successes are weighted by each part's successes."""
    n = sum(s["n"] for s in summaries)
    n_ok = sum(s["n_success"] for s in summaries)
    out: dict[str, Any] = {
        "kind": summaries[0]["kind"],
        "n": n,
        "n_success": n_ok,
        "success_rate": n_ok / n if n else float("nan"),
    }
    for key in summaries[0]:
        if key.startswith("mean_"):
            parts = [(s[key], s["n_success"]) for s in summaries if s["n_success"]]
            out[key] = sum(v * w for v, w in parts) / n_ok if n_ok else float("nan")
    return _summary(out)


def _summary(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if isinstance(v, int | float | str)}


def _detector_params(name: str, seed: int) -> dict[str, Any]:
    """Per-seed parameters: the detector's own `seed` where it has one."""
    import inspect

    sig = inspect.signature(get_detector_class(name).__init__)
    return {"seed": seed} if "seed" in sig.parameters else {}


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    fast: bool = False,
    detectors: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Run `suite` and append tidy rows to ``<out>/results.jsonl``; returns that path.

    Rows already in the file (same model, seed and detector) are not recomputed. One run at a
    time per folder: a second process given the same `out` stops at once (two would compute the
    same rows and append both).
    """
    folder = Path(out)
    (folder / "scores").mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / ".lock", wait=False) as held:
        if not held:
            raise InvalidInputError(
                f"another tripwire bench is writing to {folder}; wait for it to finish or give "
                "another --out"
            )
        return _run_suite(suite, folder, seeds, fast, detectors, models, data_dir, cache_dir)


def _run_suite(
    suite: Suite,
    folder: Path,
    seeds: Sequence[int],
    fast: bool,
    detectors: Sequence[str] | None,
    models: Sequence[str] | None,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
) -> Path:
    rows_path = folder / "results.jsonl"
    done = _done(rows_path)
    sizes = suite.sizes(fast)
    names = list(detectors) if detectors else list_detectors()
    zoo = set(list_models())
    run_models = [m for m in (models or suite.models) if m in zoo]
    for skipped in set(models or suite.models) - set(run_models):
        logger.warning("model %s is not in the zoo; skipped", skipped)
    for model_name in run_models:
        for seed in seeds:
            todo = [n for n in names if (model_name, seed, n) not in done]
            if not todo:
                continue
            _run_one(suite, model_name, seed, todo, sizes, fast, folder, data_dir, cache_dir)
    return rows_path


def _done(rows_path: Path) -> set[tuple[str, int, str]]:
    done: set[tuple[str, int, str]] = set()
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["model"], r["seed"], r["fitted_detector"]))
    return done


def _run_one(
    suite: Suite,
    model_name: str,
    seed: int,
    names: list[str],
    sizes: Sizes,
    fast: bool,
    folder: Path,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
) -> None:
    clock = StepClock()
    load_average = os.getloadavg()
    with clock.step("load model and data"):
        model = load_model(
            model_name,
            data_dir=data_dir,
            cache_dir=cache_dir,
            seed=suite.model_seed_for(seed),
            train_if_missing=suite.train_models,
        )
        train = load_source(suite.id_source, "train", data_dir)
        fit_part = train.take(sizes.fit, seed=seed)
        validation = load_source(suite.id_source, "validation", data_dir)
        calibration = validation.take(sizes.calibration, seed=seed)
        evaluation = load_source(suite.id_source, "evaluation", data_dir)
        id_test = evaluation.take(sizes.id_test, seed=seed)
    with clock.step("anomaly sets"):
        sets = build_anomaly_sets(suite, model, id_test, sizes, seed, data_dir, cache_dir, fast)
    fit_anomalies = None
    context = {
        "suite": suite.name,
        "model": model_name,
        "seed": seed,
        "model_seed": suite.model_seed_for(seed),
        "fast": fast,
        "n_id": len(id_test),
        "versions": versions(),
    }
    penultimate = any(
        issubclass(k, FeatureDetector) and k.uses_penultimate
        for k in map(get_detector_class, names)
    )
    shared = SharedFeatures(model, penultimate, clock)
    for name in track(names, f"{model_name} seed {seed}: detectors"):
        params = {**_detector_params(name, seed), **suite.params_of(name, fast)}
        det = create_detector(name, **params)
        anomalies = None
        if det.needs_anomalies:
            if fit_anomalies is None:
                with clock.step("fgsm of training images"):
                    fit_anomalies = fgsm_of_training_images(
                        model,
                        train,
                        sizes.fit_anomalies,
                        seed=seed,
                        cache_dir=cache_dir,
                        **suite.fit_anomaly_params,
                    )
            anomalies = fit_anomalies
        if isinstance(det, FeatureDetector):
            everything = {"fit": fit_part, "calibration": calibration, "id": id_test}
            try:
                shared.extract(everything | {a.spec.name: a.images for a in sets})
            except TripwireError as e:
                logger.warning("%s could not be fitted on %s: %s", name, model_name, e)
                continue
        with clock.step(f"detector {name}"):
            start = time.perf_counter()
            try:
                if isinstance(det, FeatureDetector):
                    det.fit_features(model, shared.of("fit"))
                    det.calibrate_features(shared.of("calibration"))
                    shared_seconds = shared.seconds["fit"] + shared.seconds["calibration"]
                else:
                    det.fit(model, fit_part, anomalies=anomalies)
                    det.calibrate(model, calibration)
                    shared_seconds = 0.0
            except TripwireError as e:
                logger.warning("%s could not be fitted on %s: %s", name, model_name, e)
                continue
            fit_seconds = time.perf_counter() - start + shared_seconds
            s_id, p_id, id_seconds = score_set(det, model, shared, "id", id_test)
            extra = {
                "fit_seconds": fit_seconds,
                "id_scoring_images_per_second": len(id_test) / id_seconds,
                "id_flagged": float(det.flag(s_id, p_id).float().mean()),
                "fitted_on_anomalies": anomalies.name if anomalies is not None else None,
                "fit_summary": det.fit_summary(),
                "step_seconds": {k: round(v, 2) for k, v in clock.wall.items()},
            }
            scores: dict[str, Any] = {"id": s_id.numpy(), "id_pred": p_id.numpy()}
            rows: list[dict[str, Any]] = []
            raws = {}
            for a in sets:
                s, p, seconds = score_set(det, model, shared, a.spec.name, a.images)
                timed = {**extra, "scoring_seconds": round(seconds, 3)}
                scores[a.spec.name], scores[a.spec.name + "_pred"] = s.numpy(), p.numpy()
                flagged = float(det.flag(s, p).float().mean())
                rows += _rows(
                    context, name, name, det.get_params(), a, s_id, p_id, s, p, flagged, timed
                )
                if isinstance(det, UniformDetector) and det.reproduces_paper_protocol:
                    raws[a.spec.name] = (a, *det.raw_scores_of(model.eval(), a.images))
            if isinstance(det, UniformDetector) and det.reproduces_paper_protocol:
                rows += _transductive_rows(context, name, det, model, id_test, raws, extra)
                if not (folder / f"embedding-{model_name}.npz").exists():  # first seed run
                    _save_mdl_features(folder, model_name, det, model, id_test, sets)
            np.savez_compressed(folder / "scores" / f"{model_name}-seed{seed}-{name}.npz", **scores)
            with open(folder / "results.jsonl", "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
    record = {
        "suite": suite.name,
        "model": model_name,
        "seed": seed,
        "fast": fast,
        "detectors": names,
        "load_average_at_start": [round(x, 2) for x in load_average],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "set_seconds": {a.spec.name: a.info.get("seconds") for a in sets},
        "set_cpu_seconds": {a.spec.name: a.info.get("cpu_seconds") for a in sets},
        "wall_seconds": {k: round(v, 2) for k, v in clock.wall.items()},
        "cpu_seconds": {k: round(v, 2) for k, v in clock.cpu.items()},
    }
    with open(folder / TIMINGS, "a") as f:
        f.write(json.dumps(record) + "\n")


def _save_mdl_features(
    folder: Path,
    model_name: str,
    det: UniformDetector,
    model: nn.Module,
    id_test: ImageSet,
    sets: list[AnomalyData],
    per_set: int = 150,
) -> None:
    """MDL features (the uniform detector's layer and pooling) of some ID test images and of
    each anomaly set, for the report's 2-D embedding (the paper's figures 2–6)."""
    from tripwire.features import extract_features

    g = torch.Generator().manual_seed(0)
    parts = {"ID": id_test.as_float()[torch.randperm(len(id_test), generator=g)[: 3 * per_set]]}
    for a in sets:
        parts[a.spec.name] = a.images[torch.randperm(len(a.images), generator=g)[:per_set]]
    arrays: dict[str, Any] = {}
    for name, x in parts.items():
        feats = extract_features(model, x.split(512), [det.layer_], det.pooling)
        arrays[name] = feats.layers[det.layer_].numpy()
    np.savez_compressed(folder / f"embedding-{model_name}.npz", **arrays)


def _transductive_rows(context, name, det, model, id_test, raws, extra) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The paper's protocol: min–max constants over the evaluation scores (ID test ∪ the set)."""
    raw_id, p_id = det.raw_scores_of(model.eval(), id_test)
    rows = []
    for a, raw, p in raws.values():
        both = transductive_scores(det, torch.cat([raw_id, raw]), torch.cat([p_id, p]))
        s_id, s = both[: len(raw_id)], both[len(raw_id) :]
        rows += _rows(
            context, TRANSDUCTIVE, name, det.get_params(), a, s_id, p_id, s, p, None, extra
        )
    return rows


def _rows(
    context: dict[str, Any],
    detector: str,
    fitted: str,
    params: dict[str, Any],
    a: AnomalyData,
    s_id: torch.Tensor,
    p_id: torch.Tensor,
    s: torch.Tensor,
    p: torch.Tensor,
    flagged: float | None,
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    values = metrics.summarize(s_id, s, p_id, p)
    if flagged is not None:
        values["flagged_by_thresholds"] = flagged
    base = {
        **context,
        "detector": detector,
        "fitted_detector": fitted,
        "params": json.loads(json.dumps(params, default=str)),
        "anomaly_set": a.spec.name,
        "family": a.spec.family,
        "n_anomaly": len(s),
        "anomaly_info": a.info,
        **extra,
    }
    return [{**base, "metric": k, "value": float(v)} for k, v in values.items()]
