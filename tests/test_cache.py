import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from paperlib.cache import (
    ArtifactError,
    ProvenanceError,
    config_key,
    load_artifact,
    load_or_compute,
    module_fingerprint,
    save_artifact,
    sha256_file,
    tensors_sha256,
)


def test_key_is_stable_and_sensitive():
    assert config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})
    assert config_key({"a": 1}, version=1) != config_key({"a": 1}, version=2)


def test_load_or_compute_computes_once(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(6.0).reshape(2, 3)}

    t1, m1 = load_or_compute("unit", {"n": 6}, compute, verbose=False)
    t2, m2 = load_or_compute("unit", {"n": 6}, compute, verbose=False)
    assert len(calls) == 1 and torch.equal(t1["w"], t2["w"])
    assert m1["sha256"] == m2["sha256"] and m2["config"] == {"n": 6} and "wall_time_s" in m2
    assert m1["format"] == 2 and m1["tensors_sha256"] == tensors_sha256(t1)
    assert not list(tmp_path.rglob("*tmp"))
    load_or_compute("unit", {"n": 7}, compute, verbose=False)
    assert len(calls) == 2


def _saved(tmp_path, **manifest):
    path = tmp_path / f"{config_key({'n': 1})}.safetensors"
    save_artifact(path, {"w": torch.arange(4.0)}, {"key": path.stem, "steps": 20000, **manifest})
    return path


def test_corrupt_tensors_are_detected(tmp_path):
    path = _saved(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # last byte of the tensor data
    path.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="do not match the hash"):
        load_artifact(path)


def test_truncated_file_names_its_path(tmp_path):
    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArtifactError, match=str(path.name)):
        load_artifact(path)


def test_edited_manifest_is_refused_with_the_field(tmp_path):
    path = _saved(tmp_path)
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["steps"] = 5
    path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"steps: JSON 5, file 20000"):
        load_artifact(path)
    manifest["steps"], manifest["sha256"] = 20000, "0" * 64
    path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(path)


def test_missing_truncated_or_stale_json_is_repaired_from_the_file(tmp_path):
    path = _saved(tmp_path)
    good = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text('{"key": ')  # truncated
    assert load_artifact(path)[1] == good
    assert json.loads(path.with_suffix(".json").read_text()) == good
    path.with_suffix(".json").unlink()
    assert load_artifact(path)[1]["steps"] == 20000
    # A kill between the two renames: new tensor file beside the previous save's JSON.
    old_json = path.with_suffix(".json").read_text()
    save_artifact(path, {"w": torch.ones(4)}, {"key": path.stem, "steps": 30000})
    path.with_suffix(".json").write_text(old_json)
    tensors, manifest = load_artifact(path)
    assert torch.equal(tensors["w"], torch.ones(4)) and manifest["steps"] == 30000


def test_renamed_or_rekeyed_artifact_is_refused(tmp_path):
    path = _saved(tmp_path)
    other = tmp_path / f"{config_key({'n': 2})}.safetensors"
    other.write_bytes(path.read_bytes())
    with pytest.raises(ArtifactError, match="saved as"):
        load_artifact(other)
    bad = tmp_path / f"{config_key({'n': 3})}.safetensors"
    save_artifact(bad, {"w": torch.zeros(1)}, {"key": "0123456789abcdef"})
    with pytest.raises(ArtifactError, match="does not match the file name"):
        load_artifact(bad)


