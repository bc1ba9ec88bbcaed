"""Factor-by-factor measurements on shapes."""

import pytest
import torch
from torch import nn

from paperlib.data import make_shapes
from paperlib.factors import class_kept, class_kept_summary, factor_changes, foreground_color, pixel_change


class Oracle(nn.Module):
    """Returns fixed logits for a known batch (stands in for a trained classifier or probe)."""

    def __init__(self, targets):
        super().__init__()
        self.targets = targets

    def forward(self, x):
        return nn.functional.one_hot(self.targets[: len(x)], 10).float()


def test_foreground_color_and_pixel_change_are_exact():
    d = make_shapes(20, 0, 16)
    torch.testing.assert_close(foreground_color(d.images, d.masks), d.factors["fg_color"], atol=1e-6, rtol=0)
    other = d.images.clone()
    other[:, :, ~d.masks[0]] = 0  # change only outside image 0's mask
    change = pixel_change(d.images, d.images, d.masks)
    assert (change["inside"] == 0).all() and (change["outside"] == 0).all()
    c0 = pixel_change(d.images[:1], other[:1], d.masks[:1])
    assert c0["inside"].item() == 0 and c0["outside"].item() > 0


def test_factor_changes_of_identity_outputs():
    d = make_shapes(12, 1, 16)
    clf = {"a": Oracle(d.labels)}
    probes = {"bg_family": Oracle(d.factors["bg_family"]), "class_from_bg": Oracle(d.labels)}
    t = factor_changes(d, {"identity": d.images.clone()}, clf, probes)
    assert t.loc["identity", "class kept"] == 1.0 and t.loc["identity", "Δ fg colour"] == 0.0
    assert t.loc["identity", "change inside fg"] == 0.0 and t.loc["identity", "bg family kept"] == 1.0
    assert list(t.index) == ["original", "identity"]
    assert t.loc["original", "inside / outside"] != t.loc["original", "inside / outside"]  # 0/0: NaN, not 0


def test_clarid_ablation_runs_each_variant_against_its_control():
    from types import SimpleNamespace

    import pytest

    from paperlib.canonical import ClaridConfig
    from paperlib.diffusion import alpha_bar, linear_beta_schedule
    from paperlib.factors import clarid_ablation
    from paperlib.models import CDMConfig, ClassConditionalUNet

    torch.manual_seed(0)
    tiny = CDMConfig(sample_size=16, num_classes=10, block_out_channels=(8, 8), attention_levels=(), norm_num_groups=4,
                     attention_head_dim=8)
    d = make_shapes(8, 2, 16)
    cdm = SimpleNamespace(model=ClassConditionalUNet(tiny).eval().requires_grad_(False), manifest={"key": "tiny"},
                          images=d.images, labels=d.labels, alpha_bar=alpha_bar(linear_beta_schedule()))
    idx = torch.tensor([1, 4, 6])
    base = ClaridConfig(t_star=400, K=3, num_steps=10)
    clf = {"a": Oracle(d.labels[idx])}
    probes = {"bg_family": Oracle(d.factors["bg_family"][idx]), "class_from_bg": Oracle(d.labels[idx])}
    variants = {"base": {}, "earlier": {"t_star": -200}, "score": {"jacobian": "class_score"}}
    table = clarid_ablation(cdm, base, d.subset(idx), idx, clf, probes, variants, progress=False)
    assert list(table.index) == ["base", "earlier", "score"]
    assert list(table["t*"]) == [400, 200, 400]
    assert ((table["k* (mean)"] >= 1) & (table["k* (mean)"] <= 3)).all()
    assert table["bg→class, own bg (inputs)"].nunique(dropna=False) == 1  # the same inputs for every variant
    with pytest.raises(ValueError, match="off the schedule"):
        clarid_ablation(cdm, base, d.subset(idx), idx, clf, probes, {"late": {"t_star": 700}}, progress=False)
    with pytest.raises(ValueError, match="labels differ"):
        clarid_ablation(cdm, base, d.subset(idx[:2]), idx, clf, probes, variants, progress=False)


