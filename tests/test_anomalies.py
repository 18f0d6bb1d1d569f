"""Anomaly generators on tiny synthetic models: the protocol, bounds, seeds, model hygiene, cache,
save/load, registry and CLI. Success floors on the real LeNet are in test_anomalies_lenet.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tripwire.anomalies import AnomalySet, get_generator, list_generators, make_anomalies
from tripwire.errors import FormatError, InvalidInputError

ATTACKS = ["fgsm", "bim-a", "bim-b", "pgd-linf", "pgd-l2", "cw-l2", "jsma", "deepfool", "one-pixel"]
# cheap settings so the contract suite stays fast; the defaults are exercised on the LeNet
FAST = {
    "bim-a": {"steps": 10, "step": 0.05},
    "bim-b": {"steps": 10, "step": 0.05},
    "pgd-linf": {"steps": 10, "step": 0.05},
    "pgd-l2": {"steps": 10, "step": 0.5, "eps": 2.0},
    "cw-l2": {"steps": 15, "binary_steps": 2, "lr": 0.2},
    "deepfool": {"steps": 10},
    "one-pixel": {"population": 20, "iterations": 5},
}
SHAPE = (1, 8, 8)


def tiny_model(num_classes: int, seed: int = 0) -> nn.Module:
    """A small conv net with BatchNorm and Dropout (so a mode mix-up would show)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, num_classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        model[1].running_mean.copy_(torch.randn(4, generator=g) * 0.1)
    # a 0-d buffer trips weights_digest (reported); BatchNorm works without this counter
    model[1].num_batches_tracked = None
    return model.eval()


def data(
    num_classes: int, n: int = 24, seed: int = 1
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny model, inputs in [0, 1], and labels = the model's predictions on most inputs."""
    model = tiny_model(num_classes)
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % num_classes  # three inputs misclassified: must be filtered out
    return model, x, y


@pytest.mark.parametrize("num_classes", [3, 100])
@pytest.mark.parametrize("kind", ATTACKS)
def test_attack_contract(kind: str, num_classes: int) -> None:
    model, x, y = data(num_classes)
    s = get_generator(kind, **FAST.get(kind, {})).generate(model, x, y, seed=0)
    assert isinstance(s, AnomalySet) and s.kind == kind
    n = len(s)
    assert n == len(x) - 3  # the misclassified ones are not attacked
    assert s.images.shape == (n, *SHAPE) and s.images.dtype == torch.float32
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
    assert set(s.source_index.tolist()) == set(range(3, len(x)))
    assert torch.equal(s.labels, y[s.source_index])
    with torch.no_grad():
        pred = model(s.images).argmax(1)
    assert torch.equal(pred, s.predicted)
    if kind == "jsma":
        assert ((s.target >= 0) & (s.target < num_classes) & (s.target != s.labels)).all()
        assert torch.equal(s.success, s.predicted != s.labels)
        rate = float((s.predicted == s.target).float().mean())
        assert s.summary()["target_rate"] == pytest.approx(rate)
        assert (s.norms["l0"] <= np.floor(0.1 * 64 / 2) * 2).all()  # γ = 0.1 of 64 inputs
    else:
        assert torch.equal(s.success, s.predicted != s.labels)
    assert set(s.norms) == {"linf", "l2", "l0"}
    delta = (s.images - x[s.source_index]).flatten(1)
    assert torch.allclose(s.norms["l2"], delta.norm(dim=1), atol=1e-5)
    eps = s.params.get("eps")
    if kind in ("fgsm", "bim-a", "bim-b", "pgd-linf"):
        assert float(s.norms["linf"].max()) <= eps + 1e-6
    if kind == "pgd-l2":
        assert float(s.norms["l2"].max()) <= eps + 1e-5
    if kind == "one-pixel":
        assert (s.norms["l0"] <= s.params["pixels"]).all()  # one channel: l0 counts pixels
    # these attacks should flip almost everything on an untrained model
    if kind in ("bim-b", "pgd-linf", "cw-l2", "deepfool"):
        assert s.success.float().mean() >= 0.9, s.summary()


@pytest.mark.parametrize("kind", [*ATTACKS, "gaussian", "uniform", "fooling-gradient"])
def test_same_seed_same_output_and_model_untouched(kind: str) -> None:
    model, x, y = data(10)
    model.train()  # generation must switch to eval and restore this afterwards
    for p in model[-1].parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(FAST.get(kind, {}))
    if kind == "fooling-gradient":
        params.update(steps=20, targets=[1, 2])
    a = get_generator(kind, **params).generate(model, x, y, seed=3)
    b = get_generator(kind, **params).generate(model, x, y, seed=3)
    assert torch.equal(a.images, b.images), "same seed → same output"
    # another batch size: equal up to float noise in the convolutions (randomness is drawn
    # for all inputs up front, so it does not depend on the batching)
    c = get_generator(kind, batch_size=7, **params).generate(model, x, y, seed=3)
    assert float(((a.images - c.images).abs() > 1e-4).float().mean()) < 0.01
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"


@pytest.mark.parametrize("kind", ["pgd-linf", "jsma", "gaussian"])
def test_other_seed_other_output(kind: str) -> None:
    model, x, y = data(10)
    a = get_generator(kind, **FAST.get(kind, {})).generate(model, x, y, seed=0)
    b = get_generator(kind, **FAST.get(kind, {})).generate(model, x, y, seed=1)
    assert not torch.equal(a.images, b.images) or not torch.equal(a.target, b.target)


def test_fgsm_matches_formula() -> None:
    model, x, y = data(10)
    s = get_generator("fgsm", eps=0.1).generate(model, x, y)
    xs = x[s.source_index].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xs), y[s.source_index], reduction="sum")
    (g,) = torch.autograd.grad(loss, xs)
    assert torch.allclose(s.images, (xs + 0.1 * g.sign()).clamp(0, 1).detach())


