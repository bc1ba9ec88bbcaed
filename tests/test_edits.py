"""Edit runs: CLARID and its matched controls, decoded at one guidance scale, compared at equal distance."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import paperlib.edits as edits
from paperlib.canonical import ClaridConfig, clarid_batch
from paperlib.diffusion import alpha_bar, linear_beta_schedule
from paperlib.edits import (
    K_STAR,
    Edit,
    EditConfig,
    edit_batch,
    edit_run,
    edit_scores,
    equal_distance_verdict,
    matched_comparison,
    paired_gap,
    summarize,
)
from paperlib.models import CDMConfig, ClassConditionalUNet

TINY = CDMConfig(sample_size=8, num_classes=3, block_out_channels=(8, 8), attention_levels=(1,), norm_num_groups=4,
                 attention_head_dim=8)
AB = alpha_bar(linear_beta_schedule())
BASE = ClaridConfig(t_star=500, K=5, num_steps=10, cfg_scales=(3.0,), method="exact", guidance_scale=3.0)
ECFG = EditConfig(clarid=BASE, t_stars=(300,), ks=(1, 5), n_freq=2, guidance_sweep=(1.0, 2.0),
                  distance_ks=(("lowfreq", (8,)), ("isotropic", (20,))))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClassConditionalUNet(TINY).eval().requires_grad_(False)


def _images(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 3


def test_config_edits_and_validation():
    assert ECFG.all_t_stars() == [300, 500]
    main, other = ECFG.edits(500), ECFG.edits(300)
    assert main[0] == Edit("cfg", 0, 1.0) and main[1] == Edit("cfg", 0, 3.0)
    names = [e.name for e in main]
    assert len(names) == len(set(names))
    assert "lowfreq/k8/w3" in names and "lowfreq/k8/w3" in [e.name for e in other]  # distance ks: every t*
    assert "clarid/kstar/w2" in names and "cfg/k0/w2" in names and "clarid/kstar/w2" not in [e.name for e in other]
    assert {e.method for e in other} == {"cfg", *edits.METHODS}
    assert all(e.w == 3.0 for e in other if e.method != "cfg" or e.k)
    assert EditConfig.from_dict(ECFG.to_dict()) == ECFG
    with pytest.raises(ValueError, match="methods"):
        EditConfig(clarid=BASE, methods=("foo",))
    with pytest.raises(ValueError, match=r"1\.\.5, got 6"):
        EditConfig(clarid=BASE, ks=(6,), t_stars=())  # k > K for clarid and span
    with pytest.raises(ValueError, match="t_star"):
        EditConfig(clarid=BASE, t_stars=(333,))


def test_lowfreq_limit_follows_the_latent_channels(model):
    # 16 coarse directions exist in a 4-channel latent (4 x 2^2), so the config accepts k = 16; the 3-channel
    # pixel latent of this CDM has 12, which edit_batch reports
    cfg = EditConfig(clarid=BASE, ks=(1,), n_freq=2, t_stars=(), distance_ks=(("lowfreq", (16,)),),
                     guidance_sweep=())
    images, labels = _images(2)
    with pytest.raises(ValueError, match=r"coarse subspace has \(12 = 3 channels"):
        edit_batch(model, images, labels, AB, cfg, 500, torch.arange(2))


def test_edit_batch_matches_clarid_and_is_consistent(model):
    images, labels = _images(3)
    seeds = torch.arange(3)
    out = edit_batch(model, images, labels, AB, ECFG, 500, seeds)
    ref = clarid_batch(model, images, labels, AB, BASE, seeds)
    # The same inversion, directions and decoding as chapter 3's run.
    assert torch.equal(out["img.cfg/k0/w1"], ref["img.reconstruction"])
    assert torch.equal(out["img.cfg/k0/w3"], ref["img.cfg3"])
    assert torch.equal(out["img.clarid/kstar/w3"], ref["img.clarid"])
    torch.testing.assert_close(out["sigma"], ref["sigma"])
    # k = K random directions inside span(V_K) remove the same subspace as CLARID's K directions.
    torch.testing.assert_close(out["dx.span/k5/w3"], out["dx.clarid/k5/w3"], atol=1e-4, rtol=1e-4)
    assert (out["img.span/k5/w3"].int() - out["img.clarid/k5/w3"].int()).abs().max() <= 1
    # No projection: no latent or feature change; more directions: a larger latent change.
    assert (out["dx.cfg/k0/w3"] == 0).all() and (out["df.cfg/k0/w3"] == 0).all()
    assert (out["dx.clarid/k5/w3"] >= out["dx.clarid/k1/w3"]).all()
    assert (out["dx.isotropic/k20/w3"] > out["dx.isotropic/k1/w3"]).all()
    assert (out["dx.clarid/k1/w3"] <= out["x_norm"]).all()
    # The top direction changes the feature more than a random one (largest singular value).
    assert (out["df.clarid/k1/w3"] > out["df.isotropic/k1/w3"]).float().mean() >= 2 / 3
    assert out["lowfreq_energy"].shape == (3, 5) and ((out["lowfreq_energy"] >= 0) & (out["lowfreq_energy"] <= 1)).all()
    again = edit_batch(model, images, labels, AB, ECFG, 500, seeds)
    assert all(torch.equal(out[k], again[k]) for k in out)
    with pytest.raises(ValueError, match="seeds"):
        edit_batch(model, images, labels, AB, ECFG, 500, seeds[:2])


def test_edit_run_resumes_and_matches_batches(model, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    images, labels = _images(6)
    idx = torch.tensor([0, 2, 3, 5])
    real, calls = edits.edit_batch, []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(edits, "edit_batch", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        edit_run(model, "m", images, labels, idx, AB, ECFG, 300, chunk_size=2, progress=False)
    monkeypatch.setattr(edits, "edit_batch", real)
    run, manifest = edit_run(model, "m", images, labels, idx, AB, ECFG, 300, chunk_size=2, progress=False)
    whole = real(model, images[idx], labels[idx], AB, ECFG, 300, idx)
    for k, v in whole.items():  # equal up to batch-size-dependent float rounding
        if v.dtype == torch.uint8:
            assert (run[k].int() - v.int()).abs().max() <= 1, k
        else:
            torch.testing.assert_close(run[k], v, rtol=1e-4, atol=1e-4, msg=k)
    assert torch.equal(run["labels"], labels[idx]) and manifest["config"]["t_star"] == 300
    with pytest.raises(ValueError, match="t_star must be one of"):
        edit_run(model, "m", images, labels, idx, AB, ECFG, 700, progress=False)
    cached = edits.cached_edit_run("m", images, labels, idx, ECFG, 300)  # found by key, no model needed
    assert all(torch.equal(cached[k], run[k]) for k in run)
    assert edits.cached_edit_run("other", images, labels, idx, ECFG, 300) is None


class _Oracle(torch.nn.Module):
    """Reads the class from the mean of channel 0 (for scores that have a known answer)."""

    def forward(self, x):
        m = x[:, 0].mean((1, 2))
        return torch.stack([-(m - c).abs() for c in (-0.5, 0.0, 0.5)], 1)


def test_edit_scores_columns_and_distances(model):
    images, labels = _images(3)
    run = edit_batch(model, images, labels, AB, ECFG, 300, torch.arange(3))
    run["labels"] = labels
    scores = edit_scores(run, images, {"oracle": _Oracle()}, 300)
    assert len(scores) == 3 * len(ECFG.edits(300))
    row = scores[(scores.method == "clarid") & (scores.k == K_STAR)]
    assert (row.k_used.to_numpy() == run["k_star"].numpy()).all() and set(row.k_label) == {"k*"}
    # PSNR against the input itself is capped; an edit's output is further away than nothing.
    assert scores.psnr.max() <= 100 and scores.ssim.between(-1, 1).all()
    assert scores.correct.isin([0.0, 1.0]).all()
    recon = scores[(scores.method == "cfg") & (scores.w == 1.0)]
    assert recon.identity.sum() >= 2  # a plain reconstruction stays nearest its own input
    with pytest.raises(ValueError, match="input images"):
        edit_scores(run, images[:2], {"oracle": _Oracle()}, 300)


def _synthetic_scores():
    """Two curves over k: the control's class kept falls linearly with PSNR, CLARID's sits above or on it."""
    rng = np.random.default_rng(0)
    rows = []
    curves = {"isotropic": [(40, 0.9), (30, 0.8), (20, 0.7), (10, 0.6)],
              "clarid": [(35, 0.85), (25, 0.95), (15, 0.65), (5, 0.5)]}
    for method, pts in curves.items():
        for k, (p, c) in enumerate(pts, start=1):
            for i in range(400):
                rows.append({"image": i, "t_star": 900, "method": method, "k": k, "k_label": str(k), "w": 3.0,
                             "psnr": p + rng.normal(0, 0.5), "correct": float(rng.random() < c)})
    return pd.DataFrame(rows)


def test_matched_comparison_interpolates_at_equal_distance():
    table = matched_comparison(_synthetic_scores(), 900, 3.0, controls=("isotropic",)).set_index("k")
    # k=1 (35 dB): control 0.85 there -> tie; k=2 (25 dB): control 0.75 -> CLARID above;
    # k=3 (15 dB): 0.65 vs 0.65 -> tie; k=4 (5 dB): the control never gets that far -> unmatched.
    assert table.loc[1, "verdict"] == "tie" and table.loc[2, "verdict"] == "above"
    assert table.loc[3, "verdict"] == "tie" and table.loc[4, "verdict"] == "unmatched"
    assert math.isclose(table.loc[2, "control_value"], 0.75, abs_tol=0.05)
    assert equal_distance_verdict(table.reset_index()) == {"isotropic": "wins"}
    assert equal_distance_verdict(table.reset_index(), higher_is_better=False) == {"isotropic": "loses"}
    s = summarize(_synthetic_scores(), metrics=("correct", "psnr"))
    assert set(s.columns) >= {"correct", "correct_se", "psnr", "n"} and (s.n == 400).all()


def test_matched_comparison_uses_pure_cfg_as_k0():
    df = _synthetic_scores()
    # Pure CFG at 45 dB keeps the class always: a CLARID point at 42.5 dB now has a control value of 0.95
    # (between 1.0 at 45 dB and 0.9 at 40 dB); without the k = 0 point it would be unmatched.
    extra = [pd.DataFrame({"image": range(400), "t_star": 900, "method": m, "k": k, "k_label": str(k),
                           "w": 3.0, "psnr": p, "correct": c})
             for m, k, p, c in (("cfg", 0, 45.0, 1.0), ("clarid", 5, 42.5, 0.95))]
    table = matched_comparison(pd.concat([df, *extra]), 900, 3.0, controls=("isotropic",)).set_index("k")
    assert 0 not in table.index  # pure CFG is a control point, not one of CLARID's
    assert math.isclose(table.loc[5, "control_value"], 0.95, abs_tol=0.03)
    assert matched_comparison(pd.concat([df, extra[1]]), 900, 3.0, controls=("isotropic",)).set_index(
        "k").loc[5, "verdict"] == "unmatched"


def test_paired_gap():
    df = pd.DataFrame({"image": [0, 1, 2, 0, 1, 2], "method": ["a"] * 3 + ["b"] * 3,
                       "correct": [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]})
    gap, se, n = paired_gap(df, "correct", {"method": "a"}, {"method": "b"})
    assert n == 3 and math.isclose(gap, 1 / 3) and math.isclose(se, np.std([1, 0, 0], ddof=1) / math.sqrt(3))


def test_nearest_input():
    from paperlib.edits import nearest_input

    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(nearest_input(x + 0.01, x), torch.arange(5))
    assert torch.equal(nearest_input(x[[3, 1]], x), torch.tensor([3, 1]))


def _regime_scores(clarid_bg: float):
    """Shapes-like scores at one t*: CLARID k=1 at 30 dB keeps class and identity; its class-from-own-bg is
    ``clarid_bg``; the isotropic control's curve runs from 0.9 (k=0, 40 dB) to 0.5 (20 dB)."""
    rng = np.random.default_rng(1)
    rows = []
    spec = [("cfg", 0, 1.0, 45.0, 0.9), ("cfg", 0, 3.0, 40.0, 0.9), ("isotropic", 4, 3.0, 20.0, 0.5),
            ("clarid", 1, 3.0, 30.0, clarid_bg)]
    for method, k, w, p, bg in spec:
        for i in range(300):
            rows.append({"image": i, "t_star": 900, "method": method, "k": k, "k_label": str(k), "w": w,
                         "psnr": p, "correct": 1.0, "identity": 1.0, "own_bg": True,
                         "class_from_bg_own": float(rng.random() < bg)})
    return pd.DataFrame(rows)