def test_ablation_variants_and_verdict():
    import pandas as pd
    import pytest

    from paperlib.factors import ABLATIONS, ablation_variants, ablation_verdict

    assert ablation_variants(600) == ABLATIONS
    assert "t* + 200" not in ablation_variants(900) and "t* - 200" not in ablation_variants(200)
    assert list(ablation_variants(600, names=["K = 10"])) == ["K = 10"]
    with pytest.raises(ValueError, match="ablation names"):
        ablation_variants(600, names=["K = 11"])
    own, rand = "bg→class, own bg", "bg→class, random bg"
    base = {"class kept": 0.95, f"{own} (ctrl)": 0.9, f"{own} (inputs)": 0.9, f"{rand} (ctrl)": 0.2,
            f"{rand} (inputs)": 0.2, rand: 0.2}
    t = pd.DataFrame({"a": {**base, own: 0.5}, "b": {**base, own: 0.88},
                      "c": {**base, own: 0.2, "class kept": 0.5, rand: 0.6}}).T
    v = ablation_verdict(t)
    assert "≥ 0.80): a." in v and v.endswith("control's): c.")
    assert ablation_verdict(t.loc[["b"]]).count("no variant") == 2



def test_ablation_subset_balances_backgrounds():
    from paperlib.factors import ablation_subset

    d = make_shapes(400, 3, 16)
    rows = ablation_subset(d, 40, seed=0)
    own = d.factors["bg_family"][rows] == d.labels[rows]
    n_other = int((d.factors["bg_family"] != d.labels).sum())
    assert len(rows) == 40 and len(rows.unique()) == 40 and (~own).sum() == min(20, n_other)
    assert torch.equal(rows, ablation_subset(d, 40, seed=0))


def test_class_kept_counts_each_classifier_and_image():
    labels = torch.tensor([0, 1, 2, 3])
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    right, half = Oracle(labels), Oracle(torch.tensor([0, 1, 5, 5]))
    t = class_kept({"a": images, "b": images}, labels, {"right": right, "half": half})
    assert list(t.index) == ["a", "b"] and t.loc["a", "right"] == 1.0 and t.loc["a", "half"] == 0.5
    assert t.loc["a", "class kept"] == 0.75
    # Per image: 1, 1, 0.5, 0.5 -> std 0.2887, s.e. = std / 2.
    assert t.loc["a", "s.e."] == pytest.approx(torch.tensor([1, 1, 0.5, 0.5]).std().item() / 2)
    with pytest.raises(ValueError, match="outputs for"):
        class_kept({"a": images[:3]}, labels, {"right": right})


def test_class_kept_summary_says_each_finding_once():
    import pandas as pd

    def table(clarid):
        return pd.DataFrame({"class kept": [0.80, clarid, 0.79], "s.e.": [0.01, 0.01, 0.01]},
                            index=["original", "CLARID", "random dirs"])

    v = class_kept_summary({"shapes": table(0.78)})  # gap 0.02 < 2 * sqrt(2) * 0.01
    assert v == "On shapes CLARID keeps the class as often as the originals carry it (within two standard errors)."
    v = class_kept_summary({"shapes": table(0.66), "cifar10": table(0.56)})
    assert v == ("CLARID loses class evidence: on shapes 14 points and on CIFAR-10 24 points fewer of its outputs "
                 "are recognised than of the originals, and on both fewer than after removing as many random "
                 "directions.")
    assert v.count("loses") == 1
    v = class_kept_summary({"shapes": table(0.95), "cifar10": table(0.56)})
    assert v.startswith("CLARID loses class evidence: on CIFAR-10 24 points fewer") and "; CLARID adds" in v
    with pytest.raises(ValueError):
        class_kept_summary({})


