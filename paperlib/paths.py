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


def display_path(path: Path | str) -> str:
    """``path`` as a reader may see it: relative to the checkout (``_cache``) or to the home folder
    (``~/data``); any other absolute path is reduced to ``…/<name>``, so no page names the machine it was
    built on."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    for root, prefix in ((REPO_ROOT, ""), (Path.home(), "~/")):
        if path.is_relative_to(root):
            rel = path.relative_to(root).as_posix()
            return prefix + rel if rel != "." else prefix.rstrip("/") or "."
    return f"…/{path.name}"
