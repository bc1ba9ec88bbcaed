"""Execute the notebooks headlessly (papermill) and build the Jupyter Book.

``python -m paperlib.book execute --profile smoke`` runs every ``notebooks/NN_*.ipynb`` with the
parameters of ``profiles/<profile>.yaml`` into ``_build/<profile>/src/notebooks/`` (the committed
notebooks stay output-free); ``build`` stages ``book/`` and ``_config.yml`` beside them and renders HTML
(full profile: ``_build/html``; others: ``_build/<profile>/_build/html``). Also the glue helpers the
notebooks use to put numbers into prose.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from paperlib.cache import PENDING
from paperlib.paths import REPO_ROOT

log = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_GLOB = "[0-9][0-9]*_*.ipynb"
"""The book's notebooks: ``NN_slug.ipynb`` and ``NNb_slug.ipynb`` (a chapter's companion, read after ``NN``)."""
PROFILE_DIR = REPO_ROOT / "profiles"
BUILD_DIR = REPO_ROOT / "_build"


def notebooks() -> list[Path]:
    """The book's notebooks in reading order (``notebooks/NN_slug.ipynb``, ``NNb_slug`` after ``NN``)."""
    return sorted(NOTEBOOK_DIR.glob(NOTEBOOK_GLOB))


def profile_parameters(profile: str, stem: str) -> dict:
    """Parameters for notebook ``stem`` in ``profile``: the ``_all`` section updated by the notebook's own."""
    path = PROFILE_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ValueError(f"profile must be one of {known}, got {profile!r}")
    spec = yaml.safe_load(path.read_text()) or {}
    return {**spec.get("_all", {}), **spec.get(stem, {})}


def source_dir(profile: str) -> Path:
    """Staging folder of the book sources for ``profile``."""
    return BUILD_DIR / profile / "src"


def html_dir(profile: str) -> Path:
    """Where the HTML of ``profile`` is written."""
    return BUILD_DIR / "html" if profile == "full" else BUILD_DIR / profile / "_build" / "html"


SUMMARY_PREFIX = "00_"
"""Stem prefix of the pages that summarise the executed chapters (the results page): run after them."""

QUIET_WARNINGS = ("ignore:IProgress not found",)
"""``PYTHONWARNINGS`` entries for the kernels the book runs: warnings raised at import time, before
:func:`paperlib.setup.setup` routes the rest to the log (tqdm's notice that ipywidgets is missing)."""


def execution_order(paths: Sequence[Path]) -> list[Path]:
    """The chapters in reading order, then the summary pages (``00_*``), which read the executed chapters."""
    return ([p for p in paths if not p.stem.startswith(SUMMARY_PREFIX)]
            + [p for p in paths if p.stem.startswith(SUMMARY_PREFIX)])


def log_path(profile: str, stem: str) -> Path:
    """Where the logging and warnings of notebook ``stem`` go when the book runner executes it."""
    return BUILD_DIR / profile / "logs" / f"{stem}.log"


@contextlib.contextmanager
def book_environment(log_file: Path, read_only: bool = False) -> Iterator[None]:
    """Environment of the kernels the book runs (they inherit it): no progress bars
    (:mod:`paperlib.progress`), logging and warnings to ``log_file`` (:func:`paperlib.setup.route_chatter`),
    and the import-time warnings of :data:`QUIET_WARNINGS` ignored; with ``read_only``, published results are
    read, never computed (:data:`paperlib.cache.READ_ONLY_ENV`). Restored on exit."""
    from paperlib.cache import READ_ONLY_ENV
    from paperlib.progress import PROGRESS_ENV
    from paperlib.setup import LOG_FILE_ENV

    warn = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS", ""), *QUIET_WARNINGS]))
    new = {PROGRESS_ENV: "0", LOG_FILE_ENV: str(log_file), "PYTHONWARNINGS": warn,
           READ_ONLY_ENV: "1" if read_only else os.environ.get(READ_ONLY_ENV, "0")}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@functools.cache
def _ipc_kernel_manager() -> type:
    """jupyter_client's ``AsyncKernelManager`` on IPC sockets under a fresh temporary prefix.

    Over TCP, a kernel manager picks its five ports by binding and releasing them, so two processes starting
    kernels at once (``execute(jobs=2)``) can draw the same port and one kernel dies before it answers
    ("Address already in use"). Unix sockets with a per-kernel path prefix cannot collide.

    jupyter_client interrupts (SIGINT) every kernel before asking it to shut down; a kernel still inside a
    message handler then logs "KeyboardInterrupt caught in kernel." to the console. Papermill shuts a kernel
    down only after its last cell, so the manager skips that interrupt (a kernel that does not exit is still
    terminated after ``shutdown_wait_time``).
    """
    import tempfile
    import uuid

    from jupyter_client import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self) -> str:
            return str(Path(tempfile.gettempdir()) / f"paperlib-kernel-{uuid.uuid4().hex[:12]}")

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return IPCKernelManager