def test_class_kept_ablation_and_verdict():
    from types import SimpleNamespace

    from paperlib.canonical import ClaridConfig
    from paperlib.diffusion import alpha_bar, linear_beta_schedule
    from paperlib.factors import class_kept_ablation, class_kept_ablation_verdict
    from paperlib.models import CDMConfig, ClassConditionalUNet

    torch.manual_seed(0)
    tiny = CDMConfig(sample_size=8, num_classes=10, block_out_channels=(8, 8), attention_levels=(), norm_num_groups=4,
                     attention_head_dim=8)
    labels = torch.arange(10) % 10
    images = torch.randint(0, 256, (10, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    cdm = SimpleNamespace(model=ClassConditionalUNet(tiny).eval().requires_grad_(False), manifest={"key": "tiny8"},
                          images=images, labels=labels, alpha_bar=alpha_bar(linear_beta_schedule()))
    idx = torch.tensor([2, 5, 7])
    base = ClaridConfig(t_star=400, K=3, num_steps=10)
    table = class_kept_ablation(cdm, base, idx, {"a": Oracle(labels[idx])},
                                {"base": {}, "earlier": {"t_star": -200}}, progress=False)
    assert list(table.index) == ["base", "earlier"] and list(table["t*"]) == [400, 200]
    # The oracle is right on every input, whatever the image: every row keeps the class fully.
    assert (table[["class kept", "class kept (ctrl)", "class kept (inputs)"]] == 1.0).all().all()
    v = class_kept_ablation_verdict(table)
    assert "(1.00, within two standard errors): base, earlier" in v and "random directions: no variant" in v

    import pandas as pd

    t = pd.DataFrame({"class kept": [0.55, 0.78], "s.e.": [0.02, 0.02], "class kept (ctrl)": [0.75, 0.60],
                      "s.e. (ctrl)": [0.02, 0.02], "class kept (inputs)": [0.80, 0.80]}, index=["paper", "t* - 200"])
    v = class_kept_ablation_verdict(t)
    assert "inputs carry it (0.80, within two standard errors): t* - 200." in v
    assert "random directions: t* - 200; worse: paper." in v


def test_factor_verdict_compares_with_the_control_and_originals():
    import pandas as pd

    from paperlib.factors import factor_verdict

    cols = ["change outside fg", "inside / outside", "class from bg", "class from bg (random bg)"]
    t = pd.DataFrame([[0.0, 0.0, 0.91, 0.03], [0.109, 1.53, 0.89, 0.88], [0.009, 1.84, 0.91, 0.04]],
                     index=["original", "CLARID", "random dirs"], columns=cols)
    v = factor_verdict(t, 1000)  # 0.89 vs 0.91: a gap of 0.02 within two s.e. (0.027) over 1000 images
    assert v.startswith("CLARID changes the background more than removing as many random directions (0.109 vs 0.009)")
    assert "more concentrated on the background" in v
    assert "read from its backgrounds about as often as from the originals' (0.89 vs 0.91, within two" in v
    assert v.endswith("0.88 of the time against 0.03 for the originals and 0.04 for the random control: CLARID "
                      "paints class-typical background, as CFG is said to.")
    assert "backgrounds less often than" in factor_verdict(t, 10_000)  # the same 0.02 is beyond two s.e. there
    t.loc["CLARID"] = [0.001, 2.0, 0.50, 0.06]
    v = factor_verdict(t, 1000)
    assert "background less than" in v and "less concentrated" in v and "less often than" in v
    assert v.endswith("does not paint class-typical background.")


def test_claim_verdicts_of_figure_6():
    import pandas as pd

    from paperlib.factors import PAINT_MARGIN, background_claim, class_kept_claim, paints_claim

    kept = pd.DataFrame({"class kept": [0.80, 0.78, 0.79], "s.e.": [0.01, 0.01, 0.01]},
                        index=["original", "CLARID", "random dirs"])
    assert class_kept_claim(kept) == "holds"  # 0.02 below, within two s.e. of the difference (0.028)
    kept.loc["CLARID", "class kept"] = 0.95
    assert class_kept_claim(kept) == "holds"  # more class evidence still keeps the class
    kept.loc["CLARID", "class kept"] = 0.75
    assert class_kept_claim(kept) == "does not"

    cols = ["change outside fg", "class from bg", "class from bg (random bg)"]
    t = pd.DataFrame([[0.0, 0.905, 0.03], [0.10, 0.60, 0.03], [0.01, 0.91, 0.04],
                      [0.05, 0.93, 0.03 + PAINT_MARGIN + 0.01]],
                     index=["original", "CLARID", "random dirs", "CFG w=3"], columns=cols)
    assert background_claim(t, 1000) == "holds"  # the class is read far less often from CLARID's backgrounds
    t.loc["CLARID", "class from bg"] = 0.893  # chapter 5's numbers: 0.012 below, two s.e. are 0.027
    assert background_claim(t, 1000) == "does not"  # though CLARID changes the background ten times more
    assert background_claim(t, 100_000) == "holds"  # the same gap is beyond noise over many more images
    assert paints_claim(t, "CFG w=3") == "holds"
    t.loc["CFG w=3", "class from bg (random bg)"] = 0.03 + PAINT_MARGIN - 0.01
    assert paints_claim(t, "CFG w=3") == "does not"


def test_share_se_and_versus_chance():
    from paperlib.factors import share_se, versus_chance

    # 0/1 values with share 0.5 over 4 images: std (ddof 1) = sqrt(1/3), s.e. = std / 2.
    assert share_se(0.5, 4) == pytest.approx(torch.tensor([0.0, 0, 1, 1]).std().item() / 2)
    assert share_se(1.0, 50) == 0.0
    with pytest.raises(ValueError):
        share_se(0.5, 1)
    assert versus_chance(0.11, 200, 10) == "at chance (within two standard errors)"  # s.e. 0.022
    assert versus_chance(0.124, 2000, 10) == "2.4 points above chance (more than two standard errors)"
    assert versus_chance(0.02, 2000, 10).startswith("8.0 points below chance")


def test_display_tables_round_once_and_show_undefined_as_a_dash():
    import pandas as pd

    from paperlib.factors import ablation_class_display, ablation_display, fixed, probe_checks_display

    t = pd.DataFrame({"a": [1.0, 0.12345], "b": [float("nan"), 2.0], "n": [800.0, 1000.0]}, index=["x", "y"])
    f = fixed(t, 3, integers=["n"])
    assert f.loc["x"].tolist() == ["1.000", "—", "800"] and f.loc["y", "a"] == "0.123"

    checks = pd.DataFrame({"probe": ["bg_family", "bg_family", "class_from_bg", "class_from_bg"],
                           "split": ["held-out", "mixed_rand"] * 2, "images": [200] * 4,
                           "accuracy": [1.0, 1.0, 0.91, 0.124]})
    c = probe_checks_display(checks)
    assert list(c.index) == ["background family", "class from background"]
    assert c.loc["background family"].tolist() == ["1.000", "1.000"]
    assert list(c.columns) == ["held-out draw", "Mixed-Rand backgrounds"]

    row = {"t*": 800.0, "k* (mean)": 3.945, "class kept": 0.727, "class kept (ctrl)": 0.902, "Δ fg colour": 0.366,
           "change outside / ctrl": 15.019, "inside / outside": 1.003, "inside / outside (ctrl)": 1.513,
           "s / image": 27.1}
    for col in ("own bg", "random bg"):
        for who in ("", " (ctrl)", " (inputs)"):
            row[f"bg→class, {col}{who}"] = 0.5
    a = ablation_display(pd.DataFrame({"chapter 3's CLARID": row}).T)
    assert a.loc["chapter 3's CLARID", ("t*", "")] == "800"
    assert a.loc["chapter 3's CLARID", ("class kept", "CLARID")] == "0.73"
    assert not any("inputs" in str(c) for c in a.columns)  # the same for every variant: in the caption
    assert a.shape[1] == 11 and ("inside / outside", "ctrl") not in a.columns

    k = pd.DataFrame({"base": {"t*": 900.0, "k* (mean)": 8.22, "class kept": 0.53, "s.e.": 0.043,
                               "class kept (ctrl)": 0.743, "s.e. (ctrl)": 0.033, "class kept (inputs)": 0.743,
                               "s / image": 1.881}}).T
    d = ablation_class_display({"cifar10": k})
    assert d.loc[("CIFAR-10", "base"), "t*"] == "900"
    assert d.loc[("CIFAR-10", "base"), "class kept, CLARID"] == "0.53 ± 0.04"


def test_mask_iou_largest_component_and_object_boxes_are_exact():
    from paperlib.factors import largest_component, mask_iou, object_boxes

    a = torch.zeros(3, 6, 6, dtype=torch.bool)
    a[0, 1:3, 1:3] = True  # 4 pixels
    a[1, 0, 0] = True  # a stray pixel beside a 6-pixel blob
    a[1, 3:5, 2:5] = True
    a[1, 2, 5] = True  # touches the blob at a corner: part of it
    b = a.clone()
    b[0, 1:3, 3] = True  # 6 pixels, 4 shared
    assert mask_iou(a, b).tolist() == pytest.approx([4 / 6, 1.0, 1.0])  # two empty masks agree
    shapes = make_shapes(200, 3, 16).masks  # a true object is one component, but for a rare pixel
    assert mask_iou(largest_component(shapes), shapes).min() > 0.9
    kept = largest_component(a)
    assert kept[1].sum() == 7 and not kept[1, 0, 0] and torch.equal(kept[0], a[0]) and not kept[2].any()
    images = torch.full((3, 3, 6, 6), 7, dtype=torch.uint8)
    other = torch.zeros_like(a)
    other[0, 5, 5] = True
    view = images.masked_fill(object_boxes(a, other, margin=0)[:, None], 128)
    grey = view[:, 0] == 128
    assert torch.equal(grey[0], a[0] | other[0])  # both objects' boxes, not the box around both
    assert grey[1].sum() == 5 * 6  # the stray pixel widens its own mask's box
    assert not grey[2].any() and torch.equal(images, torch.full_like(images, 7))  # input untouched


def test_object_masks_thresholds_logits_and_keeps_one_object():
    from paperlib.factors import object_masks

    logits = torch.full((2, 5, 5), -3.0)
    logits[0, 0:2, 0:2] = 2.0
    logits[0, 4, 4] = 0.5  # a second, smaller component
    logits[1, 2, 2] = 0.0  # not above 0
    found = object_masks(Fixed(logits), torch.zeros(2, 3, 5, 5, dtype=torch.uint8))
    assert found[0].sum() == 4 and found[0, :2, :2].all() and not found[1].any()


def test_mask_probe_finds_objects_on_held_out_and_mixed_backgrounds():
    from paperlib.factors import ObjectMaskNet, train_mask_probe

    probe, checks = train_mask_probe(2000, 16, seed=5, epochs=5, progress=False)
    assert isinstance(probe, ObjectMaskNet) and not probe.training
    assert list(checks.split) == ["held-out", "mixed_rand"] and (checks.images == 400).all()
    # Five epochs on 2000 images already separate objects from backgrounds far better than "all background".
    share_fg = make_shapes(200, 6, 16).masks.float().mean().item()
    assert (checks["pixel accuracy"] > 1 - share_fg / 2).all() and (checks.IoU > 0.5).all()
    again, _ = train_mask_probe(2000, 16, seed=5, epochs=5, progress=False)  # cached: the same weights
    assert all(torch.equal(p, q) for p, q in zip(probe.state_dict().values(), again.state_dict().values()))


def test_factor_changes_read_a_moved_object_where_it_is():
    d = make_shapes(8, 3, 16)
    cols = [m.any(0).nonzero()[:, 0] for m in d.masks]  # to the far edge, without wrapping
    moved_masks = torch.stack([m.roll(15 - int(c[-1]) if 15 - c[-1] >= c[0] else -int(c[0]), dims=1)
                               for m, c in zip(d.masks, cols)])
    colours = (255 * d.factors["fg_color"]).round().to(torch.uint8)
    moved = torch.where(moved_masks[:, None], colours[:, :, None, None], d.backgrounds)
    probes = {"bg_family": Oracle(d.factors["bg_family"]), "class_from_bg": Oracle(d.labels)}
    plain = factor_changes(d, {"moved": moved}, {"a": Oracle(d.labels)}, probes)
    found = factor_changes(d, {"moved": moved}, {"a": Oracle(d.labels)},
                           {**probes, "mask": Fixed(torch.where(moved_masks, 4.0, -4.0))})
    assert "object moved" not in plain and found.loc["moved", "object moved"] == 1.0
    # The input's mask alone reads the background as the object's colour and the moved object as background.
    assert plain.loc["moved", "Δ fg colour"] > 0.1 and plain.loc["moved", "change outside fg"] > 0
    assert found.loc["moved", "Δ fg colour"] == pytest.approx(0, abs=1e-6)
    assert found.loc["moved", "change outside fg"] == 0.0


class Fixed(nn.Module):
    """Returns preset outputs for a known batch."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out[: len(x)]
