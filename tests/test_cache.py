import json

import pytest
import torch

from paperlib.cache import artifact_path, config_key, load_artifact, load_or_compute, module_fingerprint


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
    assert not list(tmp_path.rglob("*.tmp"))
    load_or_compute("unit", {"n": 7}, compute, verbose=False)
    assert len(calls) == 2


def test_corrupt_artifact_is_detected(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    load_or_compute("unit", {"n": 1}, lambda: {"w": torch.zeros(3)}, verbose=False)
    path = artifact_path("unit", {"n": 1})
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="sha256"):
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
