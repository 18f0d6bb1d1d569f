"""Fooling images (Nguyen, Yosinski & Clune, CVPR 2015): unrecognisable images that the model
assigns to a target class with near-certainty — by the paper's evolutionary algorithm (§3,
directly encoded images) and by a faster gradient-ascent variant."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.base import (
    AnomalySet,
    model_device,
    model_guard,
    predict_logits,
    require_count,
    require_positive,
)
from tripwire.anomalies.registry import register_generator
from tripwire.anomalies.sourcefree import SourceFree
from tripwire.batching import batch_slices
from tripwire.errors import InvalidInputError
from tripwire.progress import track


class _Fooling(SourceFree):
    """Shared: targets, sizes, and the success rule (model predicts the target with ≥ `goal`)."""

    def _validate(self) -> None:
        g = self.params["goal"]
        if not isinstance(g, int | float) or not 0 < g < 1:
            raise InvalidInputError(f"{self.name}: goal must be in (0, 1), got {g!r}")

    def _targets(self, model: nn.Module, shape: tuple[int, ...], n: int | None) -> torch.Tensor:
        device = model_device(model)
        with model_guard(model), torch.no_grad():
            k = int(model(torch.zeros(1, *shape, device=device)).shape[1])
        targets = self.params["targets"]
        targets = list(range(k)) if targets is None else [int(t) for t in targets]
        if not targets or any(not 0 <= t < k for t in targets):
            raise InvalidInputError(f"{self.name}: targets must be classes in 0…{k - 1}")
        n = len(targets) if n is None else n
        return torch.tensor([targets[i % len(targets)] for i in range(n)], dtype=torch.int64)

    def generate(
        self,
        model: nn.Module,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        seed: int = 0,
    ) -> AnomalySet:
        """`n` fooling images (default: one per target class), targets cycling over `targets`."""
        n, shape = self.resolve_size(x, n_optional=True)
        target = self._targets(model, shape, n)
        gen = torch.Generator().manual_seed(int(seed))
        with model_guard(model):
            images = self._evolve(model, target, shape, gen)
            probs = predict_logits(model, images, self.batch_size).softmax(1)
        p_target = probs.gather(1, target[:, None]).squeeze(1)
        success = (probs.argmax(1) == target) & (p_target >= self.params["goal"])
        params = {**self.params, "n": len(target), "shape": list(shape)}
        return self.finish(model, images, seed, params, success=success, target=target)

    def _evolve(
        self, model: nn.Module, target: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator
    ) -> torch.Tensor:
        raise NotImplementedError


def _target_prob(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """softmax(f(images))[target] per image, computed on the model's device."""
    device = model_device(model)
    out = []
    with torch.no_grad():
        for s in batch_slices(len(images), batch_size):
            p = model(images[s].to(device)).float().softmax(1)
            out.append(p.gather(1, target[s, None].to(device)).squeeze(1).cpu())
    return torch.cat(out)


