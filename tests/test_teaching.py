"""The teaching bank: format checks, save/load round trip with provenance, the builders from today's caches."""

from types import SimpleNamespace

import pytest
import torch

from paperlib.cache import ComputeIncomplete, ProvenanceError
from paperlib.canonical import ClaridConfig
from paperlib.data import fingerprint
from paperlib.diffusion import alpha_bar, linear_beta_schedule
from paperlib.features import image_features
from paperlib.models import CDMConfig, ClassConditionalUNet
from paperlib.selection import record_choice
from paperlib.teaching import (
    TeachingBank,
    bank_from_caches,
    book_bank,
    load_bank,
    raw_feature_bank,
    record_bank,
    save_bank,
)

TINY = CDMConfig(sample_size=8, num_classes=3, block_out_channels=(8, 8), attention_levels=(1,), norm_num_groups=4,
                 attention_head_dim=8)


def _bank(kind="clarid", m=6, seed=0, data="d" * 16):
    g = torch.Generator().manual_seed(seed)
    images = None if kind == "raw" else torch.randint(0, 256, (m, 3, 8, 8), generator=g, dtype=torch.uint8)
    return TeachingBank(kind, "shapes", torch.arange(m) % 3, torch.randperm(20, generator=g)[:m],
                        torch.randn(m, 5, generator=g), images, torch.randn(m, 4, generator=g),
                        {"cdm": "c" * 16, "data": data, "feature": {"layer": "mid", "t": 100}})


