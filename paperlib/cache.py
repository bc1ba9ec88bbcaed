"""Artifacts keyed by their inputs: ``load_or_compute(stage, config, fn)``.

An artifact is a safetensors file of tensors plus a JSON manifest beside it (stage, config, key, sha256,
wall time, versions). The key hashes the config and a per-stage version, so changing either recomputes.
Committed artifacts live in ``artifacts/<stage>/`` (read first); scratch ones in the cache directory.
Files are written atomically: a crash never leaves a half-written artifact under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from paperlib import __version__
from paperlib.paths import ARTIFACTS_DIR, cache_dir


def config_key(config: dict, version: int = 1) -> str:
    """A short stable hash of a JSON-able config and a stage version."""
    blob = json.dumps({"config": config, "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _update(h, t: Tensor, name: str = "") -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_fingerprint(tensor: Tensor) -> str:
    """A short hash of a tensor's shape, dtype and values (e.g. the images a cached result was computed on)."""
    h = hashlib.sha256()
    _update(h, tensor)
    return h.hexdigest()[:16]


def module_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's state (parameter and buffer names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        _update(h, t, name)
    return h.hexdigest()[:16]


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_artifact(path: Path, tensors: dict[str, Tensor], manifest: dict) -> dict:
    """Save tensors (safetensors) and a manifest ``<path>.json`` carrying the file's sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, lambda p: save_file(tensors, str(p)))
    manifest = {**manifest, "file": path.name, "sha256": sha256_file(path)}
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(path.with_suffix(".json"), lambda p: p.write_text(text + "\n"))
    return manifest


def load_artifact(path: Path, verify: bool = True) -> tuple[dict[str, Tensor], dict]:
    """Load an artifact and its manifest; ``verify`` checks the sha256."""
    manifest = json.loads(path.with_suffix(".json").read_text())
    if verify and sha256_file(path) != manifest["sha256"]:
        raise RuntimeError(f"{path}: sha256 does not match its manifest (corrupt or edited artifact)")
    return load_file(str(path)), manifest


def artifact_path(stage: str, config: dict, version: int = 1, publish: bool = False) -> Path:
    """Where the artifact of ``(stage, config, version)`` is (or would be) stored."""
    root = ARTIFACTS_DIR if publish else cache_dir()
    return root / stage / f"{config_key(config, version)}.safetensors"


def load_or_compute(
    stage: str,
    config: dict,
    compute: Callable[[], dict[str, Tensor]],
    version: int = 1,
    publish: bool = False,
    verbose: bool = True,
) -> tuple[dict[str, Tensor], dict]:
    """Return the cached artifact of ``(stage, config, version)``, or compute, save and return it.

    Looks in the committed ``artifacts/`` first, then in the scratch cache.

    Args:
        stage: Name of the pipeline stage (a folder name, e.g. ``"toy_model"``).
        config: JSON-able inputs that determine the result.
        compute: Produces the tensors when nothing is cached.
        version: Bump when the stage's code changes its result.
        publish: Save into the committed ``artifacts/`` (the published book) instead of the cache.
        verbose: Print where the artifact came from.

    Returns:
        ``(tensors, manifest)``.
    """
    for pub in (True, False):
        path = artifact_path(stage, config, version, pub)
        if path.exists() and path.with_suffix(".json").exists():
            if verbose:
                print(f"found cached {stage} ({path.relative_to(path.parents[1])}), loading")
            return load_artifact(path)
    start = time.perf_counter()
    tensors = compute()
    manifest = {
        "stage": stage,
        "version": version,
        "key": config_key(config, version),
        "config": config,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paperlib": __version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    path = artifact_path(stage, config, version, publish)
    manifest = save_artifact(path, tensors, manifest)
    if verbose:
        print(f"computed {stage} in {manifest['wall_time_s']} s, saved to {path}")
    return tensors, manifest
