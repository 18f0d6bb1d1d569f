"""DAAIN: the secret mask, bilinear gathering, the flow's exact likelihood, heads, key handling."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
import zuko
from torch import nn
from torch.nn import functional as F

from tripwire import metrics
from tripwire.data.base import ImageSet
from tripwire.detectors import create_detector
from tripwire.detectors.daain import (
    DaainDetector,
    checkered_coupling_call_and_ladj,
    monitor_layers,
    read_key,
)
from tripwire.detectors.daain_mask import SubsampleMask, _share_out, key_fingerprint, new_key
from tripwire.detectors.hbos import Hbos
from tripwire.errors import FormatError, InvalidInputError, NotFittedError

SMALL: dict[str, Any] = {"n_points": 64, "hidden": 32, "epochs": 12, "n_blocks": 2}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(h.flatten(1))


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    ii, jj = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    c = torch.tensor([[3.0, 3.0], [3.0, 8.0], [8.0, 5.0]])[y]
    ci = c[:, 0].view(-1, 1, 1) + 0.5 * torch.randn(n, 1, 1, generator=g)
    cj = c[:, 1].view(-1, 1, 1) + 0.5 * torch.randn(n, 1, 1, generator=g)
    x = 0.8 * torch.exp(-((ii - ci) ** 2 + (jj - cj) ** 2) / 4.0)
    return (x + 0.1 * torch.rand(n, 12, 12, generator=g)).clamp(0, 1).unsqueeze(1), y


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    x, y = blobs(600, seed=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    return {
        "model": model,
        "train": ImageSet("blobs", x, y),
        "test": blobs(200, seed=2)[0],
        "shift": torch.rand(150, 1, 12, 12, generator=g),
        "anomalies": (x[:300] + 0.3 * (torch.rand(x[:300].shape, generator=g) - 0.5)).clamp(0, 1),
    }


@pytest.fixture(scope="module")
def fitted(world: dict[str, Any]) -> DaainDetector:
    return DaainDetector(key="test-key-a", **SMALL).fit(world["model"], world["train"])


def auroc(det: DaainDetector, world: dict[str, Any]) -> float:
    m = world["model"]
    return metrics.auroc(det.score(m, world["test"]), det.score(m, world["shift"]))


# ------------------------------------------------------------------------------------- the mask
SHAPES = {"a": (3, 8, 8), "b": (5, 4, 4), "c": (7, 16, 16), "d": (20,)}


def test_gather_equals_bilinear_upsampling_then_indexing() -> None:
    g = torch.Generator().manual_seed(0)
    acts = {k: torch.randn(4, *s, generator=g) for k, s in SHAPES.items()}
    for resolution in (None, (12, 10)):
        mask = SubsampleMask.from_key("k", SHAPES, 120, resolution)
        got = mask.gather({k: v.flatten(1) for k, v in acts.items()})
        parts = []
        for p in mask.layers:
            a = acts[p.layer]
            if a.ndim == 2:
                parts.append(a[:, p.channel])
                continue
            up = F.interpolate(a, mask.resolution, mode="bilinear", align_corners=False)
            parts.append(up[:, p.channel, p.y, p.x])
        torch.testing.assert_close(got, torch.cat(parts, dim=1))
    assert SubsampleMask.from_key("k", SHAPES, 120).resolution == (16, 16)


def test_mask_reproducible_from_its_key_and_different_for_another() -> None:
    a1 = SubsampleMask.from_key("key-one", SHAPES, 200).as_tensors()
    a2 = SubsampleMask.from_key("key-one", SHAPES, 200).as_tensors()
    b = SubsampleMask.from_key("key-two", SHAPES, 200).as_tensors()
    for k in a1:
        assert torch.equal(a1[k], a2[k])
    points = {tuple(int(t[k][i]) for k in t) for t in (a1,) for i in range(200)}
    other = {tuple(int(b[k][i]) for k in b) for i in range(200)}
    assert len(points) == 200  # no point twice
    assert len(points & other) < 100


def test_mask_is_stratified_over_space_layers_and_channels() -> None:
    mask = SubsampleMask.from_key(new_key(), {"a": (6, 28, 28), "b": (16, 10, 10)}, 256)
    for p in mask.layers:
        k = len(p.channel)
        assert k == 128  # equal share per layer
        counts = torch.bincount(p.channel)
        assert int(counts.max() - counts.min()) <= 1  # channels dealt out evenly
        # Every quadrant of the 28×28 grid gets close to a quarter of the points (stratified:
        # far tighter than independent uniform draws).
        quad = (p.y >= 14).long() * 2 + (p.x >= 14).long()
        q = torch.bincount(quad, minlength=4)
        assert int(q.min()) >= k // 4 - 6, q
        assert len(set(zip(p.y.tolist(), p.x.tolist(), strict=True))) == k


def test_share_out_respects_capacity() -> None:
    assert _share_out(100, {"a": 10, "b": 1000, "c": 1000}) == {"a": 10, "b": 45, "c": 45}
    assert _share_out(5000, {"a": 10, "b": 20}) == {"a": 10, "b": 20}


def test_key_helpers() -> None:
    k = new_key()
    assert len(k) == 32 and int(k, 16) >= 0 and new_key() != k
    assert key_fingerprint(k) != key_fingerprint(new_key()) and k not in key_fingerprint(k)


# --------------------------------------------------------------------------------------- HBOS
def test_hbos_matches_its_formula() -> None:
    z = torch.tensor([[0.0], [0.1], [0.2], [0.9], [1.0]])
    h = Hbos.fit(z, bins=2, alpha=0.5)
    # bins [0, .5): 3 values, [.5, 1]: 2; heights (3.5, 2.5)/3.5
    assert torch.allclose(h.score(torch.tensor([[0.3]])), torch.tensor([0.0], dtype=torch.float64))
    expected = torch.log(torch.tensor(3.5 / 2.5, dtype=torch.float64))
    torch.testing.assert_close(h.score(torch.tensor([[0.7]])), expected.view(1))
    s = h.score(torch.tensor([[1.5], [3.0], [-2.0]]))
    assert bool(s[0] > expected) and bool(s[1] > s[0]) and bool(s[2] > s[0])


# ----------------------------------------------------------------------------- the flow itself
def _identity_flow(det: DaainDetector) -> None:
    """Zero the last layer of every coupling's hyper-network: shift 0, log-scale 0."""
    for t in det.flow_.transform.transforms:
        last = t.hyper[-1]
        last.weight.data.zero_()
        last.bias.data.zero_()


