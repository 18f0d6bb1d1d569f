"""Benchmark DAAIN: fit time, scoring throughput against the bare forward pass, and AUROCs on
LeNet/MNIST and on the MNIST-canvas segmentation example.

    TRIPWIRE_DATA=../shared/data .venv/bin/python scripts/bench_daain.py lenet
    TRIPWIRE_DATA=../shared/data .venv/bin/python scripts/bench_daain.py segmentation

Nothing is tuned on the anomalies: the detector uses its defaults and is fitted on ID training
data only. The mask key is a fixed evaluation key so the numbers can be reproduced (a deployment
draws a random one). Adversarial AUROCs use the successful adversarial examples only.
"""

from __future__ import annotations

import argparse
import json
import time

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


def speed(det: DaainDetector, model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad(), eval_mode(model):
        bare = throughput(model, x)
    scored = throughput(lambda xb: det.score(model, xb, batch_size=256), x)
    return {"bare_img_per_s": bare, "daain_img_per_s": scored, "ratio": scored / bare}


def lenet(args: argparse.Namespace) -> dict[str, object]:
    from tripwire.anomalies import make_anomalies
    from tripwire.models.zoo import load_model

    model = load_model("lenet-mnist", data_dir=args.data_dir, progress=False)
    train = load_source("mnist", "train", args.data_dir)
    test = load_source("mnist", "test", args.data_dir)
    t = time.perf_counter()
    det = DaainDetector(key=EVAL_KEY, head=args.head, n_points=args.n_points, seed=0)
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
        "head": args.head,
        "n_points": det.mask_.n_points,
        "layers": list(det.layer_shapes_),
        "fit_seconds": fit_s,
        "flow_epochs": det.epochs_run_,
        "n_anomalies": {k: len(v) for k, v in sets.items()},
        "auroc": auroc,
        "speed": speed(det, model, test.as_float(slice(0, 4096))),
    }


def segmentation(args: argparse.Namespace) -> dict[str, object]:
    from tripwire.segmentation import (
        attack_segmentation,
        gaussian_noise,
        load_canvas,
        paste_patches,
        segmentation_metrics,
        train_segmenter,
        uniform_noise,
    )

    train = load_canvas("train", n=args.seg_train, data_dir=args.data_dir, seed=0)
    test = load_canvas("test", n=args.n_seg, data_dir=args.data_dir, seed=1)
    t = time.perf_counter()
    model = train_segmenter(train, epochs=args.seg_epochs, seed=0)
    train_s = time.perf_counter() - t
    quality = segmentation_metrics(model, test)
    t = time.perf_counter()
    det = DaainDetector(key=EVAL_KEY, head=args.head, n_points=args.n_points, seed=0)
    det.fit(model, train.as_image_set())
    fit_s = time.perf_counter() - t
    x = test.images
    s_id = det.score(model, x)
    fashion = load_source("fashion-mnist", "test", args.data_dir).as_float(slice(0, 500))
    omni = load_source("omniglot-inverted", "test", args.data_dir).as_float(slice(0, 500))
    sets = {
        "gaussian": gaussian_noise(tuple(x.shape), seed=2),
        "uniform": uniform_noise(tuple(x.shape), seed=3),
        "paste-fashion-mnist": paste_patches(x, fashion, seed=4),
        "paste-omniglot-inverted": paste_patches(x, omni, seed=5),
        "fgsm-0.1": attack_segmentation(model, x, test.masks, kind="fgsm", eps=0.1),
        "pgd-0.05": attack_segmentation(model, x, test.masks, kind="pgd", eps=0.05, steps=10),
    }
    auroc = {k: metrics.auroc(s_id, det.score(model, v)) for k, v in sets.items()}
    return {
        "setting": "tinyunet-mnist-canvas",
        "segmenter_train_seconds": train_s,
        "segmenter_test": quality,
        "head": args.head,
        "n_points": det.mask_.n_points,
        "layers": list(det.layer_shapes_),
        "fit_seconds": fit_s,
        "flow_epochs": det.epochs_run_,
        "auroc": auroc,
        "speed": speed(det, model, x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setting", choices=["lenet", "segmentation"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--head", default="hbos")
    parser.add_argument("--n-points", type=int, default=512)
    parser.add_argument("--n", type=int, default=2000, help="ID test / noise / OOD inputs")
    parser.add_argument("--n-attack", type=int, default=1000, help="test images attacked")
    parser.add_argument("--seg-train", type=int, default=4000)
    parser.add_argument("--n-seg", type=int, default=500)
    parser.add_argument("--seg-epochs", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    set_progress(False)
    result = lenet(args) if args.setting == "lenet" else segmentation(args)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
