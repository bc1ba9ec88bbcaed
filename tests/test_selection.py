"""t* by two-stage sampling, and the hand-over of chosen values between chapters."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from paperlib import selection
from paperlib.diffusion import alpha_bar, linear_beta_schedule
from paperlib.models import CDMConfig, ClassConditionalUNet
from paperlib.selection import (
    book_two_stage_accuracy,
    choose_t_star,
    load_choice,
    record_choice,
    two_stage_accuracy,
)

TINY = CDMConfig(sample_size=8, num_classes=2, block_out_channels=(8, 8), attention_levels=(1,), norm_num_groups=4,
                 attention_head_dim=8)


class Constant(nn.Module):
    """Predicts class ``c`` for every image."""

    def __init__(self, c: int):
        super().__init__()
        self.register_buffer("c", torch.tensor(c))

    def forward(self, x):
        return nn.functional.one_hot(self.c.expand(len(x)), 2).float()


def test_two_stage_accuracy_table():
    torch.manual_seed(0)
    model = ClassConditionalUNet(TINY).eval().requires_grad_(False)
    ab = alpha_bar(linear_beta_schedule())
    table, samples = two_stage_accuracy(model, {"zero": Constant(0), "one": Constant(1)}, ab, [0, 500, 1000], 3,
                                        num_steps=10, progress=False)
    assert set(samples) == {0, 500, 1000} and samples[0].shape == (6, 3, 8, 8) and samples[0].dtype == torch.uint8
    # Half the samples are of each class, so each constant classifier is right on exactly half.
    assert (table.accuracy == 0.5).all() and set(table.classifier) == {"zero", "one", "mean"}
    # Binomial s.e. of each classifier; every sample has exactly one of the two right, so the mean's is 0.
    one = table[table.classifier != "mean"].se
    assert torch.allclose(torch.tensor(one.to_numpy()), torch.tensor((0.25 / 6) ** 0.5, dtype=torch.float64))
    assert (table[table.classifier == "mean"].se == 0).all()
    # Same noise at every switch time; fully unconditional and fully conditional runs differ.
    assert not torch.equal(samples[0], samples[1000])
    with pytest.raises(ValueError, match="DDIM grid"):
        two_stage_accuracy(model, {}, ab, [250], 3, num_steps=10, progress=False)


def test_book_two_stage_accuracy_caches_each_switch_time(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = ClassConditionalUNet(TINY).eval().requires_grad_(False)
    ab = alpha_bar(linear_beta_schedule())
    clfs = {"zero": Constant(0), "one": Constant(1)}
    cdm = SimpleNamespace(model=model, alpha_bar=ab, manifest={"key": "tiny"})
    table, samples = two_stage_accuracy(model, clfs, ab, [0, 500], 3, num_steps=10, progress=False)

    def run(ts):
        return book_two_stage_accuracy(cdm, clfs, "smoke", ts, 3, 10, keep_per_class=2, progress=False)

    cached_table, cached = run([0, 500])
    assert cached_table.equals(table) and cached_table.attrs["seconds"] > 0
    # Two of the three samples of each class are kept, class by class.
    assert torch.equal(cached[500], samples[500][[0, 1, 3, 4]])
    assert len(list((tmp_path / "two_stage").glob("*.safetensors"))) == 2
    # A second run samples only the switch time it has not seen.
    seen, real = [], selection.two_stage_predictions

    def spy(m, c, a, t_c, *rest):
        seen.append(t_c)
        return real(m, c, a, t_c, *rest)

    monkeypatch.setattr(selection, "two_stage_predictions", spy)
    run([0, 500, 1000])
    assert seen == [1000]
    # Other classifier weights, another key.
    book_two_stage_accuracy(cdm, {"zero": Constant(1), "one": Constant(1)}, "smoke", [0], 3, 10, progress=False)
    assert seen == [1000, 0]


def test_choose_t_star():
    t = [0, 200, 400, 600, 800, 1000]
    acc = [0.1, 0.3, 0.7, 0.89, 0.905, 0.91]
    out = choose_t_star(t, acc, delta=0.01)
    assert out["saturation"] == 800  # first t within 1 point of 0.91
    assert out["knee"] in t


def test_choices_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    record_choice("smoke", "shapes", "t_star", 600, "test")
    record_choice("smoke", "cifar10", "t_star", 400, "test")
    assert load_choice("smoke", "shapes", "t_star") == 600
    assert load_choice("smoke", "cifar10", "t_star") == 400
    with pytest.raises(KeyError, match="02_t_star"):
        load_choice("smoke", "shapes", "feature_t")


def test_plateau_t_star_uses_paired_standard_errors():
    from paperlib.selection import plateau_t_star

    g = torch.Generator().manual_seed(0)
    n = 2000
    noise = torch.rand(n, generator=g)
    # Accuracy 0.3 + 0.05 per 100 steps up to t_c = 600, flat above: sample j is right when its noise is low.
    acc = {t: 0.3 + 0.05 * min(t, 600) / 100 for t in range(0, 1001, 100)}
    per_sample = {t: (noise < a).double() for t, a in acc.items()}
    out = plateau_t_star(per_sample)
    assert out["t_star"] == 600 and out["plateau"] == [600, 700, 800, 900, 1000]
    assert out["gap"][500] > 2 * out["se"][500] and out["gap"][700] == 0
    # A noisier, smaller sample widens the plateau instead of letting the noise pick a point.
    few = {t: v[:40] for t, v in per_sample.items()}
    assert plateau_t_star(few)["t_star"] <= 600
    # A dip below the reference that is not significant stays on the plateau; a significant one ends it.
    dip = dict(per_sample)
    dip[800] = (noise < 0.4).double()
    assert plateau_t_star(dip)["t_star"] == 900
    with pytest.raises(ValueError, match="same non-zero"):
        plateau_t_star({0: torch.ones(3), 100: torch.ones(4)})
    with pytest.raises(ValueError, match="reference"):
        plateau_t_star(per_sample, reference=50)


def test_plateau_t_star_with_a_margin_does_not_drift_to_t_as_samples_grow():
    from paperlib.selection import plateau_t_star

    noise = torch.rand(20_000, generator=torch.Generator().manual_seed(1))
    # a steep rise to t_c = 600, then half a point per 100 steps up to T: a real but tiny rise
    acc = {t: 0.3 + 0.05 * min(t, 600) / 100 + 0.005 * max(t - 600, 0) / 100 for t in range(0, 1001, 100)}
    per_sample = {t: (noise < a).double() for t, a in acc.items()}
    assert plateau_t_star(per_sample)["t_star"] == 1000  # without a margin every rise is significant
    out = plateau_t_star(per_sample, margin=0.02)
    assert out["t_star"] == 700 and out["plateau"] == [700, 800, 900, 1000] and out["margin"] == 0.02
    assert math.isclose(out["upper"][700], out["gap"][700] + 2 * out["se"][700])
    # fewer samples: the confidence bound widens, so t* moves later, never earlier
    few = plateau_t_star({t: v[:200] for t, v in per_sample.items()}, margin=0.02)["t_star"]
    assert 700 < few <= 1000
    with pytest.raises(ValueError, match="margin"):
        plateau_t_star(per_sample, margin=-0.01)


def test_saturation_verdict():
    t = [0, 500, 1000]
    assert selection.saturation_verdict(t, [0.10, 0.80, 0.81], [0.02, 0.02, 0.02], 500) == "holds"
    assert selection.saturation_verdict(t, [0.10, 0.50, 0.81], [0.02, 0.02, 0.02], 1000) == "partly"
    # a rise of 0.05 is within two standard errors of the difference (2 * sqrt(2) * 0.02 = 0.057)
    assert selection.saturation_verdict(t, [0.10, 0.12, 0.15], [0.02, 0.02, 0.02], 500) == "does not"
    with pytest.raises(ValueError, match="one value per switch time"):
        selection.saturation_verdict(t, [0.1, 0.2], [0.01, 0.01], 500)
    with pytest.raises(ValueError, match="increasing"):
        selection.saturation_verdict([0, 1000, 500], [0.1, 0.2, 0.3], [0.0] * 3, 500)


def test_milestone_accuracy_pairs_checkpoints_and_reports_missing_ones(monkeypatch):
    import pandas as pd

    import paperlib.train as train
    from paperlib.cache import PendingRun

    noise = torch.rand(400, generator=torch.Generator().manual_seed(3))
    quality = {10: 0.3, 20: 0.5, 40: 0.52}  # the same noise at every checkpoint: paired

    def load_cdm_at(dataset, steps, profile):
        if steps == 50:
            raise PendingRun("not computed yet")
        return SimpleNamespace(steps=steps)

    def two_stage(cdm, classifiers, profile, t_switches, n_per_class, num_steps, seed, progress):
        assert list(t_switches) == [1000]
        table = pd.DataFrame()
        table.attrs["per_sample"] = {1000: (noise < quality[cdm.steps]).double()}
        return table, {}

    monkeypatch.setattr(train, "load_cdm_at", load_cdm_at)
    monkeypatch.setattr(train, "checkpoint_exists", lambda dataset, steps, profile: steps != 30)
    monkeypatch.setattr(selection, "book_two_stage_accuracy", two_stage)
    table, missing = selection.milestone_accuracy("shapes", [40, 10, 30, 20, 50, 20], {}, "full", 40)
    assert table.steps.tolist() == [10, 20, 40] and missing == [30, 50]
    d = (noise < 0.5).double() - (noise < 0.3).double()
    assert math.isclose(table.rise[1], d.mean().item()) and math.isnan(table.rise[0])
    assert math.isclose(table.rise_se[1], (d.std() / 20).item())
    assert math.isclose(table.accuracy[0], (noise < 0.3).double().mean().item())
    # 20 -> 40: a 2-point rise over 400 paired samples is 2.8 s.e. (all paired differences are 0 or 1)
    assert math.isclose(table.rise[2] / table.rise_se[2], 0.02 / math.sqrt(0.02 * 0.98 / 400), rel_tol=0.2)
    assert selection.still_rising(table) == "still rising"
    assert selection.still_rising(table, z=5.0) == "no clear rise"
    assert selection.still_rising(table.iloc[:1]) == "one checkpoint only"


def test_milestone_sentence():
    import pandas as pd

    table = pd.DataFrame({"steps": [10_000, 20_000], "accuracy": [0.30, 0.50], "accuracy_se": [0.02, 0.02],
                          "rise": [float("nan"), 0.20], "rise_se": [float("nan"), 0.01]})
    text = selection.milestone_sentence(table, [40_000], "shapes")
    assert text == ("On shapes, conditional samples are recognised 30.0% of the time after 10,000 steps and "
                    "50.0% after 20,000; from 10,000 to 20,000 steps it changed by +20.0 ± 1.0 points (paired "
                    "s.e.): still rising over that interval (not measured yet: 40,000 steps).")
    assert "no checkpoint" in selection.milestone_sentence(table.iloc[:0], [], "cifar10")


def test_training_decision_follows_the_last_interval_and_the_cap():
    import pandas as pd

    table = pd.DataFrame({"steps": [20_000, 40_000], "accuracy": [0.30, 0.50], "accuracy_se": [0.02, 0.02],
                          "rise": [float("nan"), 0.20], "rise_se": [float("nan"), 0.01]})
    decide = selection.training_decision
    assert decide(table, 40_000, 100_000) == "not final: still rising, so it trains on (cap 100,000 steps)"
    assert decide(table, 40_000, 40_000) == "final: at the cap of 40,000 steps, though still rising"
    assert decide(table.assign(rise_se=[float("nan"), 0.11]), 40_000, 100_000).startswith("final: no clear")
    assert decide(table, 60_000, 100_000).startswith("undecided: its 60,000-step")
    assert decide(table.iloc[1:], 40_000, 100_000) == "undecided: no earlier checkpoint measured"
    assert decide(table.iloc[:0], 40_000, 100_000).startswith("undecided")


def test_two_stage_noise_depends_on_the_seed_and_batch_only(monkeypatch):
    """What makes milestone_accuracy's differences paired: two different CDMs get the same x_T."""
    seen = []

    def record(model, shape, y, alpha_bar, t_c, null_class, generator, **kwargs):
        seen.append((id(model), generator, shape))
        return torch.zeros(shape)

    monkeypatch.setattr(selection, "two_stage_sample", record)
    ab = alpha_bar(linear_beta_schedule(1000))
    torch.manual_seed(0)
    a = ClassConditionalUNet(TINY)
    torch.manual_seed(1)
    b = ClassConditionalUNet(TINY)
    for m in (a, b):
        selection.two_stage_predictions(m, {"c": Constant(0)}, ab, 1000, 3, 10, seed=4, batch_size=4)
    first = [(g, s) for i, g, s in seen if i == id(a)]
    assert first == [(g, s) for i, g, s in seen if i == id(b)] and len(first) == 2
    assert [g for g, _ in first] == [4 * 100_003, 4 * 100_003 + 1]
