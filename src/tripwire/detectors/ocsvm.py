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

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

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
        highest anomaly score the other classes' SVMs can give (f = 0).
        """
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

    def to(self, device: torch.device) -> ClassConditionalOCSVM:
        """The same SVMs with tensors on `device` (no copy if already there)."""
        return ClassConditionalOCSVM(
            *(t.to(device) for t in (self.mean, self.scale, self.support, self.coef, self.gamma)),
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
        of one class), so one batched matrix product gives every ‖z − sv‖² = ‖z‖² + ‖sv‖² − 2 z·sv.
        """
        k = self.mean.shape[0]
        order = torch.argsort(classes, stable=True)
        cls = classes[order]
        counts = torch.bincount(cls, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(cls), device=cls.device) - starts[cls]
        z = (features[order] - self.mean[cls]) / self.scale[cls]
        grouped = z.new_zeros(k, int(counts.max()), z.shape[1])
        grouped[cls, rank] = z
        sq = (
            grouped.square().sum(2, keepdim=True)
            + self.support.square().sum(2).unsqueeze(1)
            - 2 * grouped @ self.support.transpose(1, 2)
        ).clamp_min(0)  # K×M×S
        logits = -self.gamma.view(k, 1, 1) * sq
        # exp of arguments below −80 would give subnormal floats, which are ~100× slower on CPUs;
        # they contribute < 1e-34 of a kernel value, so they are floored there.
        if log_domain:
            terms = logits + torch.log(self.coef).unsqueeze(1)
            top = terms.amax(dim=2, keepdim=True)
            f = -(top.squeeze(2) + torch.exp((terms - top).clamp_min(_FLOOR)).sum(2).log())
        else:
            f = -(torch.exp(logits.clamp_min(_FLOOR)) @ self.coef.unsqueeze(2)).squeeze(2)
        out = torch.empty_like(f[cls, rank])
        out[order] = f[cls, rank]
        return out

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state as named tensors for safetensors."""
        return {
            f"{prefix}.mean": self.mean,
            f"{prefix}.scale": self.scale,
            f"{prefix}.support": self.support,
            f"{prefix}.coef": self.coef,
            f"{prefix}.gamma": self.gamma,
            f"{prefix}.fitted": self.fitted,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> ClassConditionalOCSVM:
        """Inverse of `tensors`."""
        names = ("mean", "scale", "support", "coef", "gamma", "fitted")
        return cls(*(tensors[f"{prefix}.{n}"] for n in names))
