"""Randomised neural fingerprints: a large bank of tiny detectors, a fresh random few per input.

After "Detecting adversarial examples with neural fingerprints" (the randomised-detector
abstract in ``seeds/neural-fingerprints-abstract.txt``): a static detector can be beaten by an
attacker who probes a local copy; drawing the detectors at random per input defeats that.

Training, for each class c (the class the model predicts):

* draw ``n_candidates`` random subsets I of ``subset_size`` neurons of the chosen layers
  (default: every neuron of the model's first activation map, e.g. LeNet-5's ``relu1``);
* a subset's statistic is the mean activation m_I(x) = (1/|I|) Σ_{j∈I} a_j(x);
* keep I as a *fingerprint* of c when m_I differs between clean inputs of c and attacked
  inputs of c: Welch's t-test p < ``p_value`` and Cohen's d = |μ_att − μ_clean| / √((σ²_att +
  σ²_clean)/2) > ``min_effect``. Each fingerprint stores (μ, σ) of m_I under both hypotheses.

Testing an input x predicted as c: draw ``n_sample`` fingerprints from c's bank (freshly random
per input) and sum, over them, the Gaussian log-likelihood ratio

    LLR(x) = Σ_I [ log N(m_I(x); μ_I^att, σ_I^att) − log N(m_I(x); μ_I^clean, σ_I^clean) ]

(``mode="lr"``, the score; higher = more anomalous). ``mode="vote"`` scores the share of drawn
fingerprints whose ratio is positive; ``mode="clean"`` needs no attacks and scores the clean-only
surprise −Σ_I log N(m_I(x); μ_I^clean, σ_I^clean) over random (unselected) subsets.

Which attacked inputs count as "attacked inputs of c" (``group_by``): ``"adversarial"`` (default)
groups anomalies by the class the model predicts *for the attacked image* — the bank that the
test-time lookup by predicted class will use; ``"source"`` groups them by the class of the clean
image they were made from: the ``labels`` of an `ImageSet` of anomalies, or, when the anomalies
are an unlabelled tensor as long as the ID data, the model's prediction on the clean image at the
same position (anomaly i is taken to be the attack of ID image i).

Defaults chosen on validation data (attacks of held-out MNIST *training* images, zoo LeNet-5;
``research/eval_fingerprints_frm.py --validate``, research/notebook.md): the seed's ≈ 50 neurons
from the penultimate dense layers detect FGSM (97 %) but not BIM-b (78 % AUROC). BIM-b's 50 small
steps leave the late, class-level features looking like a confident member of the new class,
while its ±ε noise over the whole digit *and background* shows in the first conv map, where a
mean over few neurons keeps a local change from being averaged away: ``layers="first"`` with
``subset_size=2`` reaches ≥ 99 % on both and transfers between them.
``layers="penultimate"``, ``subset_size=50`` gives the previous behaviour.

Randomness: the candidate subsets come from ``seed``. The per-input draw comes from a generator
seeded by ``seed`` and a BLAKE2 hash of the input's bytes, so scores are reproducible and
independent of batching; ``random_per_call=True`` draws from the operating system's entropy
instead (deployment: an attacker cannot predict the draw; scores then vary between calls).

Examples:
    >>> det = FingerprintDetector().fit(model, mnist_train, anomalies=fgsm_train)  # doctest: +SKIP
    >>> det.score(model, x_test)                                                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.params import Fraction, NonNegative, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError
from tripwire.features import LayerTap, is_activation, model_device
from tripwire.progress import track

logger = logging.getLogger(__name__)

Mode = Literal["lr", "vote", "clean"]
GroupBy = Literal["adversarial", "source"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LAYER_CHOICES = ("first", "penultimate", "auto")


def auto_layers(model: nn.Module, sample: torch.Tensor, n_dense: int = 2) -> list[str]:
    """The layers feeding the model's last `n_dense` `nn.Linear` modules (penultimate features).

    Found by running `sample` once with hooks on every leaf module: for each of the last
    `n_dense` executed Linear layers, the earliest leaf module whose output *is* the Linear's
    input (so ``relu4`` rather than the eval-mode dropout after it), else the last one before it
    with as many numbers per input.

    Raises:
        InvalidInputError: if the model has no `nn.Linear` layer.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> auto_layers(net, torch.rand(1, 1, 2, 2))
        ['2', '0']
    """
    # Tensors are kept referenced until the end so that identity comparisons stay valid.
    calls: list[tuple[str, torch.Tensor, int]] = []  # name, output, numel per input
    linear_inputs: list[tuple[int, torch.Tensor, int]] = []  # position in calls, input, numel
    handles = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def fn(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            if isinstance(module, nn.Linear) and inputs and isinstance(inputs[0], torch.Tensor):
                linear_inputs.append((len(calls), inputs[0], inputs[0][0].numel()))
            if isinstance(out, torch.Tensor):
                calls.append((name, out, out[0].numel()))

        return fn

    try:
        for name, module in model.named_modules():
            if name and not any(True for _ in module.children()):
                handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    if not linear_inputs:
        raise InvalidInputError(
            "the model has no nn.Linear layer to take penultimate features from; pass "
            "layers=[...] naming the layers to draw fingerprint neurons from"
        )
    chosen: list[str] = []
    for pos, linear_input, numel in reversed(linear_inputs[-n_dense:]):
        same = [i for i in range(pos) if calls[i][1] is linear_input]
        if same:
            i = same[0]
        else:
            sized = [i for i in range(pos) if calls[i][2] == numel]
            if not sized:
                continue
            i = sized[-1]
        if calls[i][0] not in chosen:
            chosen.append(calls[i][0])
    if not chosen:
        raise InvalidInputError("could not find the penultimate layers; pass layers=[...]")
    return chosen


def first_activation(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """The first activation module (ReLU, GELU, …) the model runs on `sample`, as a one-item list.

    For a conv net that is the activation of the first convolution: every neuron of that map is
    a candidate (LeNet-5: ``relu1``, 6×28×28 = 4,704 neurons).

    Raises:
        InvalidInputError: if the model runs no activation module (e.g. only ``F.relu`` calls).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
        >>> first_activation(net, torch.rand(1, 1, 5, 5))
        ['1']
    """
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name and is_activation(module):
            handles.append(
                module.register_forward_hook(lambda *_, n=name: order.append(n))  # type: ignore[misc]
            )
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise InvalidInputError(
            "the model runs no activation module (nn.ReLU, nn.GELU, …) to take fingerprint "
            'neurons from; pass layers="penultimate" or layers=[...] naming the layers'
        )
    return order[:1]


def welch_select(
    clean: torch.Tensor,
    attacked: torch.Tensor,
    p_value: float = 0.01,
    min_effect: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which columns (candidate statistics) differ between clean and attacked rows.

    Welch's t-test per column (unequal variances, Welch–Satterthwaite degrees of freedom) and
    Cohen's d = |μ_a − μ_c| / √((σ²_a + σ²_c)/2). Returns (keep mask, p-values, d), each (K,).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> c, a = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
        >>> a[:, 0] += 1.0
        >>> welch_select(c, a)[0].tolist()
        [True, False]
    """
    nc, na = clean.shape[0], attacked.shape[0]
    if nc < 2 or na < 2:
        raise InvalidInputError("need at least two clean and two attacked inputs per test")
    c, a = clean.double(), attacked.double()
    mc, ma = c.mean(0), a.mean(0)
    vc, va = c.var(0), a.var(0)
    se2 = vc / nc + va / na
    t = (ma - mc) / se2.sqrt().clamp_min(1e-300)
    df = se2**2 / ((vc / nc) ** 2 / (nc - 1) + (va / na) ** 2 / (na - 1)).clamp_min(1e-300)
    from scipy import stats  # slow import (≈ 0.5 s): where used

    p = torch.from_numpy(2 * stats.t.sf(np.abs(t.numpy()), df.numpy()))
    p = torch.where(se2 > 0, p, torch.where(ma != mc, 0.0, 1.0).double())
    d = (ma - mc).abs() / ((vc + va) / 2).sqrt().clamp_min(1e-12)
    return (p < p_value) & (d > min_effect), p, d


