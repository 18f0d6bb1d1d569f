"""DAAIN (von Baußnern, Otterbach, Loy, Salzmann, Wollmann, "DAAIN: Detection of Anomalous and
Adversarial Input using Normalizing Flows"): a normalising flow over a secret, sparse subsample
of a network's activations.

For an input x with monitored vector v(x) ∈ R^n (n values picked from several layers by the key's
mask, see `tripwire.detectors.daain_mask`), standardised u = (v − μ) / σ, a flow f (zuko RealNVP /
MAF / NSF) maps u to z = f(u) with

    log p(v) = log N(z; 0, I) + log |det ∂f/∂u| − Σ_i log σ_i            (change of variables)

trained by maximum likelihood on ID activations (Adam, early stopping on held-out ID). The
score (higher = more anomalous) is a head on the flow's output:

* ``"hbos"`` (the authors' default): HBOS(z) = Σ_d log(1 / hist_d(z_d)), histograms of held-out
  ID latents (Goldstein & Dengel 2012, `tripwire.detectors.hbos`);
* ``"nll"``: −log p(v);
* ``"mahalanobis"``: (z − m)ᵀ Σ⁻¹ (z − m), Ledoit–Wolf covariance of held-out ID latents;
* ``"euclidean"``: ‖z‖²;
* ``"logistic"``: the paper's classification head, a logistic regression on (z, −log p)
  separating held-out ID latents from the `anomalies` given to `fit` (the only head that uses
  them; the detector's ``needs_anomalies`` stays False because the default does not).

The key is a secret: it is not a public hyper-parameter (not in `get_params`, `repr` or
``detector.json``), `save` writes it to a separate ``key.json`` (or ``key_path``), and
`rotate_key` draws a new one and refits. With ``key=None`` every `fit` draws a fresh 128-bit key
(what a deployment should do); give a fixed ``key`` string only for reproducible evaluation.

For segmentation networks (logits N×K×H×W) ``predicted`` is the most frequent class of the
predicted map (see `tripwire.segmentation` for per-pixel maps).

Examples:
    >>> det = DaainDetector(n_points=512).fit(model, mnist_train)           # doctest: +SKIP
    >>> det.score(model, x)                  # (N,), higher = more anomalous # doctest: +SKIP
    >>> det.save("daain-lenet")  # detector.json + state.safetensors + key.json  # doctest: +SKIP
    >>> det.rotate_key(model, mnist_train)   # new secret mask, flow refitted # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import torch
import zuko
from pydantic import Field
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import DataLike, Detector
from tripwire.detectors.daain_mask import LayerPoints, SubsampleMask, key_fingerprint, new_key
from tripwire.detectors.fileformat import state_field
from tripwire.detectors.hbos import Hbos
from tripwire.detectors.params import Names, NonNegative, OpenFraction, Positive, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.errors import FormatError, InvalidInputError, NotFittedError
from tripwire.features import eval_mode, is_activation, model_device, output_shapes
from tripwire.progress import track

log = logging.getLogger(__name__)

Head = Literal["hbos", "nll", "mahalanobis", "euclidean", "logistic"]
Flow = Literal["realnvp", "maf", "nsf"]
KEY_FORMAT = "tripwire-daain-key"
KEY_NAME = "key.json"


def probe_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Leaf modules in the order they run on `x`, with their output shape per input.

    Modules that run more than once per forward (a shared ``self.relu``) are left out: their
    output is not one tensor per input.
    """
    modules = dict(model.named_modules())
    leaves = [n for n, m in modules.items() if n and not any(True for _ in m.children())]
    return [
        (name, modules[name], calls[0][1:])
        for name, calls in output_shapes(model, x, leaves).items()
        if len(calls) == 1 and len(calls[0]) in (2, 4)
    ]


def monitor_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """DAAIN's default layers: every activation-function output, plus the last layer run.

    Falls back to every conv/linear layer when the model has no activation modules (functional
    activations).
    """
    probed = probe_layers(model, x)
    names = [n for n, m, _ in probed if is_activation(m)]
    if not names:
        names = [n for n, m, _ in probed if isinstance(m, nn.Conv2d | nn.Linear)]
    if probed and probed[-1][0] not in names:
        names.append(probed[-1][0])
    if not names:
        raise InvalidInputError("found no layer to monitor in the model; pass layers=[...]")
    return names