def test_edit_regime_finds_the_cell_that_beats_its_control_at_equal_distance():
    # At 30 dB the control reads the class from 0.7 of own backgrounds; CLARID 0.3: fewer, so it edits.
    regime = edits.edit_regime(_regime_scores(0.3), 3.0)
    assert regime.edits.tolist() == [True]
    assert "1 of 1 cells" in edits.regime_sentence(regime, "shapes")
    regime = edits.edit_regime(_regime_scores(0.7), 3.0)  # as much as the control: no regime
    assert regime.edits.tolist() == [False] and regime["keeps class"].all() and regime["keeps identity"].all()
    assert "no cell of the map qualifies" in edits.regime_sentence(regime, "shapes")


def _cifar_regime_scores(clarid_correct: float, cfg_correct: float = 0.9, control_correct: float = 0.5):
    """CIFAR-like scores (no background) at one t*: the isotropic curve runs from pure CFG (40 dB,
    ``cfg_correct``) to ``control_correct`` at 20 dB; CLARID's one point is at 30 dB."""
    rng = np.random.default_rng(2)
    spec = [("cfg", 0, 1.0, 45.0, 0.8), ("cfg", 0, 3.0, 40.0, cfg_correct),
            ("isotropic", 4, 3.0, 20.0, control_correct),
            ("clarid", 1, 3.0, 30.0, clarid_correct)]
    rows = [{"image": i, "t_star": 900, "method": m, "k": k, "k_label": str(k), "w": w, "psnr": p,
             "correct": float(rng.random() < c), "identity": 1.0}
            for m, k, w, p, c in spec for i in range(300)]
    return pd.DataFrame(rows)


