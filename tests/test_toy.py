import re
from dataclasses import replace

import pytest
import torch

from paperlib.toy import (
    NULL_CLASS,
    ToyConfig,
    ToyDenoiser,
    compare_methods,
    distance_to_core,
    load_or_train_toy,
    provenance_table,
    sample_toy,
    summarize_outputs,
    top_direction_stats,
    toy_log_density,
    train_toy_denoiser,
)


def test_sampling_is_seeded_and_balanced():
    x, y = sample_toy(1000, 0)
    x2, y2 = sample_toy(1000, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, sample_toy(1000, 1)[0])
    assert y.sum() == 500 and x.shape == (1000, 2) and x.dtype == torch.float32
    assert torch.all(sample_toy(10, 0, y=1)[1] == 1)


def test_generative_process_structure():
    cfg = ToyConfig()
    x, y = sample_toy(4000, 0, cfg)
    v = x[:, 1] - torch.tensor(cfg.core_levels)[y]
    u = x[:, 0] - cfg.shear * v
    assert u.abs().max() <= cfg.core_halfwidth + 1e-5  # core points on the segment
    assert v.std() == pytest.approx(cfg.sigma_v, rel=0.05)  # class-independent variation
    assert torch.isfinite(toy_log_density(x, y, cfg)).all()
    assert torch.isinf(toy_log_density(torch.tensor([[5.0, 1.0]]), 1, cfg)).all()


@pytest.mark.parametrize("shift", ["linear", "quadratic"])
def test_density_integrates_to_one(shift):
    cfg = replace(ToyConfig(), shift=shift)
    g = torch.linspace(-4, 4, 801)
    g1, g2 = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([g1.reshape(-1), g2.reshape(-1)], 1)
    mass = toy_log_density(pts, 1, cfg).exp().sum() * (g[1] - g[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=0.02)


def test_bad_inputs():
    with pytest.raises(ValueError, match="y must be"):
        sample_toy(10, 0, y=2)
    with pytest.raises(ValueError, match="n must be"):
        sample_toy(0, 0)
    with pytest.raises(ValueError, match="shift"):
        sample_toy(10, 0, replace(ToyConfig(), shift="cubic"))
    m = ToyDenoiser()
    with pytest.raises(ValueError, match="class ids"):
        m(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        m(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="y must be 0 or 1"):
        distance_to_core(torch.zeros(1, 2), 2)


def test_denoiser_shapes():
    m = ToyDenoiser()
    x, t, y = torch.zeros(5, 2), torch.arange(5), torch.tensor([0, 1, NULL_CLASS, 1, 0])
    assert m(x, t, y).shape == (5, 2) and m.features(x, t, y).shape == (5, 80)
    assert sum(p.numel() for p in m.parameters()) == 34 * 80 + 80 + 80 * 80 + 80 + 80 * 2 + 2 + 3 * 16


def test_training_loss_decreases_and_is_seeded():
    cfg = replace(ToyConfig(), steps=300, batch_size=256, n_data=2000)
    m1, losses, _ = train_toy_denoiser(cfg, seed=0, progress=False)
    assert losses[-50:].mean() < 0.8 * losses[:50].mean()
    m2, losses2, _ = train_toy_denoiser(cfg, seed=0, progress=False)
    assert (losses == losses2).all()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_load_or_train_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    cfg = replace(ToyConfig(), steps=20, batch_size=32, n_data=200)
    m1, l1, man1 = load_or_train_toy(cfg, seed=3, progress=False)
    import paperlib.toy as toy

    monkeypatch.setattr(toy, "train_toy_denoiser", lambda *a, **k: pytest.fail("retrained"))
    m2, l2, man2 = load_or_train_toy(cfg, seed=3, progress=False)
    assert man1["sha256"] == man2["sha256"] and (l1 == l2).all()
    x, t, y = torch.randn(4, 2), torch.arange(4), torch.ones(4, dtype=torch.long)
    assert torch.equal(m1(x, t, y), m2(x, t, y))


def test_compare_methods_and_summary(toy_model, toy_cfg):
    x, _ = sample_toy(64, 5, toy_cfg, y=1)
    out = compare_methods(toy_model, x, 1, 600, (2.0,), num_steps=50, generator=0, cfg=toy_cfg)
    assert list(out) == ["original", "reconstruction", "CFG w=2", "CLARID", "random direction"]
    assert all(v.shape == (64, 2) for v in out.values())
    summary = summarize_outputs(out, 1, toy_cfg)
    assert set(summary["CLARID"]) == {"median_dist_core", "frac_near_core", "std_x1", "median_dist_other"}


def test_provenance_covers_every_field():
    rows = provenance_table(ToyConfig())
    assert {r["tag"] for r in rows} <= {"S", "R", "O"}
    assert len(rows) == len(ToyConfig.__dataclass_fields__)
    # the tag has its own column: a note reads as plain words, without "[R]" or "spec §"
    assert not [r["note"] for r in rows if re.search(r"\[[SROL]\]|spec §", r["note"])]


def test_top_direction_stats(toy_model, toy_cfg):
    x, _ = sample_toy(64, 5, toy_cfg, y=1)
    s = top_direction_stats(toy_model, x, 1, 600, num_steps=20, cfg=toy_cfg)
    assert 0 <= s["angle"] < 180 and 0 <= s["angle_iqr"] <= 180
    assert s["ratio"] >= 1.0  # sigma_1 >= sigma_2 by construction


def test_t_star_sweep_matches_compare_methods_and_is_cached(toy_model, toy_cfg, monkeypatch):
    import pytest

    from paperlib import toy

    models, keys = {3: toy_model, 4: toy_model}, {3: "k3", 4: "k4"}
    summaries, clarid_pts = toy.t_star_sweep(models, keys, [300, 600], 16, num_steps=20, cfg=toy_cfg, keep_seed=4)
    x1, _ = sample_toy(16, 1000 + 4, toy_cfg, y=1)
    direct = compare_methods(toy_model, x1, 1, 600, (3.0,), 20, generator=4, cfg=toy_cfg)
    want = summarize_outputs(direct, 1, toy_cfg)
    for method, stats in want.items():
        assert summaries[600][4][method] == pytest.approx(stats, rel=1e-6, abs=1e-7)
    torch.testing.assert_close(clarid_pts[600], direct["CLARID"])
    calls = []
    monkeypatch.setattr(toy, "compare_methods", lambda *a, **k: calls.append(1))
    again, _ = toy.t_star_sweep(models, keys, [300, 600], 16, num_steps=20, cfg=toy_cfg, keep_seed=4)
    assert not calls and again == summaries  # read back, nothing recomputed
    with pytest.raises(ValueError, match="same seeds"):
        toy.t_star_sweep(models, {3: "k3"}, [300], 16, cfg=toy_cfg)