def parameters_for(path: Path, profile: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """The parameters papermill injects into notebook ``path``: :func:`profile_parameters`, updated by the
    ``overrides`` that its ``parameters`` cell declares (the others are not meant for it)."""
    import papermill as pm

    params = profile_parameters(profile, path.stem)
    if overrides:
        declared = pm.inspect_notebook(str(path))
        params.update({k: v for k, v in overrides.items() if k in declared})
    return params


def execute_notebook(path: Path, profile: str, log_output: bool = False, read_only: bool = False,
                     overrides: Mapping[str, Any] | None = None) -> tuple[Path, float]:
    """Execute one notebook with papermill; returns the executed copy and its wall time in seconds.

    The kernel runs in :func:`book_environment`: its logging goes to :func:`log_path`, not to the page; it
    talks over IPC sockets (:func:`_ipc_kernel_manager`), so parallel runs never race for a port.
    ``overrides``: parameters set beyond the profile's (:func:`parameters_for`).
    """
    import papermill as pm

    out = source_dir(profile) / "notebooks" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path(profile, path.stem)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.unlink(missing_ok=True)
    start = time.perf_counter()
    with book_environment(log_file, read_only):
        pm.execute_notebook(
            str(path), str(out), parameters=parameters_for(path, profile, overrides), kernel_name="python3",
            cwd=str(NOTEBOOK_DIR), log_output=log_output, progress_bar=False,
            kernel_manager_class=_ipc_kernel_manager(),
        )
    hide_injected_parameters(out)
    return out, time.perf_counter() - start


def _assigned_literals(source: str) -> dict[str, object] | None:
    """``NAME = literal`` assignments of a parameters cell (None if it holds anything else)."""
    import ast

    values = {}
    try:
        tree = ast.parse(source)
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                return None
            values[node.targets[0].id] = ast.literal_eval(node.value)
    except (SyntaxError, ValueError):
        return None
    return values


def hide_injected_parameters(path: Path) -> None:
    """Keep papermill's ``injected-parameters`` cell off the rendered page.

    If it only repeats defaults of the ``parameters`` cell (the full profile injects ``PROFILE = "full"``)
    it is removed (tag ``remove-cell``); if it changes something (the smoke profile's sizes) it is
    collapsed behind a toggle (``hide-cell``), so a reader can still see what this run used.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    defaults = next((_assigned_literals(c.source) for c in nb.cells
                     if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" not in tags or {"hide-cell", "remove-cell"} & set(tags):
            continue
        injected = _assigned_literals(cell.source)
        redundant = (defaults is not None and injected is not None
                     and all(k in defaults and defaults[k] == v for k, v in injected.items()))
        cell.metadata["tags"] = [*tags, "remove-cell" if redundant else "hide-cell"]
    nbformat.write(nb, path)


DATA_UNAVAILABLE = "CIFAR-10 not found"
"""Start of the error :func:`paperlib.data.load_cifar10` raises when no copy of the data can be had."""


def _skipped_path(profile: str) -> Path:
    return BUILD_DIR / profile / "skipped.json"


def skipped(profile: str) -> dict[str, str]:
    """Notebooks the last :func:`execute` left out of ``profile`` because their data was unavailable."""
    path = _skipped_path(profile)
    return json.loads(path.read_text()) if path.exists() else {}


def _execute_chapter(nb: Path, profile: str, log_output: bool, read_only: bool, threads: int | None = None,
                     overrides: Mapping[str, Any] | None = None) -> tuple[str, float | None, str | None]:
    """Execute one notebook for :func:`execute`: ``("ok", seconds, None)``, or ``("left out", None, why)`` when
    it fails only for unavailable data or pending results (its executed copy is removed). Any other error is
    raised, or, in a worker process (``threads`` given), returned as ``("error", None, traceback)``."""
    import traceback

    from papermill.exceptions import PapermillExecutionError

    if threads is not None:  # a worker of a parallel run: its kernels share the cores with the other's
        os.environ.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    try:
        _, seconds = execute_notebook(nb, profile, log_output, read_only, overrides)
    except Exception as exc:
        if isinstance(exc, PapermillExecutionError) and (
                DATA_UNAVAILABLE in str(exc.evalue) or PENDING in str(exc.evalue)):
            (source_dir(profile) / "notebooks" / nb.name).unlink(missing_ok=True)
            return "left out", None, str(exc.evalue)
        if threads is None:
            raise
        return "error", None, f"{nb.name}:\n{traceback.format_exc()}"
    return "ok", seconds, None


def execute(profile: str, names: list[str] | None = None, log_output: bool = False, read_only: bool = False,
            jobs: int = 1, overrides: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Execute the notebooks (all, or those whose stem is in ``names``); records their wall times.

    A notebook that fails only because CIFAR-10 is unavailable (no ``$PAPERLIB_DATA``, no ``../shared``, no
    internet) is left out with a warning and recorded, so the book still builds from the others (the toy
    chapter needs no data). With ``read_only`` (``make book``), a chapter whose published results are not
    computed yet (:class:`paperlib.cache.PendingRun`: students not trained, runs not made) is left out the
    same way, naming what is missing and the command that makes it. Any other error stops the run. The summary
    pages (``00_*``) run last, and always (they read what the chapters glued). The warnings a notebook logged
    are counted on the way.

    Args:
        jobs: Chapters executed at once (processes; each kernel gets ``cpu_count // jobs`` threads). Only
            with ``read_only``: computing chapters depend on the ones before (chapter 3 reads chapter 2's
            ``t*``), reading ones do not.
        overrides: Parameters set beyond the profile's, in every notebook that declares them (e.g.
            ``{"DATASETS": ["shapes"]}`` reruns one dataset's chain).

    Raises:
        ValueError: ``jobs > 1`` without ``read_only``, or ``jobs < 1``.
        RuntimeError: A chapter failed in a worker process (its traceback in the message).
    """
    from concurrent.futures import ProcessPoolExecutor

    from paperlib.paths import display_path

    if not isinstance(jobs, int) or jobs < 1 or (jobs > 1 and not read_only):
        raise ValueError(f"jobs must be 1, or an int > 1 with read_only (chapters that compute depend on the "
                         f"ones before); got jobs={jobs!r}, read_only={read_only}")
    timings_path = BUILD_DIR / profile / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    left_out = {k: v for k, v in skipped(profile).items() if names and k not in names}
    order = execution_order(notebooks())
    if names:
        names = [*names, *(p.stem for p in order if p.stem.startswith(SUMMARY_PREFIX))]
    todo = [nb for nb in order if not names or nb.stem in names]
    chapters = [nb for nb in todo if not nb.stem.startswith(SUMMARY_PREFIX)]
    summaries = [nb for nb in todo if nb.stem.startswith(SUMMARY_PREFIX)]

    def report(nb: Path, outcome: tuple[str, float | None, str | None]) -> None:
        status, seconds, message = outcome
        if status == "error":
            raise RuntimeError(f"[{profile}] {message}")
        if status == "left out":
            left_out[nb.stem] = message.strip()
            print(f"[{profile}] WARNING: {nb.name} left out of the book: {message}", flush=True)
            return
        timings[nb.stem] = round(seconds, 1)
        log = log_path(profile, nb.stem)
        warned = log.read_text(encoding="utf-8").count(" WARNING ") if log.exists() else 0
        note = f"; {warned} warning(s) in {display_path(log)}" if warned else ""
        print(f"[{profile}] {nb.name}: {seconds:.1f} s{note}", flush=True)

    if jobs > 1 and len(chapters) > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        print(f"[{profile}] executing {len(chapters)} chapters, {jobs} at a time ...", flush=True)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_execute_chapter, nb, profile, log_output, read_only, threads, overrides)
                       for nb in chapters]
            for nb, future in zip(chapters, futures):  # reported in reading order
                report(nb, future.result())
        chapters = []
    for nb in [*chapters, *summaries]:
        print(f"[{profile}] executing {nb.name} ...", flush=True)
        report(nb, _execute_chapter(nb, profile, log_output, read_only, overrides=overrides))
    timings_path.parent.mkdir(parents=True, exist_ok=True)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    _skipped_path(profile).write_text(json.dumps(left_out, indent=2) + "\n")
    return timings


