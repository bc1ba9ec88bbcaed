"""Factor-by-factor measurements on shapes."""

import pytest
import torch
from torch import nn

from paperlib.data import make_shapes
from paperlib.factors import class_kept, class_kept_verdict, factor_changes, foreground_color, pixel_change


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


def test_class_kept_verdict_uses_two_standard_errors():
    import pandas as pd

    t = pd.DataFrame({"class kept": [0.80, 0.78, 0.79], "s.e.": [0.01, 0.01, 0.01]},
                     index=["original", "CLARID", "random dirs"])
    assert "as often" in class_kept_verdict(t)  # gap 0.02 < 2 * sqrt(2) * 0.01
    t.loc["CLARID", "class kept"] = 0.56
    v = class_kept_verdict(t)
    assert "loses" in v and "24 points fewer" in v and "random directions" in v
    t.loc["CLARID", "class kept"] = 0.95
    assert "adds" in class_kept_verdict(t) and "random" not in class_kept_verdict(t)


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
    v = factor_verdict(t)
    assert v.startswith("CLARID changes the background more than removing as many random directions (0.109 vs 0.009)")
    assert "more concentrated on the background" in v and "about as well as or better than" in v
    assert v.endswith("0.88 of the time against 0.03 for the originals and 0.04 for the random control: CLARID "
                      "paints class-typical background, as CFG is said to.")
    t.loc["CLARID"] = [0.001, 2.0, 0.50, 0.06]
    v = factor_verdict(t)
    assert "background less than" in v and "less concentrated" in v and "less well than" in v
    assert v.endswith("does not paint class-typical background.")


def test_claim_verdicts_of_figure_6():
    import pandas as pd

    from paperlib.factors import PAINT_MARGIN, READ_MARGIN, background_claim, class_kept_claim, paints_claim

    kept = pd.DataFrame({"class kept": [0.80, 0.78, 0.79], "s.e.": [0.01, 0.01, 0.01]},
                        index=["original", "CLARID", "random dirs"])
    assert class_kept_claim(kept) == "holds"  # 0.02 below, within two s.e. of the difference (0.028)
    kept.loc["CLARID", "class kept"] = 0.95
    assert class_kept_claim(kept) == "holds"  # more class evidence still keeps the class
    kept.loc["CLARID", "class kept"] = 0.75
    assert class_kept_claim(kept) == "does not"

    cols = ["change outside fg", "class from bg", "class from bg (random bg)"]
    t = pd.DataFrame([[0.0, 0.91, 0.03], [0.10, 0.91 - READ_MARGIN - 0.01, 0.03], [0.01, 0.91, 0.04],
                      [0.05, 0.93, 0.03 + PAINT_MARGIN + 0.01]],
                     index=["original", "CLARID", "random dirs", "CFG w=3"], columns=cols)
    assert background_claim(t) == "holds"  # reads the class less well, changes the background more
    t.loc["CLARID", "class from bg"] = 0.91 - READ_MARGIN + 0.01
    assert background_claim(t) == "partly"
    t.loc["CLARID", "change outside fg"] = 0.005
    assert background_claim(t) == "does not"
    assert paints_claim(t, "CFG w=3") == "holds"
    t.loc["CFG w=3", "class from bg (random bg)"] = 0.03 + PAINT_MARGIN - 0.01
    assert paints_claim(t, "CFG w=3") == "does not"
