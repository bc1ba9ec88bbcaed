"""One call that prepares a notebook: seeds, device, threads, plot style, and a version report."""

from __future__ import annotations

import os
import platform
import random
import warnings

import numpy as np
import torch

from paperlib import __version__
from paperlib.paths import cache_dir

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


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available")
    return dev


def setup(seed: int = 0, device: str = "auto", verbose: bool = True) -> torch.device:
    """Seed everything, resolve the device, set the book's plot style, and print the environment.

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
    seed_everything(seed)
    dev = _BOOK_DEVICE = resolve_device(device)
    use_style()
    if verbose:
        print(
            f"paperlib {__version__} | torch {torch.__version__} | python {platform.python_version()} | "
            f"device {dev} | threads {torch.get_num_threads()}/{os.cpu_count()} | seed {seed} | "
            f"cache {cache_dir()}"
        )
    return dev