def without_chapters(toc: str, stems: list[str]) -> str:
    """``_toc.yml`` text with the ``- file: notebooks/<stem>`` entries of ``stems`` removed."""
    drop = {f"notebooks/{s}" for s in stems}
    return "".join(line for line in toc.splitlines(keepends=True)
                   if line.strip().removeprefix("- file:").strip() not in drop)


def substitutions(profile: str, chapters: Sequence[str], pending: Sequence[str] = ()) -> dict[str, str]:
    """MyST substitutions the staged pages use: ``{{ chapter_table }}`` on the front page, every chapter
    with its one-sentence answer and its claims' verdicts, read from the executed ``chapters``; those in
    ``pending`` are linked to their results-pending page (:func:`paperlib.claims.chapter_table`)."""
    from paperlib.claims import chapter_table

    return {"chapter_table": chapter_table(profile, chapters, pending=pending)}


def _reproduces_paragraphs(stem: str) -> list[str]:
    """The paragraphs of a notebook's "Reproduces" box that cite no computed value (no glue, no numref)."""
    import nbformat

    path = NOTEBOOK_DIR / f"{stem}.ipynb"
    if not path.exists():
        return []
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    box = re.search(r":::\{admonition\} Reproduces\n(?::class: \w+\n)?(.*?)\n:::", cells[0].source if cells else "",
                    flags=re.S)
    if box is None:
        return []
    paragraphs = [p.strip() for p in box.group(1).split("\n\n")]
    return [p for p in paragraphs if p and "{glue" not in p and "{numref" not in p]


