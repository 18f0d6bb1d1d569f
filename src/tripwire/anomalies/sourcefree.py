"""What the generators that need no source inputs share (noise, fooling images): the number and
shape of the images come from `n` / `shape`, or from `x` when one is given (only its count and
image shape are used)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.base import AnomalySet, BaseGenerator, model_guard, outcome
from tripwire.data.base import check_images
from tripwire.errors import InvalidInputError
from tripwire.models.digest import weights_digest


class SourceFree(BaseGenerator):
    """Base of generators whose images are not derived from inputs; `_make` draws the images."""

    needs_inputs: ClassVar[bool] = False

    def resolve_size(
        self, x: torch.Tensor | None, n_optional: bool = False
    ) -> tuple[Any, tuple[int, ...]]:
        """(n, image shape) from the parameters, falling back on x's count and shape.

        With `n_optional`, n may stay None (the generator picks its own count).
        """
        n, shape = self.params.get("n"), self.params.get("shape")
        if x is not None:
            x = check_images(x, what="x").float()
            n = len(x) if n is None else n
            shape = tuple(x.shape[1:]) if shape is None else shape
        if (n is None and not n_optional) or shape is None:
            raise InvalidInputError(
                f"{self.name}: give n and shape (e.g. n=1000, shape=(1, 28, 28)), or inputs x "
                "whose count and image shape to copy"
            )
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise InvalidInputError(f"{self.name}: n must be a positive integer, got {n!r}")
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise InvalidInputError(f"{self.name}: shape must be (C, H, W), got {shape!r}")
        return n, shape

    def finish(
        self,
        model: nn.Module,
        images: torch.Tensor,
        seed: int,
        params: dict[str, Any],
        success: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> AnomalySet:
        """Wrap generated images into an AnomalySet with the model's verdict on them."""
        with model_guard(model):
            pred, conf, _ = outcome(model, images, self.batch_size)
        n = len(images)
        none = torch.full((n,), -1, dtype=torch.int64)
        return AnomalySet(
            kind=self.name,
            images=images,
            success=torch.ones(n, dtype=torch.bool) if success is None else success,
            source_index=none,
            labels=none.clone(),
            predicted=pred,
            confidence=conf,
            norms={},
            params=params,
            seed=int(seed),
            target=target,
            model_digest=weights_digest(model),
        )