def test_log_likelihood_exact_for_a_gaussian(world: dict[str, Any]) -> None:
    det = DaainDetector(key="k", n_points=40, hidden=16, epochs=1).fit(
        world["model"], world["train"]
    )
    _identity_flow(det)
    x = world["test"][:30]
    v = det._vectors(world["model"], x, "test")
    expected = torch.distributions.Normal(det.mu_.double(), det.sigma_.double())
    torch.testing.assert_close(
        det.log_likelihood(world["model"], x),
        expected.log_prob(v.double()).sum(1),
        rtol=1e-6,  # z is computed in float32
        atol=1e-5,
    )
    z, _ = det._latent(v)
    torch.testing.assert_close(z, (v - det.mu_) / det.sigma_)


@pytest.mark.parametrize("kind", ["realnvp", "realnvp-randmask", "maf"])
def test_strided_coupling_path_equals_zukos(kind: str) -> None:
    torch.manual_seed(0)
    make = {
        "realnvp": lambda: zuko.flows.RealNVP(7, transforms=3, hidden_features=(16, 16)),
        "realnvp-randmask": lambda: zuko.flows.RealNVP(7, transforms=3, randmask=True),
        "maf": lambda: zuko.flows.MAF(7, transforms=2),  # not a coupling flow: zuko's own path
    }
    flow = make[kind]()
    for p in flow.parameters():  # away from the identity zuko initialises near
        p.data.add_(0.3 * torch.randn_like(p))
    x = torch.randn(33, 7)
    z, ladj = checkered_coupling_call_and_ladj(flow, x)
    z_ref, ladj_ref = flow().transform.call_and_ladj(x)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(ladj, ladj_ref)
    assert not torch.allclose(z, x)


def test_log_likelihood_obeys_change_of_variables() -> None:
    """log p(v) = log N(f(u)) + log|det J_f(u)| − Σ log σ, J from autograd, trained flow."""
    model = _tiny_dense()
    det = DaainDetector(key="k", n_points=6, hidden=16, epochs=3).fit(
        model, torch.rand(64, 1, 4, 4)
    )
    v = det._vectors(model, torch.rand(3, 1, 4, 4), "t")
    _, nll = det._latent(v)
    flow = copy.deepcopy(det.flow_).double()
    for i in range(3):
        u = ((v[i] - det.mu_) / det.sigma_).double()
        jac = torch.autograd.functional.jacobian(lambda w: flow().transform(w), u)
        z = flow().transform(u)
        log_n = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
        expected = log_n + torch.linalg.slogdet(jac)[1] - torch.log(det.sigma_.double()).sum()
        torch.testing.assert_close(-nll[i], expected, rtol=1e-4, atol=1e-4)


def _tiny_dense() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 2))
    return net.eval()


# ------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("head", ["hbos", "nll", "mahalanobis", "euclidean", "logistic"])
def test_heads_detect_a_shift(head: str, world: dict[str, Any]) -> None:
    det = DaainDetector(key="k", head=head, **SMALL)
    anomalies = world["anomalies"] if head == "logistic" else None
    det.fit(world["model"], world["train"], anomalies=anomalies)
    assert auroc(det, world) > 0.9


def test_logistic_head_needs_anomalies(world: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="anomalies"):
        DaainDetector(head="logistic", **SMALL).fit(world["model"], world["train"])


def test_default_layers_are_activations_and_output(world: dict[str, Any]) -> None:
    assert monitor_layers(world["model"], world["test"][:2]) == ["relu1", "relu2", "fc"]


def test_bad_params_and_layers(world: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="head"):
        DaainDetector(head="svm").fit(world["model"], world["train"])
    with pytest.raises(InvalidInputError, match="cannot monitor"):
        DaainDetector(layers=("nope",)).fit(world["model"], world["train"])


