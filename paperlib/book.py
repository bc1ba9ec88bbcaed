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
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from paperlib.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = REPO_ROOT / "profiles"
BUILD_DIR = REPO_ROOT / "_build"


def notebooks() -> list[Path]:
    """The book's notebooks in reading order (``notebooks/NN_slug.ipynb``)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


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
    return out, time.perf_counter() - start


def execute(profile: str, names: list[str] | None = None, log_output: bool = False) -> dict[str, float]:
    """Execute the notebooks (all, or those whose stem is in ``names``); records their wall times."""
    timings_path = BUILD_DIR / profile / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for nb in notebooks():
        if names and nb.stem not in names:
            continue
        print(f"[{profile}] executing {nb.name} ...", flush=True)
        _, seconds = execute_notebook(nb, profile, log_output)
        timings[nb.stem] = round(seconds, 1)
        print(f"[{profile}] {nb.name}: {seconds:.1f} s", flush=True)
    timings_path.parent.mkdir(parents=True, exist_ok=True)
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    return timings


def stage(profile: str) -> Path:
    """Copy ``book/`` and ``_config.yml`` into the staging folder; every notebook must have been executed."""
    src = source_dir(profile)
    missing = [nb.name for nb in notebooks() if not (src / "notebooks" / nb.name).exists()]
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


def glue_md(name: str, text: str) -> None:
    """Glue ``text`` as Markdown for ``{glue:md}`name``` in prose (no quotes, unlike a glued ``str``)."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(name, Markdown(text), display=False)


def glue_fig(name: str, fig) -> None:
    """Glue a matplotlib figure for ``{glue:figure}`` and close it (so it is not also shown inline)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


def fmt_pm(values, digits: int = 3) -> str:
    """``mean ± std`` (sample std, ``n-1``) of a sequence of numbers."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {std:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paperlib.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["execute", "build", "all"])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--only", nargs="*", help="notebook stems to execute (default: all)")
    parser.add_argument("--strict", action="store_true", help="-n -W --keep-going: any warning fails")
    parser.add_argument("--log-output", action="store_true", help="stream notebook output")
    args = parser.parse_args(argv)
    if args.command in ("execute", "all"):
        execute(args.profile, args.only, args.log_output)
    if args.command in ("build", "all"):
        build(args.profile, args.strict)


if __name__ == "__main__":
    main()
