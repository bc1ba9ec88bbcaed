"""Pooled CDM features of images at their DDIM inversion."""

import pytest
import torch

from paperlib import features
from paperlib.data import to_model_range
from paperlib.diffusion import alpha_bar, ddim_invert, linear_beta_schedule
from paperlib.features import (
    cached_image_features,
    condition_control,
    image_features,
    layer_time_features,
    layer_time_nmi,
)
from paperlib.models import CDMConfig, ClassConditionalUNet

TINY = CDMConfig(sample_size=8, num_classes=3, block_out_channels=(8, 8), attention_levels=(1,), norm_num_groups=4,
                 attention_head_dim=8)
AB = alpha_bar(linear_beta_schedule())


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = ClassConditionalUNet(TINY).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 8, 8), generator=g, dtype=torch.uint8)
    return model, images, torch.tensor([0, 1, 2, 0, 1])


def test_features_at_t0_are_the_clean_images(setup):
    model, images, labels = setup
    f = layer_time_features(model, images, labels, AB, [0], ["mid", "down.0"], num_steps=10, progress=False)
    x0 = to_model_range(images)
    t0 = torch.zeros(5, dtype=torch.long)
    torch.testing.assert_close(f[("mid", 0)], model.pooled_features(x0, t0, labels, "mid"))
    assert f[("down.0", 0)].shape == (5, 8)


