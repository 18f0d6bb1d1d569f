"""Benchmark DAAIN: fit time, scoring throughput against the bare forward pass, and AUROCs on
LeNet/MNIST and on the MNIST-canvas segmentation example.

    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_daain.py lenet
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_daain.py segmentation

    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_daain.py segmentation \
        --oe-proxies letters-kr,photos --oe-weight 0.5 --oe-epochs 24 --oe-lr 3e-3 \
        --entropy-top 0.01 --skip-speed

Nothing is tuned on the anomalies: the detector uses its defaults and is fitted on ID training
data only. `--oe-proxies` fine-tunes the segmenter with outlier exposure (Chan et al. 2021:
entropy maximisation on pasted proxy outliers — font letters K–R, photo crops of the train split,
or tile-shuffled MNIST training digits); its settings were chosen with `--validation-only` runs
(validation: pasted letters S–Z, photo crops of the test split, noise patches), which never build
or score a test set. The segmentation setting also reports the segmenter's entropy statistic and
the fused DAAIN + entropy score (`ScoreFusion`, normalised on held-out ID canvases). On a shared
machine,
`--pause-pid PID [--settle S] [--quiet-wait S]` pauses a background job during the throughput
timing only and records how busy the other processes kept the CPU. The mask key is a fixed
evaluation key so the numbers can be reproduced (a deployment draws a random one). Adversarial
AUROCs use the successful adversarial examples only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator

import torch

from tripwire import metrics
from tripwire.data.base import load_source
from tripwire.detectors.daain import DaainDetector
from tripwire.features import eval_mode
from tripwire.progress import set_progress

EVAL_KEY = "bench-daain-evaluation-key-0"


def throughput(fn, x: torch.Tensor, batch_size: int = 256, repeats: int = 3) -> float:
    """Images per second of fn over x in batches (best of `repeats` passes)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for s in range(0, len(x), batch_size):
            fn(x[s : s + batch_size])
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def speed(
    det: DaainDetector, model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256
) -> dict[str, float]:
    with torch.no_grad(), eval_mode(model):
        bare = throughput(model, x, batch_size)
    scored = throughput(lambda xb: det.score(model, xb, batch_size=batch_size), x, batch_size)
    return {
        "batch_size": batch_size,
        "bare_img_per_s": bare,
        "daain_img_per_s": scored,
        "ratio": scored / bare,
    }


@contextlib.contextmanager
def paused(pid: int | None, settle: float = 0.0) -> Iterator[dict[str, float]]:
    """Pause process `pid` (SIGSTOP) for the timed block and always resume it (SIGCONT).

    Waits `settle` seconds first (so the 1-min load average reflects the quiet machine) and
    yields a dict that receives the load average at the start and end of the timed block.
    """
    info: dict[str, float] = {}
    if pid is not None:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(settle)
        info["load_start"] = os.getloadavg()[0]
        busy0, own0, t0 = _busy_seconds(), time.process_time(), time.monotonic()
        yield info
        wall = time.monotonic() - t0
        info["load_end"] = os.getloadavg()[0]
        # CPU cores kept busy by *other* processes during the timed block (0 = idle machine).
        info["other_cores_busy"] = (_busy_seconds() - busy0 - (time.process_time() - own0)) / wall
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)