MISSING_RESULTS: dict[str, str] = {
    "cdm": "a trained CDM",
    "classifier": "a trained judge classifier",
    "clarid_run": "a CLARID run over the chapter's images",
    "edit_run": "the edit runs (CLARID and its matched controls over the t* × k map)",
    "teaching_bank": "the teaching bank (Canonical Samples, CFG outputs and their features)",
    "raw_features": "the CDM features of every training image (DMDistill's teacher)",
    "student": "a trained student",
    "robustness": "a robustness evaluation",
}
"""What a missing result is, in words, by the artifact stage a :class:`paperlib.cache.PendingRun` names."""


def missing_result(why: str) -> tuple[str, str]:
    """``(missing result, command that computes it)`` of a :class:`paperlib.cache.PendingRun` message
    (``"not computed yet: student ... is not in artifacts/; compute it with `make ...`"``)."""
    missing = why.removeprefix(f"{PENDING}: ").replace(" is not in artifacts/", "")
    missing, _, how = missing.partition("; compute it with ")
    return missing, how


def pending_page(stem: str, why: str) -> str:
    """The page (MyST Markdown) that stands in for a chapter whose published results are not computed yet:
    its title, what it reproduces (from the notebook's "Reproduces" box), what is missing, why, and the
    command that computes it.

    Args:
        stem: Notebook stem (``06_cadistill``).
        why: The :class:`paperlib.cache.PendingRun` message that left it out (:func:`skipped`), e.g.
            ``"not computed yet: student shapes/vanilla seed 0 (5e7b…) is not in artifacts/; compute it
            with `make students …`"``.
    """
    from paperlib.claims import chapter_title

    missing, how = missing_result(why)
    stage = missing.split(" ", 1)[0]
    what = MISSING_RESULTS.get(stage)
    first = f"{what} (`{missing}`)" if what else f"`{missing}`"
    lines = [f"# {chapter_title(stem)}", "", ":::{admonition} Results pending", ":class: warning",
             "This chapter's published results are not computed yet, so this book shows none of its numbers "
             "rather than numbers it does not have; its claims read *not yet run* on {doc}`/notebooks/00_results`. "
             "They wait on CPU time: the runs behind them take many hours on the project's two-core machine and are "
             "made in resumable background pieces, after the CDMs they depend on have finished training "
             "({doc}`/reproducibility` lists them). Meanwhile the chapter's code and tests run in CI, and the "
             f"chapter runs end to end in the smoke profile. The first result missing: {first}"
             + (f", computed by {how.strip()}." if how.strip() else "."),
             ":::", ""]
    for paragraph in _reproduces_paragraphs(stem):
        lines += [paragraph, ""]
    lines.append(f"The notebook: `notebooks/{stem}.ipynb`.")
    return "\n".join(lines) + "\n"


def stage(profile: str) -> Path:
    """Copy ``book/`` and ``_config.yml`` into the staging folder; every notebook must have been executed
    (or recorded as left out for want of data, see :func:`execute`: its chapter is dropped from the TOC).
    The staged ``_config.yml`` carries the :func:`substitutions` computed from the executed notebooks."""
    src = source_dir(profile)
    left_out = skipped(profile)
    missing = [nb.name for nb in notebooks()
               if not (src / "notebooks" / nb.name).exists() and nb.stem not in left_out]
    if missing:
        raise FileNotFoundError(f"not executed in profile {profile!r}: {missing}; run `python -m paperlib.book "
                                f"execute --profile {profile}` first")
    for item in (REPO_ROOT / "book").iterdir():
        dest = src / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)
    pending = {stem: why for stem, why in left_out.items() if why.startswith(PENDING)}
    dropped = [stem for stem in left_out if stem not in pending]
    for nb in notebooks():  # a page left from a build when this chapter was pending would shadow it
        if nb.stem not in pending:
            (src / "notebooks" / f"{nb.stem}.md").unlink(missing_ok=True)
    for stem, why in pending.items():
        (src / "notebooks" / f"{stem}.ipynb").unlink(missing_ok=True)
        (src / "notebooks" / f"{stem}.md").write_text(pending_page(stem, why))
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    chapters = [nb.stem for nb in notebooks() if not nb.stem.startswith(SUMMARY_PREFIX) and nb.stem not in dropped]
    config.setdefault("parse", {}).setdefault("myst_substitutions", {}).update(
        substitutions(profile, chapters, pending=list(pending)))
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000))
    toc = (REPO_ROOT / "book" / "_toc.yml").read_text()
    (src / "_toc.yml").write_text(without_chapters(toc, dropped) if dropped else toc)
    for stem, why in left_out.items():
        shown = "a results-pending page" if stem in pending else "not in this book"
        print(f"WARNING: chapter {stem} is {shown}: {why}", flush=True)
    return src


