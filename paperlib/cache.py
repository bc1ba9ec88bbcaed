"""Artifacts keyed by their inputs: ``load_or_compute(stage, config, fn)``.

An artifact is one safetensors file that carries its own manifest (stage, config, key, provenance,
wall time, versions and a hash of its tensors) in the safetensors header, plus a JSON copy of that
manifest beside it for people (``<name>.json``, with the file's sha256). Writing the tensor file is the
single commit of a save, so a kill at any instant leaves the previous artifact or the new one, never
neither; the JSON copy is then repaired from the header on the next load. Writers of one directory are
serialised by an advisory lock on it (``fcntl.flock``), files are fsynced before they are renamed into
place, and a writer removes the temporary files a killed writer left behind.

Every load checks the tensors against the manifest's hash, the manifest against its file name and key,
the JSON copy against the header (an edited JSON is refused, naming the fields), and optionally
provenance fields such as the fingerprint of the data a result was made from (:class:`ProvenanceError`).
Artifacts of format 1 (manifest only in the JSON, file sha256 checked) still load.

The key hashes the config and a per-stage version, so changing either recomputes. Committed artifacts
live in ``artifacts/<stage>/`` (read first); scratch ones in the cache directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from paperlib import __version__
from paperlib.paths import ARTIFACTS_DIR, cache_dir
from paperlib.progress import tqdm

log = logging.getLogger(__name__)

FORMAT = 2
"""Artifact format written by :func:`save_artifact` (1: manifest only in the JSON beside the file)."""

MANIFEST_KEY = "paperlib.manifest"
"""safetensors header metadata entry holding the manifest (JSON text)."""

_KEY_RE = re.compile(r"[0-9a-f]{16}")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ArtifactError(RuntimeError):
    """An artifact on disk cannot be trusted: unreadable, corrupt, edited or misnamed."""


class ProvenanceError(ValueError):
    """An artifact was made from other inputs (data, config) than the ones it is being used with."""


READ_ONLY_ENV = "PAPERLIB_READ_ONLY"
"""When ``"1"`` (``python -m paperlib.book execute --read-only``, used by ``make book``), results meant for
``artifacts/`` are read, never computed: a missing one raises :class:`PendingRun`."""

PENDING = "not computed yet"
"""Start of a :class:`PendingRun`'s message (the book runner leaves such a chapter out, with a note)."""


class PendingRun(RuntimeError):
    """A published result is missing in a read-only run (see :data:`READ_ONLY_ENV`)."""