def test_bim_a_stops_at_boundary_bim_b_goes_past() -> None:
    model, x, y = data(10)
    a = get_generator("bim-a", step=0.01, steps=50).generate(model, x, y)
    b = get_generator("bim-b", step=0.01, steps=50).generate(model, x, y)
    assert a.success.all() and b.success.all()
    # BIM-a keeps the smallest perturbation that flips; BIM-b keeps pushing
    assert (a.norms["linf"] <= b.norms["linf"] + 1e-6).all()
    assert a.norms["l2"].mean() < b.norms["l2"].mean()
    assert a.confidence.mean() < b.confidence.mean()


def test_noise_sets() -> None:
    model = tiny_model(10)
    g = make_anomalies("gaussian", model, n=400, shape=SHAPE, use_cache=False, seed=0)
    assert g.images.shape == (400, *SHAPE) and g.success.all()
    assert (g.source_index == -1).all() and (g.labels == -1).all() and g.norms == {}
    v = g.images.flatten()
    # N(0.5, 1) clipped: P(0) = P(1) = Φ(−0.5) ≈ 0.3085
    assert abs(float((v == 0).float().mean()) - 0.3085) < 0.02
    assert abs(float((v == 1).float().mean()) - 0.3085) < 0.02
    u = make_anomalies("uniform", model, n=400, shape=SHAPE, use_cache=False)
    assert float(u.images.min()) >= 0 and float(u.images.max()) <= 1
    assert abs(float(u.images.mean()) - 0.5) < 0.01
    assert g.params["n"] == 400 and g.params["shape"] == list(SHAPE)
    # count and shape can come from x instead
    x = torch.rand(5, *SHAPE)
    assert make_anomalies("uniform", model, x, use_cache=False).images.shape == (5, *SHAPE)
    with pytest.raises(InvalidInputError, match="n and shape"):
        make_anomalies("uniform", model, use_cache=False)


def test_fooling_targets_and_success_rule_on_tiny_model() -> None:
    model = tiny_model(3)
    s = make_anomalies("fooling-gradient", model, shape=SHAPE, use_cache=False, goal=0.6)
    assert torch.equal(s.target, torch.tensor([0, 1, 2]))  # default: one image per class
    probs = model(s.images).softmax(1).detach()
    p_t = probs.gather(1, s.target[:, None]).squeeze(1)
    assert torch.equal(s.success, (p_t >= 0.6) & (probs.argmax(1) == s.target))
    assert s.success.all()
    e = make_anomalies(
        "fooling",
        model,
        shape=SHAPE,
        targets=[0, 2],
        n=4,
        use_cache=False,
        goal=0.6,
        generations=30,
    )
    assert e.target.tolist() == [0, 2, 0, 2] and e.images.shape == (4, *SHAPE)
    assert float(e.images.min()) >= 0 and float(e.images.max()) <= 1
    assert e.success.all() and torch.equal(e.predicted, e.target)
    with pytest.raises(InvalidInputError, match="targets"):
        make_anomalies("fooling", model, shape=SHAPE, targets=[5], use_cache=False)


def test_save_load_round_trip(tmp_path) -> None:
    model, x, y = data(10)
    s = get_generator("jsma").generate(model, x, y, seed=5)
    path = s.save(tmp_path / "j.npz")
    t = AnomalySet.load(path)
    for name in (
        "images",
        "success",
        "source_index",
        "labels",
        "predicted",
        "confidence",
        "target",
    ):
        assert torch.equal(getattr(s, name), getattr(t, name)), name
    assert all(torch.equal(s.norms[k], t.norms[k]) for k in s.norms)
    assert (t.kind, t.params, t.seed, t.model_digest) == (s.kind, s.params, s.seed, s.model_digest)
    assert t.summary() == s.summary()
    ok = t.successful()
    assert len(ok) == int(s.success.sum()) and ok.success.all()
    # not ours → FormatError, never a pickle load
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(FormatError):
        AnomalySet.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError):
        AnomalySet.load(tmp_path / "junk.npz")