def test_provenance_mismatch_names_both_values(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    compute = lambda: {"w": torch.zeros(2)}  # noqa: E731
    load_or_compute("unit", {"n": 1}, compute, verbose=False, provenance={"data": "4c6a04f66a242a11"})
    with pytest.raises(ProvenanceError, match=r"data: artifact '4c6a04f66a242a11', here 'a48f7abe3267e2f5'"):
        load_or_compute("unit", {"n": 1}, compute, verbose=False, provenance={"data": "a48f7abe3267e2f5"},
                        hint="Point $PAPERLIB_DATA elsewhere.")


def test_format_1_artifacts_still_load_and_are_checked(tmp_path):
    path = tmp_path / "0123456789abcdef.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path))
    manifest = {"key": path.stem, "file": path.name, "sha256": sha256_file(path)}
    path.with_suffix(".json").write_text(json.dumps(manifest))
    tensors, got = load_artifact(path)
    assert torch.equal(tensors["w"], torch.arange(3.0)) and got == manifest
    path.with_suffix(".json").write_text(json.dumps(manifest)[:-7])
    with pytest.raises(ArtifactError, match=str(path.with_suffix(".json"))):
        load_artifact(path)


def test_module_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b.load_state_dict(a.state_dict())
    assert module_fingerprint(a) == module_fingerprint(b)
    with torch.no_grad():
        b[0].weight[0, 0] += 1e-6
    assert module_fingerprint(a) != module_fingerprint(b)
    assert module_fingerprint(a) != module_fingerprint(a.to(torch.float64))


# -- kills and concurrent writers ---------------------------------------------------------------------------


def _save_forever(path: str, start: int) -> None:
    i = start
    while True:
        w = torch.full((20_000,), float(i))
        save_artifact(Path(path), {"w": w}, {"step": i})
        i += 1


def _assert_loads_or_absent(path) -> dict | None:
    if not path.exists():
        return None
    tensors, manifest = load_artifact(path)
    assert torch.all(tensors["w"] == manifest["step"])  # the pair is consistent
    return manifest


def test_sigkill_at_random_times_never_leaves_an_unloadable_artifact(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    rng = random.Random(0)
    ctx = mp.get_context("fork")
    steps = []
    for trial in range(24):
        proc = ctx.Process(target=_save_forever, args=(str(path), 1000 * trial))
        proc.start()
        time.sleep(rng.uniform(0.01, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        manifest = _assert_loads_or_absent(path)
        if manifest is not None:
            steps.append(manifest["step"])
    assert steps and steps == sorted(steps)  # every kill left the newest complete save (or none yet)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith("tmp")]


def test_two_writers_of_one_key_leave_a_consistent_pair(tmp_path):
    path = tmp_path / "shared.safetensors"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_save_forever, args=(str(path), 10**6 * (i + 1))) for i in range(2)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    assert _assert_loads_or_absent(path) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith("tmp")]


def _record_many(root: str, who: str, n: int) -> None:
    os.environ["PAPERLIB_CACHE"] = root
    from paperlib.selection import record_choice

    for i in range(n):
        record_choice("smoke", who, f"c{i}", i, "test")


def test_record_choice_is_safe_with_two_writers_and_kills(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    from paperlib.selection import _choices_path, load_choice

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path), who, 60)) for who in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert [load_choice("smoke", who, "c59") for who in ("a", "b")] == [59, 59]
    choices = json.loads(_choices_path("smoke").read_text())
    assert len(choices["a"]) == len(choices["b"]) == 60
    rng = random.Random(1)
    for _ in range(10):  # killed mid-write: the file stays valid JSON
        p = ctx.Process(target=_record_many, args=(str(tmp_path), "c", 10**6))
        p.start()
        time.sleep(rng.uniform(0.01, 0.1))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        json.loads(_choices_path("smoke").read_text())
    assert load_choice("smoke", "a", "c0") == 0  # a reader clears what a killed writer left
    assert not [p for p in _choices_path("smoke").parent.iterdir() if p.name.endswith("tmp")]


def test_sharded_artifact_round_trip_and_damage(tmp_path):
    from paperlib.cache import ArtifactError, load_artifact, save_artifact

    g = torch.Generator().manual_seed(0)
    tensors = {"img": torch.randint(0, 256, (100, 3, 32, 32), generator=g, dtype=torch.uint8),
               "k": torch.arange(100), "sigma": torch.randn(7, 3, generator=g)}
    path = tmp_path / "abcdef0123456789.safetensors"
    m = save_artifact(path, tensors, {"key": "abcdef0123456789"}, max_bytes=120_000)
    parts = sorted(tmp_path.glob("abcdef0123456789.part*"))
    assert len(parts) == len(m["shards"]["files"]) >= 2 and m["shards"]["rows"] == 100
    assert all(p.stat().st_size <= 120_000 for p in [path, *parts])
    back, _ = load_artifact(path)
    assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
    # A re-save with fewer shards removes the ones it no longer lists; unsharded when small enough.
    save_artifact(path, {k: v[:10] if k != "sigma" else v for k, v in tensors.items()}, {"key": "abcdef0123456789"},
                  max_bytes=120_000)
    assert not list(tmp_path.glob("abcdef0123456789.part*")) and load_artifact(path)[0]["img"].shape[0] == 10
    save_artifact(path, tensors, {"key": "abcdef0123456789"}, max_bytes=120_000)
    parts = sorted(tmp_path.glob("abcdef0123456789.part*"))
    parts[-1].unlink()
    with pytest.raises(ArtifactError, match="shard .* is missing"):
        load_artifact(path)