# ---------------------------------------------------------------------------------- the key
def test_two_keys_monitor_different_values_and_both_detect(world: dict[str, Any]) -> None:
    a = DaainDetector(key="key-a", **SMALL).fit(world["model"], world["train"])
    b = DaainDetector(key="key-b", **SMALL).fit(world["model"], world["train"])
    pa, pb = a.mask_.as_tensors(), b.mask_.as_tensors()
    sa = set(zip(*(pa[k].tolist() for k in pa), strict=True))
    sb = set(zip(*(pb[k].tolist() for k in pb), strict=True))
    assert len(sa & sb) < 0.5 * len(sa)
    assert auroc(a, world) > 0.9 and auroc(b, world) > 0.9


def test_no_key_draws_a_random_one_each_fit(world: dict[str, Any]) -> None:
    det = DaainDetector(**{**SMALL, "epochs": 1}).fit(world["model"], world["train"])
    first = det.key_fingerprint_
    det.fit(world["model"], world["train"])
    assert det.key_fingerprint_ != first


def test_key_never_in_params_repr_or_detector_files(
    fitted: DaainDetector, world: dict[str, Any], tmp_path
) -> None:
    assert "key" not in fitted.get_params()
    assert "test-key-a" not in repr(fitted)
    folder = fitted.save(tmp_path / "det")
    assert "test-key-a" not in (folder / "detector.json").read_text()
    assert b"test-key-a" not in next(folder.glob("state-*.safetensors")).read_bytes()
    assert read_key(folder / "key.json") == "test-key-a"
    doc = json.loads((folder / "detector.json").read_text())
    assert doc["state"]["key_fingerprint"] == key_fingerprint("test-key-a")


def test_save_load_with_a_separate_key_file(
    fitted: DaainDetector, world: dict[str, Any], tmp_path
) -> None:
    model, x = world["model"], torch.cat([world["test"][:20], world["shift"][:10]])
    key_file = tmp_path / "secrets" / "daain.key.json"
    fitted.save(tmp_path / "det", key_path=key_file)
    assert not (tmp_path / "det" / "key.json").exists()
    loaded = DaainDetector.load(tmp_path / "det", key_path=key_file)
    torch.testing.assert_close(loaded.score(model, x), fitted.score(model, x))
    # Moved away from its key: loads, but cannot score until the key is given.
    key_file.rename(tmp_path / "elsewhere.json")
    locked = DaainDetector.load(tmp_path / "det")
    with pytest.raises(NotFittedError, match="key"):
        locked.score(model, x)
    locked.load_key(tmp_path / "elsewhere.json")
    torch.testing.assert_close(locked.score(model, x), fitted.score(model, x))
    other = tmp_path / "other.json"
    from tripwire.detectors.daain import write_key

    write_key(other, "not-the-key")
    with pytest.raises(FormatError, match="not the one"):
        locked.load_key(other)
    tampered = json.loads(other.read_text()) | {"key": "changed"}
    other.write_text(json.dumps(tampered))
    with pytest.raises(FormatError, match="modified"):
        read_key(other)


def test_generic_load_finds_the_key_beside_a_moved_folder(
    fitted: DaainDetector, world: dict[str, Any], tmp_path
) -> None:
    from tripwire.detectors.base import Detector

    model, x = world["model"], torch.cat([world["test"][:20], world["shift"][:10]])
    fitted.save(tmp_path / "det")
    (tmp_path / "det").rename(tmp_path / "moved")
    doc = json.loads((tmp_path / "moved" / "detector.json").read_text())
    assert doc["state"]["key_file"] == "key.json"  # relative: no absolute path recorded
    loaded = Detector.load(tmp_path / "moved")  # the base loader runs DAAIN's after-load hook
    torch.testing.assert_close(loaded.score(model, x), fitted.score(model, x))
    # A key file that does not match is refused: the detector loads locked.
    from tripwire.detectors.daain import write_key

    write_key(tmp_path / "moved" / "key.json", "not-the-key")
    with pytest.raises(NotFittedError, match="key"):
        Detector.load(tmp_path / "moved").score(model, x)


@pytest.mark.slow
def test_rotate_key_draws_a_new_mask_and_still_detects(world: dict[str, Any]) -> None:
    det = create_detector("daain", key="first", **SMALL)
    assert isinstance(det, DaainDetector)
    det.fit(world["model"], world["train"])
    before = det.mask_.as_tensors()
    det.rotate_key(world["model"], world["train"])
    assert det.key_fingerprint_ != key_fingerprint("first")
    assert not torch.equal(before["channel"], det.mask_.as_tensors()["channel"]) or not (
        torch.equal(before["y"], det.mask_.as_tensors()["y"])
    )
    assert auroc(det, world) > 0.9


def test_point_scores_sum_to_hbos_score(fitted: DaainDetector, world: dict[str, Any]) -> None:
    x = world["shift"][:8]
    terms = fitted.point_scores(world["model"], x)
    assert terms.shape == (8, fitted.mask_.n_points)
    torch.testing.assert_close(terms.sum(1), fitted.score(world["model"], x))