def test_cache_hit_returns_identical_without_regenerating(tmp_path, monkeypatch) -> None:
    model, x, y = data(10)
    a = make_anomalies("pgd-linf", model, x, y, seed=2, cache_dir=tmp_path, steps=5)
    files = list((tmp_path / "anomalies").glob("*.npz"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("regenerated despite the cache")

    from tripwire.anomalies.pgd import PGDLinf

    monkeypatch.setattr(PGDLinf, "generate", boom)
    b = make_anomalies("pgd-linf", model, x, y, seed=2, cache_dir=tmp_path, steps=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.success, b.success)
    # other seed, params, inputs or weights → a miss (which would regenerate)
    for kwargs in ({"seed": 3}, {"steps": 6}):
        with pytest.raises(AssertionError, match="regenerated"):
            make_anomalies(
                "pgd-linf", model, x, y, cache_dir=tmp_path, **{"seed": 2, "steps": 5, **kwargs}
            )
    with pytest.raises(AssertionError, match="regenerated"):
        make_anomalies("pgd-linf", model, x[1:], y[1:], seed=2, cache_dir=tmp_path, steps=5)
    with torch.no_grad():
        model[-1].bias.add_(0.01)
    with pytest.raises(AssertionError, match="regenerated"):
        make_anomalies("pgd-linf", model, x, y, seed=2, cache_dir=tmp_path, steps=5)


def test_registry_and_bad_input() -> None:
    names = {g.name for g in list_generators()}
    assert set(ATTACKS) | {"gaussian", "uniform", "fooling", "fooling-gradient"} <= names
    for g in list_generators():
        assert g.description and isinstance(g.defaults, dict)
    assert get_generator("fgsm").params == {"eps": 0.3}
    with pytest.raises(InvalidInputError, match="unknown anomaly kind"):
        get_generator("nope")
    with pytest.raises(InvalidInputError, match="unknown parameter"):
        get_generator("fgsm", epsilon=0.3)
    with pytest.raises(InvalidInputError, match="eps"):
        get_generator("fgsm", eps=-1)
    model, x, y = data(10)
    fgsm = get_generator("fgsm")
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        fgsm.generate(model, x * 2, y)
    with pytest.raises(InvalidInputError, match="N×C×H×W"):
        fgsm.generate(model, x[0], y)
    with pytest.raises(InvalidInputError, match="labels"):
        fgsm.generate(model, x, y[:-1])
    with pytest.raises(InvalidInputError, match="labels"):
        fgsm.generate(model, x, None)


def test_cli_list_and_make(tmp_path, monkeypatch, data_dir, lenet_mnist) -> None:
    from tripwire.cli import app
    from tripwire.cli.anomalies import parse_params

    assert parse_params(["eps=0.1", "targets=[1, 2]", "name=abc"]) == {
        "eps": 0.1,
        "targets": [1, 2],
        "name": "abc",
    }
    with pytest.raises(InvalidInputError):
        parse_params(["eps"])
    runner = CliRunner()
    out = runner.invoke(app, ["anomalies", "list"])
    assert out.exit_code == 0 and "bim-a" in out.output and "jsma" in out.output

    import tripwire.models.zoo as zoo

    monkeypatch.setattr(zoo, "load_model", lambda *a, **k: lenet_mnist)
    if not (data_dir / "mnist").is_dir():
        pytest.skip("MNIST not available")
    path = tmp_path / "f.npz"
    args = ["anomalies", "make", "--model", "lenet-mnist", "--kind", "fgsm", "--n", "20"]
    args += ["--out", str(path), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path)]
    out = runner.invoke(app, [*args, "--param", "eps=0.2"])
    assert out.exit_code == 0, out.output
    assert "success" in out.output and "linf" in out.output
    s = AnomalySet.load(path)
    assert s.params == {"eps": 0.2} and len(s) <= 20
    noise = tmp_path / "g.npz"
    args = ["anomalies", "make", "--model", "lenet-mnist", "--kind", "gaussian", "--n", "7"]
    out = runner.invoke(app, [*args, "--out", str(noise), "--cache-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert AnomalySet.load(noise).images.shape == (7, 1, 28, 28)


def test_attack_on_inputs_none_classified_correctly_says_so() -> None:
    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([1.0, 0.0]).expand(len(x), 2) + 0 * x.flatten(1)[:, :2]

    x = torch.rand(5, 1, 4, 4)
    with pytest.raises(InvalidInputError, match="none of the 5 inputs"):
        get_generator("fgsm").generate(Constant(), x, torch.ones(5, dtype=torch.int64))
