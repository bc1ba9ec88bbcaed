"""Resumable CDM training: determinism, kill-and-resume equivalence, atomic checkpoints, bad input."""

from dataclasses import replace

import pytest
import torch

from paperlib.cache import load_artifact
from paperlib.data import DatasetConfig
from paperlib.models import CDMConfig
from paperlib.train import CDMRecipe, TrainConfig, cdm_recipe, load_or_train_cdm, train_cdm

TINY = CDMConfig(sample_size=8, num_classes=3, block_out_channels=(8, 8), attention_levels=(1,),
                 norm_num_groups=4, attention_head_dim=8)
CFG = TrainConfig(steps=12, batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.9)


def _data(n=40):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = (labels[:, None, None, None] * 100 + torch.randint(0, 40, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return images, labels


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_seed_same_model():
    images, labels = _data()
    a = train_cdm(TINY, CFG, images, labels, progress=False)
    b = train_cdm(TINY, CFG, images, labels, progress=False)
    assert a.finished and a.step == 12 and len(a.losses) == 12
    assert _same(a.model, b.model)
    c = train_cdm(TINY, replace(CFG, seed=1), images, labels, progress=False)
    assert not _same(a.model, c.model)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    images, labels = _data()
    straight = train_cdm(TINY, CFG, images, labels, progress=False)
    ckpt = tmp_path / "run.resume.safetensors"
    part = train_cdm(TINY, CFG, images, labels, ckpt, max_seconds=0.0, progress=False)
    assert not part.finished and part.step == 1 and ckpt.exists()
    tensors, meta = load_artifact(ckpt)  # a valid checkpoint: sha256 verified, step recorded
    assert meta["step"] == 1 and tensors["losses"].shape == (1,)
    resumed = train_cdm(TINY, CFG, images, labels, ckpt, progress=False)
    assert resumed.finished and resumed.step == 12
    for x, y in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.as_tensor(resumed.losses), torch.as_tensor(straight.losses), rtol=1e-5, atol=1e-6)


def test_loss_decreases():
    images, labels = _data(60)
    r = train_cdm(TINY, replace(CFG, steps=150, ema_decay=0.5), images, labels, progress=False)
    assert r.losses[-30:].mean() < 0.7 * r.losses[:10].mean()


def test_bad_input():
    images, labels = _data()
    with pytest.raises(ValueError, match="images must be uint8"):
        train_cdm(TINY, CFG, images.float(), labels, progress=False)
    with pytest.raises(ValueError, match="labels must be"):
        train_cdm(TINY, CFG, images, labels + 3, progress=False)
    with pytest.raises(ValueError, match="dataset must be one of"):
        cdm_recipe("mnist", "smoke")
    with pytest.raises(ValueError, match="profile must be"):
        cdm_recipe("shapes", "paper")


def test_load_or_train_saves_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    recipe = CDMRecipe(DatasetConfig("shapes", size=8, n_train=30, n_test=10),
                       replace(TINY, num_classes=10), replace(CFG, steps=3))
    model, manifest = load_or_train_cdm(recipe, progress=False)
    assert manifest["steps"] == 3 and manifest["key"] == recipe.key and len(manifest["sha256"]) == 64
    assert not list(tmp_path.glob("cdm/*.resume.*"))  # the resume checkpoint is dropped when done
    again, _ = load_or_train_cdm(recipe, progress=False)
    assert _same(model, again)
