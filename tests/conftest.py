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
