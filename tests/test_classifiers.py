import json
import os
import signal
from dataclasses import replace

import pytest
import torch
from torch import nn

from paperlib import classifiers
from paperlib.cache import ProvenanceError, config_key, load_artifact
from paperlib.classifiers import (
    BOOK_CLASSIFIER_RECIPE,
    CLASSIFIER_ARCHS,
    CLASSIFIER_RECIPES,
    IMAGE_SIZES,
    RECOMMENDED_EPOCHS,
    ClassifierConfig,
    TrainingIncomplete,
    accuracy,
    add_test_accuracy,
    ensemble_accuracy,
    load_or_train_classifier,
    make_classifier,
    predict,
    random_crop_flip,
    recipe_config,
    train_classifier,
)
from paperlib.data import TRAINED_DATASETS, fingerprint
from paperlib.paths import ARTIFACTS_DIR

TINY = {"epochs": 1, "batch_size": 16}


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: the resume tests compare weights, and the machine is shared with long training jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    assert set(RECOMMENDED_EPOCHS) == set(TRAINED_DATASETS)
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
    from types import SimpleNamespace

    from paperlib.selection import load_choice
    from paperlib.train import cdm_recipe

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
    classifiers.main(["--dataset", "shapes", "--profile", "smoke", "--epochs", "1", "--arch", "vit"])
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if "test accuracy" in ln] == lines[-1:] and "mean of" not in out
    with pytest.raises(ValueError, match="archs must be a non-empty subset"):
        classifiers.book_classifiers(SimpleNamespace(recipe=cdm_recipe("shapes", "smoke")), "smoke",
                                     "shapes", archs=["swin"])
    with pytest.raises(SystemExit):
        classifiers.main(["--dataset", "mnist"])
    with pytest.raises(ValueError, match="recipe 'v3' is defined for"):
        classifiers.main(["--dataset", "shapes", "--profile", "smoke", "--recipe", "v3"])


# ----------------------------------------------------------------------------------------------------------
# v3 designs, keys, resumable training, test accuracy
# ----------------------------------------------------------------------------------------------------------

FIRST_STAGE = {  # where each family's first stage is, per design
    "resnet": lambda net: net.layer1,
    "convnext": lambda net: net.stages[0],
    "vit": lambda net: net.patch_embed.backbone[0],  # first conv of the stem
}


def _first_stage_side(model: classifiers.Classifier) -> int:
    seen = []
    handle = FIRST_STAGE[model.arch](model.net).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    finally:
        handle.remove()
    return seen[0][-1]


@pytest.mark.parametrize("arch", CLASSIFIER_ARCHS)
def test_v3_nets_work_at_32x32_in_their_first_stage(arch):
    model = make_classifier(arch, 10, 32, net="v3")
    assert _first_stage_side(model) == 32
    assert _first_stage_side(make_classifier(arch, 10, 32)) == 16  # v2: 16x16 after a stride-2 stem
    logits = predict(model, random_images(3, 32))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    if arch == "vit":
        assert model.net.patch_embed.num_patches == 64  # 8x8 tokens
    with pytest.raises(ValueError, match="net 'v3' is built for image_size 32"):
        make_classifier(arch, 10, 16, net="v3")
    with pytest.raises(ValueError, match="net must be one of"):
        make_classifier(arch, 10, 32, net="v9")


def test_v4_is_the_v3_resnet_with_two_blocks_per_stage():
    v3, v4 = make_classifier("resnet", 10, 32, net="v3"), make_classifier("resnet", 10, 32, net="v4")
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert len(getattr(v3.net, name)) == 1 and len(getattr(v4.net, name)) == 2
        assert getattr(v3.net, name)[0].conv1.out_channels == getattr(v4.net, name)[1].conv2.out_channels
    assert _first_stage_side(v4) == 32
    assert predict(v4, random_images(2, 32)).shape == (2, 10)
    for arch in ("convnext", "vit"):
        with pytest.raises(ValueError, match="net 'v4' is a resnet design"):
            make_classifier(arch, 10, 32, net="v4")
        assert recipe_config("v4", "cifar10", arch) == recipe_config("v3", "cifar10", arch)  # same artifacts
    cfg = recipe_config("v4", "cifar10", "resnet")
    assert cfg.net == "v4" and cfg.epochs == 30 and cfg.optimizer == "sgd"
    # v5: the v4 ResNet twice as long, a larger ConvNeXt, the same ViT (same key, same artifact)
    assert recipe_config("v5", "cifar10", "resnet") == replace(cfg, epochs=60)
    assert recipe_config("v5", "cifar10", "vit") == recipe_config("v3", "cifar10", "vit")


