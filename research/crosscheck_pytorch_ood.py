"""Cross-check tripwire's MSP, Energy, ODIN and Mahalanobis against pytorch-ood's.

Same model (the zoo's LeNet-5 on MNIST), same data (MNIST test as ID, Fashion-MNIST test as OOD):
per detector, the largest score difference after the documented shift/scale between the two
conventions, the Spearman correlation, and both AUROCs.

pytorch-ood is installed with ``pip install --no-deps pytorch-ood`` (it would pull torchvision,
which is not usable here). Its package ``__init__`` imports its model zoo and so torchvision;
`import_pytorch_ood_detectors` therefore registers bare package stubs and imports only the
detector modules (which need torch and typing_extensions only).

Usage:
    TRIPWIRE_DATA=../shared/data .venv/bin/python research/crosscheck_pytorch_ood.py \
        [--odin-eps E] [--threads N] [--only msp,energy,odin,mahalanobis]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.covariance import LedoitWolf

from tripwire import metrics
from tripwire.batching import in_batches
from tripwire.data import load_source
from tripwire.detectors import create_detector
from tripwire.features import extract_features
from tripwire.models.zoo import load_model


def import_pytorch_ood_detectors() -> dict[str, types.ModuleType]:
    """pytorch-ood's softmax, energy, odin and mahalanobis modules, without its package init."""
    names = ("softmax", "energy", "odin", "mahalanobis")
    if "pytorch_ood.detector" in sys.modules:
        return {n: importlib.import_module(f"pytorch_ood.detector.{n}") for n in names}
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pytorch-ood is not installed: pip install --no-deps pytorch-ood")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (("pytorch_ood", root), ("pytorch_ood.detector", root / "detector")):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(path)]
            sys.modules[name] = stub
    names = ("softmax", "energy", "odin", "mahalanobis")
    return {n: importlib.import_module(f"pytorch_ood.detector.{n}") for n in names}


def report(name: str, ours: torch.Tensor, theirs: torch.Tensor, n_id: int, note: str) -> None:
    a, b = ours.numpy(), theirs.numpy()
    rho = spearmanr(a, b).statistic
    au_ours = metrics.auroc(a[:n_id], a[n_id:])
    au_theirs = metrics.auroc(b[:n_id], b[n_id:])
    diff = float(np.abs(a - b).max())
    print(
        f"{name:<26} max|Δ| {diff:9.2e}  spearman {rho:.6f}  AUROC ours {au_ours:.4f} "
        f"pytorch-ood {au_theirs:.4f}   {note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--odin-eps", type=float, default=0.0014)
    parser.add_argument("--n", type=int, default=10_000, help="images per set")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--only", default="msp,energy,odin,mahalanobis", help="comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    pood = import_pytorch_ood_detectors()

    model = load_model("lenet-mnist", data_dir=args.data_dir).eval()
    train = load_source("mnist", "train", args.data_dir)
    mnist = load_source("mnist", "test", args.data_dir).as_float()[: args.n]
    fashion = load_source("fashion-mnist", "test", args.data_dir).as_float()[: args.n]
    x = torch.cat([mnist, fashion])
    n_id = len(mnist)
    print(f"LeNet-5 (zoo), MNIST test {n_id} vs Fashion-MNIST test {len(fashion)}")

    if {"msp", "energy"} & only:
        crosscheck_msp_energy(pood, model, train, x, n_id)
    if "odin" in only:
        crosscheck_odin(pood, model, train, x, n_id, args.odin_eps)
    if "mahalanobis" in only:
        crosscheck_mahalanobis(pood, model, train, x, n_id)