@pytest.fixture(scope="module")
def cdm():
    """A stand-in for paperlib.train.BookCDM: a tiny untrained CDM and 12 training images of 3 classes."""
    torch.manual_seed(0)
    model = ClassConditionalUNet(TINY).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randint(0, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(12) % 3
    return SimpleNamespace(model=model, images=images, labels=labels, alpha_bar=alpha_bar(linear_beta_schedule()),
                           manifest={"key": "m" * 16, "data": fingerprint(images, labels)})


def test_bank_round_trips_through_its_artifact():
    bank = _bank()
    path, manifest = save_bank(bank)
    assert manifest["n"] == 6 and manifest["kind"] == "clarid" and manifest["data"] == bank.data
    for again in (load_bank(manifest["key"]), load_bank(path, data_fingerprint=bank.data)):
        for name, t in bank.tensors().items():
            assert torch.equal(again.tensors()[name], t), name
        assert again.meta == bank.meta and again.kind == bank.kind and again.fingerprint() == bank.fingerprint()
    with pytest.raises(ProvenanceError, match="other training set"):
        load_bank(path, data_fingerprint="e" * 16)
    raw = _bank("raw")
    assert "images" not in raw.tensors() and load_bank(save_bank(raw)[1]["key"]).images is None
    other = _bank(seed=1)  # other content: another key, the first bank untouched
    assert save_bank(other)[1]["key"] != manifest["key"]
    assert torch.equal(load_bank(manifest["key"]).features, bank.features)


def test_a_students_fingerprint_covers_only_the_features_it_reads():
    a = _bank()
    b = TeachingBank(a.kind, a.dataset, a.labels, a.indices, a.features, a.images, a.features_null + 1, a.meta)
    c = TeachingBank(a.kind, a.dataset, a.labels, a.indices, a.features + 1, a.images, a.features_null, a.meta)
    assert a.fingerprint("class") == b.fingerprint("class") and a.fingerprint("null") != b.fingerprint("null")
    assert a.fingerprint("null") == c.fingerprint("null") and a.fingerprint("class") != c.fingerprint("class")
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() != c.fingerprint()
    with pytest.raises(ValueError, match="condition"):
        a.fingerprint("nope")


def test_bank_rejects_malformed_fields():
    good = _bank()
    fields = dict(kind="clarid", dataset="shapes", labels=good.labels, indices=good.indices, features=good.features,
                  images=good.images, features_null=good.features_null, meta=good.meta)
    cases = {
        "kind must be": {"kind": "dit"},
        "dataset must be": {"dataset": "imagenet"},
        "indices must be 6 distinct": {"indices": torch.zeros(6, dtype=torch.int64)},
        "features must have 6 rows": {"features": good.features[:5]},
        "features must": {"features": good.features.double()},
        "images must": {"images": None},
        "a 'raw' bank holds no images": {"kind": "raw"},
        "meta must be a dict": {"meta": {"cdm": "c"}},
        "labels must": {"labels": good.labels.float()},
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            TeachingBank(**{**fields, **change})


def test_row_table_maps_training_rows_to_entries():
    bank = _bank()
    table = bank.row_table(20)
    assert torch.equal(table[bank.indices], torch.arange(6))
    assert (table >= 0).sum() == 6
    idx = torch.tensor([int(bank.indices[3]), 0 if 0 not in bank.indices else 19, int(bank.indices[0])])
    rows = bank.rows_of(idx, 20)
    assert rows[0] == 3 and rows[2] == 0
    with pytest.raises(ValueError, match="made for other data"):
        bank.row_table(int(bank.indices.max()))


def test_recorded_bank_is_the_one_book_bank_uses(cdm, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))  # the smoke chapters' choices stay theirs
    bank = TeachingBank("clarid", "shapes", cdm.labels[:6], torch.arange(6), torch.randn(6, 3),
                        cdm.images[:6], None, {"cdm": cdm.manifest["key"], "data": cdm.manifest["data"]})
    save_bank(bank)
    key = record_bank("smoke", bank)
    got = book_bank(cdm, "smoke", "shapes", "clarid")
    assert torch.equal(got.features, bank.features) and got.fingerprint() == bank.fingerprint()
    wrong = SimpleNamespace(**{**vars(cdm), "manifest": {**cdm.manifest, "data": "0" * 16}})
    with pytest.raises(ProvenanceError):
        book_bank(wrong, "smoke", "shapes", "clarid")
    with pytest.raises(FileNotFoundError):
        record_bank("smoke", "f" * 16)
    assert key == save_bank(bank)[1]["key"]


def test_raw_bank_holds_every_training_image_one_to_one_and_resumes(cdm, monkeypatch):
    calls = []
    import paperlib.features as features

    real = features.image_features

    def counted(model, images, *args, **kwargs):
        calls.append(len(images))
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(features, "image_features", counted)
    with pytest.raises(ComputeIncomplete, match="1 of 3 chunks"):
        raw_feature_bank(cdm, "shapes", "mid", 200, num_steps=10, chunk_size=5, max_seconds=0)
    bank = raw_feature_bank(cdm, "shapes", "mid", 200, num_steps=10, chunk_size=5)
    assert calls == [5, 5, 2]  # the first chunk was not computed again
    assert bank.kind == "raw" and torch.equal(bank.indices, torch.arange(12)) and torch.equal(bank.labels, cdm.labels)
    ref = real(cdm.model, cdm.images, cdm.labels, cdm.alpha_bar, 200, "mid", 10, progress=False)
    torch.testing.assert_close(bank.features, ref, atol=1e-5, rtol=1e-4)
    # each entry is the feature of its own image: a single image featurised alone gives its row
    one = image_features(cdm.model, cdm.images[7:8], cdm.labels[7:8], cdm.alpha_bar, 200, "mid", 10, progress=False)
    torch.testing.assert_close(bank.features[7:8], one, atol=1e-5, rtol=1e-4)
    assert bank.meta["feature"] == {"layer": "mid", "t": 200, "num_steps": 10, "condition": "class"}


def test_bank_from_todays_caches_reads_the_recorded_run_and_features(cdm, tmp_path, monkeypatch):
    # a private cache: the choices recorded here must not replace the smoke chapters' (same session cache)
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "cache"))
    cfg = ClaridConfig(t_star=500, K=4, num_steps=10, cfg_scales=(3.0,), method="exact")
    for name, value in [("clarid", {"config": cfg.to_dict(), "n_images": 6, "seed": 0}),
                        ("feature_layer", "mid"), ("feature_t", 300), ("feature_layer_null", "mid"),
                        ("feature_t_null", 100)]:
        record_choice("smoke", "shapes", name, value, "test")
    clarid = bank_from_caches(cdm, "smoke", "shapes", "clarid", progress=False)
    cfgb = bank_from_caches(cdm, "smoke", "shapes", "cfg", progress=False)
    assert len(clarid) == 6 and sorted(clarid.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(clarid.labels, cdm.labels[clarid.indices]) and torch.equal(clarid.indices, cfgb.indices)
    assert not torch.equal(clarid.images, cfgb.images) and not torch.equal(clarid.features, cfgb.features)
    # the Canonical Features are the features of the Canonical Samples at (l_f, t_f) under their class
    ref = image_features(cdm.model, clarid.images, clarid.labels, cdm.alpha_bar, 300, "mid", 10, progress=False)
    torch.testing.assert_close(clarid.features, ref, atol=1e-5, rtol=1e-4)
    null = torch.full_like(clarid.labels, TINY.num_classes)
    # the null-condition control changes the condition only: the same (l_f, t_f), not chapter 4's null choice
    ref0 = image_features(cdm.model, cfgb.images, null, cdm.alpha_bar, 300, "mid", 10, progress=False)
    torch.testing.assert_close(cfgb.features_null, ref0, atol=1e-5, rtol=1e-4)
    assert clarid.meta["guidance_scale"] == 1.0 and cfgb.meta["guidance_scale"] == 3.0
    assert clarid.meta["feature_null"]["t"] == 300 and clarid.data == cdm.manifest["data"]