def test_a_tie_with_every_control_is_no_edit_on_cifar10():
    # the control keeps the class as well as CLARID at the same distance: keeps class and identity, no edit
    tie = edits.edit_regime(_cifar_regime_scores(0.9, control_correct=0.9), 3.0)
    assert tie["keeps class"].all() and tie["keeps identity"].all()
    assert tie["beyond controls"].tolist() == [False] and tie.edits.tolist() == [False]
    better = edits.edit_regime(_cifar_regime_scores(0.93), 3.0)
    assert better.edits.tolist() == [True]
    assert edits.regime_placebo(_cifar_regime_scores(0.93), 3.0) == {"isotropic": 0}
    assert better["matched controls"].tolist() == ["1 of 3"]
    assert "`isotropic` in 0 of 1 cells: no control passes" in edits.placebo_sentence({"isotropic": 0}, 1)
    assert "1 control passes" in edits.placebo_sentence({"isotropic": 1, "span": 0}, 1)


def test_keeps_class_is_judged_against_pure_cfg_at_the_same_guidance():
    # CLARID at 0.93 beats the reconstruction (0.8, w = 1) but falls short of pure CFG at w = 3 (0.99)
    regime = edits.edit_regime(_cifar_regime_scores(0.93, cfg_correct=0.99), 3.0)
    assert regime["keeps class"].tolist() == [False] and regime.edits.tolist() == [False]