def _busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _process_seconds(pid: int | None) -> float:
    """CPU seconds used so far by process `pid` (0 if None or unreadable)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(pid: int | None, limit: float, window: float = 5.0) -> float:
    """Wait (at most `limit` s) until processes other than this one and `pid` keep < 0.15 CPU
    cores busy over `window` seconds; returns that last measured usage."""
    deadline = time.monotonic() + limit
    while True:
        b0, p0, o0 = _busy_seconds(), _process_seconds(pid), time.process_time()
        time.sleep(window)
        used = _busy_seconds() - b0 - (_process_seconds(pid) - p0) - (time.process_time() - o0)
        if used / window < 0.15 or time.monotonic() > deadline:
            return used / window


def timed_speed(
    args: argparse.Namespace, det: DaainDetector, model: torch.nn.Module, x: torch.Tensor
) -> dict[str, object]:
    """Throughput runs; with `--quiet-wait`, retried (up to 5 times) until no other process
    was busy during the timed block."""
    attempts = 0
    while True:
        attempts += 1
        if args.quiet_wait:
            wait_until_quiet(args.pause_pid, args.quiet_wait)
        with paused(args.pause_pid, args.settle) as info:
            runs = [speed(det, model, x, b) for b in args.speed_batch]
        if not args.quiet_wait or info["other_cores_busy"] < 0.15 or attempts == 5:
            break
    return {"runs": runs, "paused_pid": args.pause_pid, "attempts": attempts, **info}


def lenet(args: argparse.Namespace) -> dict[str, object]:
    from tripwire.anomalies import make_anomalies
    from tripwire.models.zoo import load_model

    model = load_model("lenet-mnist", data_dir=args.data_dir, progress=False)
    train = load_source("mnist", "train", args.data_dir)
    test = load_source("mnist", "test", args.data_dir)
    t = time.perf_counter()
    det = DaainDetector(key=EVAL_KEY, **detector_params(args))
    det.fit(model, train)
    fit_s = time.perf_counter() - t
    x_id = test.as_float(slice(0, args.n))
    s_id = det.score(model, x_id)
    sets: dict[str, torch.Tensor] = {}
    for kind in ("gaussian", "uniform"):
        sets[kind] = make_anomalies(kind, model, n=args.n, shape=(1, 28, 28), seed=1).images
    assert test.labels is not None
    x_att, y_att = test.as_float(slice(0, args.n_attack)), test.labels[: args.n_attack]
    for kind in ("fgsm", "bim-b"):
        adv = make_anomalies(kind, model, x_att, y_att, seed=0)
        sets[kind] = adv.images[adv.success]
    for name in ("omniglot", "omniglot-inverted", "fashion-mnist"):
        split = "test"
        sets[name] = load_source(name, split, args.data_dir).as_float(slice(0, args.n))
    auroc = {k: metrics.auroc(s_id, det.score(model, v)) for k, v in sets.items()}
    return {
        "setting": "lenet-mnist",
        "params": det.get_params(),
        "layers": list(det.layer_shapes_),
        "fit_seconds": fit_s,
        "flow_epochs": det.epochs_run_,
        "n_anomalies": {k: len(v) for k, v in sets.items()},
        "auroc": auroc,
        "speed": timed_speed(args, det, model, test.as_float(slice(0, 4096))),
    }


@torch.no_grad()
def glyph_entropy(
    model: torch.nn.Module, x: torch.Tensor, threshold: float = 0.3, min_size: int = 10
) -> torch.Tensor:
    """Exploration (validation only, not library code): the highest mean per-pixel entropy
    over the glyphs of each image — 8-connected components of pixels ≥ `threshold` with at
    least `min_size` pixels (threshold 0: all glyphs) — instead of the whole-image mean."""
    import numpy as np
    from scipy import ndimage

    with eval_mode(model):
        p = torch.cat([model(xb).softmax(1).double() for xb in x.split(256)])
    h = (-(p * p.clamp_min(1e-300).log()).sum(1)).numpy()
    out = []
    for hi, fg in zip(h, (x[:, 0] >= threshold).numpy(), strict=True):
        lab, n = ndimage.label(fg, structure=np.ones((3, 3)))
        idx = np.arange(1, n + 1)
        means, sizes = ndimage.mean(hi, lab, idx), ndimage.sum(np.ones_like(hi), lab, idx)
        means = means[sizes >= min_size] if (sizes >= min_size).any() else means
        out.append(float(means.max()) if n else 0.0)
    return torch.tensor(out, dtype=torch.float64)


LETTERS_KZ = "KLMNOPQRSTUVWXYZ"


def letters(names: str, split: str, data_dir: str | None) -> torch.Tensor:
    """The `font-letters-kz` images of the letters in `names` (e.g. "KLMNOPQR"), float."""
    s = load_source("font-letters-kz", split, data_dir)
    wanted = torch.tensor([LETTERS_KZ.index(c) for c in names])
    return s.as_float(torch.isin(s.require_labels(), wanted))


def tile_shuffled_digits(n: int, data_dir: str | None, seed: int = 31) -> torch.Tensor:
    """Synthetic proxy outliers made from MNIST *training* digits only: each 28×28 digit cut
    into a 4×4 grid of 7×7 tiles whose places are permuted at random (seeded) — the strokes'
    local statistics of the ID digits without any digit's shape."""
    g = torch.Generator().manual_seed(seed)
    mnist = load_source("mnist", "train", data_dir)
    x = mnist.as_float(torch.randperm(len(mnist), generator=g)[:n])
    tiles = x.unfold(2, 7, 7).unfold(3, 7, 7).reshape(n, 1, 16, 7, 7)
    perm = torch.argsort(torch.rand(n, 16, generator=g), dim=1)
    tiles = tiles[torch.arange(n).view(-1, 1), 0, perm].view(n, 4, 4, 7, 7)
    return tiles.permute(0, 1, 3, 2, 4).reshape(n, 1, 28, 28).contiguous()