def check_may_compute(what: str, how: str = "") -> None:
    """Raise :class:`PendingRun` if published results may only be read here (``$PAPERLIB_READ_ONLY=1``).

    Args:
        what: The missing result (e.g. ``"student cifar10/cadistill seed 0"``).
        how: The command that computes it.
    """
    if os.environ.get(READ_ONLY_ENV) == "1":
        raise PendingRun(f"{PENDING}: {what} is not in artifacts/" + (f"; compute it with `{how}`" if how else ""))


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


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 of a dict of tensors (names, shapes, dtypes and values, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        _update(h, tensors[name], name)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Durable, serialised writes
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dir_lock(directory: Path, blocking: bool = True) -> Iterator[bool]:
    """Exclusive advisory lock on a directory (``flock`` on its descriptor; no lock file is created).

    Yields:
        Whether the lock is held (always ``True`` when ``blocking``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def remove_stale_tmp(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` a killed writer left (call with the directory locked).

    Covers this module's ``.<name>.tmp`` and format 1's ``.<name>.<random>.tmp``.
    """
    stale = [p for p in path.parent.glob(f".{path.name}.*tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_durable(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)``, fsync it, rename it onto ``path``, fsync the directory (caller holds the lock)."""
    tmp = _tmp_of(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers create 0600 files
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file durably and atomically, serialised with other writers of its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with dir_lock(path.parent):
        remove_stale_tmp(path)
        write_durable(path, lambda p: p.write_text(text))


# ----------------------------------------------------------------------------------------------------------
# Save and load
# ----------------------------------------------------------------------------------------------------------


def _json_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"


PUBLISH_MAX_BYTES = 19 * 2**20
"""Published artifacts larger than this are split into shards (every committed file stays under 20 MiB)."""

PART_KEY = "paperlib.part"
"""safetensors header metadata entry of a shard (JSON: the head's file name, index, tensors' hash)."""


def _nbytes(tensors: Mapping[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


_HEADER_BYTES = 65536
"""Headroom for a shard's header (the head file's manifest included) besides :data:`_HEADER_PER_TENSOR`."""

_HEADER_PER_TENSOR = 512
"""Headroom per tensor of a shard: its header entry (name, dtype, shape, offsets) and its name in a manifest."""

_SHARD_RE = re.compile(r"\.part\d+-[0-9a-f]{12}\.safetensors$")


def _split_rows(tensors: dict[str, Tensor], max_bytes: int) -> tuple[list[dict[str, Tensor]], list[str], int]:
    """Split the tensors that share the most common first dimension into row shards of at most ``max_bytes``
    (with the other tensors in shard 0). Returns ``(shards, split names, rows)``."""
    dims = [t.shape[0] for t in tensors.values() if t.ndim >= 1]
    rows = max(set(dims), key=lambda d: sum(t.numel() * t.element_size() for t in tensors.values()
                                            if t.ndim >= 1 and t.shape[0] == d))
    split = sorted(k for k, t in tensors.items() if t.ndim >= 1 and t.shape[0] == rows)
    fixed = _nbytes({k: t for k, t in tensors.items() if k not in split})
    per_row = _nbytes({k: tensors[k] for k in split}) / rows
    budget = max_bytes - fixed - _HEADER_BYTES - _HEADER_PER_TENSOR * len(tensors)
    if budget < per_row:
        raise ValueError(f"cannot shard below {max_bytes} bytes: one row is {per_row:.0f} bytes and the unsplit "
                         f"tensors take {fixed}")
    n = max(1, math.ceil(rows * per_row / budget))
    bounds = torch.linspace(0, rows, n + 1).round().long().tolist()
    shards = [{k: tensors[k][a:b].contiguous() for k in split} for a, b in zip(bounds[:-1], bounds[1:])]
    shards[0].update({k: t for k, t in tensors.items() if k not in split})
    return shards, split, rows


def _pack_tensors(tensors: dict[str, Tensor], max_bytes: int) -> list[dict[str, Tensor]]:
    """Whole tensors packed, in name order, into shards of at most ``max_bytes`` (the fallback of
    :func:`_split_rows` for tensors that share no large first dimension, e.g. a training state)."""
    budget = max_bytes - _HEADER_BYTES
    shards: list[dict[str, Tensor]] = [{}]
    for name in sorted(tensors):
        size = _nbytes({name: tensors[name]}) + _HEADER_PER_TENSOR
        if size > budget:
            raise ValueError(f"cannot shard below {max_bytes} bytes: the tensor {name!r} alone is {size} bytes")
        if shards[-1] and _nbytes(shards[-1]) + _HEADER_PER_TENSOR * len(shards[-1]) + size > budget:
            shards.append({})
        shards[-1][name] = tensors[name]
    return shards


def _part_name(path: Path, index: int, part: Mapping[str, Tensor]) -> str:
    return f"{path.name.removesuffix('.safetensors')}.part{index}-{tensors_sha256(part)[:12]}.safetensors"


def _parts_of(path: Path) -> list[Path]:
    """The shard files of ``path``: ``<key>.part*`` of ``<key>.safetensors``, ``<key>.resume.part*`` of
    ``<key>.resume.safetensors`` (an artifact and its resume checkpoint never touch each other's shards)."""
    return sorted(path.parent.glob(f"{path.name.removesuffix('.safetensors')}.part*-*.safetensors"))


def save_artifact(path: Path, tensors: dict[str, Tensor], manifest: dict, max_bytes: int | None = None) -> dict:
    """Save tensors with their manifest in the safetensors header, and a JSON copy ``<path>.json``.

    The tensor file's rename is the commit; the JSON copy follows (repaired on load if a kill fell
    between the two). Other writers of the directory wait for the lock.

    With ``max_bytes``, tensors larger than that are split along their shared first dimension into shards:
    ``<path>`` holds the first rows, the unsplit tensors and the manifest (which lists the other shards),
    ``<stem>.part<i>-<hash>.safetensors`` the rest; when the unsplit tensors alone would not fit (a training
    state: many tensors of different shapes), whole tensors are packed into the shards instead. Shards are
    written before ``<path>`` and named by their content, so the rename of ``<path>`` is still the single
    commit: a kill leaves the previous artifact and its shards intact. Shards that the new manifest does not
    list are deleted after the commit.

    Args:
        path: ``<dir>/<name>.safetensors``.
        tensors: Name -> tensor (moved to CPU, made contiguous).
        manifest: JSON-able fields; ``file``, ``format``, ``tensors_sha256`` (over all tensors, unsplit) and,
            when sharded, ``shards`` are added.
        max_bytes: Largest file to write; ``None``: one file whatever its size.

    Returns:
        The manifest as written to the JSON copy (with the file's ``sha256``).
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    full = {**manifest, "file": path.name, "format": FORMAT, "tensors_sha256": tensors_sha256(tensors)}
    shards = [tensors]
    if max_bytes is not None and _nbytes(tensors) > max_bytes:
        try:
            shards, split, rows = _split_rows(tensors, max_bytes)
            full["shards"] = {"rows": rows, "split": split}
        except ValueError:
            shards = _pack_tensors(tensors, max_bytes)
            full["shards"] = {"tensors": [sorted(p) for p in shards[1:]]}
        full["shards"]["files"] = [_part_name(path, i, p) for i, p in enumerate(shards) if i > 0]
    full = json.loads(json.dumps(full, default=str))  # the manifest as it will read back
    full.pop("sha256", None)
    header = json.dumps(full, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with dir_lock(path.parent):
        remove_stale_tmp(path)
        remove_stale_tmp(path.with_suffix(".json"))
        keep = set(full.get("shards", {}).get("files", []))
        for stale in path.parent.glob(f".{path.name.removesuffix('.safetensors')}.part*-*.safetensors*tmp"):
            stale.unlink(missing_ok=True)  # a killed save's shard
        for i, part in enumerate(shards[1:], start=1):
            part_path = path.parent / _part_name(path, i, part)
            remove_stale_tmp(part_path)
            meta = json.dumps({"of": path.name, "index": i, "tensors_sha256": tensors_sha256(part)})
            write_durable(part_path, lambda p, part=part, meta=meta: save_file(part, str(p),
                                                                                metadata={PART_KEY: meta}))
        write_durable(path, lambda p: save_file(shards[0], str(p), metadata={MANIFEST_KEY: header}))
        for old in _parts_of(path):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        sidecar = {**full, "sha256": sha256_file(path)}
        write_durable(path.with_suffix(".json"), lambda p: p.write_text(_json_text(sidecar)))
    return sidecar


def _merge_shards(path: Path, tensors: dict[str, Tensor], header: dict) -> dict[str, Tensor]:
    """Concatenate a sharded artifact's rows in order, or gather its packed tensors (the hash over the result
    is checked by the caller)."""
    info = header["shards"]
    parts = [tensors]
    for name in info["files"]:
        part_path = path.parent / name
        if not part_path.is_file():
            raise ArtifactError(f"{path}: its shard {name} is missing; restore it (e.g. git checkout) or delete "
                                f"{path.name} to recompute")
        parts.append(load_file(str(part_path)))
    if "tensors" in info:
        if [sorted(p) for p in parts[1:]] != info["tensors"]:
            raise ArtifactError(f"{path}: its shards do not hold the tensors its manifest lists; delete it")
        return {k: v for p in parts for k, v in p.items()}
    try:
        merged = {k: torch.cat([p[k] for p in parts]) for k in info["split"]}
    except (KeyError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: its shards do not fit together ({exc}); delete it to recompute") from exc
    return {**tensors, **merged}


def _read_header(path: Path) -> dict | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc}); delete it to recompute") from exc
    if MANIFEST_KEY not in meta:
        return None
    try:
        return json.loads(meta[MANIFEST_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: damaged manifest in the file header ({exc}); delete it to recompute") from exc


def _read_json(path: Path) -> dict | None:
    """The JSON copy, or ``None`` when it is missing or unparseable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _check_name(path: Path, manifest: dict) -> None:
    if manifest.get("file", path.name) != path.name:
        raise ArtifactError(
            f"{path}: its manifest says it was saved as {manifest['file']!r}; a renamed or copied artifact "
            f"is not trusted (rename it back or delete it)"
        )
    stem = path.name.split(".")[0]
    key = manifest.get("key")
    if key is not None and _KEY_RE.fullmatch(stem) and key != stem:
        raise ArtifactError(f"{path}: manifest key {key!r} does not match the file name {stem!r}")


def check_provenance(path: Path, manifest: dict, expect: Mapping[str, Any] | None, hint: str = "") -> None:
    """Raise :class:`ProvenanceError` naming each field of ``expect`` whose value the manifest contradicts.

    A field the manifest lacks is accepted (artifacts made before it was recorded).
    """
    bad = [(k, manifest[k], v) for k, v in (expect or {}).items() if k in manifest and manifest[k] != v]
    if bad:
        what = "; ".join(f"{k}: artifact {a!r}, here {b!r}" for k, a, b in bad)
        raise ProvenanceError(
            f"{path} was made from other inputs than the ones loaded here ({what}). "
            + (hint or "Load the inputs it was made from, or delete the artifact to recompute it.")
        )


def load_artifact(
    path: Path, verify: bool = True, expect: Mapping[str, Any] | None = None, hint: str = ""
) -> tuple[dict[str, Tensor], dict]:
    """Load an artifact and its manifest, checked.

    Args:
        path: The ``.safetensors`` file.
        verify: Check the tensors against the manifest's hash (format 1: the file's sha256).
        expect: Manifest fields that must match (e.g. ``{"data": fingerprint}``), see
            :func:`check_provenance`.
        hint: The way out, appended to a :class:`ProvenanceError`.

    Returns:
        ``(tensors, manifest)``.

    Raises:
        FileNotFoundError: No file at ``path``.
        ArtifactError: Unreadable, corrupt, renamed or edited.
        ProvenanceError: A field of ``expect`` differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {path}")
    json_path = path.with_suffix(".json")
    with contextlib.suppress(OSError), dir_lock(path.parent, blocking=False) as locked:
        if locked:  # no writer is active: whatever temporary file is there, a killed writer left
            remove_stale_tmp(path)
            remove_stale_tmp(json_path)
    header = _read_header(path)
    if header is None:  # format 1
        manifest = _read_json(json_path)
        if manifest is None:
            raise ArtifactError(f"{json_path}: manifest missing or not valid JSON; restore it or delete {path}")
        if verify and sha256_file(path) != manifest.get("sha256"):
            raise ArtifactError(f"{path}: sha256 does not match its manifest {json_path} (corrupt or edited)")
        _check_name(path, manifest)
        tensors = load_file(str(path))
    else:
        tensors = load_file(str(path))
        if "shards" in header:
            tensors = _merge_shards(path, tensors, header)
        if verify and tensors_sha256(tensors) != header.get("tensors_sha256"):
            raise ArtifactError(f"{path}: tensors do not match the hash in its header (corrupt); delete it")
        _check_name(path, header)
        manifest = _sync_json(path, json_path, header)
    check_provenance(path, manifest, expect, hint)
    return tensors, manifest


def _sync_json(path: Path, json_path: Path, header: dict) -> dict:
    """Compare the JSON copy with the header: repair a stale or missing copy, refuse an edited one."""
    sidecar = _read_json(json_path)
    actual = sha256_file(path)
    if sidecar is not None and sidecar.get("tensors_sha256") == header["tensors_sha256"]:
        truth = {**header, "sha256": actual}
        edited = sorted(k for k in set(sidecar) | set(truth) if sidecar.get(k) != truth.get(k))
        if edited:
            diff = "; ".join(f"{k}: JSON {sidecar.get(k)!r}, file {truth.get(k)!r}" for k in edited[:5])
            raise ArtifactError(
                f"{json_path} was edited and no longer matches the manifest in {path.name} ({diff}). "
                f"Restore it (e.g. git checkout) or delete it: it is rewritten from the file on the next load."
            )
        return sidecar
    # Missing, truncated or from the previous save (a kill between the two renames): rewrite from the header.
    with contextlib.suppress(OSError), dir_lock(path.parent, blocking=False) as locked:
        if locked:  # load_artifact has already cleared stale temporary files
            sidecar = {**header, "sha256": actual}
            write_durable(json_path, lambda p: p.write_text(_json_text(sidecar)))
            log.info("rewrote the manifest copy %s from its artifact", json_path.name)
            return sidecar
    return {**header, "sha256": actual}


def delete_artifact(path: Path) -> None:
    """Delete an artifact: its file, its shards and its JSON copy (nothing happens to a missing one)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    with dir_lock(path.parent):
        for p in (path, *_parts_of(path), path.with_suffix(".json")):
            p.unlink(missing_ok=True)


def artifact_exists(path: Path) -> bool:
    """Whether a (format 1 or 2) artifact file is present at ``path``."""
    return Path(path).is_file()


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
    provenance: Mapping[str, Any] | None = None,
    hint: str = "",
    how: str = "",
) -> tuple[dict[str, Tensor], dict]:
    """Return the cached artifact of ``(stage, config, version)``, or compute, save and return it.

    Looks in the committed ``artifacts/`` first, then in the scratch cache.

    Args:
        stage: Name of the pipeline stage (a folder name, e.g. ``"toy_model"``).
        config: JSON-able inputs that determine the result.
        compute: Produces the tensors when nothing is cached.
        version: Bump when the stage's code changes its result.
        publish: Save into the committed ``artifacts/`` (the published book) instead of the cache.
        verbose: Log where the artifact came from (``logging`` INFO).
        provenance: Fields recorded in the manifest and checked on every load but not part of the key,
            e.g. ``{"data": fingerprint(images, labels)}`` of the data the result is computed from.
        hint: The way out named by a :class:`ProvenanceError`.
        how: The command that computes a published result, named by :class:`PendingRun` in a read-only run.

    Returns:
        ``(tensors, manifest)``.
    """
    key = config_key(config, version)
    for pub in (True, False):
        path = artifact_path(stage, config, version, pub)
        if artifact_exists(path):
            tensors, manifest = load_artifact(path, expect=provenance, hint=hint)
            if manifest.get("key", key) != key:
                raise ArtifactError(f"{path}: manifest key {manifest.get('key')!r}, expected {key!r}")
            if verbose:
                log.info("found cached %s (%s), loading", stage, path.name)
            return tensors, manifest
    if publish:
        check_may_compute(f"{stage} {key}", how or "python -m paperlib.book execute --profile full")
    start = time.perf_counter()
    tensors = compute()
    manifest = {
        "stage": stage,
        "version": version,
        "key": key,
        "config": config,
        **dict(provenance or {}),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paperlib": __version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    path = artifact_path(stage, config, version, publish)
    manifest = save_artifact(path, tensors, manifest, PUBLISH_MAX_BYTES if publish else None)
    if verbose:
        log.info("computed %s in %s s, saved to %s/%s", stage, manifest["wall_time_s"], stage, path.name)
    return tensors, manifest


def _check_rows(tensors: Mapping[str, Tensor], rows: int, where: Path) -> None:
    bad = {k: tuple(v.shape) for k, v in tensors.items() if v.dim() == 0 or v.shape[0] != rows}
    if bad:
        raise ValueError(f"{where}: expected {rows} rows in every tensor, got shapes {bad}")


class ComputeIncomplete(RuntimeError):
    """A time budget stopped :func:`load_or_compute_chunked` between chunks; the finished chunks are saved and
    calling again resumes."""


def load_or_compute_chunked(
    stage: str,
    config: dict,
    n: int,
    chunk_size: int,
    compute_chunk: Callable[[int, int], dict[str, Tensor]],
    finish: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    version: int = 1,
    publish: bool = False,
    verbose: bool = True,
    provenance: Mapping[str, Any] | None = None,
    hint: str = "",
    desc: str = "",
    max_seconds: float | None = None,
    how: str = "",
) -> tuple[dict[str, Tensor], dict]:
    """:func:`load_or_compute` of a result made of rows ``0..n-1``, computed in chunks that are saved as they
    finish (``<stage>/<key>.chunks/<start>-<stop>.safetensors``), so a killed or paused run resumes where it
    stopped. A chunk is named by its rows, so a run resumed with another ``chunk_size`` recomputes what no
    saved chunk covers exactly, and the merged rows are checked to be ``n``.

    Args:
        stage, config, version, publish, verbose, provenance, hint: As :func:`load_or_compute`; published runs
            keep their chunks beside the artifacts, so an unfinished run can be committed and resumed.
        n: Number of rows.
        chunk_size: Rows per chunk.
        compute_chunk: ``(start, stop) -> tensors`` of rows ``start:stop`` (each with ``stop - start`` rows).
        finish: Maps the chunks concatenated along dim 0 to the saved tensors (default: unchanged).
        desc: tqdm label of the bar over chunks (shown when ``verbose``).
        max_seconds: Stop with :class:`ComputeIncomplete` after the chunk that exceeds this many seconds.
        how: As :func:`load_or_compute`.

    Returns:
        ``(tensors, manifest)``; the chunks are deleted once the merged artifact is saved.
    """


    if n < 1 or chunk_size < 1:
        raise ValueError(f"n and chunk_size must be >= 1, got {n}, {chunk_size}")
    key = config_key(config, version)
    chunk_dir = (ARTIFACTS_DIR if publish else cache_dir()) / stage / f"{key}.chunks"
    start_time = time.perf_counter()

    def compute() -> dict[str, Tensor]:
        parts = []
        starts = range(0, n, chunk_size)
        for start in tqdm(starts, desc=desc or stage, disable=not verbose):
            stop = min(start + chunk_size, n)
            path = chunk_dir / f"{start:06d}-{stop:06d}.safetensors"
            if path.exists():
                part = load_artifact(path)[0]
                _check_rows(part, stop - start, path)
                parts.append(part)
                continue
            part = compute_chunk(start, stop)
            _check_rows(part, stop - start, path)
            save_artifact(path, part, {"stage": stage, "chunk": start, "key": key})
            parts.append(part)
            if max_seconds is not None and time.perf_counter() - start_time >= max_seconds and start + chunk_size < n:
                raise ComputeIncomplete(f"{stage} {key}: {len(parts)} of {len(starts)} chunks done in the budget "
                                        f"of {max_seconds:.0f} s; call again to resume")
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        _check_rows(merged, n, chunk_dir)
        return merged if finish is None else finish(merged)

    tensors, manifest = load_or_compute(stage, config, compute, version, publish, verbose=verbose,
                                        provenance=provenance, hint=hint, how=how)
    if chunk_dir.exists():  # merged: the chunks are no longer needed
        shutil.rmtree(chunk_dir)
    return tensors, manifest


# ----------------------------------------------------------------------------------------------------------
# Format migration
# ----------------------------------------------------------------------------------------------------------


def migrate_artifact(path: Path, extra: Mapping[str, Any] | None = None) -> bool:
    """Rewrite a format-1 artifact in the current format, with the same tensors (nothing recomputed).

    Args:
        path: The ``.safetensors`` file; its format-1 manifest is verified (sha256) first.
        extra: Manifest fields to add, e.g. provenance that format 1 did not record.

    Returns:
        Whether the file was rewritten (``False``: already in the current format).
    """
    path = Path(path)
    if _read_header(path) is not None:
        return False
    tensors, manifest = load_artifact(path)
    manifest = {k: v for k, v in manifest.items() if k not in ("sha256", "file")}
    save_artifact(path, tensors, {**manifest, **dict(extra or {})})
    again, _ = load_artifact(path)
    if again.keys() != tensors.keys() or not all(torch.equal(again[k], tensors[k]) for k in tensors):
        raise ArtifactError(f"{path}: migrated tensors differ from the original")  # pragma: no cover
    return True


def _data_provenance(path: Path, manifest: dict) -> dict:
    """Format-1 provenance made explicit: the data fingerprint of the run's CDM or classifier data."""
    config = manifest.get("config", {})
    if "data" in manifest:
        return {}
    if isinstance(config.get("data"), str):
        return {"data": config["data"]}
    model = config.get("model")
    if isinstance(model, str):
        cdm = ARTIFACTS_DIR / "cdm" / f"{model}.json"
        if cdm.is_file():
            return {"data": json.loads(cdm.read_text())["data"]}
    return {}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m paperlib.cache",
                                     description="Rewrite format-1 artifacts in the current format.")
    parser.add_argument("command", choices=["migrate"])
    parser.add_argument("paths", nargs="+", type=Path, help=".safetensors files or folders of them")
    args = parser.parse_args(argv)
    files = sorted({f for p in args.paths for f in ([p] if p.is_file() else p.rglob("*.safetensors"))
                    if not _SHARD_RE.search(f.name)})  # a shard is read through its head file
    done = 0
    for f in files:
        manifest = _read_json(f.with_suffix(".json")) or {}
        if migrate_artifact(f, _data_provenance(f, manifest)):
            done += 1
            print(f"migrated {f}")
    print(f"{done} of {len(files)} artifacts migrated")


if __name__ == "__main__":
    main()