def test_chapter_tables_on_a_real_run(model):
    images, labels = _images(3)
    run = edit_batch(model, images, labels, AB, ECFG, 500, torch.arange(3))
    run["labels"] = labels
    scores = edit_scores(run, images, {"oracle": _Oracle()}, 500)
    table = edits.control_table(scores, 500, 3.0)
    assert table.index.tolist() == ["reconstruction", "pure CFG", "CLARID (k*)", "span (k*)", "lowfreq (k*)",
                                    "isotropic (k*)"]
    assert (table.loc["reconstruction", "dx"] == 0) and (table.loc["CLARID (k*)", "dx"] > 0)
    sweep = edits.guidance_table(scores, 500)
    assert sorted(sweep.w.unique()) == [1.0, 2.0, 3.0] and "pure CFG" in set(sweep.method)
    assert edits.guidance_sentence(sweep, "cifar10", 3.0).startswith("On CIFAR-10, CLARID keeps the class in")
    m = edits.edit_map(scores, 3.0)
    assert list(m.columns) == ["1", "5", "k*"] and m.index.tolist() == [500]
    scaling = edits.scaling_table(scores.assign(steps=10), 3.0)
    assert set(scaling.method) == {"cfg", *edits.METHODS} and (scaling.steps == 10).all()
    clarid = scaling.set_index("method").loc["clarid", "correct"]
    ctrl = scaling.set_index("method").loc[list(edits.CONTROLS)]
    matched = ctrl.correct_at_clarid_psnr.notna()
    np.testing.assert_allclose(ctrl.matched_gap[matched], clarid - ctrl.correct_at_clarid_psnr[matched],
                               atol=1e-6)
    assert scaling.set_index("method").loc[["clarid", "cfg"], "matched_gap"].isna().all()