class _Gather:
    """Forward hooks that keep only the mask's values of each monitored layer."""

    def __init__(self, model: nn.Module, mask: SubsampleMask) -> None:
        self.modules = dict(model.named_modules())
        self.mask = mask
        self.values: dict[str, torch.Tensor] = {}

    @contextmanager
    def active(self) -> Iterator[_Gather]:
        handles = []
        try:
            for points in self.mask.layers:
                handles.append(self.modules[points.layer].register_forward_hook(self._hook(points)))
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, points: LayerPoints):  # type: ignore[no-untyped-def]
        def fn(_module: nn.Module, _inputs: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            assert isinstance(out, torch.Tensor)
            self.values[points.layer] = points.gather(out.detach().flatten(1).float())

        return fn

    def vector(self) -> torch.Tensor:
        return torch.cat([self.values[p.layer] for p in self.mask.layers], dim=1)


@register_detector
class DaainDetector(Detector):
    """A normalising flow over a secret subsample of activations, with a detection head (DAAIN).

    Args:
        layers: module names to monitor, or ``"auto"`` (every activation output plus the last
            layer; see `monitor_layers`).
        n_points: activation values monitored per input (paper: a few hundred to thousands).
        resolution: common (H, W) the layers are resampled to; None = the largest map.
        head: ``"hbos"`` (default, the authors'), ``"nll"``, ``"mahalanobis"``,
            ``"euclidean"`` or ``"logistic"`` (needs ``anomalies=`` in `fit`).
        flow: ``"realnvp"`` (affine coupling, default), ``"maf"`` or ``"nsf"`` (zuko).
        n_blocks: coupling / autoregressive transforms of the flow.
        hidden: width of the flow's two hidden layers per transform.
        train_noise: std of Gaussian noise added to the standardised training vectors
            (dequantises ReLU zeros; 0 disables).
        epochs: at most this many epochs of Adam.
        patience: stop after this many epochs without a better held-out NLL.
        lr: Adam's learning rate.
        batch_size: flow training batch size.
        max_samples: at most this many ID inputs are used (seeded subsample).
        holdout_fraction: share of them held out for early stopping and the head.
        seed: seed of the subsample, split, flow initialisation and training noise.
        key: the secret mask key; None draws a fresh random one at each `fit` (deployment).
            A fixed string makes the mask reproducible (evaluation). Never stored with the
            other parameters; see `save`.

    Examples:
        >>> det = DaainDetector(head="hbos").fit(model, mnist_train)          # doctest: +SKIP
        >>> det.calibrate(model, mnist_val).predict(model, x)                  # doctest: +SKIP
    """

    name = "daain"
    export_refusal = "its monitored activations come from a secret key, which a graph would reveal"
    secret_params = ("key",)  # the mask key is kept apart from the saved detector

    layers: Names | Literal["auto"] = "auto"
    n_points: Annotated[int, Field(ge=2)] = 512
    resolution: Annotated[Sequence[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    head: Head = "hbos"
    flow: Flow = "realnvp"
    n_blocks: PositiveInt = 4
    hidden: PositiveInt = 128
    train_noise: NonNegative = 0.05
    epochs: PositiveInt = 40
    patience: PositiveInt = 4
    lr: Positive = 1e-3
    batch_size: PositiveInt = 256
    max_samples: PositiveInt = 20_000
    holdout_fraction: OpenFraction = 0.1
    seed: int = 0
    key: str | None = None

    # -------------------------------------------------------------------------------- params
    def _check_params(self) -> None:
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise ValueError("key must be a non-empty string or None")

    # ---------------------------------------------------------------------------------- fitting
    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        if self.head == "logistic" and anomalies is None:
            raise InvalidInputError(
                "head='logistic' is the paper's classification head: pass anomalies=… to fit "
                "(e.g. FGSM of training images), or use the default head='hbos'"
            )
        device = model_device(model)
        probe = data.as_float(slice(0, 2)).to(device)
        shapes_all = {n: s for n, _, s in probe_layers(model, probe)}
        if self.layers == "auto":
            names = monitor_layers(model, probe)
        else:
            names = list(self.layers)
            bad = [n for n in names if n not in shapes_all]
            if bad:
                raise InvalidInputError(
                    f"cannot monitor layer(s) {bad}: not a leaf module run once per forward with "
                    f"a N×C×H×W or N×D output; candidates: {', '.join(shapes_all)}"
                )
        self.layer_shapes_ = {n: shapes_all[n] for n in names}
        self._key: str | None = self.key if self.key is not None else new_key()
        self.key_fingerprint_ = key_fingerprint(self._key)
        self._key_file: str | None = None
        self.mask_ = self._make_mask()

        g = torch.Generator().manual_seed(self.seed)
        n = len(data)
        keep = torch.randperm(n, generator=g)[: min(n, self.max_samples)].sort().values
        vectors = self._vectors(model, data.as_float(keep), "DAAIN: activations")
        n_hold = max(2, round(self.holdout_fraction * len(vectors)))
        if len(vectors) - n_hold < 2:
            raise InvalidInputError(f"DAAIN needs at least 4 ID inputs to fit, got {len(vectors)}")
        order = torch.randperm(len(vectors), generator=g)
        train, hold = vectors[order[n_hold:]], vectors[order[:n_hold]]
        self.mu_ = train.mean(dim=0)
        sd = train.std(dim=0)
        self.sigma_ = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
        self.flow_ = self._new_flow(vectors.shape[1]).to(device)
        self.epochs_run_ = self._train_flow(
            (train - self.mu_) / self.sigma_, (hold - self.mu_) / self.sigma_, g, device
        )
        z, nll = self._latent(hold.to(device))
        self._fit_head(z.cpu(), nll.cpu(), model, anomalies)

    def rotate_key(
        self, model: nn.Module, id_data: DataLike, *, anomalies: DataLike | None = None
    ) -> Self:
        """Draw a new random key (a new secret mask) and refit the flow and head on `id_data`."""
        self.key = new_key()
        return self.fit(model, id_data, anomalies=anomalies)

    def _make_mask(self) -> SubsampleMask:
        res = (
            None if self.resolution is None else (int(self.resolution[0]), int(self.resolution[1]))
        )
        assert self._key is not None
        return SubsampleMask.from_key(self._key, self.layer_shapes_, self.n_points, res)

    def _new_flow(self, features: int) -> zuko.flows.Flow:
        kinds = {"realnvp": zuko.flows.RealNVP, "maf": zuko.flows.MAF, "nsf": zuko.flows.NSF}
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's RNG is restored
            torch.manual_seed(self.seed)
            return kinds[self.flow](
                features, transforms=self.n_blocks, hidden_features=(self.hidden, self.hidden)
            )

    def _vectors(self, model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
        device = model_device(model)
        tap = _Gather(model, self.mask_)
        out = []
        with torch.no_grad(), eval_mode(model), tap.active():
            starts = range(0, len(x), 256)
            for s in track(starts, what) if len(x) > 2048 else starts:
                model(x[s : s + 256].to(device))
                out.append(tap.vector().cpu())
        return torch.cat(out)

    def _train_flow(
        self, train: torch.Tensor, hold: torch.Tensor, g: torch.Generator, device: torch.device
    ) -> int:
        flow = self.flow_
        opt = torch.optim.Adam(flow.parameters(), lr=self.lr)
        hold = hold.to(device)
        best, best_state, stale, epoch = math.inf, copy.deepcopy(flow.state_dict()), 0, 0
        for epoch in track(range(1, self.epochs + 1), "DAAIN: flow epochs"):
            flow.train()
            perm = torch.randperm(len(train), generator=g)
            for s in range(0, len(train), self.batch_size):
                u = train[perm[s : s + self.batch_size]]
                if self.train_noise > 0:
                    u = u + self.train_noise * torch.randn(u.shape, generator=g)
                loss = -flow().log_prob(u.to(device)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            flow.eval()
            with torch.no_grad():
                val = float(-flow().log_prob(hold).mean())
            log.debug("DAAIN epoch %d: held-out NLL %.4f", epoch, val)
            if val < best - 1e-4:
                best, best_state, stale = val, copy.deepcopy(flow.state_dict()), 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        flow.load_state_dict(best_state)
        flow.eval()
        for p in flow.parameters():
            p.requires_grad_(False)
        return epoch

    def _fit_head(
        self, z: torch.Tensor, nll: torch.Tensor, model: nn.Module, anomalies: ImageSet | None
    ) -> None:
        self.hbos_ = Hbos.fit(z) if self.head == "hbos" else None
        self.latent_mean_ = z.mean(dim=0).double()
        self.precision_ = None
        self.logistic_ = None
        if self.head == "mahalanobis":
            from sklearn.covariance import LedoitWolf

            lw = LedoitWolf().fit(z.double().numpy())
            self.latent_mean_ = torch.from_numpy(lw.location_)
            self.precision_ = torch.from_numpy(lw.precision_)
        if self.head == "logistic":
            from sklearn.linear_model import LogisticRegression

            assert anomalies is not None
            device = model_device(model)
            va = self._vectors(model, anomalies.as_float(), "DAAIN: anomaly activations")
            za, nlla = self._latent(va.to(device))
            feats = torch.cat([_head_features(z, nll), _head_features(za.cpu(), nlla.cpu())])
            labels = torch.cat([torch.zeros(len(z)), torch.ones(len(za))]).numpy()
            f_mu, f_sd = feats.mean(0), feats.std(0).clamp_min(1e-6)
            clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
            clf.fit(((feats - f_mu) / f_sd).numpy(), labels)
            w = torch.from_numpy(clf.coef_[0]).double()
            self.logistic_ = {
                "mu": f_mu.double(),
                "sd": f_sd.double(),
                "w": w,
                "b": torch.tensor([float(clf.intercept_[0])], dtype=torch.float64),
            }

    # ---------------------------------------------------------------------------------- scoring
    def _check_key(self) -> None:
        if getattr(self, "_key", None) is None:
            raise NotFittedError(
                "the DAAIN key is not loaded (it is kept apart from the detector): call "
                "detector.load_key(path_to_key_json) or DaainDetector.load(folder, key_path=…)"
            )

    def _latent(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent z = f((v − μ)/σ) and −log p(v) of raw monitored vectors N×n."""
        mu, sigma = self.mu_.to(v.device), self.sigma_.to(v.device)
        u = (v - mu) / sigma
        with torch.no_grad():
            z, ladj = checkered_coupling_call_and_ladj(self.flow_, u)
        log_n = -0.5 * (z.double() ** 2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        log_p = log_n + ladj.double() - torch.log(sigma.double()).sum()
        return z, -log_p

    def _head_terms(self, z: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        """Per-latent-dimension contributions N×n whose row sums are the score (but ``nll``/
        ``mahalanobis``, whose terms are ½·z_d², a per-dimension approximation)."""
        z = z.double()
        if self.head == "hbos":
            assert self.hbos_ is not None
            return self.hbos_.terms(z)
        if self.head == "euclidean":
            return z**2
        if self.head == "logistic":
            assert self.logistic_ is not None
            f = (_head_features(z, nll) - self.logistic_["mu"]) / self.logistic_["sd"]
            return (f * self.logistic_["w"])[:, :-1]
        return 0.5 * z**2

    def _scores(self, z: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        z, nll = z.double().cpu(), nll.double().cpu()
        if self.head == "hbos":
            assert self.hbos_ is not None
            return self.hbos_.score(z)
        if self.head == "nll":
            return nll
        if self.head == "euclidean":
            return (z**2).sum(1)
        if self.head == "mahalanobis":
            assert self.precision_ is not None
            d = z - self.latent_mean_
            return ((d @ self.precision_) * d).sum(1)
        assert self.logistic_ is not None
        f = (_head_features(z, nll) - self.logistic_["mu"]) / self.logistic_["sd"]
        return f @ self.logistic_["w"] + self.logistic_["b"]

    def _forward(
        self, model: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_key()
        tap = _Gather(model, self.mask_)
        with tap.active():
            logits = model(x)
        z, nll = self._latent(tap.vector())
        return z, nll, _predicted(logits)

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, nll, predicted = self._forward(model, x)
        return self._scores(z, nll), predicted

    def log_likelihood(self, model: nn.Module, x: DataLike, batch_size: int = 256) -> torch.Tensor:
        """log p(v(x)) of the monitored activation vectors under the flow, (N,) float64."""
        self.check_fitted()
        out = []
        with eval_mode(model), torch.no_grad():
            for xb in self._batches(x, batch_size):
                out.append(-self._forward(model, xb.to(model_device(model)))[1].cpu())
        return torch.cat(out)

    def point_scores(self, model: nn.Module, x: DataLike, batch_size: int = 256) -> torch.Tensor:
        """Each monitored value's share of the score, N×n_points (see `mask_` for where each
        value sits); the basis of per-pixel anomaly maps (`tripwire.segmentation`)."""
        self.check_fitted()
        out = []
        with eval_mode(model), torch.no_grad():
            for xb in self._batches(x, batch_size):
                z, nll, _ = self._forward(model, xb.to(model_device(model)))
                out.append(self._head_terms(z.cpu(), nll.cpu()))
        return torch.cat(out)

    # ------------------------------------------------------------------------------------ I/O
    def save(
        self, path: str | Path, key_path: str | Path | None = None, *, key: bytes | None = None
    ) -> Path:
        """Write the detector to folder `path` and its key to ``path/key.json`` or `key_path`.

        ``detector.json`` and the tensors hold no key, only its fingerprint and where the key
        file is (``key.json`` beside them, or the absolute `key_path`); keep the key file
        somewhere private to keep the mask secret. `key` signs the detector (`Detector.save`);
        it is not DAAIN's mask key.
        """
        self.check_fitted()
        self._check_key()
        folder = Path(path)
        target = Path(key_path) if key_path is not None else folder / KEY_NAME
        inside = target.resolve().parent == folder.resolve() and target.name == KEY_NAME
        self._key_file = KEY_NAME if inside else str(target.resolve())
        out = super().save(folder, key=key)
        assert self._key is not None  # _check_key
        write_key(target, self._key)
        return out

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | Path, key_path: str | Path | None = None, *, key: bytes | None = None
    ) -> DaainDetector:
        """Read a saved DAAIN detector and its key: `key_path` if given, else the key file
        recorded at save time (``path/key.json`` or the absolute `key_path` given to `save`).
        Without a key it loads but cannot score until `load_key`. `key` is the signing key
        (`Detector.load`)."""
        det = Detector.load(path, key=key)  # `_after_load` looks for the recorded key file
        if not isinstance(det, DaainDetector):
            raise FormatError(f"{path}: holds a {type(det).__name__}, not a DaainDetector")
        if key_path is not None:
            det.load_key(key_path)
        return det

    def _after_load(self, folder: Path) -> None:
        """Install the key from the file recorded at save time, if it is there and matches
        (relative names are taken inside the detector's folder, so the folder can move)."""
        self._key = None
        if not self._key_file:
            return
        where = Path(self._key_file)
        where = where if where.is_absolute() else folder / where
        if not where.is_file():
            log.info("DAAIN: no key file at %s; call load_key(path) before scoring", where)
            return
        try:
            self.load_key(where)
        except FormatError as e:
            log.warning("DAAIN: key not loaded (%s); call load_key(path) before scoring", e)

    def load_key(self, path: str | Path) -> Self:
        """Install the key from a key file; it must be the key this detector was fitted with."""
        key = read_key(path)
        if key_fingerprint(key) != self.key_fingerprint_:
            raise FormatError(f"{path}: this key is not the one the detector was fitted with")
        self._key = key
        self.mask_ = self._make_mask()
        return self

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        t = {"mu_": self.mu_, "sigma_": self.sigma_, "latent_mean_": self.latent_mean_}
        t |= {f"flow.{k}": v for k, v in self.flow_.state_dict().items()}
        if self.hbos_ is not None:
            t |= self.hbos_.to_tensors("hbos.")
        if self.precision_ is not None:
            t["precision_"] = self.precision_
        if self.logistic_ is not None:
            t |= {f"logistic.{k}": v for k, v in self.logistic_.items()}
        return t

    def _state_meta(self) -> dict[str, Any]:
        return {
            # A list, not a dict: detector.json is written with sorted keys and the order of the
            # layers is part of the mask.
            "layer_shapes": [[k, list(v)] for k, v in self.layer_shapes_.items()],
            "n_features": int(self.mu_.shape[0]),
            "key_fingerprint": self.key_fingerprint_,
            "key_file": self._key_file,
            "epochs_run": self.epochs_run_,
        }

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        shapes = state_field(meta, "layer_shapes", list[tuple[str, list[int]]])
        self.layer_shapes_ = {k: tuple(v) for k, v in shapes}
        self.key_fingerprint_ = state_field(meta, "key_fingerprint", str)
        self._key_file = state_field(meta, "key_file", str | None, None)
        self.epochs_run_ = state_field(meta, "epochs_run", int)
        self.mu_, self.sigma_ = tensors["mu_"], tensors["sigma_"]
        self.latent_mean_ = tensors["latent_mean_"]
        n_features = state_field(meta, "n_features", int)
        if self.mu_.shape != (n_features,) or n_features != self.n_points:
            raise ValueError(f"state.n_features {n_features} does not fit the stored means")
        self.flow_ = self._new_flow(n_features)
        flow_state = {k[5:]: v for k, v in tensors.items() if k.startswith("flow.")}
        try:
            self.flow_.load_state_dict(flow_state)
        except RuntimeError as e:
            raise ValueError(f"flow weights do not fit: {e}") from None
        self.flow_.eval().requires_grad_(False)
        self.hbos_ = Hbos.from_tensors(tensors, "hbos.") if "hbos.lo" in tensors else None
        self.precision_ = tensors.get("precision_")
        self.logistic_ = (
            {k: tensors[f"logistic.{k}"] for k in ("mu", "sd", "w", "b")}
            if "logistic.w" in tensors
            else None
        )
        self._key = None  # the key lives apart: `_after_load` / `load_key` install it


def checkered_coupling_call_and_ladj(
    flow: zuko.flows.Flow, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """z = f(x) and log |det ∂f/∂x| of a zuko flow, as ``flow().transform.call_and_ladj(x)``.

    A coupling block with a checkered mask (zuko's RealNVP default: x_a = every other feature)
    is evaluated here by strided views, y_a = x_a, y_b = g(x_b | x_a):

        x_a = x[..., s::2],  x_b = x[..., 1−s::2],  ladj += Σ log |∂g/∂x_b|.

    zuko's `CouplingTransform` splits and merges with index tensors (``x[..., idx]`` and
    ``y[..., idx] = …``, plus ``nonzero`` on every call). On a CPU batch of 256 × 512 each of
    those took ~150 µs, about a tenth of DAAIN's scoring time next to LeNet. Other blocks
    (random masks, MAF, NSF) go through zuko unchanged. Same values as zuko's path (tested).
    """
    blocks = getattr(flow.transform, "transforms", None)
    if blocks is None or not all(_checkered_start(b) is not None for b in blocks):
        return flow().transform.call_and_ladj(x)
    total = x.new_zeros(x.shape[:-1])
    for block in blocks:
        a = _checkered_start(block)
        assert a is not None
        x_a, x_b = x[..., a::2], x[..., 1 - a :: 2]
        y_b, ladj = block.meta(None, x_a).call_and_ladj(x_b)
        y = torch.empty_like(x)
        y[..., a::2], y[..., 1 - a :: 2] = x_a, y_b
        x, total = y, total + ladj
    return x, total


def _checkered_start(block: nn.Module) -> int | None:
    """0 or 1 if `block` is a zuko coupling block whose kept features x_a are those of even or
    odd index (a checkered mask), else None."""
    mask = getattr(block, "mask", None)
    if not isinstance(block, zuko.flows.coupling.GeneralCouplingTransform) or mask is None:
        return None
    start = 0 if bool(mask[0]) else 1
    checkered = torch.arange(len(mask), device=mask.device) % 2 == start
    return start if torch.equal(mask, checkered) else None


def _head_features(z: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.double(), nll.double().unsqueeze(1)], dim=1)


def _predicted(logits: torch.Tensor) -> torch.Tensor:
    """Argmax class; for segmentation maps N×K×H×W, the most frequent class of the map."""
    classes = logits.argmax(dim=1)
    if classes.ndim == 1:
        return classes
    return torch.mode(classes.flatten(1), dim=1).values


def write_key(path: str | Path, key: str) -> Path:
    """Write a DAAIN key file (readable by its owner only where the OS allows)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": KEY_FORMAT, "fingerprint": key_fingerprint(key), "key": key}
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return target


def read_key(path: str | Path) -> str:
    """Read a DAAIN key file written by `write_key`."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p}: key file not found")
    try:
        doc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{p}: not a DAAIN key file ({e})") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != KEY_FORMAT
        or not isinstance(doc.get("key"), str)
    ):
        raise FormatError(f"{p}: not a DAAIN key file")
    if key_fingerprint(doc["key"]) != doc.get("fingerprint"):
        raise FormatError(f"{p}: key and fingerprint disagree; the file was modified")
    return str(doc["key"])
