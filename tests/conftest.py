"""Shared fixtures: a briefly trained toy denoiser (seconds) reused across test modules."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from paperlib.toy import ToyConfig, train_toy_denoiser


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def toy_cfg() -> ToyConfig:
    return replace(ToyConfig(), steps=1500, batch_size=512, lr=3e-3)


@pytest.fixture(scope="session")
def toy_model(toy_cfg):
    torch.set_num_threads(2)
    model, losses, _ = train_toy_denoiser(toy_cfg, seed=0, progress=False)
    return model


def make_fake_imagenet(root, per_class: int = 3, val_per_class: int = 2, classes=None):
    """A tiny ImageNet folder: ``train|val/<wnid>/*.JPEG`` for ImageNet20's classes (random JPEGs of mixed
    sizes and modes, each filled with its class's colour), nothing else."""
    import numpy as np
    from PIL import Image

    from paperlib.imagenet import IMAGENET20_WNIDS

    rng = np.random.default_rng(0)
    sizes = [(40, 30), (30, 52), (33, 33)]
    for split, n in (("train", per_class), ("val", val_per_class)):
        for label, wnid in enumerate(IMAGENET20_WNIDS if classes is None else classes):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                arr = np.clip(rng.normal(12 * label, 3, (h, w, 3)), 0, 255).astype(np.uint8)
                im = Image.fromarray(arr)
                (im.convert("L") if i == 2 else im).save(d / f"{wnid}_{i}.JPEG", quality=95)
    return root


@pytest.fixture
def fake_imagenet(tmp_path):
    """A factory of tiny ImageNet folders in ``tmp_path`` (see :func:`make_fake_imagenet`)."""
    return lambda name="imagenet", **kw: make_fake_imagenet(tmp_path / name, **kw)