@register_generator
class FoolingEA(_Fooling):
    """Evolved fooling images: one genetic algorithm per image (Nguyen et al. 2015, §3).

    Directly encoded images (one gene per pixel in [0, 1]), initialised from N(0, `init_std`²)
    clipped to [0, 1]. Fitness = softmax probability of the target class. Each generation keeps
    the best `promotion` fraction unchanged (elitism); the rest are children of two
    tournament-selected parents (size `tournament`), mixed by uniform crossover with probability
    `crossover`, then each pixel is mutated with probability `mutation` by Deb's polynomial
    mutation of strength `eta`. A population stops once its champion reaches the goal (with
    `stop_at_goal`); the result is each population's champion, success = the model predicts the
    target with probability ≥ `goal` (0.9999, the paper's MNIST goal). All populations evolve
    together as one batch. No library implements this; it is written here.

    Defaults keep the paper's population 50, crossover 0.015, 10 % promotion and N(0, 2.5²)
    start, but not its mutation 0.05 / 200 generations: with those (and sferes' η = 15, tournament
    2) the champions on a 1-epoch LeNet stayed at 0.38–0.998 after 200 generations; with
    mutation 0.01, η = 1, tournament 4 and up to 1,000 generations every tested class reaches
    ≥ 0.9999. Pass ``mutation=0.05, eta=15.0, tournament=2, generations=200`` for the paper's.

    Examples:
        >>> s = make_anomalies("fooling", model, n=10, shape=(1, 28, 28))  # doctest: +SKIP
    """

    name = "fooling"
    description = "Fooling images by evolution (Nguyen et al. 2015), one champion per image"
    defaults: ClassVar[dict[str, Any]] = {
        "n": None,
        "shape": None,
        "targets": None,
        "goal": 0.9999,
        "population": 50,
        "generations": 1000,
        "crossover": 0.015,
        "mutation": 0.01,
        "promotion": 0.1,
        "init_std": 2.5,
        "eta": 1.0,
        "tournament": 4,
        "stop_at_goal": True,
    }
    default_batch_size = 2000

    def _validate(self) -> None:
        super()._validate()
        require_positive(self, "init_std", "eta")
        for k in ("crossover", "mutation", "promotion"):
            v = self.params[k]
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise InvalidInputError(f"{self.name}: {k} must be in [0, 1], got {v!r}")
        require_count(self, "population", "generations", minimum=2)

    def _evolve(
        self, model: nn.Module, target: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator
    ) -> torch.Tensor:
        p = self.params
        k, m, d = len(target), int(p["population"]), math.prod(shape)
        n_elite = max(1, round(p["promotion"] * m))
        n_child = m - n_elite
        pop = (torch.randn(k, m, d, generator=gen) * p["init_std"]).clamp_(0.0, 1.0)
        rows = torch.arange(k)[:, None]

        def fitness(pop: torch.Tensor, size: int) -> torch.Tensor:
            imgs = pop.reshape(k * size, *shape)
            tgt = target.repeat_interleave(size)
            return _target_prob(model, imgs, tgt, self.batch_size).view(k, size)

        fit = fitness(pop, m)
        stop = 1 - (1 - float(p["goal"])) / 2  # a margin, so the champion clears the goal
        for _ in track(range(p["generations"]), f"{self.name} evolution"):
            if self.params["stop_at_goal"] and bool((fit.amax(1) >= stop).all()):
                break
            order = fit.argsort(1, descending=True)
            pop, fit = pop[rows, order], fit[rows, order]
            # tournament selection of two parents per child
            cand = torch.randint(0, m, (k, n_child, 2, int(p["tournament"])), generator=gen)
            wins = cand.amin(-1)  # population is sorted: the lowest index is the fittest
            pa, pb = pop[rows, wins[..., 0]], pop[rows, wins[..., 1]]
            cross = torch.rand(k, n_child, 1, generator=gen) < p["crossover"]
            mix = torch.rand(k, n_child, d, generator=gen) < 0.5
            child = torch.where(cross & mix, pb, pa)
            # polynomial mutation (Deb & Agrawal), per pixel with probability `mutation`
            u = torch.rand(k, n_child, d, generator=gen)
            hit = torch.rand(k, n_child, d, generator=gen) < p["mutation"]
            e = 1.0 / (p["eta"] + 1.0)
            delta = torch.where(u < 0.5, (2 * u) ** e - 1, 1 - (2 * (1 - u)) ** e)
            child = torch.where(hit, child + delta, child).clamp_(0.0, 1.0)
            pop = torch.cat([pop[:, :n_elite], child], 1)
            fit = torch.cat([fit[:, :n_elite], fitness(child, n_child)], 1)
        best = fit.argmax(1)
        return pop[torch.arange(k), best].view(k, *shape)


@register_generator
class FoolingGradient(_Fooling):
    """Fooling images by gradient ascent (the fast variant; cf. Nguyen et al. 2015 §3.3 and
    Simonyan et al. 2014): start from U[0, 1] noise and take signed steps of size `step` on
    log softmax(f(x))_target, clipped to [0, 1], stopping each image once it reaches `goal`
    (at most `steps` steps). Much faster than evolution; the images keep a noise look.

    Examples:
        >>> s = make_anomalies("fooling-gradient", model, n=100, shape=(1, 28, 28))
    """

    name = "fooling-gradient"
    description = "Fooling images by gradient ascent on the target softmax (fast variant)"
    defaults: ClassVar[dict[str, Any]] = {
        "n": None,
        "shape": None,
        "targets": None,
        "goal": 0.9999,
        "step": 0.01,
        "steps": 300,
    }

    def _validate(self) -> None:
        super()._validate()
        require_positive(self, "step")
        require_count(self, "steps")

    def _evolve(
        self, model: nn.Module, target: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator
    ) -> torch.Tensor:
        p = self.params
        device = model_device(model)
        images = torch.rand(len(target), *shape, generator=gen)
        log_goal = math.log(1 - (1 - float(p["goal"])) / 2)  # margin so outputs clear the goal
        for s in track(batch_slices(len(target), self.batch_size), f"{self.name}"):
            x = images[s].to(device)
            t = target[s].to(device)
            active = torch.ones(len(x), dtype=torch.bool, device=device)
            for _ in range(p["steps"]):
                ia = torch.nonzero(active).flatten()
                if len(ia) == 0:
                    break
                xa = x[ia].requires_grad_(True)
                with torch.enable_grad():
                    logp = model(xa).float().log_softmax(1).gather(1, t[ia, None]).squeeze(1)
                    (g,) = torch.autograd.grad(logp.sum(), xa)
                done = logp.detach() >= log_goal
                active[ia[done]] = False
                ia, g = ia[~done], g[~done]
                x[ia] = (x[ia] + p["step"] * g.sign()).clamp_(0.0, 1.0)
            images[s] = x.cpu()
        return images
