"""One call that prepares a notebook: seeds, device, threads, plot style, and a version report."""

from __future__ import annotations

import logging
import os
import platform
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from paperlib import __version__
from paperlib.paths import cache_dir, display_path

LOG_FILE_ENV = "PAPERLIB_LOG_FILE"
"""Environment variable naming the file that takes a notebook's logging and warnings (set by the book
runner, :func:`paperlib.book.execute_notebook`), so that they stay off the rendered page."""

_BOOK_DEVICE: torch.device | None = None


def book_device() -> torch.device:
    """The device of the running chapter, as its :func:`setup` resolved it (the CPU before any setup): where
    :func:`paperlib.train.load_book_cdm` puts the book's models."""
    return _BOOK_DEVICE if _BOOK_DEVICE is not None else torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (library code takes explicit generators)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- seeding the legacy global state is the point here
    torch.manual_seed(seed)


def channels_last(module: nn.Module, on: bool = True) -> nn.Module:
    """``module`` (converted in place: its parameters keep their identity, so an optimiser built on them
    stays valid) with its 4-D weights in NHWC memory format (``torch.channels_last``), or back in NCHW
    (``on=False``).

    The book's convolutional networks are built in NHWC (:func:`paperlib.students.make_student`,
    :func:`paperlib.classifiers.make_classifier`, :class:`paperlib.models.ClassConditionalUNet`; their inputs
    stay NCHW, the layers follow the weights): a training step runs 1.2-1.5x faster on the CPU
    (``bench/channels_last_results.json``: CPU time 0.67x NCHW's for the ResNet-20 student, 0.68x for the v4
    ResNet judge, 0.84x for the CIFAR-10 UNet, 0.94x for the ConvNeXt), a UNet forward pass about 0.8x. The
    values are those of NCHW up to the order of floating-point sums, as with another thread count; saved
    weights are NCHW (:func:`paperlib.cache.save_artifact` stores contiguous tensors).
    """
    return module.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available")
    return dev


def route_chatter(log_file: Path | str) -> None:
    """Send logging (INFO and up) and Python warnings to ``log_file`` instead of the notebook's output.

    Outside the book (no handler configured) a warning logged by ``paperlib`` would reach the cell's
    stderr, which papermill records and the book renders; with a handler on the root logger it goes to
    the file only. Calling it again with the same file changes nothing.
    """
    path = Path(log_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in root.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def setup(seed: int = 0, device: str = "auto", verbose: bool = True) -> torch.device:
    """Seed everything, resolve the device, set the book's plot style, and print the environment.

    Under the book runner (``$PAPERLIB_LOG_FILE`` set) logging and warnings go to that file
    (:func:`route_chatter`); the printed line names the cache relative to the checkout, never an
    absolute path.

    Args:
        seed: Global seed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
        verbose: Print versions, device and cache location.

    Returns:
        The resolved ``torch.device``, also recorded as the chapter's :func:`book_device`.
    """
    from paperlib.plotting import use_style

    global _BOOK_DEVICE
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    if os.environ.get(LOG_FILE_ENV):
        route_chatter(os.environ[LOG_FILE_ENV])
    seed_everything(seed)
    dev = _BOOK_DEVICE = resolve_device(device)
    use_style()
    if verbose:
        where = "CPU" if dev.type == "cpu" else str(dev).upper()
        print(  # two short lines: they fit the page's code column
            f"Run with paperlib {__version__}, torch {torch.__version__}, Python {platform.python_version()}\n"
            f"on {where} ({torch.get_num_threads()} of {os.cpu_count()} threads), seed {seed}; "
            f"scratch cache {display_path(cache_dir())}/"
        )
    return dev