def _null_scores(rng: np.random.Generator, n: int = 100):
    """CLARID's six points lie on the control's curve (class kept falls linearly with PSNR): no effect."""
    rows = []
    ctrl = [(45, 0.95), (40, 0.9), (35, 0.85), (30, 0.8), (25, 0.75), (20, 0.7), (15, 0.65)]
    mine = [(42.5, 0.925), (37.5, 0.875), (32.5, 0.825), (27.5, 0.775), (22.5, 0.725), (17.5, 0.675)]
    for method, pts in (("cfg", ctrl[:1]), ("isotropic", ctrl[1:]), ("clarid", mine)):
        for k, (p, c) in enumerate(pts, start=0 if method == "cfg" else 1):
            rows.append(pd.DataFrame({"image": np.arange(n), "t_star": 900, "method": method, "k": k,
                                      "k_label": str(k), "w": 3.0, "psnr": p + rng.normal(0, 2.0, n),
                                      "correct": (rng.random(n) < c).astype(float)}))
    return pd.concat(rows, ignore_index=True)


def test_matched_comparison_null_gives_few_false_verdicts():
    # six points against one control: a 2-s.e. rule per point calls about a quarter of null runs "wins"
    # or "loses"; the simultaneous bootstrap band keeps it near alpha = 0.05
    rng = np.random.default_rng(7)
    words = [equal_distance_verdict(matched_comparison(_null_scores(rng), 900, 3.0, controls=("isotropic",),
                                                       n_boot=200, seed=t))["isotropic"] for t in range(100)]
    assert sum(wd != "ties" for wd in words) <= 12, words


def test_matched_comparison_is_paired_over_images():
    # every image is as easy for CLARID as for the control; CLARID also fixes 6% of the images: a small gap
    # that per-edit standard errors call a tie and the paired bootstrap finds
    rng = np.random.default_rng(3)
    n = 400
    easy = (rng.random(n) < 0.5).astype(float)
    fixed = np.maximum(easy, (rng.random(n) < 0.06).astype(float))
    spec = [("cfg", 0, 40.0, easy), ("isotropic", 1, 30.0, easy), ("isotropic", 2, 20.0, easy),
            ("clarid", 1, 35.0, fixed), ("clarid", 2, 25.0, fixed)]
    df = pd.concat([pd.DataFrame({"image": np.arange(n), "t_star": 900, "method": m, "k": k, "k_label": str(k),
                                  "w": 3.0, "psnr": p, "correct": c}) for m, k, p, c in spec])
    table = matched_comparison(df, 900, 3.0, controls=("isotropic",)).set_index("k")
    assert (table.verdict == "above").all() and (table.n == n).all()
    s = summarize(df, by=("method", "k"), metrics=("correct",)).set_index(["method", "k"])
    unpaired = math.hypot(s.loc[("clarid", 1), "correct_se"], s.loc[("isotropic", 1), "correct_se"])
    assert table.loc[1, "gap"] < 2 * unpaired  # the old rule: a tie
    assert table.loc[1, "gap_se"] < unpaired / 2