def proxy_outliers(names: list[str], data_dir: str | None) -> torch.Tensor:
    """The training proxies for outlier exposure (none of them is, or is made from, a test
    set): `letters-kr` = font letters K–R (train split; the validation uses S–Z), `photos` =
    photo crops (train split; the validation uses the test split), `shuffled` = tile-shuffled
    MNIST training digits."""
    parts = []
    for name in names:
        if name == "letters-kr":
            parts.append(letters("KLMNOPQR", "train", data_dir))
        elif name == "photos":
            parts.append(load_source("photo-crops", "train", data_dir).as_float())
        elif name == "shuffled":
            parts.append(tile_shuffled_digits(4000, data_dir))
        else:
            raise SystemExit(f"unknown proxy {name!r} (letters-kr, photos, shuffled)")
    return torch.cat(parts)


@torch.no_grad()
def entropy_maps(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel predictive entropy N×H×W (float64) of a segmenter."""
    with eval_mode(model):
        p = torch.cat([model(xb).softmax(1).double() for xb in x.split(256)])
    return -(p * p.clamp_min(1e-300).log()).sum(1)


def entropy_statistics(h: torch.Tensor) -> dict[str, torch.Tensor]:
    """Candidate per-image statistics of the entropy map (validation only, except the mean,
    which is `mean_entropy`): the mean over the 1 % / 5 % most uncertain pixels, and the share
    of pixels above half the maximal entropy log K."""
    flat = h.flatten(1)
    k1, k5 = max(1, flat.shape[1] // 100), max(1, flat.shape[1] // 20)
    return {
        "entropy_top1pct": flat.topk(k1, dim=1).values.mean(1),
        "entropy_top5pct": flat.topk(k5, dim=1).values.mean(1),
        "entropy_share_above_half": (flat > 0.5 * math.log(11)).double().mean(1),
    }


def cached_segmenter(
    path: str | None, train: Callable[[], torch.nn.Module]
) -> tuple[torch.nn.Module, float]:
    """`train()`'s segmenter, or the one saved at `path` (.safetensors) if it exists there (then
    its training time is the one recorded next to it); a newly trained one is saved at `path`."""
    from safetensors.torch import load_file, save_file

    from tripwire.segmentation import TinyUNet

    if path and os.path.exists(path):
        model = TinyUNet()
        model.load_state_dict(load_file(path))
        with open(path + ".json") as f:
            return model.eval(), float(json.load(f)["train_seconds"])
    t = time.perf_counter()
    model = train()
    train_s = time.perf_counter() - t
    if path:
        save_file(model.state_dict(), path)
        with open(path + ".json", "w") as f:
            json.dump({"train_seconds": train_s}, f)
    return model, train_s


def segmentation(args: argparse.Namespace) -> dict[str, object]:
    from tripwire.segmentation import (
        ScoreFusion,
        attack_segmentation,
        gaussian_noise,
        image_scores,
        load_canvas,
        mean_entropy,
        paste_patches,
        segmentation_metrics,
        train_segmenter,
        uniform_noise,
    )

    train = load_canvas("train", n=args.seg_train, data_dir=args.data_dir, seed=0)
    # Validation canvases: other compositions of MNIST *training* digits; with them the
    # validation anomalies below chose every setting (no test OOD set was looked at).
    val = load_canvas("train", n=args.n_seg, data_dir=args.data_dir, seed=11)
    # Calibration canvases for the fused score's normalisation: more held-out ID canvases of
    # MNIST training digits (seed 12); no anomaly is involved in that fit.
    cal = load_canvas("train", n=args.n_seg, data_dir=args.data_dir, seed=12)
    model, train_s = cached_segmenter(
        args.base_cache, lambda: train_segmenter(train, epochs=args.seg_epochs, seed=0)
    )
    oe: dict[str, object] = {}
    if args.oe_proxies:
        # "none": the control — the same fine-tuning without outliers.
        no_oe = args.oe_proxies == "none"
        proxies = None if no_oe else proxy_outliers(args.oe_proxies.split(","), args.data_dir)
        base_val = segmentation_metrics(model, val)
        base = model
        model, finetune_s = cached_segmenter(
            args.oe_cache,
            lambda: train_segmenter(
                train,
                init=base,
                outliers=proxies,
                outlier_weight=args.oe_weight,
                outlier_share=args.oe_share,
                max_outliers=2,
                epochs=args.oe_epochs,
                lr=args.oe_lr,
                seed=args.oe_seed,
            ),
        )
        oe = {
            "proxies": args.oe_proxies,
            "n_proxies": 0 if proxies is None else len(proxies),
            "weight": args.oe_weight,
            "share": args.oe_share,
            "epochs": args.oe_epochs,
            "lr": args.oe_lr,
            "seed": args.oe_seed,
            "finetune_seconds": finetune_s,
            "base_segmenter_validation": base_val,
        }
    quality_val = segmentation_metrics(model, val)
    t = time.perf_counter()
    det = DaainDetector(key=EVAL_KEY, **detector_params(args))
    det.fit(model, train.as_image_set())
    fit_s = time.perf_counter() - t
    n = args.n_seg

    def patches(name: str, split: str) -> torch.Tensor:
        return load_source(name, split, args.data_dir).as_float(slice(0, n))

    xv = val.images
    # Validation anomalies: letters S–Z (disjoint from the K–R training proxies), photo crops
    # of the *test* split (the training proxies use the train split), U[0, 1] noise patches.
    validation = {
        "paste-letters-s-z": paste_patches(
            xv, letters("STUVWXYZ", "train", args.data_dir)[:n], seed=14
        ),
        "paste-photo-crops-test": paste_patches(xv, patches("photo-crops", "test"), seed=15),
        "paste-uniform-noise": paste_patches(xv, uniform_noise((n, 1, 28, 28), seed=21), seed=16),
    }

    def entropy(images: torch.Tensor) -> torch.Tensor:
        # The segmenter's entropy statistic: the mean over all pixels (--entropy-top 1) or over
        # the most uncertain fraction of them.
        return mean_entropy(model, images, top=args.entropy_top)

    def local(images: torch.Tensor) -> torch.Tensor:
        return image_scores(det, model, images, cell=args.cell, top_k=args.top_k)

    # Fused score: DAAIN's image score and the mean entropy, each normalised on the calibration
    # canvases. The default (p-value normalisation, Fisher sum, equal weights) is reported on
    # test; the other variants on validation only (they were the candidates).
    cal_scores = (det.score(model, cal.images), entropy(cal.images))
    fused = ScoreFusion().fit(*cal_scores)
    variants = {
        f"fused_{norm}_{comb}": ScoreFusion(norm, comb).fit(*cal_scores)
        for norm in ("pvalue", "zscore")
        for comb in ("sum", "max")
    }
    # Validation only: the default fusion with another statistic of the entropy map.
    cal_stats = entropy_statistics(entropy_maps(model, cal.images))
    fused_stats = {k: ScoreFusion().fit(cal_scores[0], v) for k, v in cal_stats.items()}

    def aurocs(
        id_x: torch.Tensor, named: dict[str, torch.Tensor], validation: bool = False
    ) -> dict[str, dict[str, float]]:
        s_sum, s_loc, s_ent = det.score(model, id_x), local(id_x), entropy(id_x)
        stats_id = entropy_statistics(entropy_maps(model, id_x)) if validation else {}
        out = {}
        for k, v in named.items():
            v_sum, v_ent = det.score(model, v), entropy(v)
            out[k] = {
                "image_sum": metrics.auroc(s_sum, v_sum),
                f"top{args.top_k}_cells{args.cell}": metrics.auroc(s_loc, local(v)),
                "baseline_entropy": metrics.auroc(s_ent, v_ent),
                "fused": metrics.auroc(fused.score(s_sum, s_ent), fused.score(v_sum, v_ent)),
            }
            if validation:
                for name, f in variants.items():
                    out[k][name] = metrics.auroc(f.score(s_sum, s_ent), f.score(v_sum, v_ent))
                stats = entropy_statistics(entropy_maps(model, v))
                for name, s_v in stats.items():
                    out[k][name] = metrics.auroc(stats_id[name], s_v)
                    f = fused_stats[name]
                    out[k][f"fused_{name}"] = metrics.auroc(
                        f.score(s_sum, stats_id[name]), f.score(v_sum, s_v)
                    )
        return out

    def glyph_aurocs() -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for thr, size in ((0.1, 0), (0.1, 10), (0.1, 30), (0.3, 0), (0.3, 10), (0.3, 30)):
            s_id = glyph_entropy(model, xv, thr, size)
            out[f"threshold{thr}_min{size}"] = {
                k: metrics.auroc(s_id, glyph_entropy(model, v, thr, size))
                for k, v in validation.items()
            }
        return out

    result: dict[str, object] = {
        "setting": "tinyunet-mnist-canvas",
        "segmenter_train_seconds": train_s,
        "outlier_exposure": oe,
        "entropy_top": args.entropy_top,
        "segmenter_validation": quality_val,
        "params": det.get_params(),
        "cell": args.cell,
        "top_k": args.top_k,
        "layers": list(det.layer_shapes_),
        "fit_seconds": fit_s,
        "flow_epochs": det.epochs_run_,
        "auroc_validation": aurocs(xv, validation, validation=True),
    }
    if args.glyph:
        result["auroc_validation_glyph_max_entropy"] = glyph_aurocs()
    if args.validation_only:
        return result
    # Test sets: only once every setting above is fixed.
    test = load_canvas("test", n=args.n_seg, data_dir=args.data_dir, seed=1)
    x = test.images
    sets = {
        "gaussian": gaussian_noise(tuple(x.shape), seed=2),
        "uniform": uniform_noise(tuple(x.shape), seed=3),
        "paste-fashion-mnist": paste_patches(x, patches("fashion-mnist", "test"), seed=4),
        "paste-omniglot-inverted": paste_patches(x, patches("omniglot-inverted", "test"), seed=5),
        "fgsm-0.1": attack_segmentation(model, x, test.masks, kind="fgsm", eps=0.1),
        "pgd-0.05": attack_segmentation(model, x, test.masks, kind="pgd", eps=0.05, steps=10),
    }
    result["segmenter_test"] = segmentation_metrics(model, test)
    result["auroc"] = aurocs(x, sets)
    if not args.skip_speed:
        result["speed"] = timed_speed(args, det, model, x)
    return result


def detector_params(args: argparse.Namespace) -> dict[str, object]:
    params: dict[str, object] = {"head": args.head, "seed": 0}
    for name in ("n_points", "hidden"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setting", choices=["lenet", "segmentation"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--head", default="hbos")
    parser.add_argument("--n-points", type=int, default=None, help="default: the detector's")
    parser.add_argument("--hidden", type=int, default=None, help="default: the detector's")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--n", type=int, default=2000, help="ID test / noise / OOD inputs")
    parser.add_argument("--n-attack", type=int, default=1000, help="test images attacked")
    parser.add_argument("--seg-train", type=int, default=4000)
    parser.add_argument("--n-seg", type=int, default=500)
    parser.add_argument("--seg-epochs", type=int, default=6)
    parser.add_argument("--cell", type=int, default=8, help="segmentation: cell size (pixels)")
    parser.add_argument("--top-k", type=int, default=1, help="segmentation: cells averaged")
    parser.add_argument(
        "--speed-batch", type=int, nargs="+", default=[256], help="batch sizes for throughput"
    )
    parser.add_argument(
        "--pause-pid",
        type=int,
        default=None,
        help="pause this background process (SIGSTOP/SIGCONT) during the throughput timing only",
    )
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds to wait after pausing, before timing"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="wait up to this many seconds for other processes to go quiet before timing",
    )
    parser.add_argument(
        "--oe-proxies",
        default=None,
        help="segmentation: fine-tune the segmenter with outlier exposure (Chan et al. 2021) on "
        "these comma-separated proxies: letters-kr, photos, shuffled; 'none' = the same "
        "fine-tuning without outliers, a control (default: no fine-tuning)",
    )
    parser.add_argument("--oe-weight", type=float, default=0.9, help="λ of the outlier term")
    parser.add_argument("--oe-share", type=float, default=0.5, help="share of pasted canvases")
    parser.add_argument("--oe-epochs", type=int, default=2)
    parser.add_argument("--oe-lr", type=float, default=1e-3, help="peak lr of the fine-tuning")
    parser.add_argument("--oe-seed", type=int, default=0)
    parser.add_argument(
        "--entropy-top",
        type=float,
        default=1.0,
        help="segmentation: the entropy score averages this fraction of the most uncertain "
        "pixels (1 = the mean entropy)",
    )
    parser.add_argument(
        "--base-cache",
        default=None,
        help="segmentation: load the plain segmenter from this .safetensors file if it exists, "
        "else train it and save it there",
    )
    parser.add_argument(
        "--oe-cache",
        default=None,
        help="segmentation: the same for the fine-tuned segmenter (give one file per setting)",
    )
    parser.add_argument(
        "--validation-only",
        action="store_true",
        help="segmentation: stop after the validation sets (no test set is built or scored)",
    )
    parser.add_argument("--skip-speed", action="store_true", help="no throughput timing")
    parser.add_argument(
        "--glyph", action="store_true", help="segmentation: the glyph-entropy exploration too"
    )
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    set_progress(False)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    result = lenet(args) if args.setting == "lenet" else segmentation(args)
    result["load_average"] = {"start": load_before, "end": os.getloadavg()[0]}
    result["torch_threads"] = torch.get_num_threads()
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