def test_features_at_t_use_the_inversion(setup):
    model, images, labels = setup
    f = layer_time_features(model, images, labels, AB, [300, 500], ["mid"], num_steps=10, batch_size=2,
                            progress=False)
    x_t = ddim_invert(model, to_model_range(images), labels, AB, 500, num_steps=10)
    torch.testing.assert_close(f[("mid", 500)], model.pooled_features(x_t, torch.full((5,), 500), labels, "mid"),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(image_features(model, images, labels, AB, 300, "mid", 10, progress=False),
                               f[("mid", 300)])


def test_bad_arguments(setup):
    model, images, labels = setup
    with pytest.raises(ValueError, match="DDIM grid"):
        layer_time_features(model, images, labels, AB, [250], ["mid"], num_steps=10, progress=False)
    with pytest.raises(ValueError, match="layers must be among"):
        layer_time_features(model, images, labels, AB, [0], ["middle"], num_steps=10, progress=False)


def test_cached_features_match_and_are_computed_once(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    model, images, labels = setup
    f = cached_image_features(model, "tiny", images, labels, AB, 200, "mid", 10, progress=False)
    torch.testing.assert_close(f, image_features(model, images, labels, AB, 200, "mid", 10, progress=False))
    heat = layer_time_nmi(model, "tiny", images, labels, AB, [0, 200], ["mid", "down.0"], 10, seeds=[0],
                          progress=False)
    assert heat.shape == (2, 2) and list(heat.index) == ["mid", "down.0"] and list(heat.columns) == [0, 200]
    assert ((heat >= 0) & (heat <= 1)).all().all()
    assert heat.attrs["seconds"] >= 0  # the compute time its manifest recorded

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached result")

    monkeypatch.setattr(features, "layer_time_features", fail)
    torch.testing.assert_close(cached_image_features(model, "tiny", images, labels, AB, 200, "mid", 10), f)
    assert layer_time_nmi(model, "tiny", images, labels, AB, [0, 200], ["mid", "down.0"], 10, seeds=[0]).equals(heat)
    # Other images, another key.
    with pytest.raises(AssertionError, match="recomputed"):
        cached_image_features(model, "tiny", images.flip(0), labels, AB, 200, "mid", 10)


def test_condition_control_featurises_under_shuffled_labels(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    model, images, labels = setup
    out = condition_control(model, "tiny", images, labels, AB, 200, "mid", 10, seeds=[0], seed=3)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
    assert not torch.equal(shuffled, labels)
    # The features it scored are the cached ones under the shuffled condition, not the true one.
    calls = []
    monkeypatch.setattr(features, "image_features", lambda *a, **k: calls.append(a) or None)
    cached_image_features(model, "tiny", images, shuffled, AB, 200, "mid", 10)
    assert not calls
    assert set(out) == {"condition", "class", "seconds"} and out["seconds"] >= 0
    assert all(0 <= out[k]["mean"] <= 1 for k in ("condition", "class"))


def test_layer_time_nmi_under_another_condition(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    model, images, labels = setup
    null = torch.full_like(labels, model.null_class)
    calls = []
    real = features.layer_time_features
    monkeypatch.setattr(features, "layer_time_features",
                        lambda m, x, y, *a, **k: calls.append(y) or real(m, x, y, *a, **k))
    heat = layer_time_nmi(model, "tiny", images, labels, AB, [0, 200], ["mid"], 10, seeds=[0], condition=null)
    heat_c = layer_time_nmi(model, "tiny", images, labels, AB, [0, 200], ["mid"], 10, seeds=[0])
    # Featurised under the given condition, and cached under another key than the class-conditional sweep.
    assert torch.equal(calls[0], null) and torch.equal(calls[1], labels) and len(calls) == 2
    assert heat.shape == heat_c.shape == (1, 2)
    # At t = 0 the image is not inverted, so only the condition changes the feature, hence (maybe) the NMI.
    f_null = layer_time_features(model, images, null, AB, [0], ["mid"], 10, progress=False)[("mid", 0)]
    f_cls = layer_time_features(model, images, labels, AB, [0], ["mid"], 10, progress=False)[("mid", 0)]
    assert not torch.allclose(f_null, f_cls)
    with pytest.raises(ValueError, match="labels' shape"):
        layer_time_nmi(model, "tiny", images, labels, AB, [0], ["mid"], 10, seeds=[0], condition=null[:2])


def _nmi_table():
    import numpy as np
    import pandas as pd

    t = pd.DataFrame({"NMI": [0.80, 0.85, 0.84, 0.90, 0.70, 0.95], "std": [0.01, 0.01, 0.02, 0.01, 0.0, 0.0]},
                     index=["original", "clarid", "random", "cfg3", "k2", "k16"])
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 200)  # shared by all rows: paired replicates
    boot = {m: t.loc[m, "NMI"] + noise + rng.normal(0, s, 200) for m, s in
            {"original": 0.002, "clarid": 0.002, "random": 0.02, "cfg3": 0.002, "k2": 0.002, "k16": 0.002}.items()}
    return t, boot


def test_nmi_findings_write_each_finding_once_for_all_datasets():
    from paperlib.features import condition_findings, nmi_findings, verdict_basis

    t, boot = _nmi_table()
    u = t.copy()
    u.loc["clarid", "NMI"] = 0.80
    boot_u = {**boot, "clarid": boot["original"]}
    names = {"a": "Set A", "b": "Set B"}
    v = nmi_findings({"a": t, "b": t}, {"a": boot, "b": boot}, names, cfg={"a": "cfg3", "b": "cfg3"})
    assert v.startswith("The originals' NMI is below the saturation level 0.95 on Set A (0.800) and Set B (0.800).")
    assert "cluster higher than the originals' on Set A (0.850 vs 0.800; gap +0.050, 95 % interval" in v
    assert v.count("higher than the originals'") == 1  # written once, both datasets in it
    assert "level with the random-direction control" in v  # within its noise
    assert "below the best fixed k on Set A (k = 16: 0.850 vs 0.950" in v
    assert "CFG's NMI is above CLARID's on Set A (CFG w=3: 0.900 vs 0.850" in v
    w = nmi_findings({"a": t, "b": u}, {"a": boot, "b": boot_u}, names)
    assert "higher than the originals' on Set A (" in w and " but no differently from the originals' on Set B (" in w
    assert "CFG" not in w
    leak = {"condition": {"mean": 0.89}, "class": {"mean": 0.02}}
    image = {"condition": {"mean": 0.1}, "class": {"mean": 0.7}}
    c = condition_findings({"a": leak, "b": leak}, names)
    assert "by the condition they are given more than by the images' class on Set A (NMI 0.89 with the " \
           "condition, 0.02 with the class) and Set B" in c and "cannot rank methods" in c
    assert "NMI can compare methods" in condition_findings({"a": image}, names)
    assert verdict_basis({"a": leak, "b": leak}, names) == (
        "the image-only features on Set A and Set B, where the class-conditioned ones follow the label they are given")
    assert "the class-conditioned features on Set B" in verdict_basis({"a": leak, "b": image}, names)


def test_method_labels_order_and_display_table():
    from paperlib.features import best_fixed_k, method_label, method_order, nmi_display

    names = ["k16", "cfg3", "clarid", "k2", "original", "random", "reconstruction", "k1"]
    assert [method_label(m) for m in sorted(names, key=method_order)] == [
        "originals", "reconstruction (k = 0)", "k = 1", "k = 2", "k = 16", "CLARID (k*)", "k* random directions",
        "CFG w=3"]
    t, _ = _nmi_table()
    assert best_fixed_k(t) == "k16"
    with pytest.raises(ValueError, match="no fixed-k row"):
        best_fixed_k(t.drop(["k2", "k16"]))
    t["se"] = 0.02
    d = nmi_display({"Shapes": t, "CIFAR-10": t.drop("cfg3")})
    assert list(d.index) == ["originals", "k = 2", "k = 16", "CLARID (k*)", "k* random directions", "CFG w=3"]
    assert d.loc["k = 16", ("Shapes", "NMI ± s.d. over K-means seeds")] == "0.950 ± 0.000"
    assert d.loc["originals", ("CIFAR-10", "s.e. over images")] == "0.020"
    assert d.loc["CFG w=3", ("CIFAR-10", "NMI ± s.d. over K-means seeds")] == "—"


def test_nmi_glue_values():
    from paperlib.features import nmi_glue_values

    t, boot = _nmi_table()
    g = nmi_glue_values("0", {"toy": t}, {"toy": boot})
    assert g["nmi0_toy_clarid"] == "0.850 ± 0.010" and g["nmi0_toy_best_k"] == "0.950 ± 0.000"
    assert g["best_k0_toy"] == "16"
    lo, hi = (float(x) for x in g["gap0_toy_clarid_best_k"].split(" to "))
    assert lo < -0.1 < hi < 0  # CLARID 0.10 below k = 16
    assert set(g) >= {"nmi0_toy_original", "gap0_toy_clarid_original"}


def test_methods_nmi_matches_cached_features_and_kmeans(setup, tmp_path, monkeypatch):
    from paperlib.features import methods_nmi
    from paperlib.metrics import kmeans_nmi

    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    model, images, labels = setup
    sets = {"original": images, "flipped": images.flip(-1)}
    null = torch.full_like(labels, model.null_class)
    for cond in (None, null):
        table, feats, boot = methods_nmi(model, "tiny", sets, labels, AB, 200, "mid", 10, seeds=[0, 1],
                                         condition=cond, n_boot=50)
        assert list(table.index) == ["original", "flipped"] and table.index.name == "method"
        assert table.attrs["seconds"] >= 0 and set(boot) == set(sets) and boot["original"].shape == (50,)
        assert (table["se"] >= 0).all()
        for name, imgs in sets.items():
            f = image_features(model, imgs, labels if cond is None else cond, AB, 200, "mid", 10, progress=False)
            torch.testing.assert_close(feats[name], f)
            ref = kmeans_nmi(f, labels, seeds=[0, 1])
            assert table.loc[name, "NMI"] == pytest.approx(ref["mean"])
            assert table.loc[name, "std"] == pytest.approx(ref["std"])


def test_layer_time_features_rejects_bad_inputs(setup):
    model, images, labels = setup
    with pytest.raises(ValueError, match=r"images must hold at least one sample .*got shape \(0, 3, 8, 8\)"):
        layer_time_features(model, images[:0], labels[:0], AB, [0], ["mid"], num_steps=10, progress=False)
    with pytest.raises(ValueError, match=r"images must be a torch.uint8 tensor .*got torch.float32"):
        layer_time_features(model, images.float(), labels, AB, [0], ["mid"], num_steps=10, progress=False)
    with pytest.raises(ValueError, match=r"labels must be integer class labels .*\(e.g. 0.0"):
        layer_time_features(model, images, labels.float(), AB, [0], ["mid"], num_steps=10, progress=False)
    # The null class is a valid condition here (features that see only the image), and says so.
    with pytest.raises(ValueError, match=r"labels must be in 0..3 \(0..2 real classes, 3 = the null class\), got \[4"):
        layer_time_features(model, images, torch.tensor([0, 1, 2, 3, 4]), AB, [0], ["mid"], num_steps=10,
                            progress=False)
    with pytest.raises(ValueError, match=r"times\[\] must be an integer, got float 300.5"):
        layer_time_features(model, images, labels, AB, [300.5], ["mid"], num_steps=10, progress=False)
    null = torch.full((5,), model.null_class)
    assert layer_time_features(model, images, null, AB, [0], ["mid"], num_steps=10, progress=False)[("mid", 0)].shape \
        == (5, 8)


def test_nmi_order_and_claim_verdicts():
    import pandas as pd

    from paperlib.features import NMI_SATURATED, nmi_claim_verdict, nmi_order

    t = pd.DataFrame({"NMI": [0.80, 0.85, 0.84, 0.90], "std": [0.01, 0.01, 0.02, 0.01]},
                     index=["original", "clarid", "random", "cfg3"])
    assert nmi_order(t, "clarid", "original") == "above"  # gap 0.05 > spread 0.02
    assert nmi_order(t, "original", "clarid") == "below"
    assert nmi_order(t, "clarid", "random") == "level"  # gap 0.01 within the spread 0.03
    assert nmi_claim_verdict(t) == "holds"
    assert nmi_claim_verdict(t, "cfg3", "clarid") == "holds"
    assert nmi_claim_verdict(t, "clarid", "cfg3") == "does not"
    # with paired bootstrap replicates over images the intervals decide instead of the K-means spreads
    t2, boot = _nmi_table()
    assert nmi_order(t2, "clarid", "original", boot) == "above"
    assert nmi_order(t2, "clarid", "random", boot) == "level"
    assert nmi_order(t2, "clarid", "k16", boot) == "below"
    assert nmi_claim_verdict(t2, "clarid", "k16", boot=boot) == "does not"
    assert nmi_claim_verdict(t2, boot=boot) == "holds"
    t.loc["original", "NMI"] = NMI_SATURATED
    assert nmi_claim_verdict(t) == "cannot tell"  # saturated originals: the paper's own caveat


def test_follows_label():
    from paperlib.features import follows_label

    assert follows_label({"condition": {"mean": 0.74}, "class": {"mean": 0.08}})
    assert not follows_label({"condition": {"mean": 0.05}, "class": {"mean": 0.60}})


def test_nmi_answer_and_no_negative_zero():
    from paperlib.features import nmi_answer, nmi_glue_values

    t, boot = _nmi_table()
    u, boot_u = t.copy(), {**boot, "clarid": boot["original"]}
    u.loc["clarid", "NMI"] = 0.80
    a = nmi_answer({"a": (u, boot_u), "b": (t, boot)}, {"a": "image-only", "b": "image-only"},
                   {"a": "Set A", "b": "Set B"})
    assert a == ("on image-only features, CLARID clusters no differently from the originals (within the noise "
                 "over images) on Set A (0.800 vs 0.800) but higher than the originals on Set B (0.850 vs 0.800); "
                 "and a fixed k clusters better still on Set A (k = 16: 0.950) and Set B (k = 16: 0.950)")
    tie = t.copy()
    tie.loc["k16", "NMI"] = tie.loc["clarid", "NMI"]
    g = nmi_glue_values("", {"x": tie}, {"x": {**boot, "k16": boot["clarid"]}})
    assert g["gap_x_clarid_best_k"] == "+0.000 to +0.000"


def test_sweep_sample_is_balanced_or_the_first_images():
    labels = torch.arange(10).repeat_interleave(50)  # ordered by class, as our CIFAR-10 copy
    first = features.sweep_sample(labels, 120, balanced=False)
    assert torch.equal(first, torch.arange(120)) and len(labels[first].unique()) == 3
    pos = features.sweep_sample(labels, 120, seed=1)
    counts = torch.bincount(labels[pos], minlength=10)
    assert len(pos) == 120 and (counts == 12).all() and torch.equal(pos, pos.sort().values)
    assert torch.equal(pos, features.sweep_sample(labels, 120, seed=1))  # seeded
    assert not torch.equal(pos, features.sweep_sample(labels, 120, seed=2))
    assert len(features.sweep_sample(labels, 10_000)) == 500  # at most all of them
    with pytest.raises(ValueError):
        features.sweep_sample(labels, 0)
