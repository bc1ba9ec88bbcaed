"""Execute the notebooks headlessly (papermill) and build the Jupyter Book.

``python -m paperlib.book execute --profile smoke`` runs every ``notebooks/NN_*.ipynb`` with the
parameters of ``profiles/<profile>.yaml`` into ``_build/<profile>/src/notebooks/`` (the committed
notebooks stay output-free); ``build`` stages ``book/`` and ``_config.yml`` beside them and renders HTML
(full profile: ``_build/html``; others: ``_build/<profile>/_build/html``). Also the glue helpers the
notebooks use to put numbers into prose.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from paperlib.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = REPO_ROOT / "profiles"
BUILD_DIR = REPO_ROOT / "_build"


def notebooks() -> list[Path]:
    """The book's notebooks in reading order (``notebooks/NN_slug.ipynb``, ``NNb_slug`` after ``NN``)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]*_*.ipynb"))


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


def execute_notebook(path: Path, profile: str, log_output: bool = False) -> tuple[Path, float]:
    """Execute one notebook with papermill; returns the executed copy and its wall time in seconds."""
    import papermill as pm

    out = source_dir(profile) / "notebooks" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pm.execute_notebook(
        str(path), str(out), parameters=profile_parameters(profile, path.stem), kernel_name="python3",
        cwd=str(NOTEBOOK_DIR), log_output=log_output, progress_bar=False,
    )
    hide_injected_parameters(out)
    return out, time.perf_counter() - start


