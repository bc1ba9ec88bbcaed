import pytest
import torch
from torch import nn

from paperlib import classifiers
from paperlib.classifiers import (
    CLASSIFIER_ARCHS,
    IMAGE_SIZES,
    RECOMMENDED_EPOCHS,
    ClassifierConfig,
    accuracy,
    ensemble_accuracy,
    load_or_train_classifier,
    make_classifier,
    predict,
    random_crop_flip,
    train_classifier,
)
from paperlib.data import DATASETS, fingerprint

TINY = {"epochs": 1, "batch_size": 16}


def colour_problem(n: int, size: int, seed: int, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose mean colour encodes the class (distinct colours of a 3x3x3 grid) under per-pixel noise."""
    levels = torch.tensor([0.2, 0.5, 0.8])
    grid = torch.cartesian_prod(levels, levels, levels)  # [27, 3]
    palette = grid[torch.randperm(27, generator=torch.Generator().manual_seed(1234))[:num_classes]]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    x = palette[labels][:, :, None, None] + 0.1 * torch.randn(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("arch", CLASSIFIER_ARCHS)
def test_every_arch_builds_and_predicts(arch, size):
    model = make_classifier(arch, 10, size)
    assert model.arch == arch and model.image_size == size
    assert model(torch.rand(4, 3, size, size)).shape == (4, 10)
    logits = predict(model, random_images(5, size), batch_size=2)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert model.training  # predict restores the mode
    with pytest.raises(ValueError, match="x must be"):
        model(torch.rand(2, 3, size + 8, size + 8))


def test_recommended_epochs_cover_every_dataset_and_arch():
    assert set(RECOMMENDED_EPOCHS) == set(DATASETS)
    assert all(set(per_arch) == set(CLASSIFIER_ARCHS) for per_arch in RECOMMENDED_EPOCHS.values())


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch must be one of"):
        make_classifier("swin", 10, 32)
    with pytest.raises(ValueError, match="image_size must be one of"):
        make_classifier("vit", 10, 64)
    with pytest.raises(ValueError, match="num_classes"):
        make_classifier("resnet", 1, 32)
    with pytest.raises(ValueError, match="arch must be one of"):
        ClassifierConfig(arch="swin")
    with pytest.raises(ValueError, match="epochs"):
        ClassifierConfig(epochs=0)
    x, y = colour_problem(8, 16, 0)
    with pytest.raises(ValueError, match="labels must be in"):
        train_classifier(ClassifierConfig(**TINY), x, y + 10, 10, progress=False)
    with pytest.raises(ValueError, match="images must be a torch.uint8"):
        predict(make_classifier("resnet", 10, 16), x.float())
    with pytest.raises(ValueError, match="image_size must be one of"):
        train_classifier(ClassifierConfig(**TINY), random_images(8, 24), y, 10, progress=False)


def test_crop_flip_is_seeded_and_keeps_pixels():
    x = random_images(6, 16)
    a = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    b = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.uint8
    assert not torch.equal(a, x)
    assert torch.equal(random_crop_flip(x, torch.Generator(), padding=0, hflip=False), x)
    flipped = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, hflip=True)
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, x))


@pytest.mark.parametrize("arch", CLASSIFIER_ARCHS)
def test_same_seed_same_weights(arch):
    x, y = colour_problem(32, 16, 0)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        model, _ = train_classifier(ClassifierConfig(arch=arch, seed=seed, **TINY), x, y, 10, progress=False)
        return model.state_dict()

    w0, w0_again, w1 = weights(0), weights(0), weights(1)
    assert all(torch.equal(w0[k], w0_again[k]) for k in w0)
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.parametrize("arch", CLASSIFIER_ARCHS)
def test_learns_a_separable_problem(arch):
    x, y = colour_problem(256, 16, 0)
    cfg = ClassifierConfig(arch=arch, epochs=3, batch_size=32, lr=3e-3)  # 24 steps; chance is 0.1
    model, history = train_classifier(cfg, x, y, 10, progress=False)
    assert len(history["train_acc"]) == 3 and history["train_loss"][-1] < history["train_loss"][0]
    assert history["train_acc"][-1] > 0.9
    x_test, y_test = colour_problem(200, 16, 1)
    assert accuracy(predict(model, x_test), y_test) > 0.95
    assert not model.training and not any(p.requires_grad for p in model.parameters())


class FixedLogits(nn.Module):
    """Returns the row ``i`` of a fixed table for the image whose first pixel is ``i``."""

    def __init__(self, logits: list[list[float]]):
        super().__init__()
        self.register_buffer("table", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * 255).round().long()]


def test_ensemble_accuracy_by_hand():
    labels = torch.tensor([0, 1, 2, 0])
    a = FixedLogits([[2, 0, 0], [0, 2, 0], [0, 0, 2], [0, 1, 0]])  # right, right, right, wrong -> 3/4
    b = FixedLogits([[0, 2, 0], [0, 2, 0], [2, 0, 0], [8, 0, 0]])  # wrong, right, wrong, right -> 2/4
    c = FixedLogits([[4, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0]])  # right, wrong, right, wrong -> 2/4
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(4, dtype=torch.uint8)
    res = ensemble_accuracy([a, b, c], images, labels, batch_size=3)
    assert res["per_model"] == [0.75, 0.5, 0.5]
    assert res["mean"] == pytest.approx(7 / 12)
    # Averaged softmax: image 3 has p(0) = (0.212 + 0.9993 + 0.212) / 3 = 0.474 > p(1) = 0.384, so the
    # confident model wins against the two hesitant ones (a majority vote would say 1): all four are right.
    assert res["ensemble"] == 1.0
    assert accuracy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError, match="labels must be"):
        accuracy(torch.zeros(3, 2), torch.tensor([0, 1]))


def test_fingerprint():
    x, y = colour_problem(16, 16, 0)
    assert fingerprint(x, y) == fingerprint(x.clone(), y.clone())
    assert fingerprint(x, y) != fingerprint(x, y.roll(1))
    assert len(fingerprint(x, y)) == 16


def test_load_or_train_uses_the_cache(monkeypatch):
    x, y = colour_problem(32, 16, 0)
    cfg = ClassifierConfig(arch="resnet", **TINY)
    model, manifest = load_or_train_classifier(cfg, x, y, 10, fingerprint(x, y), progress=False)
    assert manifest["stage"] == "classifier" and manifest["config"]["data"] == fingerprint(x, y)
    assert len(manifest["history"]["train_loss"]) == 1

    def boom(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    monkeypatch.setattr(classifiers, "train_classifier", boom)
    loaded, manifest2 = load_or_train_classifier(cfg, x, y, 10, fingerprint(x, y), progress=False)
    assert manifest2["key"] == manifest["key"] and manifest2["history"] == manifest["history"]
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.equal(predict(model, x), predict(loaded, x))
    with pytest.raises(AssertionError, match="trained again"):  # other data, other key
        load_or_train_classifier(cfg, x, y, 10, "another dataset", progress=False)


def test_classifier_data_decorrelates_shapes_backgrounds():
    from types import SimpleNamespace

    from paperlib.classifiers import classifier_data
    from paperlib.train import cdm_recipe

    shapes = classifier_data(SimpleNamespace(recipe=cdm_recipe("shapes", "full")))
    assert shapes.bg_correlation == 0.0 and shapes.seed == cdm_recipe("shapes", "full").data.seed + 1
    cifar = cdm_recipe("cifar10", "full")
    assert classifier_data(SimpleNamespace(recipe=cifar)) == cifar.data


def test_cli_trains_the_book_classifiers_then_loads_them(monkeypatch, capsys):
    from paperlib.selection import load_choice

    classifiers.main(["--dataset", "shapes", "--profile", "smoke", "--epochs", "1", "--threads", "1"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "test accuracy" in ln]
    assert [ln.split(":")[0] for ln in lines] == list(CLASSIFIER_ARCHS)
    assert all(0.0 <= float(ln.rsplit(" ", 1)[1]) <= 1.0 for ln in lines)
    assert load_choice("smoke", "shapes", "classifiers")["epochs"] == dict.fromkeys(CLASSIFIER_ARCHS, 1)

    def boom(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    monkeypatch.setattr(classifiers, "train_classifier", boom)
    classifiers.main(["--dataset", "shapes", "--profile", "smoke", "--epochs", "1"])
    assert [ln for ln in capsys.readouterr().out.splitlines() if "test accuracy" in ln] == lines
    with pytest.raises(SystemExit):
        classifiers.main(["--dataset", "mnist"])