def test_v5_convnext_matches_the_v4_resnet_in_size_and_regularises():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    v3, v5 = make_classifier("convnext", 10, 32, net="v3"), make_classifier("convnext", 10, 32, net="v5")
    resnet = make_classifier("resnet", 10, 32, net="v4")
    assert [len(s.blocks) for s in v5.net.stages] == [1, 1, 4, 1]
    assert count(v3) < 0.5 * count(v5) and abs(count(v5) / count(resnet) - 1) < 0.05
    assert _first_stage_side(v5) == 32
    with pytest.raises(ValueError, match="net 'v5' is a convnext design"):
        make_classifier("resnet", 10, 32, net="v5")
    cfg = recipe_config("v5", "cifar10", "convnext")
    assert (cfg.net, cfg.drop_path, cfg.epochs) == ("v5", 0.1, 40)
    # stochastic depth: random in train mode, off in eval mode
    drop = make_classifier("convnext", 10, 32, net="v5", drop_path=0.5)
    x = random_images(4, 32).float() / 255
    with torch.no_grad():
        drop.train()
        torch.manual_seed(0)
        a = drop(x)
        torch.manual_seed(1)
        b = drop(x)
        assert not torch.allclose(a, b)
        drop.eval()
        assert torch.equal(drop(x), drop(x))
    with pytest.raises(ValueError, match="drop_path must be in"):
        make_classifier("convnext", 10, 32, net="v5", drop_path=1.0)
    with pytest.raises(ValueError, match="drop_path must be in"):
        replace(cfg, drop_path=-0.1)


def test_drop_path_enters_the_key_only_when_set():
    cfg = recipe_config("v3", "cifar10", "convnext")
    assert "drop_path" not in cfg.to_dict()
    assert replace(cfg, drop_path=0.1).to_dict()["drop_path"] == 0.1


def test_v2_configs_keep_the_keys_of_the_committed_artifacts():
    # The book's CIFAR-10 ResNet (chapter 2, v2 recipe, 20 epochs, seed 0) and its committed artifact.
    key = "aeab50abe0851b6d"
    path = ARTIFACTS_DIR / "classifier" / f"{key}.safetensors"
    assert path.is_file()
    committed = json.loads(path.with_suffix(".json").read_text())["config"]
    cfg = recipe_config("v2", "cifar10", "resnet", RECOMMENDED_EPOCHS["cifar10"]["resnet"], 0)
    assert cfg == ClassifierConfig(arch="resnet", epochs=20, seed=0)
    config = {**cfg.to_dict(), "num_classes": 10, "image_size": 32, "n_images": 50_000, "data": committed["data"]}
    assert json.loads(json.dumps(config)) == committed and config_key(config, classifiers.CACHE_VERSION) == key
    assert not {"net", "optimizer", "batch_rng"} & set(cfg.to_dict())
    v3 = recipe_config("v3", "cifar10", "resnet")
    assert {"net": "v3", "optimizer": "sgd", "batch_rng": "per_step"}.items() <= v3.to_dict().items()
    for dataset, recipe in BOOK_CLASSIFIER_RECIPE.items():  # every chapter's recipe is defined for its data
        assert all(recipe_config(recipe, dataset, arch).arch == arch for arch in CLASSIFIER_ARCHS)
    assert set(CLASSIFIER_RECIPES["v3"]["cifar10"]) == set(CLASSIFIER_ARCHS)
    v4 = ARTIFACTS_DIR / "classifier" / "1baf768a81fb74dc.json"  # the committed v4 ResNet judge
    committed = json.loads(v4.read_text())
    config = {**recipe_config("v4", "cifar10", "resnet").to_dict(), "num_classes": 10, "image_size": 32,
              "n_images": 50_000, "data": committed["data"]}
    assert json.loads(json.dumps(config)) == committed["config"]
    assert config_key(config, classifiers.CACHE_VERSION) == committed["key"] and 0 < committed["test_accuracy"] < 1
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipe_config("v9", "cifar10", "vit")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ClassifierConfig(optimizer="lbfgs")


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)


