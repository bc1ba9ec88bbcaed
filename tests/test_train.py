"""Resumable CDM training: determinism, kill-and-resume equivalence, atomic checkpoints, bad input."""

import json
import multiprocessing as mp
import os
import random
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from paperlib.cache import ArtifactError, ProvenanceError, load_artifact
from paperlib.data import DatasetConfig
from paperlib.models import CDMConfig, ClassConditionalUNet
from paperlib.train import CDMRecipe, TrainConfig, cdm_recipe, load_cdm, load_or_train_cdm, train_cdm

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
        cdm_recipe("shapes", "gpu")
    with pytest.raises(ValueError, match="pretrained DiT-XL/2"):
        cdm_recipe("imagenet20", "paper")


def test_the_paper_profile_reuses_the_full_cdms_and_loads_the_dit_for_imagenet20(monkeypatch):
    import paperlib.dit
    from paperlib.setup import book_device, setup
    from paperlib.train import load_book_cdm

    for ds in ("shapes", "cifar10"):
        assert cdm_recipe(ds, "paper") == cdm_recipe(ds, "full")
    seen = []
    monkeypatch.setattr(paperlib.dit, "load_book_dit", lambda profile, device: seen.append((profile, device)) or "dit")
    assert load_book_cdm("imagenet20", "paper") == "dit"
    setup(0, "cpu", verbose=False)
    assert book_device() == torch.device("cpu")
    assert seen == [("paper", torch.device("cpu"))]


def test_load_or_train_saves_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    recipe = CDMRecipe(DatasetConfig("shapes", size=8, n_train=30, n_test=10),
                       replace(TINY, num_classes=10), replace(CFG, steps=3))
    model, manifest = load_or_train_cdm(recipe, progress=False)
    assert manifest["steps"] == 3 and manifest["key"] == recipe.key and len(manifest["sha256"]) == 64
    assert not list(tmp_path.glob("cdm/*.resume.*"))  # the resume checkpoint is dropped when done
    again, _ = load_or_train_cdm(recipe, progress=False)
    assert _same(model, again)


def test_resume_refuses_a_checkpoint_of_other_settings_but_extends_steps(tmp_path):
    images, labels = _data()
    ckpt = tmp_path / "run.resume.safetensors"
    train_cdm(TINY, CFG, images, labels, ckpt, max_seconds=0.0, progress=False)
    with pytest.raises(ValueError, match=r"train\.lr: checkpoint 0\.001, now 0\.002.*train\.seed"):
        train_cdm(TINY, replace(CFG, lr=2e-3, seed=3), images, labels, ckpt, progress=False)
    with pytest.raises(ValueError, match="data fingerprint"):
        train_cdm(TINY, CFG, images[:-1], labels[:-1], ckpt, progress=False)
    with pytest.raises(ValueError, match=r"cdm\.block_out_channels"):
        train_cdm(replace(TINY, block_out_channels=(8, 16)), CFG, images, labels, ckpt, progress=False)
    longer = train_cdm(TINY, replace(CFG, steps=14), images, labels, ckpt, progress=False)
    assert longer.finished and longer.step == 14


def _train_forever(path: str) -> None:
    torch.set_num_threads(1)
    images, labels = _data()
    train_cdm(TINY, replace(CFG, steps=10**6), images, labels, Path(path), checkpoint_every_s=0.0, progress=False)