def build(profile: str, strict: bool = True) -> Path:
    """Render the executed notebooks and pages with Jupyter Book 1.x (``-n -W --keep-going`` when strict)."""
    src = stage(profile)
    out = BUILD_DIR.parent if profile == "full" else BUILD_DIR / profile
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(out)]
    if strict:
        cmd += ["-n", "-W", "--keep-going"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    print(f"book: {html_dir(profile) / 'index.html'}")
    return html_dir(profile)


def glued(path: Path) -> dict[str, str]:
    """The values a notebook glued (``name -> text/plain`` or ``text/markdown``) from its outputs."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            record = out.get("metadata", {}).get("scrapbook", {})
            if record.get("name"):
                prefix = record.get("mime_prefix", "")
                data = {k.removeprefix(prefix): v for k, v in out.get("data", {}).items()}
                values[record["name"]] = data.get("text/markdown", data.get("text/plain", ""))
    return values


_UNAVAILABLE: dict[str, str] = {}
"""Datasets the running notebook left out (name -> why), set by :func:`use_datasets`."""

_SELECTED: list[str] = []
"""The datasets the running notebook was asked for (its ``DATASETS``), set by :func:`use_datasets`."""

_PENDING_DATASETS: dict[str, str] = {}
"""Datasets whose published results the running notebook could not read (name -> the
:class:`paperlib.cache.PendingRun` message), set by :func:`per_dataset`."""


def _left_out() -> dict[str, str]:
    """Every dataset the running notebook left out: unavailable data, then pending results."""
    return {**_UNAVAILABLE, **_PENDING_DATASETS}


def _missing_note(ds: str, figure: bool) -> str:
    if ds in _UNAVAILABLE:
        return (f"*(Not built: {ds} data was not available when this chapter ran; see Reproducibility.)*"
                if figure else f"*n/a (no {ds} data)*")
    return (f"*(Not built yet: {ds}'s results for this chapter are not computed; see Reproducibility.)*"
            if figure else f"*pending ({ds} not computed yet)*")


def use_datasets(names: list[str]) -> list[str]:
    """The datasets of ``names`` whose data is here; the others are left out of this notebook, loudly.

    A chapter runs on every dataset it can: without CIFAR-10 (no ``$PAPERLIB_DATA``, no ``../shared``, no
    internet) it runs on shapes alone. From then on, every value glued under a name that contains a present
    dataset (``t_star_shapes``) also glues its twin for each missing one (``t_star_cifar10``) as a "not
    available" note, so the prose and figures that cite it still build.

    Raises:
        ValueError: if ``names`` is empty, holds an unknown dataset, or none of them is available.
    """
    from paperlib.data import DATASETS, dataset_unavailable

    if not names or any(n not in DATASETS for n in names):
        raise ValueError(f"datasets must be a non-empty list drawn from {DATASETS}, got {names!r}")
    _UNAVAILABLE.clear()
    _PENDING_DATASETS.clear()
    _SELECTED[:] = list(names)
    for name in names:
        why = dataset_unavailable(name)
        if why is not None:
            _UNAVAILABLE[name] = why
            log.warning("%s left out of this chapter: %s", name, why)
    present = [n for n in names if n not in _UNAVAILABLE]
    if not present:
        raise ValueError(f"none of the datasets {names} is available: {_UNAVAILABLE}")
    if _UNAVAILABLE:
        _show_markdown(f"**Note:** {', '.join(_UNAVAILABLE)} data was not available when this chapter ran, so "
                       f"it runs on {', '.join(present)} only, and every value it would give reads *n/a* "
                       "(see Reproducibility).")
    return present


def per_dataset(compute: Callable[[str], Any], names: Sequence[str]) -> dict[str, Any]:
    """``{dataset: compute(dataset)}`` for each of ``names`` whose published results exist; the others are
    left out of this notebook as *pending*, loudly.

    A chapter whose results wait on CPU time for one dataset (``make book`` reads published results only, and
    :func:`paperlib.cache.check_may_compute` raises :class:`~paperlib.cache.PendingRun` for a missing one)
    still shows the datasets that are done: ``compute`` loads a dataset's results before anything of that
    dataset is glued; a dataset it raises ``PendingRun`` for is noted on the page, and every value glued
    under a present dataset's name also glues its twin for the pending one as a "pending" note (as
    :func:`use_datasets` does for missing data). Outside read-only runs ``compute`` computes what is missing.

    Args:
        compute: Loads (or computes) one dataset's results.
        names: The chapter's datasets (after :func:`use_datasets`).

    Returns:
        The results of the datasets that are done, in the order of ``names``.

    Raises:
        PendingRun: the first dataset's, when no dataset is done (the whole chapter is then pending).
    """
    from paperlib.cache import PendingRun
    from paperlib.data import DATASET_NAMES

    out, first = {}, None
    for name in names:
        try:
            out[name] = compute(name)
        except PendingRun as exc:
            _PENDING_DATASETS[name] = str(exc)
            first = first or exc
            log.warning("%s left out of this chapter: %s", name, exc)
    if not out:
        raise first
    pending = [n for n in names if n in _PENDING_DATASETS]
    if pending:
        words = " and ".join(DATASET_NAMES.get(n, n) for n in pending)
        shown = ", ".join(DATASET_NAMES.get(n, n) for n in out)
        _show_markdown(f"**Note:** {words}'s results for this chapter are not computed yet (they wait on CPU "
                       f"time; the first one missing: `{missing_result(str(first))[0]}`), so this page shows "
                       f"{shown} only, and "
                       "every value it would give reads *pending* (see Reproducibility).")
    return out


def pending_datasets() -> list[str]:
    """The datasets :func:`per_dataset` left out of the running notebook as pending."""
    return list(_PENDING_DATASETS)


def _show_markdown(text: str) -> None:
    """Display ``text`` as Markdown in a notebook (a note for the reader); log it elsewhere."""
    from IPython import get_ipython

    if get_ipython() is None:
        log.info("%s", text)
        return
    from IPython.display import Markdown, display

    display(Markdown(text))


def missing_twins(name: str) -> list[tuple[str, str]]:
    """``(twin name, missing dataset)`` for each dataset :func:`use_datasets` left out, if ``name`` names a
    present dataset as one of its ``_``-separated parts (``nmi_shapes_clarid`` -> ``nmi_cifar10_clarid``)."""
    from paperlib.data import DATASETS

    parts = name.split("_")
    left_out = _left_out()
    present = [p for p in parts if p in DATASETS and p not in left_out]
    if not present:
        return []
    i = parts.index(present[0])
    return [("_".join(parts[:i] + [ds] + parts[i + 1:]), ds) for ds in left_out]


def _glue_missing_twins(name: str, figure: bool) -> None:
    from IPython.display import Markdown
    from myst_nb import glue

    for twin, ds in missing_twins(name):
        glue(twin, Markdown(_missing_note(ds, figure)), display=False)


def glue_not_available(*names: str, figure: bool = False) -> None:
    """Glue the "not available" note under each of ``names``: values that only the datasets
    :func:`use_datasets` or :func:`per_dataset` left out would give (a CIFAR-10-only table), so the prose
    citing them still builds; also for a run asked for fewer of the book's datasets
    (``--set 'DATASETS=[shapes]'``).

    Raises:
        ValueError: if no dataset was left out (then the values must be computed, not noted).
    """
    from IPython.display import Markdown
    from myst_nb import glue

    from paperlib.data import TRAINED_DATASETS

    left_out = _left_out()
    not_run = [d for d in TRAINED_DATASETS if _SELECTED and d not in _SELECTED and d not in left_out]
    if not left_out and not not_run:
        raise ValueError(f"every dataset is available: compute {names} instead of noting them")
    if left_out:
        text = " ".join(_missing_note(ds, figure) for ds in left_out)
    else:
        missing = ", ".join(not_run)
        text = f"*(Not built: this run left out {missing}.)*" if figure else f"*n/a ({missing} not run)*"
    for name in names:
        glue(name, Markdown(text), display=False)


def glue_md(name: str, text: str) -> None:
    """Glue ``text`` as Markdown for ``{glue:md}`name``` in prose (no quotes, unlike a glued ``str``)."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(name, Markdown(text), display=False)
    _glue_missing_twins(name, figure=False)


