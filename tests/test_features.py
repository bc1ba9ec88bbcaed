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
    assert set(out) == {"condition", "class"} and all(0 <= v["mean"] <= 1 for v in out.values())


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


def test_nmi_verdict():
    import pandas as pd

    from paperlib.features import nmi_verdict

    t = pd.DataFrame({"NMI": [0.90, 0.99, 0.91], "std": [0.01, 0.005, 0.01]}, index=["original", "clarid", "random"])
    v = nmi_verdict(t, "toy")
    assert v.startswith("**toy**") and "not saturated" in v and "higher" in v and ", and better" in v
    t.loc["clarid", "NMI"] = 0.905
    v = nmi_verdict(t, "toy")
    assert "no different" in v and "no better" in v and "CFG" not in v
    t.loc["cfg3"] = [0.99, 0.01]
    assert nmi_verdict(t, "toy", cfg="cfg3").endswith("; CFG (cfg3) clusters above CLARID (0.990).")
    t.loc["original", "NMI"] = 0.97
    assert "saturated (≥ 0.95)" in nmi_verdict(t, "toy") and "lower" in nmi_verdict(t, "toy")
    with pytest.raises(KeyError):
        nmi_verdict(t.drop("random"), "toy")


def test_methods_nmi_matches_cached_features_and_kmeans(setup, tmp_path, monkeypatch):
    from paperlib.features import methods_nmi
    from paperlib.metrics import kmeans_nmi

    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    model, images, labels = setup
    sets = {"original": images, "flipped": images.flip(-1)}
    null = torch.full_like(labels, model.null_class)
    for cond in (None, null):
        table, feats = methods_nmi(model, "tiny", sets, labels, AB, 200, "mid", 10, seeds=[0, 1], condition=cond)
        assert list(table.index) == ["original", "flipped"] and table.index.name == "method"
        for name, imgs in sets.items():
            f = image_features(model, imgs, labels if cond is None else cond, AB, 200, "mid", 10, progress=False)
            torch.testing.assert_close(feats[name], f)
            ref = kmeans_nmi(f, labels, seeds=[0, 1])
            assert table.loc[name, "NMI"] == pytest.approx(ref["mean"])
            assert table.loc[name, "std"] == pytest.approx(ref["std"])


def test_condition_verdict():
    from paperlib.features import condition_verdict

    v = condition_verdict({"condition": {"mean": 0.89}, "class": {"mean": 0.02}}, "toy")
    assert v.startswith("Under a shuffled condition the toy features cluster by the condition") and "(0.02)" in v
    v = condition_verdict({"condition": {"mean": 0.1}, "class": {"mean": 0.7}}, "toy")
    assert "by the image's class (NMI 0.70)" in v and "NMI can compare methods" in v


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
    t.loc["original", "NMI"] = NMI_SATURATED
    assert nmi_claim_verdict(t) == "cannot tell"  # saturated originals: the paper's own caveat


def test_follows_label():
    from paperlib.features import follows_label

    assert follows_label({"condition": {"mean": 0.74}, "class": {"mean": 0.08}})
    assert not follows_label({"condition": {"mean": 0.05}, "class": {"mean": 0.60}})
