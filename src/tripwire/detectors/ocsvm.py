"""Class-conditional RBF one-class SVMs: fitted with scikit-learn's libsvm, scored with torch.

Schölkopf et al. (2001) ν-one-class SVM with an RBF kernel (equivalent to SVDD, Tax & Duin 1999),
after a StandardScaler, as in Zhao et al.'s code (``StandardScaler`` + ``OneClassSVM(nu=0.1,
kernel="rbf", gamma="scale")``). For an input z (standardised with its class's scaler) the SVM of
class c gives sklearn's ``score_samples``

    f_c(z) = Σ_j α_j · exp(−γ_c ‖z − sv_j‖²),

which is high inside the learned support. The anomaly score returned here is −f_c(z) (higher =
more anomalous). Fitting is libsvm's; scoring is a batched torch computation on the model's
device (no scikit-learn call per batch), with all classes' support vectors padded into one
tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tripwire.tracing import tracing

_MIN_SAMPLES = 5
_FLOOR = -80.0  # exp(−80) ≈ 1.8e-35, still a normal float32


@dataclass
class ClassConditionalOCSVM:
    """One RBF one-class SVM per class, as padded tensors.

    Attributes:
        mean, scale: (K, D) StandardScaler of each class.
        support: (K, S, D) standardised support vectors, zero-padded to S.
        coef: (K, S) dual coefficients α_j, zero where padded.
        gamma: (K,) kernel widths.
        fitted: (K,) bool, False for classes that had too few samples to fit.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    support: torch.Tensor
    coef: torch.Tensor
    gamma: torch.Tensor
    fitted: torch.Tensor
    _derived: dict[torch.device, dict[str, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        classes: torch.Tensor,
        num_classes: int,
        nu: float = 0.1,
        gamma: float | str = "scale",
    ) -> ClassConditionalOCSVM:
        """Fit one scaler + SVM per class on the rows of `features` whose class is c.

        Classes with fewer than 5 rows are not fitted; an input predicted as such a class gets the
        highest anomaly score the other classes' SVMs can give (f = 0; in the log domain, where
        −log 0 = +inf, the largest finite float).
        """
        # scikit-learn loads in ≈ 1 s: imported where used, not when the CLI starts
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import OneClassSVM

        x = features.detach().cpu().double().numpy()
        c = classes.detach().cpu().numpy()
        d = x.shape[1]
        means, scales, supports, coefs, gammas, fitted = [], [], [], [], [], []
        for k in range(num_classes):
            xk = x[c == k]
            if len(xk) < _MIN_SAMPLES:
                means.append(np.zeros(d))
                scales.append(np.ones(d))
                supports.append(np.zeros((1, d)))
                coefs.append(np.zeros(1))
                gammas.append(1.0 / d)
                fitted.append(False)
                continue
            scaler = StandardScaler().fit(xk)
            z = scaler.transform(xk)
            svm = OneClassSVM(nu=nu, kernel="rbf", gamma=gamma).fit(z)
            means.append(scaler.mean_)
            scales.append(scaler.scale_)
            supports.append(svm.support_vectors_)
            coefs.append(svm.dual_coef_[0])
            gammas.append(float(svm._gamma))
            fitted.append(True)
        s = max(len(sv) for sv in supports)
        support = np.zeros((num_classes, s, d))
        coef = np.zeros((num_classes, s))
        for k in range(num_classes):
            support[k, : len(supports[k])] = supports[k]
            coef[k, : len(coefs[k])] = coefs[k]
        f32 = torch.float32
        return cls(
            mean=torch.tensor(np.stack(means), dtype=f32),
            scale=torch.tensor(np.stack(scales), dtype=f32),
            support=torch.tensor(support, dtype=f32),
            coef=torch.tensor(coef, dtype=f32),
            gamma=torch.tensor(gammas, dtype=f32),
            fitted=torch.tensor(fitted),
        )

    @classmethod
    def concat(cls, banks: Sequence[ClassConditionalOCSVM]) -> ClassConditionalOCSVM:
        """The banks side by side as one, so that one `score` call serves them all: class
        b·K + c of the result is class c of bank b (K classes each).

        Feature dimensions are zero-padded to the widest bank (mean 0, scale 1, support vectors 0
        there, and the caller pads its features with zeros: every distance is unchanged), support
        vectors to the most of any bank (coefficient 0, as within a bank).
        """
        d = max(b.mean.shape[1] for b in banks)
        s = max(b.support.shape[1] for b in banks)

        def pad(t: torch.Tensor, value: float, dims: tuple[int, ...]) -> torch.Tensor:
            widths: list[int] = []
            for axis in reversed(range(1, t.ndim)):
                widths += [0, dims[axis - 1] - t.shape[axis]]
            return F.pad(t, widths, value=value)

        return cls(
            mean=torch.cat([pad(b.mean, 0.0, (d,)) for b in banks]),
            scale=torch.cat([pad(b.scale, 1.0, (d,)) for b in banks]),
            support=torch.cat([pad(b.support, 0.0, (s, d)) for b in banks]),
            coef=torch.cat([pad(b.coef, 0.0, (s,)) for b in banks]),
            gamma=torch.cat([b.gamma for b in banks]),
            fitted=torch.cat([b.fitted for b in banks]),
        )

    def to(self, device: torch.device) -> ClassConditionalOCSVM:
        """The same SVMs with tensors on `device` (itself if already there)."""
        if self.support.device == torch.device(device):
            return self
        return ClassConditionalOCSVM(
            self.mean.to(device),
            self.scale.to(device),
            self.support.to(device),
            self.coef.to(device),
            self.gamma.to(device),
            self.fitted.to(device),
        )

    def score(
        self, features: torch.Tensor, classes: torch.Tensor, log_domain: bool = False
    ) -> torch.Tensor:
        """Anomaly score of each row under the SVM of its class c (higher = anomalous).

        −f_c(z), or with `log_domain` −log f_c(z) = −logsumexp_j(log α_j − γ‖z − sv_j‖²): the same
        order, but it keeps growing with the distance where f underflows to 0 (far anomalies
        then stay distinguishable instead of tying at 0).

        All classes at once: the rows are grouped by class into a K×M×D tensor (M = the most rows
        of one class), so one batched matrix product gives every kernel argument
        −γ‖z − sv‖² = 2γ z·sv − γ‖sv‖² − γ‖z‖²; the K×M×S tensor is then updated in place
        (large temporaries would cost more in page faults than in arithmetic on a CPU). While
        traced for export (`tripwire.export`), where shapes must not depend on the data, every
        row is scored under every class's SVM instead and its own class's score kept.
        """
        k, d = self.mean.shape
        if tracing():
            # one graph for every batch: each row against every class's SVM (K× the arithmetic)
            f = self._scores_by_class(features.unsqueeze(0).expand(k, -1, -1), log_domain)
            return f.gather(0, classes.view(1, -1)).squeeze(0)
        order = torch.argsort(classes, stable=True)
        cls = classes.index_select(0, order)
        counts = torch.bincount(cls, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        m = int(counts.max())
        # slot of each sorted row in the flattened K×M grid (class·M + rank in its class; unused
        # slots stay zero and are never read back)
        # (index_select / index_copy_: CPU advanced indexing costs several times more)
        slot = torch.arange(len(cls), device=cls.device) + (cls * m - starts.index_select(0, cls))
        grouped = features.new_zeros(k * m, d)
        grouped.index_copy_(0, slot, features.index_select(0, order).to(grouped.dtype))
        f = self._scores_by_class(grouped.view(k, m, d), log_domain)
        return f.new_empty(len(classes)).index_copy_(0, order, f.view(-1).index_select(0, slot))

    def _scores_by_class(self, rows: torch.Tensor, log_domain: bool) -> torch.Tensor:
        """K×M scores of K×M×D rows, row block c under the SVM of class c."""
        k, m, _ = rows.shape
        prep = self._prepared()
        z = (rows - self.mean.unsqueeze(1)) / self.scale.unsqueeze(1)  # K×M×D
        arg = torch.baddbmm(prep["neg_gamma_sv_sq"].expand(k, m, -1), z, prep["two_gamma_sv_t"])
        if rows.requires_grad:  # under autograd (adaptive attacks): no in-place updates
            return self._differentiable_scores(arg, z, prep, log_domain)
        arg.add_(-self.gamma.view(k, 1, 1) * z.square().sum(2, keepdim=True))
        # The argument is ≤ 0 (a squared distance); exp of arguments below −80 would give
        # subnormal floats, ~100× slower on CPUs, for terms < 1e-34 of a kernel value. In the log
        # domain only the terms relative to the largest are floored: far inputs keep their order.
        if log_domain:
            arg.clamp_(max=0.0).add_(prep["log_coef"])
            top = arg.amax(dim=2, keepdim=True)
            arg.sub_(top).clamp_(min=_FLOOR).exp_()
            f = -(top.squeeze(2) + arg.sum(2).log())
            # An unfitted class has no support (f = 0, −log f = +inf; the sums above give NaN):
            # the largest finite value, so that its inputs rank above every fitted score.
            return torch.where(prep["fitted"], f, torch.finfo(f.dtype).max)
        arg.clamp_(min=_FLOOR, max=0.0)
        # an in-place product and a sum: 5× faster on CPU than bmm with a single column
        return -arg.exp_().mul_(prep["coef"]).sum(2)

    def _differentiable_scores(
        self, arg: torch.Tensor, z: torch.Tensor, prep: dict[str, torch.Tensor], log_domain: bool
    ) -> torch.Tensor:
        """`_scores_by_class` from the kernel arguments' first term, out of place."""
        k = arg.shape[0]
        arg = (arg - self.gamma.view(k, 1, 1) * z.square().sum(2, keepdim=True)).clamp(max=0.0)
        if log_domain:
            arg = arg + prep["log_coef"]
            top = arg.amax(dim=2, keepdim=True)
            f = -(top.squeeze(2) + (arg - top).clamp(min=_FLOOR).exp().sum(2).log())
            return torch.where(prep["fitted"], f, torch.finfo(f.dtype).max)
        return -(arg.clamp(min=_FLOOR).exp() * prep["coef"]).sum(2)

    def _prepared(self) -> dict[str, torch.Tensor]:
        """Tensors derived from the state once per device (γ folded into the support vectors)."""
        device = self.support.device
        cached = self._derived.get(device)
        if cached is None:
            k = self.support.shape[0]
            gamma = self.gamma.view(k, 1, 1)
            cached = {
                "two_gamma_sv_t": (2 * gamma * self.support).transpose(1, 2).contiguous(),
                "neg_gamma_sv_sq": -gamma * self.support.square().sum(2).unsqueeze(1),
                "coef": self.coef.unsqueeze(1),
                "log_coef": torch.log(self.coef).unsqueeze(1),
                "fitted": self.fitted.to(device).view(k, 1),
            }
            self._derived = {device: cached}
        return cached

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The state to store (`tripwire.detectors.state`): tensors by name, no other values."""
        names = ("mean", "scale", "support", "coef", "gamma", "fitted")
        return {n: getattr(self, n) for n in names}, {}

    @classmethod
    def from_state(
        cls, tensors: dict[str, torch.Tensor], values: dict[str, Any]
    ) -> ClassConditionalOCSVM:
        """Inverse of `state`; ValueError where the tensors do not make a bank of SVMs."""
        names = ("mean", "scale", "support", "coef", "gamma", "fitted")
        bank = cls(*(tensors[n] for n in names))
        k, d = bank.mean.shape
        s = bank.support.shape[1]
        shapes = {
            "mean": (k, d),
            "scale": (k, d),
            "support": (k, s, d),
            "coef": (k, s),
            "gamma": (k,),
            "fitted": (k,),
        }
        for name, shape in shapes.items():
            t = getattr(bank, name)
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
            if name == "fitted" and t.dtype != torch.bool:
                raise ValueError(f"fitted must be bool, got {t.dtype}")
            if name != "fitted" and (t.dtype != torch.float32 or not bool(t.isfinite().all())):
                raise ValueError(f"{name} must be finite float32")
        if not (bool((bank.scale > 0).all()) and bool((bank.gamma > 0).all())):
            raise ValueError("scales and kernel widths must be positive")
        if bool((bank.coef < 0).any()):
            raise ValueError("coef: dual coefficients must be ≥ 0")
        return bank