def test_matched_comparison_uses_the_same_images_on_both_axes():
    # the metric exists on half of the images only (own backgrounds): the distance is averaged over them too
    df = _synthetic_scores()
    df.loc[df.image % 2 == 1, "correct"] = np.nan
    df.loc[df.image % 2 == 1, "psnr"] = 0.0  # would drag the mean distance down if counted
    table = matched_comparison(df, 900, 3.0, controls=("isotropic",))
    assert (table.n == 200).all() and table.distance.min() > 4
    with pytest.raises(ValueError, match="alpha"):
        matched_comparison(df, 900, 3.0, alpha=1.5)


def test_edit_scores_find_a_moved_object_and_keep_it_from_the_background_probes():
    from paperlib.data import make_shapes
    from paperlib.factors import MOVED_IOU, largest_component

    class Fixed(torch.nn.Module):  # returns preset outputs for the known batch
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x):
            return self.out[: len(x)]

    class SeesColour(torch.nn.Module):  # reads the class iff a pixel of the object's colour is visible
        def __init__(self, colours, labels):
            super().__init__()
            self.colours, self.labels = colours, labels

        def forward(self, x):
            x = (255 * x[: len(self.labels)]).round().to(torch.uint8)  # predict passes [0, 1] floats
            seen = (x == self.colours[:, :, None, None]).all(1).flatten(1).any(1)
            return torch.nn.functional.one_hot(torch.where(seen, self.labels, (self.labels + 1) % 10), 10).float()

    d = make_shapes(8, 3, 16)
    cols = [m.any(0).nonzero()[:, 0] for m in d.masks]  # to the far edge, without wrapping
    moved_masks = torch.stack([m.roll(15 - int(c[-1]) if 15 - c[-1] >= c[0] else -int(c[0]), dims=1)
                               for m, c in zip(d.masks, cols)])
    assert torch.equal(largest_component(moved_masks), moved_masks)  # one object each
    colours = (255 * d.factors["fg_color"]).round().to(torch.uint8)
    moved = torch.where(moved_masks[:, None], colours[:, :, None, None], d.backgrounds)
    run = {"labels": d.labels, "k_star": torch.full((8,), 2), "img.clarid/kstar/w3": moved,
           "dx.clarid/kstar/w3": torch.ones(8), "df.clarid/kstar/w3": torch.ones(8),
           "img.cfg/k0/w3": d.images, "dx.cfg/k0/w3": torch.zeros(8), "df.cfg/k0/w3": torch.zeros(8)}
    probes = {"bg_family": Fixed(torch.nn.functional.one_hot(d.factors["bg_family"], 10).float()),
              "class_from_bg": SeesColour(colours, d.labels)}
    plain = edit_scores(run, d.images, {"oracle": _Oracle()}, 700, d, probes)
    found = edit_scores(run, d.images, {"oracle": _Oracle()}, 700, d, {**probes, "mask": Fixed(
        torch.where(moved_masks, 4.0, -4.0))})
    # Every edit of an image is measured on the same background (the unmoved output's view also hides the box
    # where the other edit drew the object).
    still = found[found.method == "cfg"]
    assert still.bg_visible.tolist() == found[found.method == "clarid"].bg_visible.tolist()
    assert still.class_from_bg.eq(0).all() and (still.change_outside == 0).all()
    assert (found.bg_visible < 1).all()
    plain, found = plain[plain.method == "clarid"], found[found.method == "clarid"]
    outside_box = (moved_masks & ~edits_box(d.masks)).flatten(1).any(1)
    assert outside_box.all()  # every moved object shows outside the input's box
    # The input's mask alone: the moved silhouette is read as background, and as background change.
    assert plain.class_from_bg.eq(1).all() and (plain.change_outside > 0).all()
    # With the output's object found: it is moved, hidden from the probes, and the background is unchanged.
    assert found.object_iou.tolist() == pytest.approx(
        ((moved_masks & d.masks).flatten(1).sum(1) / (moved_masks | d.masks).flatten(1).sum(1)).tolist())
    assert found.moved.tolist() == (found.object_iou < MOVED_IOU).astype(float).tolist()
    assert found.class_from_bg.eq(0).all() and (found.change_outside == 0).all()
    assert found.bg_family_kept.eq(1).all()


