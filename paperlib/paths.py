"""Where the project, the shared data and the caches live."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""Root of the clarep-book checkout (the folder holding ``paperlib/``)."""

ARTIFACTS_DIR: Path = REPO_ROOT / "artifacts"
"""Small committed artifacts that the published book is built from."""


def shared_dir() -> Path:
    """The ``shared/`` folder beside the checkout (may not exist for outside users)."""
    return Path(os.environ.get("PAPERLIB_SHARED", REPO_ROOT.parent / "shared"))


def cache_dir() -> Path:
    """Scratch cache (not committed): ``$PAPERLIB_CACHE`` or ``<repo>/_cache``."""
    path = Path(os.environ.get("PAPERLIB_CACHE", REPO_ROOT / "_cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path