RESUME_CASES = {  # 4 steps per epoch, 3 epochs
    "v2 stream": (ClassifierConfig(arch="convnext", epochs=3, batch_size=8), 16),
    "v3 per step": (ClassifierConfig(arch="resnet", epochs=3, batch_size=8, net="v3", optimizer="sgd", lr=0.05,
                                     weight_decay=5e-4, batch_rng="per_step"), 32),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resumed_training_equals_an_uninterrupted_run(case, tmp_path):
    cfg, size = RESUME_CASES[case]
    x, y = colour_problem(32, size, 0)
    ref, ref_history = train_classifier(cfg, x, y, 10, progress=False)
    ckpt = tmp_path / "run.resume.safetensors"
    pieces = 0
    while True:  # max_seconds=0: one step per call, so it stops inside epochs and at their boundaries
        pieces += 1
        try:
            model, history = train_classifier(cfg, x, y, 10, progress=False, checkpoint=ckpt, max_seconds=0)
            break
        except TrainingIncomplete:
            assert ckpt.is_file()
    assert pieces == 12
    assert _same_weights(model, ref)
    assert history["train_loss"] == pytest.approx(ref_history["train_loss"], abs=1e-6)
    assert history["train_acc"] == ref_history["train_acc"] and history["lr"] == ref_history["lr"]
    assert torch.equal(predict(model, x).argmax(1), predict(ref, x).argmax(1))
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_sigterm_writes_a_checkpoint_at_the_end_of_the_step_and_resume_is_exact(monkeypatch, tmp_path):
    cfg = ClassifierConfig(arch="vit", epochs=2, batch_size=8)
    x, y = colour_problem(32, 16, 0)
    ref, _ = train_classifier(cfg, x, y, 10, progress=False)
    calls = []
    crop = classifiers.random_crop_flip

    def crop_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the last step of epoch 1: the epoch finishes, then the run stops
            os.kill(os.getpid(), signal.SIGTERM)
        return crop(*args, **kwargs)

    monkeypatch.setattr(classifiers, "random_crop_flip", crop_then_sigterm)
    ckpt = tmp_path / "run.resume.safetensors"
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(cfg, x, y, 10, progress=False, checkpoint=ckpt)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored
    _, meta = load_artifact(ckpt)
    assert (meta["epoch"], meta["step"], len(meta["history"]["train_loss"])) == (1, 0, 1)
    monkeypatch.setattr(classifiers, "random_crop_flip", crop)
    model, history = train_classifier(cfg, x, y, 10, progress=False, checkpoint=ckpt)
    assert len(history["train_loss"]) == 2 and _same_weights(model, ref)


def test_resume_refuses_another_config_or_other_data(tmp_path):
    cfg = ClassifierConfig(arch="resnet", epochs=2, batch_size=8)
    x, y = colour_problem(32, 16, 0)
    ckpt = tmp_path / "run.resume.safetensors"
    with pytest.raises(TrainingIncomplete, match="ran out at epoch 1/2, step 1/4"):
        train_classifier(cfg, x, y, 10, progress=False, checkpoint=ckpt, max_seconds=0)
    with pytest.raises(ProvenanceError, match=r"lr: checkpoint 0.002, now 0.003.*weight_decay: checkpoint 0.05"):
        train_classifier(ClassifierConfig(arch="resnet", epochs=2, batch_size=8, lr=3e-3, weight_decay=0.0), x, y,
                         10, progress=False, checkpoint=ckpt)
    with pytest.raises(ProvenanceError, match="data fingerprint: checkpoint"):
        train_classifier(cfg, x, y.roll(1), 10, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="max_seconds needs a checkpoint"):
        train_classifier(cfg, x, y, 10, progress=False, max_seconds=10)


def test_load_or_train_pauses_resumes_and_records_test_accuracy(monkeypatch):
    x, y = colour_problem(64, 16, 0)
    x_test, y_test = colour_problem(50, 16, 1)
    cfg = ClassifierConfig(arch="resnet", epochs=2, batch_size=16, lr=3e-3)
    fp = fingerprint(x, y)
    monkeypatch.setattr(classifiers, "PUBLISH_MAX_BYTES", 800_000)  # a committable resume file is sharded
    with pytest.raises(TrainingIncomplete, match="training incomplete, call again"):
        load_or_train_classifier(cfg, x, y, 10, fp, progress=False, test=(x_test, y_test), max_seconds=0)
    config = {**cfg.to_dict(), "num_classes": 10, "image_size": 16, "n_images": 64, "data": fp}
    final = classifiers.artifact_path("classifier", config, classifiers.CACHE_VERSION)
    resume = final.with_name(f"{final.name.split('.')[0]}.resume.safetensors")
    assert resume.is_file() and not final.exists()
    shards = list(resume.parent.glob(f"{resume.name.removesuffix('.safetensors')}.part*"))
    assert shards and all(p.stat().st_size <= 800_000 for p in [resume, *shards])
    model, manifest = load_or_train_classifier(cfg, x, y, 10, fp, progress=False, test=lambda: (x_test, y_test))
    assert final.is_file() and not resume.exists() and not resume.with_suffix(".json").exists()
    assert not any(p.exists() for p in shards)
    assert manifest["test_accuracy"] == accuracy(predict(model, x_test), y_test) and manifest["test_n"] == 50
    assert manifest["key"] == final.name.split(".")[0]
    assert len(manifest["history"]["train_loss"]) == 2 and manifest["wall_time_s"] > 0
    assert manifest["history"]["monitor_acc"][-1] == manifest["test_accuracy"]  # all 50 < 2000 monitored
    ref, _ = train_classifier(cfg, x, y, 10, progress=False)
    assert _same_weights(model, ref)  # the paused and resumed run is the uninterrupted one

    def boom(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    monkeypatch.setattr(classifiers, "train_classifier", boom)
    _, again = load_or_train_classifier(cfg, x, y, 10, fp, progress=False, test=boom)
    assert again["test_accuracy"] == manifest["test_accuracy"]


def test_add_test_accuracy_keeps_the_tensors_and_the_key():
    x, y = colour_problem(32, 16, 0)
    cfg = ClassifierConfig(arch="resnet", **TINY)
    model, manifest = load_or_train_classifier(cfg, x, y, 10, fingerprint(x, y), progress=False)
    assert "test_accuracy" not in manifest
    path = classifiers.artifact_path("classifier", manifest["config"], classifiers.CACHE_VERSION)
    before, _ = load_artifact(path)
    x_test, y_test = colour_problem(40, 16, 1)
    acc = add_test_accuracy(path, x_test, y_test)
    after, new_manifest = load_artifact(path)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert new_manifest["test_accuracy"] == acc == accuracy(predict(model, x_test), y_test)
    assert new_manifest["key"] == manifest["key"] and new_manifest["config"] == manifest["config"]
    _, loaded = load_or_train_classifier(cfg, x, y, 10, fingerprint(x, y), progress=False)
    assert loaded["test_accuracy"] == acc


def test_cli_pauses_with_a_budget_and_does_not_record_a_recipe_the_book_does_not_use(monkeypatch, capsys):
    from paperlib.paths import cache_dir
    from paperlib.selection import _choices_path

    def fake_cifar(data, split):  # the smoke CIFAR-10 shapes, without decoding the archive
        assert data.name == "cifar10"
        return colour_problem(data.n_train if split == "train" else data.n_test, 32, int(split == "test"))

    monkeypatch.setattr(classifiers, "load_dataset", fake_cifar)
    classifiers.main(["--dataset", "cifar10", "--profile", "smoke", "--recipe", "v3", "--epochs", "1",
                      "--threads", "1", "--max-minutes", "0"])
    out = capsys.readouterr().out
    assert "classifier recipe v3 (the book uses v2)" in out
    assert "paused: training incomplete, call again" in out and "resnet classifier" in out
    choices = _choices_path("smoke")
    assert not choices.exists() or "cifar10" not in json.loads(choices.read_text())
    assert list((cache_dir() / "classifier").glob("*.resume.safetensors"))


def test_subset_classifier_is_the_networks_logits_of_those_classes():
    import torch.nn.functional as F

    from paperlib.classifiers import pretrained_classifiers

    clf = pretrained_classifiers([15, 95, 999], names={"vit": "test_vit"}, pretrained=False)["vit"]  # no download
    assert clf.arch == "vit" and clf.num_classes == 3 and clf.image_size == 160 and not clf.training
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = clf.net((F.interpolate(x, size=(160, 160), mode="bicubic", antialias=True) - 0.5) / 0.5)
    torch.testing.assert_close(clf(x), ref[:, [15, 95, 999]], rtol=1e-5, atol=1e-5)
    logits = predict(clf, (x * 255).to(torch.uint8))
    assert logits.shape == (2, 3)
    with pytest.raises(ValueError, match=r"x must be a float tensor of shape \[B, 3, H, W\]"):
        clf(torch.rand(2, 1, 64, 64))


def test_book_classifiers_of_imagenet20_are_the_pretrained_ensemble(monkeypatch):
    from types import SimpleNamespace

    from paperlib.classifiers import PRETRAINED_IMAGENET, book_classifiers
    from paperlib.data import DatasetConfig
    from paperlib.imagenet import IMAGENET20_INDICES
    from paperlib.selection import load_choice

    calls = []
    monkeypatch.setattr(classifiers, "pretrained_classifiers",
                        lambda idx, device="cpu": calls.append((tuple(idx), str(device))) or {"vit": "stub"})
    cdm = SimpleNamespace(recipe=SimpleNamespace(data=DatasetConfig("imagenet20", size=256)))
    assert book_classifiers(cdm, "paper", "imagenet20", {}) == {"vit": "stub"}
    assert load_choice("paper", "imagenet20", "classifiers") == {"pretrained": PRETRAINED_IMAGENET}
    assert book_classifiers(cdm, "paper", "imagenet20") == {"vit": "stub"}  # later chapters: the same ensemble
    assert calls == [(IMAGENET20_INDICES, "cpu")] * 2
    assert set(PRETRAINED_IMAGENET) == {"vit", "swinv2", "convnextv2"}


def test_monitor_subset_is_class_stratified(tmp_path, monkeypatch):
    import paperlib.classifiers as classifiers

    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    seen = {}

    class Stop(Exception):
        pass

    def capture(*args, monitor=None, **kwargs):
        seen["labels"] = monitor[1]
        raise Stop

    monkeypatch.setattr(classifiers, "train_classifier", capture)
    test_labels = torch.arange(10).repeat_interleave(500)  # sorted by class, as CIFAR-10's test set
    test_images = torch.zeros(len(test_labels), 3, 16, 16, dtype=torch.uint8)
    images, labels = torch.zeros(20, 3, 16, 16, dtype=torch.uint8), torch.arange(20) % 10
    with pytest.raises(Stop):
        classifiers.load_or_train_classifier(classifiers.ClassifierConfig(arch="resnet", epochs=1), images, labels,
                                             10, "fp", test=(test_images, test_labels))
    assert torch.equal(torch.bincount(seen["labels"], minlength=10), torch.full((10,), 200))
