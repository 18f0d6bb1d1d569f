"""The reference architectures, weights I/O, the zoo's storage and user models (fast tests)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.errors import FormatError, InvalidInputError, ModelMismatchError
from tripwire.models import (
    EntryPointError,
    LeNet5,
    ModelNotTrainedError,
    Normalize,
    ResNetCifar,
    SmallCNN,
    UnknownModelError,
    VGG16Cifar,
    get_recipe,
    list_models,
    load_model,
    load_user_model,
    load_weights,
    model_dir,
    model_info,
    read_card,
    save_weights,
    train_classifier,
    train_model,
    training_split,
    weights_digest,
)
from tripwire.models.training import bf16_supported, random_flip, random_shift

ARCHITECTURES = [
    pytest.param(
        lambda: LeNet5(), (1, 28, 28), ["conv1", "relu1", "conv2", "fc1", "fc3"], id="lenet"
    ),
    pytest.param(
        lambda: SmallCNN(), (1, 8, 8), ["conv1", "relu1", "conv2", "fc1", "fc2"], id="cnn8"
    ),
    pytest.param(
        lambda: ResNetCifar(depth=20),
        (3, 32, 32),
        ["conv1", "relu1", "layer1.0.conv1", "layer2.2.relu2", "layer3.2.conv2", "fc"],
        id="resnet20",
    ),
    pytest.param(
        lambda: VGG16Cifar(),
        (3, 32, 32),
        ["conv1_1", "relu1_1", "pool1", "conv5_3", "relu5_3", "fc1", "fc2"],
        id="vgg16",
        marks=pytest.mark.slow,
    ),
]


def _seeded(build, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


@pytest.mark.parametrize(("build", "shape", "layers"), ARCHITECTURES)
def test_architecture_forward_layers_and_learning(build, shape, layers) -> None:
    model = _seeded(build)
    names = dict(model.named_modules())
    for layer in layers:
        assert layer in names, f"{layer} not among {list(names)[:20]}"
    assert isinstance(next(model.children()), Normalize), "normalisation must be the first layer"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, *shape, generator=g)
    y = torch.arange(8) % 2
    x[y == 1] = x[y == 1] * 0.3  # a learnable difference between the two classes
    assert model(x).shape == (8, 10)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(4):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_resnet_depth_counts_weight_layers_and_rejects_bad_depth() -> None:
    for depth in (20, 44):
        model = ResNetCifar(depth=depth)
        weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert len(weighted) == depth
    assert sum(p.numel() for p in ResNetCifar(depth=44).parameters()) == pytest.approx(0.66e6, 0.01)
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCifar(depth=21)


def test_vgg16_has_thirteen_conv_layers_and_lenet_the_papers_widths() -> None:
    vgg = VGG16Cifar()
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 13
    lenet = LeNet5()
    assert (lenet.conv1.out_channels, lenet.conv2.out_channels) == (6, 16)
    assert (lenet.fc1.in_features, lenet.fc2.in_features, lenet.fc3.in_features) == (400, 120, 84)


def test_normalize_standardises_per_channel() -> None:
    norm = Normalize([0.5, 0.25], [0.5, 0.25])
    x = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    out = norm(x)
    assert torch.allclose(out[0, 0], torch.zeros(2, 2))
    assert torch.allclose(out[0, 1], torch.ones(2, 2))
    with pytest.raises(ValueError):
        Normalize([0.5], [0.0])


def test_random_shift_moves_content_within_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 12, 12)
    x[:, :, 5:7, 5:7] = 1.0  # a blob away from the border: shifting keeps all of it
    out = random_shift(x, 2, g)
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    rows = out.sum(dim=(1, 3)).squeeze(1).argmax(1)
    assert set(rows.tolist()) <= set(range(3, 8)) and len(set(rows.tolist())) > 1
    assert torch.equal(random_shift(x, 0, g), x)


def test_random_flip_mirrors_about_half_of_the_images() -> None:
    x = torch.rand(400, 3, 4, 5)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 150 < int(mirrored.sum()) < 250
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(0)))


def _tiny_sets(shape=(1, 8, 8), n: int = 64) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 10
    x = torch.rand(n, *shape, generator=g) * 0.2
    for c in range(10):
        x[y == c, :, c % shape[1], :] += 0.7  # class c lights up row c
    x = x.clamp(0, 1)
    return ImageSet("tiny-train", x, y), ImageSet("tiny-test", x[:40].clone(), y[:40].clone())


def test_train_classifier_is_seeded_and_leaves_global_rng_alone() -> None:
    train, test = _tiny_sets()
    digests, accs = [], []
    for _ in range(2):
        model = _seeded(lambda: SmallCNN(dropout=0.2))
        state = torch.random.get_rng_state()
        result = train_classifier(
            model, train, test, epochs=2, batch_size=16, lr=3e-3, seed=5, progress=False
        )
        assert torch.equal(state, torch.random.get_rng_state())
        digests.append(weights_digest(model))
        accs.append(result.test_accuracy)
        assert not model.training
        assert [h["epoch"] for h in result.history] == [1, 2]
    assert digests[0] == digests[1] and accs[0] == accs[1]
    other = _seeded(lambda: SmallCNN(dropout=0.2))
    train_classifier(other, train, test, epochs=2, batch_size=16, lr=3e-3, seed=6, progress=False)
    assert weights_digest(other) != digests[0]


def test_sgd_training_learns_and_unknown_optimizer_is_refused() -> None:
    train, test = _tiny_sets()
    model = _seeded(lambda: SmallCNN())
    result = train_classifier(
        model,
        train,
        test,
        epochs=3,
        batch_size=16,
        lr=0.05,
        seed=0,
        optimizer="sgd",
        progress=False,
    )
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with pytest.raises(ValueError, match="optimizer"):
        train_classifier(
            model, train, test, epochs=1, batch_size=16, lr=0.1, seed=0, optimizer="rmsprop"
        )


def test_mixed_precision_training_learns_and_is_part_of_the_run(tmp_path: Path) -> None:
    train, test = _tiny_sets()
    kwargs = {"epochs": 3, "batch_size": 16, "lr": 0.05, "seed": 0, "optimizer": "sgd"}
    model = _seeded(lambda: SmallCNN())
    ckpt = tmp_path / "ckpt"
    result = train_classifier(
        model, train, test, mixed_precision=True, checkpoint=ckpt, progress=False, **kwargs
    )
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ModelMismatchError, match="another training run"):  # float32 is another run
        train_classifier(SmallCNN(), train, test, checkpoint=ckpt, progress=False, **kwargs)
    assert isinstance(bf16_supported(torch.device("cpu")), bool)


def test_training_resumes_from_a_checkpoint_to_the_same_weights(tmp_path: Path) -> None:
    train, test = _tiny_sets()
    kwargs = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "seed": 2, "progress": False}
    straight = _seeded(lambda: SmallCNN(dropout=0.2))
    full = train_classifier(straight, train, test, **kwargs)
    ckpt = tmp_path / "ckpt"
    first = _seeded(lambda: SmallCNN(dropout=0.2))
    part = train_classifier(first, train, test, checkpoint=ckpt, stop_after_epochs=1, **kwargs)
    assert not part.finished and len(part.history) == 1
    assert (ckpt / "state.json").is_file()
    second = _seeded(lambda: SmallCNN(dropout=0.2), seed=99)  # other init: the checkpoint wins
    rest = train_classifier(second, train, test, checkpoint=ckpt, **kwargs)
    assert rest.finished and [h["epoch"] for h in rest.history] == [1, 2, 3]
    assert weights_digest(second) == weights_digest(straight)
    assert rest.test_accuracy == full.test_accuracy
    with pytest.raises(ModelMismatchError, match="another training run"):
        train_classifier(SmallCNN(), train, test, checkpoint=ckpt, **{**kwargs, "lr": 1e-3})


# weights_digest (models/digest.py, not this module's) cannot digest 0-dim buffers such as
# BatchNorm's num_batches_tracked: `t.view(torch.uint8)` needs `t.reshape(-1).view(...)`.


def test_save_load_weights_round_trip_and_half_precision(tmp_path: Path) -> None:
    model = _seeded(lambda: ResNetCifar(depth=20)).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    full = tmp_path / "full.safetensors"
    digest = save_weights(model, full)
    loaded = load_weights(ResNetCifar(depth=20), full).eval()
    assert weights_digest(loaded) == digest
    assert torch.equal(loaded(x), model(x))
    half = tmp_path / "half.safetensors"
    digest_half = save_weights(model, half, half=True)  # rounds `model` itself
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded_half = load_weights(ResNetCifar(depth=20), half).eval()
    assert weights_digest(loaded_half) == digest_half == weights_digest(model)
    assert torch.equal(loaded_half(x), model(x))


def test_load_weights_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        load_weights(LeNet5(), tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"{ this is neither safetensors nor a pickle")
    with pytest.raises(FormatError, match="not a valid safetensors"):
        load_weights(LeNet5(), junk)
    other = tmp_path / "cnn.safetensors"
    save_weights(SmallCNN(), other)
    with pytest.raises(FormatError, match="do not fit"):
        load_weights(LeNet5(), other)
    wide = tmp_path / "wide.safetensors"
    save_weights(LeNet5(num_classes=12), wide)
    with pytest.raises(FormatError, match="shape"):
        load_weights(LeNet5(), wide)


@pytest.mark.parametrize("zipped", [True, False])
def test_a_torch_save_file_is_refused_unread_with_the_conversion(
    tmp_path: Path, zipped: bool
) -> None:
    path = tmp_path / "state.pt"
    torch.save(LeNet5().state_dict(), path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(FormatError, match=r"torch.save.*st.save_file\(torch.load\("):
        load_weights(LeNet5(), path)


def test_buffers_the_weights_file_lacks_keep_the_models_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A normalising wrapper's constants are the model's; the net's weights are the file's."""
    from tripwire.models import Normalize

    net = LeNet5()
    path = tmp_path / "net.safetensors"
    wrapped = nn.Sequential(Normalize((0.5,), (0.25,)), LeNet5())
    renamed = {f"1.{k}": v for k, v in net.state_dict().items()}
    save_file(renamed, str(path))
    with caplog.at_level("WARNING"):
        load_weights(wrapped, path)
    assert "keeping the values the model was built with" in caplog.text
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(wrapped(x), net((x - 0.5) / 0.25))


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-digits8 trained for one epoch into a fresh cache."""
    cache = tmp_path_factory.mktemp("zoo")
    train_model("cnn-digits8", epochs=1, cache_dir=cache, progress=False)
    return cache


def test_zoo_lists_its_recipes() -> None:
    assert {"lenet-mnist", "cnn-digits8", "resnet-cifar10", "vgg16-cifar10"} <= set(list_models())
    for name in list_models():
        recipe = get_recipe(name)
        model = _seeded(recipe.build)
        info = model_info(model, recipe.input_shape)
        assert info.num_classes == recipe.num_classes
    with pytest.raises(UnknownModelError, match="known zoo models: cnn-digits8"):
        get_recipe("lenet-cifar")


def test_training_split_keeps_calibration_images_out_of_training() -> None:
    fit_part, calibration = training_split("cnn-digits8")
    assert calibration is not None and (len(fit_part), len(calibration)) == (1078, 269)
    seen = {tuple(row) for row in fit_part.as_float().flatten(1).tolist()}
    assert not any(tuple(row) in seen for row in calibration.as_float().flatten(1).tolist())
    again, _ = training_split("cnn-digits8")
    assert torch.equal(again.as_float(), fit_part.as_float())  # a fixed split
    assert get_recipe("lenet-mnist").calibration_holdout == 0  # its training set is unchanged


def test_zoo_stores_a_card_and_reloads_identical_logits(digits_cache: Path) -> None:
    card = read_card("cnn-digits8", 0, digits_cache)
    assert card is not None
    for key in ("test_accuracy", "seed", "recipe", "train_data", "weights_digest", "versions"):
        assert key in card
    # 269 of the 1,347 training digits are kept out of training for calibration
    assert card["recipe"]["epochs"] == 1 and card["train_data"]["n"] == 1347 - 269
    assert card["recipe"]["calibration_holdout"] == 0.2
    assert len(card["train_data"]["sha256"]) == 64 and "torch" in card["versions"]
    a = load_model("cnn-digits8", cache_dir=digits_cache, train_if_missing=False)
    b = load_model("cnn-digits8", cache_dir=digits_cache, train_if_missing=False)
    assert not a.training
    assert weights_digest(a) == card["weights_digest"]
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(x), b(x))


def test_zoo_training_is_reproducible(digits_cache: Path, tmp_path: Path) -> None:
    train_model("cnn-digits8", epochs=1, cache_dir=tmp_path, progress=False)
    first = read_card("cnn-digits8", 0, digits_cache)
    again = read_card("cnn-digits8", 0, tmp_path)
    assert first["weights_digest"] == again["weights_digest"]
    assert first["train_data"]["sha256"] == again["train_data"]["sha256"]


def _copy_model(src_cache: Path, dst_cache: Path) -> Path:
    src, dst = model_dir("cnn-digits8", 0, src_cache), model_dir("cnn-digits8", 0, dst_cache)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_zoo_detects_tampered_weights(digits_cache: Path, tmp_path: Path) -> None:
    folder = _copy_model(digits_cache, tmp_path)
    path = folder / "weights.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x40  # flip one bit inside the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelMismatchError, match="digest"):
        load_model("cnn-digits8", cache_dir=tmp_path, train_if_missing=False)
    path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated
    with pytest.raises(FormatError):
        load_model("cnn-digits8", cache_dir=tmp_path, train_if_missing=False)


def test_zoo_detects_corrupt_card_and_missing_model(digits_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotTrainedError, match="tripwire train cnn-digits8"):
        load_model("cnn-digits8", cache_dir=tmp_path, train_if_missing=False)
    folder = _copy_model(digits_cache, tmp_path)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(FormatError, match="card"):
        load_model("cnn-digits8", cache_dir=tmp_path, train_if_missing=False)
    (folder / "card.json").write_text(json.dumps({"name": "cnn-digits8"}))
    with pytest.raises(FormatError, match="needs"):
        load_model("cnn-digits8", cache_dir=tmp_path, train_if_missing=False)


USER_MODULE = """
from torch import nn