def hide_injected_parameters(path: Path) -> None:
    """Collapse papermill's ``injected-parameters`` cell in the rendered page (tag ``hide-cell``)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    nbformat.write(nb, path)


DATA_UNAVAILABLE = "CIFAR-10 not found"
"""Start of the error :func:`paperlib.data.load_cifar10` raises when no copy of the data can be had."""


def _skipped_path(profile: str) -> Path:
    return BUILD_DIR / profile / "skipped.json"


def skipped(profile: str) -> dict[str, str]:
    """Notebooks the last :func:`execute` left out of ``profile`` because their data was unavailable."""
    path = _skipped_path(profile)
    return json.loads(path.read_text()) if path.exists() else {}


def execute(profile: str, names: list[str] | None = None, log_output: bool = False) -> dict[str, float]:
    """Execute the notebooks (all, or those whose stem is in ``names``); records their wall times.

    A notebook that fails only because CIFAR-10 is unavailable (no ``$PAPERLIB_DATA``, no ``../shared``, no
    internet) is left out with a warning and recorded, so the book still builds from the others (the toy
    chapter needs no data); any other error stops the run.
    """
    from papermill.exceptions import PapermillExecutionError

    timings_path = BUILD_DIR / profile / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    left_out = {k: v for k, v in skipped(profile).items() if names and k not in names}
    for nb in notebooks():
        if names and nb.stem not in names:
            continue
        print(f"[{profile}] executing {nb.name} ...", flush=True)
        try:
            _, seconds = execute_notebook(nb, profile, log_output)
        except PapermillExecutionError as exc:
            if DATA_UNAVAILABLE not in str(exc.evalue):
                raise
            (source_dir(profile) / "notebooks" / nb.name).unlink(missing_ok=True)
            left_out[nb.stem] = str(exc.evalue).split(";")[0]
            print(f"[{profile}] WARNING: {nb.name} left out of the book: {exc.evalue}", flush=True)
            continue
        timings[nb.stem] = round(seconds, 1)
        print(f"[{profile}] {nb.name}: {seconds:.1f} s", flush=True)
    timings_path.parent.mkdir(parents=True, exist_ok=True)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    _skipped_path(profile).write_text(json.dumps(left_out, indent=2) + "\n")
    return timings


def without_chapters(toc: str, stems: list[str]) -> str:
    """``_toc.yml`` text with the ``- file: notebooks/<stem>`` entries of ``stems`` removed."""
    drop = {f"notebooks/{s}" for s in stems}
    return "".join(line for line in toc.splitlines(keepends=True)
                   if line.strip().removeprefix("- file:").strip() not in drop)


def stage(profile: str) -> Path:
    """Copy ``book/`` and ``_config.yml`` into the staging folder; every notebook must have been executed
    (or recorded as left out for want of data, see :func:`execute`: its chapter is dropped from the TOC)."""
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
    shutil.copy2(REPO_ROOT / "_config.yml", src / "_config.yml")
    if left_out:
        (src / "_toc.yml").write_text(without_chapters((REPO_ROOT / "book" / "_toc.yml").read_text(), list(left_out)))
        for stem, why in left_out.items():
            print(f"WARNING: chapter {stem} is not in this book: {why}", flush=True)
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
    for name in names:
        why = dataset_unavailable(name)
        if why is not None:
            _UNAVAILABLE[name] = why
            print(f"WARNING: {name} left out of this chapter: {why}", file=sys.stderr, flush=True)
    present = [n for n in names if n not in _UNAVAILABLE]
    if not present:
        raise ValueError(f"none of the datasets {names} is available: {_UNAVAILABLE}")
    return present


def missing_twins(name: str) -> list[tuple[str, str]]:
    """``(twin name, missing dataset)`` for each dataset :func:`use_datasets` left out, if ``name`` names a
    present dataset as one of its ``_``-separated parts (``nmi_shapes_clarid`` -> ``nmi_cifar10_clarid``)."""
    from paperlib.data import DATASETS

    parts = name.split("_")
    present = [p for p in parts if p in DATASETS and p not in _UNAVAILABLE]
    if not present:
        return []
    i = parts.index(present[0])
    return [("_".join(parts[:i] + [ds] + parts[i + 1:]), ds) for ds in _UNAVAILABLE]


def _glue_missing_twins(name: str, figure: bool) -> None:
    from IPython.display import Markdown
    from myst_nb import glue

    for twin, ds in missing_twins(name):
        text = (f"*(Not built: {ds} data was not available when this chapter ran; see Reproducibility.)*"
                if figure else f"*n/a (no {ds} data)*")
        glue(twin, Markdown(text), display=False)


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

    Looks at cell outputs only (code is allowed to name files): absolute machine paths, log markers
    (:data:`LOG_MARKERS`), a table whose rendered text appears twice on the page, and a visible
    papermill ``injected-parameters`` cell.

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
    outputs = soup.select("div.cell_output") + soup.select("div.output")
    seen_text: set[int] = set()
    for out in outputs:
        if any(id(p) in seen_text for p in out.parents):
            continue
        seen_text.add(id(out))
        text = out.get_text(" ", strip=True)
        found = [m.group(0) for m in ABSOLUTE_PATH.finditer(text)] + [p for p in machine_paths if p in text]
        problems += [f"{page}: absolute path in an output: {p!r}" for p in dict.fromkeys(found)]
        for marker in LOG_MARKERS:
            if marker in text:
                i = text.index(marker)
                problems.append(f"{page}: log marker {marker!r} in an output: {text[max(0, i - 40): i + 60]!r}")
    tables: dict[str, int] = {}
    for table in soup.find_all("table"):
        key = " ".join(table.get_text(" ", strip=True).split())
        if len(key) > 20:
            tables[key] = tables.get(key, 0) + 1
    problems += [f"{page}: a table is shown {n} times: {key[:80]!r}" for key, n in tables.items() if n > 1]
    return problems


def check_book(html_root: Path) -> list[str]:
    """:func:`check_html` over every chapter page of a built book (``_build/.../html``)."""
    pages = sorted(html_root.glob("*.html")) + sorted((html_root / "notebooks").glob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no HTML pages under {html_root}; build the book first")
    problems = []
    for page in pages:
        if page.name in ("search.html", "genindex.html"):
            continue
        problems += check_html(page.read_text(encoding="utf-8"), str(page.relative_to(html_root)),
                               machine_paths=(str(REPO_ROOT), str(Path.home())))
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paperlib.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["execute", "build", "all", "check"])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--only", nargs="*", help="notebook stems to execute (default: all)")
    parser.add_argument("--strict", action="store_true", help="-n -W --keep-going: any warning fails")
    parser.add_argument("--log-output", action="store_true", help="stream notebook output")
    args = parser.parse_args(argv)
    if args.command in ("execute", "all"):
        execute(args.profile, args.only, args.log_output)
    if args.command in ("build", "all"):
        build(args.profile, args.strict)
    if args.command == "check":
        problems = check_book(html_dir(args.profile))
        for line in problems:
            print(line)
        if problems:
            raise SystemExit(f"{len(problems)} problem(s) a reader would see in the {args.profile} book")
        print(f"{html_dir(args.profile).relative_to(REPO_ROOT)}: no paths, log lines or duplicated tables")


if __name__ == "__main__":
    main()