def test_a_training_state_is_sharded_by_whole_tensors(tmp_path):
    from paperlib.cache import ArtifactError, delete_artifact, load_artifact, save_artifact

    g = torch.Generator().manual_seed(2)
    # Tensors of many shapes: no first dimension carries enough bytes for row shards to fit.
    state = {f"model.{i}.weight": torch.randn(64 + i, 40 + 7 * i, generator=g) for i in range(12)}
    state.update({f"opt.{i}.momentum_buffer": torch.randn(64 + i, 40 + 7 * i, generator=g) for i in range(12)})
    state["step"] = torch.tensor(3)
    path = tmp_path / "abcdef0123456789.resume.safetensors"
    m = save_artifact(path, state, {"stage": "x_resume"}, max_bytes=200_000)
    parts = sorted(tmp_path.glob("abcdef0123456789.resume.part*"))
    assert "tensors" in m["shards"] and len(parts) == len(m["shards"]["files"]) >= 2
    assert all(p.stat().st_size <= 200_000 for p in [path, *parts])
    back, _ = load_artifact(path)
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
    # The final artifact of the same key and its resume checkpoint keep their own shards.
    final = tmp_path / "abcdef0123456789.safetensors"
    save_artifact(final, {"img": torch.zeros(100, 3000, dtype=torch.uint8)}, {"key": "abcdef0123456789"},
                  max_bytes=200_000)
    assert sorted(tmp_path.glob("abcdef0123456789.resume.part*")) == parts
    assert load_artifact(path)[0].keys() == state.keys() and load_artifact(final)[0]["img"].shape == (100, 3000)
    delete_artifact(path)
    assert not path.exists() and not path.with_suffix(".json").exists()
    assert not list(tmp_path.glob("abcdef0123456789.resume.*")) and load_artifact(final)[0]["img"].shape[0] == 100
    delete_artifact(path)  # nothing left: no error
    save_artifact(path, state, {"stage": "x_resume"}, max_bytes=200_000)
    victim = sorted(tmp_path.glob("abcdef0123456789.resume.part*"))[0]
    other = {k: v.clone() for k, v in state.items()}
    other["model.0.weight"] += 1
    save_artifact(tmp_path / "0000000000000000.safetensors", other, {}, max_bytes=200_000)
    # A shard swapped for one holding other tensors is refused, not merged.
    donor = sorted(tmp_path.glob("0000000000000000.part*"))[-1]
    victim.write_bytes(donor.read_bytes())
    with pytest.raises(ArtifactError):
        load_artifact(path)
    with pytest.raises(ValueError, match="alone is"):
        save_artifact(tmp_path / "big.safetensors", {"w": torch.zeros(1, 60_000)}, {}, max_bytes=200_000)


def test_sharded_save_killed_before_its_commit_keeps_the_previous_artifact(tmp_path, monkeypatch):
    import paperlib.cache as cache

    g = torch.Generator().manual_seed(1)
    old = {"img": torch.randint(0, 256, (60, 3, 32, 32), generator=g, dtype=torch.uint8)}
    new = {"img": torch.randint(0, 256, (60, 3, 32, 32), generator=g, dtype=torch.uint8)}
    path = tmp_path / "0123456789abcdef.safetensors"
    cache.save_artifact(path, old, {"key": "0123456789abcdef"}, max_bytes=100_000)
    real = cache.write_durable

    def die_at_the_head(p, write):
        if p == path:
            raise KeyboardInterrupt  # killed after the new shards, before the commit
        real(p, write)

    monkeypatch.setattr(cache, "write_durable", die_at_the_head)
    with pytest.raises(KeyboardInterrupt):
        cache.save_artifact(path, new, {"key": "0123456789abcdef"}, max_bytes=100_000)
    monkeypatch.setattr(cache, "write_durable", real)
    assert torch.equal(cache.load_artifact(path)[0]["img"], old["img"])