def glue_fig(name: str, fig) -> None:
    """Glue a matplotlib figure for ``{glue:figure}`` and close it (so it is not also shown inline)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)
    _glue_missing_twins(name, figure=True)


def fmt_pm(values, digits: int = 3) -> str:
    """``mean ± std`` (sample std, ``n-1``) of a sequence of numbers."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {std:.{digits}f}"


PROVENANCE: dict[str, str] = {"S": "stated by the paper", "R": "reconstructed from its text",
                              "O": "ours: lost or never specified", "L": "lost, not recovered"}
"""Tags of the spec's evidence legend, used in every chapter's "What we chose" table."""


def choices_frame(rows: Sequence[Mapping[str, object] | Sequence[object]]):
    """The rows of a chapter's "What we chose" table: one per choice, with its value, its provenance tag
    (:data:`PROVENANCE`; ``"S / O"`` for a mix) and a note.

    Args:
        rows: ``(choice, value, tag, note)`` tuples, or mappings with keys ``name``, ``value``, ``tag``,
            ``note`` (as :func:`paperlib.toy.provenance_table` returns).

    Returns:
        A DataFrame indexed by ``choice`` with columns ``value``, ``tag``, ``note`` (values as text).

    Raises:
        ValueError: for a row of the wrong shape, an empty choice, or an unknown tag.
    """
    import pandas as pd

    out = []
    for row in rows:
        if isinstance(row, Mapping):
            row = (row.get("name"), row.get("value"), row.get("tag"), row.get("note", ""))
        if len(row) != 4 or not row[0]:
            raise ValueError(f"a choice is (choice, value, tag, note) with a name, got {row!r}")
        name, value, tag, note = row
        parts = [p.strip() for p in str(tag).split("/")]
        if not all(p in PROVENANCE for p in parts):
            raise ValueError(f"tag of {name!r} must be one of {sorted(PROVENANCE)} (or several joined by '/'), "
                             f"got {tag!r}")
        out.append({"choice": str(name), "value": value if isinstance(value, str) else repr(value),
                    "tag": " / ".join(parts), "note": str(note)})
    return pd.DataFrame(out, columns=["choice", "value", "tag", "note"]).set_index("choice")