def edits_box(masks):
    from paperlib.data import foreground_box_mask
    from paperlib.factors import BOX_MARGIN

    return foreground_box_mask(masks, BOX_MARGIN)


def test_verdict_words_read_as_english():
    words = edits.verdict_words({"span": "wins", "lowfreq": "unmatched", "isotropic": "ties", "x": "mixed",
                                 "y": "loses"})
    assert words == ("wins against `span`, cannot be compared with `lowfreq` (their distances to the input never "
                     "overlap), ties with `isotropic`, both wins and loses against `x`, loses against `y`")


def _at_k_star(scores):
    return scores.assign(k=scores.k.where(scores.method != "clarid", edits.K_STAR))


def test_t_star_sensitivity_reports_verdicts_per_t_star_and_their_changes():
    wins = _cifar_regime_scores(0.93)  # t* = 900: above the control at equal distance
    tie = _cifar_regime_scores(0.9, control_correct=0.9).assign(t_star=800)  # a tie at 800
    far = _cifar_regime_scores(0.9, control_correct=0.9).assign(t_star=500)  # off the plateau
    scores = _at_k_star(pd.concat([wins, tie, far], ignore_index=True))
    table = edits.t_star_sensitivity(scores, 3.0, [800, 900, 1000], 800)
    assert table.index.tolist() == [500, 800, 900] and table.chosen.tolist() == [False, True, False]
    assert table["on plateau"].tolist() == [False, True, True]
    assert table["class kept vs isotropic"].tolist() == ["ties", "ties", "wins"]
    assert table.regime.tolist() == ["does not", "does not", "holds"]
    assert table.edits.tolist() == ["0 of 1", "0 of 1", "1 of 1"]
    text = edits.sensitivity_sentence(table, [800, 900, 1000], "cifar10")
    assert "not in the map: 1000" in text and "2 of 2 verdicts differ (" in text
    assert "ties at 800, wins at 900" in text
    assert "Off the plateau (t* = 500), every verdict is the one at t* = 800." in text
    same = edits.t_star_sensitivity(_at_k_star(pd.concat([wins, wins.assign(t_star=800), far])),
                                    3.0, [800, 900], 900)
    text = edits.sensitivity_sentence(same, [800, 900], "cifar10")
    assert "are the same" in text and "2 of 2 verdicts differ from those at t* = 900" in text
    # a verdict missing at one t* and present at another differs; missing at both is the same
    gaps = pd.DataFrame({"chosen": [True, False, False], "on plateau": [True, True, False],
                         "background vs span": ["wins", None, None], "regime": ["holds"] * 3},
                        index=pd.Index([800, 900, 500], name="t*"))
    text = edits.sensitivity_sentence(gaps, [800, 900], "shapes")
    assert "background vs span: wins at 800, no verdict at 900" in text
    assert "1 of 2 verdicts differ from those at t* = 800: background vs span" in text
    one = edits.t_star_sensitivity(_at_k_star(wins), 3.0, [900, 1000], 900)
    assert "cannot show" in edits.sensitivity_sentence(one, [900, 1000], "cifar10")
    shapes = edits.t_star_sensitivity(_at_k_star(_regime_scores(0.3)), 3.0, [900], 900)
    shown = edits.display_verdicts(pd.concat({"cifar10": one, "shapes": shapes}, names=["dataset"]))
    assert shown[("class kept vs", "isotropic")].tolist() == ["wins", "ties"]
    assert shown[("background vs", "isotropic")].tolist() == ["—", "wins"]
    assert shown[("psnr", "")].dtype == float


def test_t_star_sensitivity_reads_the_background_on_shapes():
    table = edits.t_star_sensitivity(_at_k_star(_regime_scores(0.3)), 3.0, [900], 900)
    assert table.loc[900, "background vs isotropic"] == "wins"  # less class read from own backgrounds
