"""One-pixel attack — differential evolution on a few pixels (Su, Vargas & Sakurai, 2019)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.attack import Attack
from tripwire.anomalies.registry import register_generator
from tripwire.errors import InvalidInputError


@register_generator
class OnePixel(Attack):
    """Untargeted k-pixel attack by differential evolution (DE/rand/1, no crossover), black-box.

    A candidate is k pixels, each (row, column, value per channel); applying it sets those pixels
    of the image. Fitness = the model's softmax probability of the true class (lower is better).
    Each generation, for every member i of the population of P candidates,

        child_i = x_{r1} + F · (x_{r2} − x_{r3}),   r1, r2, r3 distinct and ≠ i,   F = 0.5,

    (coordinates wrap around the image, values are clipped to [0, 1]) and the child replaces
    member i when its fitness is lower or equal. Initial coordinates are uniform over the image,
    initial values uniform in [0, 1] (the paper: N(128, 127) per RGB channel). An input stops as
    soon as one candidate makes the model misclassify it (the paper's early stop), else after
    `iterations` generations with the best candidate. Only the model's outputs are used.

    Defaults: the paper ran P = 400 for 100 generations (≈ 40,000 forward passes per image); here
    `population` = 100 and `iterations` = 30 (≤ 3,100 passes per image), so that 1,000 MNIST
    images against the zoo LeNet take minutes rather than hours on a 2-core CPU
    (research/notebook.md has the measured time and success rate). `pixels` (k) is 1, 3 or 5 in
    the paper; on MNIST one pixel rarely suffices, so expect a low success rate for k = 1.

    Written here rather than with `scipy.optimize.differential_evolution`: SciPy evolves one image
    at a time and calls the model once per candidate (or once per generation with
    ``vectorized=True``), i.e. 1,000 separate optimisations with a Python round-trip per
    generation each. This version evolves the populations of a whole batch of images at once: one
    model call scores B × P candidate images per generation, and images leave the batch when
    they are fooled. Randomness: every input gets its own seeded `torch.Generator` (seeds drawn
    from `seed`), so the result does not depend on the batch size or on the other inputs.

    Examples:
        >>> s = get_generator("one-pixel", pixels=3).generate(model, x, y, seed=0)  # doctest: +SKIP
        >>> s.summary()["success_rate"]  # doctest: +SKIP
    """

    name = "one-pixel"
    description = "One-/few-pixel attack by differential evolution (Su et al. 2019)"
    defaults: ClassVar[dict[str, Any]] = {
        "pixels": 1,
        "population": 100,
        "iterations": 30,
        "f": 0.5,
    }
    default_batch_size = 50

    def _validate(self) -> None:
        p = self.params
        for k, low in (("pixels", 1), ("population", 4), ("iterations", 0)):
            v = p[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise InvalidInputError(f"{self.name}: {k} must be an integer ≥ {low}, got {v!r}")
        f = p["f"]
        if not isinstance(f, int | float) or isinstance(f, bool) or not 0 < f <= 2:
            raise InvalidInputError(f"{self.name}: f (the DE scale) must be in (0, 2], got {f!r}")

    def _draw(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {"seeds": torch.randint(0, 2**62, (len(x),), generator=gen)}

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        seeds = extra["seeds"]
        _, c, h, w = x.shape
        k, size = int(self.params["pixels"]), int(self.params["population"])
        if k > h * w:
            raise InvalidInputError(f"{self.name}: pixels={k} exceeds the {h}×{w} image")
        f = float(self.params["f"])
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
        scale = torch.tensor([h, w] + [1.0] * c, device=x.device)
        # candidates: (N, P, k, 2 + C) — row, column in [0, H) × [0, W), then channel values
        pop = torch.stack([torch.rand(size, k, 2 + c, generator=g) for g in gens]).to(x.device)
        pop = pop * scale
        fit, fooled = _fitness(model, x, y, pop)
        result = x.clone()
        done = fooled.any(1)
        if done.any():
            result[done] = _apply(x[done], _first(pop[done], fooled[done]))
        for _ in range(int(self.params["iterations"])):
            ia = torch.nonzero(~done).flatten()
            if len(ia) == 0:
                break
            r1, r2, r3 = torch.stack([_distinct_others(size, gens[int(i)]) for i in ia]).unbind(2)
            r1, r2, r3 = (r.to(x.device) for r in (r1, r2, r3))
            p = pop[ia]
            pick = torch.arange(len(ia), device=x.device)[:, None]
            child = p[pick, r1] + f * (p[pick, r2] - p[pick, r3])
            child[..., :2] = torch.remainder(child[..., :2], scale[:2])
            child[..., 2:] = child[..., 2:].clamp(0.0, 1.0)
            cfit, cfooled = _fitness(model, x[ia], y[ia], child)
            better = cfit <= fit[ia]
            pop[ia] = torch.where(better[..., None, None], child, p)
            fit[ia] = torch.where(better, cfit, fit[ia])
            hit = cfooled.any(1)
            if hit.any():
                result[ia[hit]] = _apply(x[ia[hit]], _first(child[hit], cfooled[hit]))
                done[ia[hit]] = True
        rest = torch.nonzero(~done).flatten()
        if len(rest):
            best = fit[rest].argmin(1)
            result[rest] = _apply(x[rest], pop[rest, best])
        return result


def _apply(x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Images x (B, C, H, W) with the pixels of candidates (B, ..., k, 2 + C) set.

    With extra candidate dimensions (B, P, k, 2 + C) the result is (B, P, C, H, W).
    """
    b, c, h, w = x.shape
    lead = cand.shape[1:-2]
    out = x.view(b, *([1] * len(lead)), c, h, w).expand(b, *lead, c, h, w).clone()
    flat = out.reshape(-1, c, h * w)
    cnd = cand.reshape(-1, cand.shape[-2], cand.shape[-1])  # (B·P, k, 2 + C)
    rows = cnd[..., 0].long().clamp_(0, h - 1)
    cols = cnd[..., 1].long().clamp_(0, w - 1)
    pos = rows * w + cols  # (B·P, k)
    vals = cnd[..., 2:].transpose(1, 2)  # (B·P, C, k)
    flat.scatter_(2, pos[:, None, :].expand(-1, c, -1), vals)
    return flat.view(b, *lead, c, h, w)


@torch.no_grad()
def _fitness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(true-class probability, misclassified) of every candidate, each (B, P)."""
    b, p = cand.shape[:2]
    imgs = _apply(x, cand).reshape(b * p, *x.shape[1:])
    logits = model(imgs).float().view(b, p, -1)
    prob = logits.softmax(-1).gather(2, y.view(b, 1, 1).expand(b, p, 1)).squeeze(2)
    return prob, logits.argmax(-1) != y[:, None]


def _first(cand: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, the first candidate where `mask` is True: (B, P, k, 2 + C) → (B, k, 2 + C)."""
    return cand[torch.arange(len(cand), device=cand.device), mask.int().argmax(1)]


def _distinct_others(size: int, g: torch.Generator) -> torch.Tensor:
    """(size, 3) indices r1, r2, r3 per member i: distinct from each other and from i."""
    i = torch.arange(size)
    o1 = torch.randint(1, size, (size,), generator=g)
    o2 = torch.randint(1, size - 1, (size,), generator=g)
    o2 = o2 + (o2 >= o1).long()
    lo, hi = torch.minimum(o1, o2), torch.maximum(o1, o2)
    o3 = torch.randint(1, size - 2, (size,), generator=g)
    o3 = o3 + (o3 >= lo).long()
    o3 = o3 + (o3 >= hi).long()
    return torch.stack([(i + o1) % size, (i + o2) % size, (i + o3) % size], dim=1)
