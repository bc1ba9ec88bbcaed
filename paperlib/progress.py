"""Progress bars: tqdm on the command line, silent where a reader would see them.

Every loop of ``paperlib`` that shows a bar uses :class:`tqdm` from here instead of ``tqdm.tqdm``. It is
tqdm itself, except that ``$PAPERLIB_PROGRESS=0`` switches every bar off, whatever the caller passed: the
book runner (:func:`paperlib.book.execute_notebook`) sets it for the notebooks it executes, so no bar
reaches a rendered page, while ``make train`` and the other command-line runs keep theirs.
"""

from __future__ import annotations

import os

from tqdm import tqdm as _tqdm

PROGRESS_ENV = "PAPERLIB_PROGRESS"
"""Environment variable: ``0``, ``false``, ``off`` or ``no`` disables every bar of :class:`tqdm`."""


def progress_enabled() -> bool:
    """False when ``$PAPERLIB_PROGRESS`` says off (``0``, ``false``, ``off``, ``no``; any case)."""
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in {"0", "false", "off", "no"}


class tqdm(_tqdm):  # noqa: N801 -- a drop-in for tqdm.tqdm, same name
    """``tqdm.tqdm``, disabled when :func:`progress_enabled` is False (otherwise ``disable`` as given)."""

    def __init__(self, *args, **kwargs):
        if not progress_enabled():
            kwargs["disable"] = True
        super().__init__(*args, **kwargs)
