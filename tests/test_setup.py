"""The notebook setup: chatter routed to a log file, no machine paths in what it prints."""

import logging
import warnings

import pytest
import torch
from torch import nn

from paperlib.paths import REPO_ROOT, display_path
from paperlib.setup import LOG_FILE_ENV, channels_last, route_chatter, setup


@pytest.fixture
def clean_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def test_route_chatter_sends_logging_and_warnings_to_the_file(tmp_path, capfd, clean_logging):
    log = tmp_path / "logs" / "ch.log"
    route_chatter(log)
    route_chatter(log)  # twice: one handler
    logging.getLogger("paperlib.cache").info("found cached %s, loading", "x")
    logging.getLogger("paperlib.book").warning("cifar10 left out")
    warnings.warn("a library warning", UserWarning, stacklevel=1)
    text = log.read_text()
    assert text.count("found cached x") == 1 and "cifar10 left out" in text and "a library warning" in text
    out, err = capfd.readouterr()
    assert "left out" not in err and "library warning" not in err and not out


def test_setup_prints_no_absolute_path(monkeypatch, capsys, tmp_path, clean_logging):
    monkeypatch.setenv("PAPERLIB_CACHE", str(REPO_ROOT / "_cache"))
    monkeypatch.setenv(LOG_FILE_ENV, str(tmp_path / "nb.log"))
    setup(0, "cpu")
    out = capsys.readouterr().out
    assert "cache _cache" in out and str(REPO_ROOT) not in out
    assert max(len(line) for line in out.splitlines()) <= 88
    assert any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers)


def test_display_path(tmp_path, monkeypatch):
    from pathlib import Path

    assert display_path(REPO_ROOT / "_cache" / "x.npz") == "_cache/x.npz"
    assert display_path(REPO_ROOT) == "."
    assert display_path("rel/x") == "rel/x"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    assert display_path(tmp_path / "data" / "c.npz") == "~/data/c.npz"
    assert display_path("/srv/build/data/c.npz") == "…/c.npz"


def test_channels_last_converts_in_place_and_back_without_changing_the_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.rand(2, 3, 9, 9)
    params = list(net.parameters())
    before = net(x)
    assert channels_last(net) is net and list(net.parameters()) == params  # same tensors: optimisers stay valid
    w = net[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)
    channels_last(net, on=False)
    assert all(p.is_contiguous() for p in net.parameters())
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)