def test_sigkilled_training_resumes_from_its_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "run.resume.safetensors"
    ctx = mp.get_context("spawn")  # a fresh interpreter: no OpenMP state inherited through fork
    rng = random.Random(0)
    steps = []
    for _ in range(3):
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = ctx.Process(target=_train_forever, args=(str(ckpt),))
        proc.start()
        deadline = time.time() + 120
        while time.time() < deadline and (not ckpt.exists() or ckpt.stat().st_mtime_ns == before):
            time.sleep(0.02)  # until this child has written a checkpoint
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        tensors, meta = load_artifact(ckpt)
        assert tensors["losses"].shape == (meta["step"],)
        steps.append(meta["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith("tmp")]
    images, labels = _data()
    n = steps[-1] + 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the child: the same summation order
    try:
        resumed = train_cdm(TINY, replace(CFG, steps=n), images, labels, ckpt, progress=False)
        straight = train_cdm(TINY, replace(CFG, steps=n), images, labels, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed.step == n
    torch.testing.assert_close(torch.as_tensor(resumed.losses), torch.as_tensor(straight.losses))
    for x, y in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def _tiny_recipe(steps=3):
    return CDMRecipe(DatasetConfig("shapes", size=8, n_train=30, n_test=10),
                     replace(TINY, num_classes=10), replace(CFG, steps=steps))


def test_load_cdm_checks_recipe_data_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    recipe = _tiny_recipe()
    _, manifest = load_or_train_cdm(recipe, progress=False)
    final = tmp_path / "cdm" / f"{recipe.key}.safetensors"
    with pytest.raises(ProvenanceError, match=rf"data: artifact '{manifest['data']}', here 'a48f7abe3267e2f5'"):
        load_cdm(final, recipe, data_fingerprint="a48f7abe3267e2f5")
    with pytest.raises(ProvenanceError, match="steps"):
        load_cdm(final, recipe.with_steps(5))
    edited = json.loads(final.with_suffix(".json").read_text())
    edited["steps"] = 5
    final.with_suffix(".json").write_text(json.dumps(edited))
    with pytest.raises(ArtifactError, match="steps: JSON 5, file 3"):
        load_or_train_cdm(recipe, progress=False)


def test_milestones_are_the_models_of_shorter_recipes(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    recipe = _tiny_recipe(steps=6)
    assert recipe.run_key == recipe.with_steps(3).run_key and recipe.key != recipe.with_steps(3).key
    long, _ = load_or_train_cdm(recipe, progress=False, milestone_every=3, keep_resume=True)
    assert (tmp_path / "cdm" / f"{recipe.run_key}.resume.safetensors").exists()
    short_saved, m = load_or_train_cdm(recipe.with_steps(3), progress=False)  # the milestone, not retrained
    assert m["steps"] == 3 and m["key"] == recipe.with_steps(3).key
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "fresh"))
    short_trained, _ = load_or_train_cdm(recipe.with_steps(3), progress=False)
    for x, y in zip(short_saved.state_dict().values(), short_trained.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_training_and_loading_leave_the_global_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    images, labels = _data()
    calls = {
        "train_cdm": lambda: train_cdm(TINY, CFG, images, labels, progress=False),
        "ClassConditionalUNet": lambda: ClassConditionalUNet(TINY),
        "load_or_train_cdm (train)": lambda: load_or_train_cdm(_tiny_recipe(), progress=False),
        "load_or_train_cdm (load)": lambda: load_or_train_cdm(_tiny_recipe(), progress=False),
    }
    for name, call in calls.items():
        torch.manual_seed(123)
        call()
        assert torch.equal(torch.random.get_rng_state(), torch.manual_seed(123).get_state()), name


def test_book_cdm_refuses_data_other_than_its_training_data(monkeypatch):
    import paperlib.train as train

    images, labels = train.load_dataset(train.cdm_recipe("shapes", "full").data, "train")
    monkeypatch.setattr(train, "load_dataset", lambda cfg, split: (images[:200], labels[:200]))
    with pytest.raises(ProvenanceError, match=r"fingerprint 8d3b6050a31bfbab.*fingerprint [0-9a-f]{16} \(200"):
        train.load_book_cdm("shapes", "full", progress=False)


def test_load_run_at_reads_milestones_and_resume_checkpoints(tmp_path, monkeypatch):
    from paperlib.train import load_run_at

    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    recipe = _tiny_recipe(steps=6)
    final, _ = load_or_train_cdm(recipe, progress=False, milestone_every=3, keep_resume=True)
    resume = tmp_path / "cdm" / f"{recipe.run_key}.resume.safetensors"
    from_resume = load_run_at(recipe, checkpoint=resume)  # its EMA at step 6 is the final model
    assert from_resume.manifest["key"] == f"{recipe.run_key}@6"
    for x, y in zip(final.state_dict().values(), from_resume.model.state_dict().values()):
        torch.testing.assert_close(x, y)
    assert load_run_at(recipe.with_steps(3)).manifest["steps"] == 3  # the milestone artifact
    with pytest.raises(ProvenanceError, match="step 6, not 3"):
        load_run_at(recipe.with_steps(3), checkpoint=resume)
    with pytest.raises(FileNotFoundError, match="no shapes CDM of 4 steps"):
        load_run_at(recipe.with_steps(4))
    import paperlib.train as train

    def no_data(*args):
        raise AssertionError("a missing checkpoint must be reported before the data is loaded")

    monkeypatch.setattr(train, "load_dataset", no_data)
    with pytest.raises(FileNotFoundError, match="no shapes CDM of 4 steps"):
        load_run_at(recipe.with_steps(4))


def test_checkpoint_exists_finds_the_committed_milestones_only():
    from paperlib.train import checkpoint_exists

    assert checkpoint_exists("shapes", 10_000, "full") and checkpoint_exists("shapes", 60_000, "full")
    assert not checkpoint_exists("shapes", 12_345, "full")