def choices_table(rows: Sequence[Mapping[str, object] | Sequence[object]]):
    """The "What we chose" table a chapter ends with, ready to display: :func:`choices_frame` as a
    left-aligned table without its index, and no cell cut short (a DataFrame's display would cut long
    values at 50 characters)."""
    left = [("text-align", "left"), ("vertical-align", "top")]
    return (choices_frame(rows).reset_index().style.hide(axis="index")
            .set_table_styles([{"selector": "th, td", "props": left}]))


# ----------------------------------------------------------------------------------------------------------
# What a reader must not see: machine paths, log lines, duplicated tables, the injected-parameters cell
# ----------------------------------------------------------------------------------------------------------

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/(?:work|home|root|tmp|usr|opt|var|private|Users)/[\w.\-/]+"
                           r"|[A-Z]:\\[\w.\-\\]+)")
"""An absolute path of the machine that built the book (POSIX roots or a Windows drive)."""

LOG_MARKERS: tuple[str, ...] = (
    "found cached", "computed ", "saved to", "resuming ", "WARNING", "Warning:", "TqdmWarning", "UserWarning",
    "DeprecationWarning", "FutureWarning", "INFO:", "DEBUG:", "[IPKernelApp]", "it/s]", "s/it]", "Traceback",
)
"""Strings of library chatter (logging, warnings, progress bars) that must not reach a rendered output."""