def crosscheck_msp_energy(pood, model, train, x, n_id) -> None:  # type: ignore[no-untyped-def]
    """MSP: ours 1 − max softmax, theirs −max softmax → ours = theirs + 1. Energy: identical."""
    ours = create_detector("msp").fit(model, train).score(model, x)
    theirs = in_batches(pood["softmax"].MaxSoftmax(model), x).double() + 1
    report("MSP", ours, theirs, n_id, "(theirs + 1)")

    ours = create_detector("energy").fit(model, train).score(model, x)
    theirs = in_batches(pood["energy"].EnergyBased(model), x).double()
    report("Energy", ours, theirs, n_id, "(identical definition)")


def crosscheck_odin(pood, model, train, x, n_id, eps: float) -> None:  # type: ignore[no-untyped-def]
    """ODIN at a fixed ε (T = 1000): ours clips x̃ to [0, 1], theirs does not; and ε = 0."""
    det = create_detector("odin", epsilon=eps).fit(model, train)
    ours = det.score(model, x)
    odin = pood["odin"].ODIN(model, eps=eps, temperature=1000.0)
    theirs = in_batches(lambda b: odin.predict(b), x).double() + 1
    report(f"ODIN ε={eps}", ours, theirs, n_id, "(theirs + 1; theirs unclipped)")
    det0 = create_detector("odin", epsilon=0.0).fit(model, train)
    odin0 = pood["odin"].ODIN(model, eps=0.0, temperature=1000.0)
    report(
        "ODIN ε=0",
        det0.score(model, x),
        in_batches(lambda b: odin0.predict(b), x).double() + 1,
        n_id,
        "(theirs + 1)",
    )
    auto = create_detector("odin").fit(model, train)
    s_auto = auto.score(model, x).numpy()
    print(
        f"{'ODIN ε chosen on proxies':<26} ε = {auto.epsilon_}  AUROC ours "
        f"{metrics.auroc(s_auto[:n_id], s_auto[n_id:]):.4f}"
    )


def crosscheck_mahalanobis(pood, model, train, x, n_id) -> None:  # type: ignore[no-untyped-def]
    """Mahalanobis on the logits with true-label class means.

    Theirs: Σ = un-normalised class-centred scatter + 1e-6·I (float32), score ½·min d². Ours:
    Σ = scatter / N (float64), shrunk by Ledoit–Wolf by default, score min d². So without
    shrinkage ours = theirs × 2N up to the ridge and float32; with it the scores differ by the
    shrinkage, printed here with its intensity.
    """
    t = time.perf_counter()
    feats = extract_features(model, train.batches(1000))
    t_feats = time.perf_counter() - t
    labels = train.require_labels()
    maha = pood["mahalanobis"].Mahalanobis(None)
    t = time.perf_counter()
    maha.fit_features(feats.logits, labels)
    t_theirs = time.perf_counter() - t
    print(
        f"Mahalanobis fit: logits of {len(train)} training images {t_feats:.1f} s (the forward "
        f"pass); pytorch-ood fit_features {t_theirs:.3f} s"
    )
    theirs = in_batches(lambda b: maha.predict_features(model(b)), x).double()
    n = len(train)
    z = feats.logits.double()
    means = torch.stack([z[labels == c].mean(dim=0) for c in range(int(labels.max()) + 1)])
    lw = LedoitWolf(assume_centered=True).fit((z - means[labels]).numpy())
    for shrinkage, note in (
        ("none", "(theirs × 2N; ML Σ, no shrinkage)"),
        ("ledoit-wolf", f"(theirs × 2N; Ledoit–Wolf intensity {lw.shrinkage_:.2e})"),
    ):
        t = time.perf_counter()
        det = create_detector("mahalanobis", shrinkage=shrinkage).fit(model, train)
        t_fit = time.perf_counter() - t
        ours = det.score(model, x)
        report(f"Mahalanobis ({shrinkage})", ours, theirs * 2 * n, n_id, note)
        rel = float(((ours - theirs * 2 * n).abs() / ours.abs().clamp_min(1e-12)).max())
        print(f"{'':<26} max relative |Δ| {rel:.2e}; our fit {t_fit:.1f} s")


if __name__ == "__main__":
    main()