def _gauss_logpdf(x: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / sd) ** 2 - sd.log() - _LOG_SQRT_2PI


@register_detector
class FingerprintDetector(Detector):
    """Randomised neural fingerprints with a likelihood-ratio test (see the module docstring).

    Args:
        layers: module names whose (flattened) outputs supply the neurons; ``"first"`` (default):
            the first activation module the model runs (`first_activation`); ``"penultimate"``
            (or ``"auto"``, its old name): the inputs of the last two `nn.Linear` layers
            (`auto_layers`).
        subset_size: neurons per fingerprint (the seed's ≈ 50 suits the penultimate layers;
            2, chosen on validation data, for the first activation map).
        n_candidates: random subsets tried per class.
        n_sample: fingerprints drawn per input at test time (≈ 25).
        p_value: Welch's t-test threshold for keeping a subset.
        min_effect: Cohen's d threshold for keeping a subset.
        mode: ``"lr"`` (log-likelihood ratio, default), ``"vote"``, ``"clean"`` (no attacks
            needed).
        group_by: ``"adversarial"`` or ``"source"`` — which class an attacked input belongs to
            (module docstring).
        max_per_class: at most this many clean and attacked inputs per class estimate the
            statistics (seeded subsample).
        min_attacked: a class with fewer attacked inputs is fitted against all attacked inputs.
        random_per_call: draw fingerprints from OS entropy at every call (not reproducible).
        seed: seed of the candidate subsets, subsamples and per-input draws.

    Examples:
        >>> det = FingerprintDetector(n_sample=25)                          # doctest: +SKIP
        >>> det.fit(model, train, anomalies=fgsm_of_train).score(model, x)  # doctest: +SKIP
    """

    name = "fingerprints"
    export_refusal = "it draws fresh random fingerprints for every input at scoring time"
    needs_anomalies = True

    layers: str | Sequence[str] = "first"
    subset_size: PositiveInt = 2
    n_candidates: PositiveInt = 2000
    n_sample: PositiveInt = 25
    p_value: Fraction = 0.01
    min_effect: NonNegative = 0.1
    mode: Mode = "lr"
    group_by: GroupBy = "adversarial"
    max_per_class: PositiveInt = 3000
    min_attacked: int = 10
    random_per_call: bool = False
    seed: int = 0

    layers_: list[str] = learned()
    n_neurons_: int = learned()
    indices_: torch.Tensor = learned(dtype=torch.int64)
    stats_: torch.Tensor = learned(dtype=torch.float64)
    offsets_: torch.Tensor = learned(dtype=torch.int64)

    def __post_init__(self) -> None:
        # The clean-only mode fits without attacks (an instance-level override of the ClassVar).
        self.needs_anomalies = self.mode != "clean"  # type: ignore[misc]

    # ------------------------------------------------------------------------------ fitting
    def _activations(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with LayerTap(model, self.layers_, "none") as tap:
            logits = model(x)
        acts = torch.cat([tap.outputs[name].flatten(1) for name in self.layers_], dim=1)
        return acts, logits.argmax(dim=1)

    def _collect(self, model: nn.Module, data: ImageSet, what: str):  # type: ignore[no-untyped-def]
        """Activations (N, D) float32 and predictions (N,), written into one preallocated tensor.

        On a wide first layer (VGG-16 conv1_1: 65,536 neurons) 10,000 inputs take 2.6 GB; a list
        of batches joined at the end would hold that twice.
        """
        device = model_device(model)
        acts: torch.Tensor | None = None
        preds = torch.empty(len(data), dtype=torch.long)
        start = 0
        with torch.no_grad():
            for xb in track(data.batches(512), f"fingerprints: {what} activations"):
                a, p = self._activations(model, xb.to(device))
                if acts is None:
                    acts = torch.empty(len(data), a.shape[1])
                acts[start : start + len(a)] = a
                preds[start : start + len(a)] = p
                start += len(a)
        if acts is None:
            raise InvalidInputError(f"fingerprints: the {what} set is empty")
        return acts, preds

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        if isinstance(self.layers, str) and self.layers in _LAYER_CHOICES:
            sample = data.as_float(slice(0, 1)).to(model_device(model))
            find = first_activation if self.layers == "first" else auto_layers
            self.layers_ = find(model, sample)
        else:
            self.layers_ = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        k = self.num_classes_
        clean, clean_pred = self._collect(model, data, "clean")
        n_neurons = clean.shape[1]
        m = min(self.subset_size, n_neurons)
        self.n_neurons_ = n_neurons
        g = torch.Generator().manual_seed(self.seed)
        att, att_group = None, None
        if anomalies is not None and self.mode != "clean":
            att, att_pred = self._collect(model, anomalies, "attacked")
            att_group = (
                att_pred if self.group_by == "adversarial" else self._sources(anomalies, clean_pred)
            )
            att_group = att_group.clone()
        floor = 1e-4 * max(float(clean.std()), 1e-6)
        indices, banks, counts = [], [], []
        for c in track(range(k), "fingerprints: selecting"):
            cand = _random_subsets(self.n_candidates, n_neurons, m, g)
            xc = _subsample(clean[clean_pred == c], self.max_per_class, g)
            if len(xc) < 2:
                xc = _subsample(clean, self.max_per_class, g)
                logger.warning("class %d: fewer than 2 clean inputs; using all classes", c)
            mc = _subset_means(xc, cand)
            mu_c, sd_c = mc.mean(0), mc.std(0)
            if att is None:
                keep = torch.ones(self.n_candidates, dtype=torch.bool)
                mu_a, sd_a = mu_c, sd_c
            else:
                assert att_group is not None
                xa = att[att_group == c]
                if len(xa) < max(self.min_attacked, 2):
                    xa = att
                xa = _subsample(xa, self.max_per_class, g)
                ma = _subset_means(xa, cand)
                keep, _, d = welch_select(mc, ma, self.p_value, self.min_effect)
                mu_a, sd_a = ma.mean(0), ma.std(0)
                if int(keep.sum()) < self.n_sample:
                    logger.warning(
                        "class %d: only %d of %d subsets pass the tests; keeping the %d with the "
                        "largest effect",
                        c,
                        int(keep.sum()),
                        self.n_candidates,
                        self.n_sample,
                    )
                    keep = torch.zeros_like(keep)
                    keep[d.argsort(descending=True)[: self.n_sample]] = True
            sd_c, sd_a = sd_c.clamp_min(floor), sd_a.clamp_min(floor)
            banks.append(torch.stack([mu_c, sd_c, mu_a, sd_a], dim=1)[keep])
            indices.append(cand[keep])
            counts.append(int(keep.sum()))
        self.indices_ = torch.cat(indices)
        self.stats_ = torch.cat(banks).double()
        self.offsets_ = torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.long)

    def _sources(self, anomalies: ImageSet, clean_pred: torch.Tensor) -> torch.Tensor:
        """Source classes of the anomalies for group_by="source"."""
        if anomalies.labels is not None:
            return anomalies.labels
        if len(clean_pred) != len(anomalies):
            raise InvalidInputError(
                'group_by="source": give anomalies as an ImageSet whose labels are the source '
                f"classes, or exactly one anomaly per ID image ({len(anomalies)} anomalies for "
                f"{len(clean_pred)} ID images)"
            )
        return clean_pred

    # ------------------------------------------------------------------------------ scoring
    def fingerprint_counts(self) -> torch.Tensor:
        """Number of fingerprints in each class's bank, (K,)."""
        self.check_fitted()
        return self.offsets_[1:] - self.offsets_[:-1]

    def _draw(self, x: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Global fingerprint ids, (N, n_sample): a fresh random draw per input."""
        counts = self.fingerprint_counts()
        out = torch.empty(x.shape[0], self.n_sample, dtype=torch.long)
        host = x.detach().to("cpu", torch.float32).contiguous().numpy()
        for i in range(x.shape[0]):
            c = int(pred[i])
            kc = int(counts[c])
            if self.random_per_call:
                key = secrets.randbits(63)
            else:
                h = hashlib.blake2b(host[i].tobytes(), digest_size=8, key=str(self.seed).encode())
                key = int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)
            g = torch.Generator().manual_seed(key)
            if kc >= self.n_sample:
                draw = torch.randperm(kc, generator=g)[: self.n_sample]
            else:
                draw = torch.randint(kc, (self.n_sample,), generator=g)
            out[i] = draw + int(self.offsets_[c])
        return out

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acts, pred = self._activations(model, x)
        ids = self._draw(x, pred.cpu()).to(x.device)  # (N, s)
        idx = self.indices_.to(x.device)[ids]  # (N, s, m)
        n, s, m = idx.shape
        means = acts.double().gather(1, idx.reshape(n, s * m)).reshape(n, s, m).mean(dim=2)
        st = self.stats_.to(x.device)[ids]  # (N, s, 4)
        log_clean = _gauss_logpdf(means, st[..., 0], st[..., 1])
        if self.mode == "clean":
            return -log_clean.sum(dim=1), pred
        llr = _gauss_logpdf(means, st[..., 2], st[..., 3]) - log_clean
        if self.mode == "vote":
            return (llr > 0).double().mean(dim=1), pred
        return llr.sum(dim=1), pred

    # ------------------------------------------------------------------------------ state


def _random_subsets(k: int, n: int, m: int, g: torch.Generator, rows: int = 64) -> torch.Tensor:
    """k random subsets of m distinct indices out of range(n), (k, m): the first m of a random
    permutation per row (argsort of uniform noise), drawn `rows` rows at a time so that the
    noise and its argsort never hold k × n numbers at once (2,000 × 65,536 took 1.6 GB)."""
    chunks = []
    for i in range(0, k, rows):
        noise = torch.rand(min(rows, k - i), n, generator=g)
        chunks.append(noise.argsort(dim=1)[:, :m])
    return torch.cat(chunks)


def _subset_means(x: torch.Tensor, cand: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """Mean of each candidate subset (K, m) of columns for every row of x (N, D): (N, K).

    A gather in row chunks: N·K·m additions instead of the N·D·K of a dense selection matrix
    (which made early, wide layers such as a conv map of 4,704 neurons slow to fit).
    """
    out = torch.empty(x.shape[0], cand.shape[0], dtype=x.dtype)
    for i in range(0, x.shape[0], rows):
        out[i : i + rows] = x[i : i + rows][:, cand].mean(dim=2)
    return out


def _subsample(x: torch.Tensor, cap: int, g: torch.Generator) -> torch.Tensor:
    if len(x) <= cap:
        return x
    return x[torch.randperm(len(x), generator=g)[:cap]]