def check_html(html: str, page: str = "page", machine_paths: Sequence[str] = ()) -> list[str]:
    """Problems a reader would see on one rendered page of the book.

    Looks at cell outputs and glued outputs only (code is allowed to name files): absolute machine paths,
    log markers (:data:`LOG_MARKERS`), anything written to stderr (warnings and progress bars belong in
    the log, see :func:`book_environment`), a table or an image shown twice where one copy is a cell's own
    output (the cell displayed what it also glued; two glued figures may hold equal numbers), and a
    visible papermill ``injected-parameters`` cell.

    Args:
        html: The page's HTML.
        page: Its name, used in the messages.
        machine_paths: Further folders that must not appear (e.g. the checkout and the home folder).

    Returns:
        One message per problem (empty: clean).
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    problems = []
    for cell in soup.select("div.cell"):
        classes = cell.get("class", [])
        if "tag_injected-parameters" in classes and not {"tag_remove-cell", "tag_hide-cell"} & set(classes):
            problems.append(f"{page}: the injected-parameters cell is shown (tag it hide-cell)")
    outputs = soup.select("div.cell_output, div.output")
    output_ids = {id(o) for o in outputs}
    outermost = [o for o in outputs if not any(id(p) in output_ids for p in o.parents)]
    for out in outermost:
        text = out.get_text(" ", strip=True)
        found = [m.group(0) for m in ABSOLUTE_PATH.finditer(text)] + [p for p in machine_paths if p in text]
        problems += [f"{page}: absolute path in an output: {p!r}" for p in dict.fromkeys(found)]
        for marker in LOG_MARKERS:
            if marker in text:
                i = text.index(marker)
                problems.append(f"{page}: log marker {marker!r} in an output: {text[max(0, i - 40): i + 60]!r}")
    for err in soup.select("div.output.stderr"):
        problems.append(f"{page}: stderr shown in an output (log it instead): {err.get_text(' ', strip=True)[:80]!r}")

    def shown_twice(kind: str, items: list[tuple[str, bool]]) -> list[str]:
        copies: dict[str, list[bool]] = {}
        for key, in_figure in items:
            copies.setdefault(key, []).append(in_figure)
        return [f"{page}: {kind} is shown {len(c)} times (display it or glue it, not both): {key[:80]!r}"
                for key, c in copies.items() if len(c) > 1 and not all(c)]

    def in_output(tag) -> bool:
        return any(id(p) in output_ids for p in tag.parents)

    tables = [(" ".join(t.get_text(" ", strip=True).split()), t.find_parent("figure") is not None)
              for t in soup.find_all("table") if in_output(t)]
    problems += shown_twice("a table", [(k, f) for k, f in tables if len(k) > 20])
    images = [(img.get("src", ""), img.find_parent("figure") is not None)
              for img in soup.find_all("img") if in_output(img) or img.find_parent("figure") is not None]
    problems += shown_twice("a figure", [(k, f) for k, f in images if k])
    return problems


def front_page_problems(html_root: Path, front: str = "index.html") -> list[str]:
    """Chapter pages of a built book that its front page does not link (in its text, not only its sidebar).

    Args:
        html_root: The built book (``_build/.../html``).
        front: The front page's file name; a book without one has nothing to check.

    Returns:
        One message per chapter page (``notebooks/*.html``) that no link in the front page's article reaches.
    """
    from bs4 import BeautifulSoup

    path = html_root / front
    if not path.exists():
        return []
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    article = soup.select_one("article") or soup
    linked = {a["href"].split("#")[0].removeprefix("./") for a in article.find_all("a", href=True)}
    chapters = sorted(p.relative_to(html_root).as_posix() for p in (html_root / "notebooks").glob("*.html"))
    return [f"{front}: the front page does not link the chapter {c}" for c in chapters if c not in linked]


def check_book(html_root: Path) -> list[str]:
    """:func:`check_html` over every chapter page of a built book (``_build/.../html``), and
    :func:`front_page_problems`: the front page links every chapter."""
    pages = sorted(html_root.glob("*.html")) + sorted((html_root / "notebooks").glob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no HTML pages under {html_root}; build the book first")
    problems = front_page_problems(html_root)
    for page in pages:
        if page.name in ("search.html", "genindex.html"):
            continue
        problems += check_html(page.read_text(encoding="utf-8"), str(page.relative_to(html_root)),
                               machine_paths=(str(REPO_ROOT), str(Path.home())))
    return problems


def values_report(profile: str, stems: Sequence[str] | None = None) -> str:
    """Every value the executed notebooks of ``profile`` glued, as Markdown: one section per chapter, scalars
    and sentences as a list, tables as text blocks (figures left out). For a closing note or a review that
    quotes the book's numbers as the book computed them, never retyped.

    Args:
        profile: A profile whose notebooks were executed.
        stems: Chapters to report (default: every executed one).
    """
    folder = source_dir(profile) / "notebooks"
    paths = sorted(folder.glob(NOTEBOOK_GLOB)) if folder.is_dir() else []
    chosen = [p for p in paths if stems is None or p.stem in stems]
    if not chosen:
        raise FileNotFoundError(f"no executed notebook {list(stems or [])} in {folder}: run `python -m paperlib.book "
                                f"execute --profile {profile}` first")
    lines = []
    for path in chosen:
        lines += [f"## {path.stem}", ""]
        tables = []
        for name, text in glued(path).items():
            text = text.strip("\n").rstrip()
            if text.lstrip().startswith(("<Figure", "<matplotlib")):
                continue
            if "\n" in text:
                tables += ["", f"**{name}**", "", "```", text, "```"]
            else:
                lines.append(f"- `{name}`: {text}")
        lines += tables + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paperlib.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["execute", "build", "all", "check", "values"],
                        help="values: print what the executed notebooks glued, as Markdown")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--only", nargs="*", help="notebook stems to execute (default: all)")
    parser.add_argument("--strict", action="store_true", help="-n -W --keep-going: any warning fails")
    parser.add_argument("--log-output", action="store_true", help="stream notebook output")
    parser.add_argument("--read-only", action="store_true",
                        help="read published results, never compute them (a chapter missing some is left out)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="chapters executed at once (with --read-only only; make book uses the CPU count)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="parameters beyond the profile's, VALUE in YAML, for every notebook that declares "
                             "NAME, e.g. --set 'DATASETS=[shapes]'")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"--set takes NAME=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    if args.command in ("execute", "all"):
        execute(args.profile, args.only, args.log_output, args.read_only, args.jobs, overrides)
    if args.command in ("build", "all"):
        build(args.profile, args.strict)
    if args.command == "values":
        print(values_report(args.profile, args.only))
    if args.command == "check":
        problems = check_book(html_dir(args.profile))
        for line in problems:
            print(line)
        if problems:
            raise SystemExit(f"{len(problems)} problem(s) a reader would see in the {args.profile} book")
        print(f"{html_dir(args.profile).relative_to(REPO_ROOT)}: no paths, log lines or duplicated tables")


if __name__ == "__main__":
    main()