def _counted_rows():
    """A chunk function returning its row numbers, and the list of ``(start, stop)`` it was called with."""
    calls = []

    def chunk(start, stop):
        calls.append((start, stop))
        return {"x": torch.arange(start, stop, dtype=torch.float32)}

    return calls, chunk


def test_chunked_compute_pauses_between_chunks_and_resumes(tmp_path, monkeypatch):
    from paperlib.cache import ComputeIncomplete, load_or_compute_chunked

    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    calls, chunk = _counted_rows()
    with pytest.raises(ComputeIncomplete, match="1 of 3 chunks"):
        load_or_compute_chunked("s", {"a": 1}, 7, 3, chunk, max_seconds=0, verbose=False)
    tensors, manifest = load_or_compute_chunked("s", {"a": 1}, 7, 3, chunk, finish=lambda m: {"y": m["x"] * 2},
                                                verbose=False)
    assert calls == [(0, 3), (3, 6), (6, 7)]  # the saved chunk was not computed again
    assert torch.equal(tensors["y"], 2 * torch.arange(7, dtype=torch.float32))
    assert not list(tmp_path.glob("s/*.chunks"))
    again, _ = load_or_compute_chunked("s", {"a": 1}, 7, 3, chunk, verbose=False)
    assert len(calls) == 3 and torch.equal(again["y"], tensors["y"])


def test_chunked_compute_resumed_with_another_chunk_size_keeps_every_row(tmp_path, monkeypatch):
    from paperlib.cache import ComputeIncomplete, load_or_compute_chunked

    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    calls, chunk = _counted_rows()
    with pytest.raises(ComputeIncomplete):
        load_or_compute_chunked("s", {"a": 2}, 10, 2, chunk, max_seconds=0, verbose=False)
    tensors, _ = load_or_compute_chunked("s", {"a": 2}, 10, 4, chunk, verbose=False)
    assert torch.equal(tensors["x"], torch.arange(10, dtype=torch.float32))
    assert calls == [(0, 2), (0, 4), (4, 8), (8, 10)]  # no saved chunk covers rows 0-3 exactly
    with pytest.raises(ValueError, match="3 rows"):
        load_or_compute_chunked("s", {"a": 3}, 3, 3, lambda a, b: {"x": torch.zeros(2)}, verbose=False)


def test_read_only_runs_read_published_results_but_never_compute_them(tmp_path, monkeypatch):
    import paperlib.cache as cache

    monkeypatch.setattr(cache, "ARTIFACTS_DIR", tmp_path / "artifacts")
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    make = lambda: {"x": torch.ones(2)}  # noqa: E731
    cache.load_or_compute("stage", {"a": 1}, make, publish=True)  # computed while writable
    monkeypatch.setenv(cache.READ_ONLY_ENV, "1")
    assert torch.equal(cache.load_or_compute("stage", {"a": 1}, make, publish=True)[0]["x"], torch.ones(2))
    with pytest.raises(cache.PendingRun, match=r"^not computed yet: stage [0-9a-f]{16} is not in artifacts/"):
        cache.load_or_compute("stage", {"a": 2}, make, publish=True)
    assert torch.equal(cache.load_or_compute("stage", {"a": 2}, make, publish=False)[0]["x"], torch.ones(2))


def test_shards_stay_under_the_limit_with_many_tensors_and_killed_shards_are_cleared(tmp_path, capsys):
    from paperlib.cache import load_artifact, main, save_artifact

    g = torch.Generator().manual_seed(3)
    many = {f"w{i:04d}": torch.randn(60, generator=g) for i in range(3000)}  # headers weigh as much as data
    head = tmp_path / "abcdef0123456789.safetensors"
    save_artifact(head, many, {"key": "abcdef0123456789"}, max_bytes=400_000)
    files = [head, *sorted(tmp_path.glob("abcdef0123456789.part*"))]
    assert len(files) > 2 and all(p.stat().st_size <= 400_000 for p in files)
    stale = tmp_path / f".{files[1].name}.tmp"  # a killed save's shard
    stale.write_bytes(b"partial")
    save_artifact(head, many, {"key": "abcdef0123456789"}, max_bytes=400_000)
    assert not stale.exists() and load_artifact(head)[0].keys() == many.keys()
    # `python -m paperlib.cache migrate` reads shards through their head file, not as artifacts of their own.
    main(["migrate", str(tmp_path)])
    assert "0 of 1 artifacts migrated" in capsys.readouterr().out