from tripwire.models import Normalize


def make_net(num_classes=10):
    return nn.Sequential(
        Normalize([0.5], [0.5]), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, num_classes),
    )


def not_a_model():
    return 42


def needs_args(depth):
    return nn.Linear(depth, 2)
"""


def test_training_a_zoo_model_implicitly_is_announced_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`load_model` trains a missing zoo model — never silently: a warning comes first."""
    from tripwire.models import zoo

    def no_training(*args: object, **kwargs: object) -> None:
        raise RuntimeError("training started")

    monkeypatch.setattr(zoo, "train_model", no_training)
    with (
        caplog.at_level("WARNING", logger="tripwire.models.zoo"),
        pytest.raises(RuntimeError, match="training started"),
    ):
        zoo.load_model("cnn-digits8", cache_dir=tmp_path)
    assert "training it now on digits8" in caplog.text
    assert "tripwire train cnn-digits8" in caplog.text


def test_user_model_from_entry_point(tmp_path: Path) -> None:
    (tmp_path / "tw_user_nets.py").write_text(textwrap.dedent(USER_MODULE))
    built = load_user_model("tw_user_nets:make_net", search_path=tmp_path)
    weights = tmp_path / "net.safetensors"
    save_weights(built, weights)
    model = load_user_model("tw_user_nets:make_net", weights, search_path=tmp_path)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), built(x))
    assert not model.training
    assert model_info(model, (1, 8, 8)).num_classes == 10
    with pytest.raises(FormatError, match="shape"):
        load_user_model("tw_user_nets:make_net", weights, num_classes=3, search_path=tmp_path)
    with pytest.raises(InvalidInputError, match="does not accept"):
        model_info(model, (1, 28, 28))


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("tw_user_nets.make_net", "must look like"),
        ("tw_no_such_module:make_net", "cannot import"),
        ("tw_user_nets:missing", "no attribute"),
        ("tw_user_nets:not_a_model", "not a torch.nn.Module"),
        ("tw_user_nets:needs_args", "depth"),
    ],
)
def test_user_model_errors_are_clear(tmp_path: Path, entry_point: str, message: str) -> None:
    (tmp_path / "tw_user_nets.py").write_text(textwrap.dedent(USER_MODULE))
    with pytest.raises(EntryPointError, match=message):
        load_user_model(entry_point, search_path=tmp_path)
