"""Attacks against models with known behaviour, RNG isolation, the backgrounds challenge and cached evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchattacks
from torch import nn

from paperlib import robustness as R
from paperlib.cache import ProvenanceError, module_fingerprint
from paperlib.data import _BG_COLORS, DatasetConfig, make_shapes

EPS = 2 / 255


class Linear2(nn.Module):
    """A linear classifier with two live classes: ``z_1 - z_0 = w . (x - 0.5)``; classes 2..9 never win."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.flatten().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) - 0.5) @ self.w
        return torch.cat([torch.zeros_like(s)[:, None], s[:, None], torch.full((len(x), 8), -1e3)], 1)


@pytest.fixture(scope="module")
def linear_case():
    """Class-0 points at known margins: the optimal L∞ attack raises ``w . x`` by exactly ``eps ||w||_1``, so a
    point survives iff its margin ``0.2 c ||w||_1`` exceeds that, i.e. iff ``c > eps / 0.2``."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 8, generator=g)
    c = torch.linspace(0.005, 0.08, 40)
    c = c[(c - EPS / 0.2).abs() > 0.004]  # nothing within a hair of the threshold
    x = 0.5 - 0.2 * c[:, None, None, None] * w.sign()
    y = torch.zeros(len(c), dtype=torch.long)
    return Linear2(w), x, y, c > EPS / 0.2


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def test_pgd_with_the_literal_step_is_the_optimal_linf_attack(linear_case) -> None:
    model, x, y, robust = linear_case
    assert _correct(model, x, y).all()
    adv = R.attack(model, x, y, R.TABLE5_ATTACKS["pgd"], seed=0)
    torch.testing.assert_close((adv - x).abs(), torch.full_like(x, EPS), atol=1e-6, rtol=0)  # corners
    assert torch.equal(_correct(model, adv, y), robust)


@pytest.mark.parametrize("name", ["pgd_alpha_eps_over_4", "apgd_ce", "apgd_dlr"])
def test_no_attack_beats_the_optimum_and_each_stays_in_the_ball(linear_case, name: str) -> None:
    model, x, y, robust = linear_case
    adv = R.attack(model, x, y, R.TABLE5_ATTACKS[name], seed=0)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    ok = _correct(model, adv, y)
    assert ok[robust].all()  # robust points cannot be broken inside the ball
    assert (~ok[~robust]).float().mean() >= 0.7  # and most breakable ones are broken


def test_attacks_are_deterministic_and_leave_the_model_alone(linear_case) -> None:
    model, x, y, _ = linear_case
    model.train()
    for name, spec in R.TABLE5_ATTACKS.items():
        a = R.attack(model, x[:6], y[:6], spec, seed=3)
        assert torch.equal(a, R.attack(model, x[:6], y[:6], spec, seed=3)), name
    assert model.training and model.w.requires_grad and model.w.grad is None
    start = R.attack(model, x[:6], y[:6], R.TABLE5_ATTACKS["pgd_alpha_eps_over_4"], seed=4)
    assert not torch.equal(start, R.attack(model, x[:6], y[:6], R.TABLE5_ATTACKS["pgd_alpha_eps_over_4"], seed=3))
    model.eval()


def test_an_attack_leaves_the_global_rng_stream_alone(linear_case) -> None:
    model, x, y, _ = linear_case

    def stream(between) -> torch.Tensor:
        torch.manual_seed(123)
        first = torch.rand(3)
        between()
        return torch.cat([first, torch.rand(5)])

    reference = stream(lambda: None)
    for spec in (R.TABLE5_ATTACKS["apgd_ce"], R.TABLE5_ATTACKS["pgd"], R.SQUARE_ATTACKS["square"]):
        assert torch.equal(stream(lambda s=spec: R.attack(model, x[:4], y[:4], s, seed=9)), reference)
    # The test can fail: torchattacks' APGD on its own reseeds the global generator.
    bare = torchattacks.APGD(model, eps=EPS, steps=2, seed=0)
    assert not torch.equal(stream(lambda: bare(x[:4], y[:4])), reference)


def test_normalized_wraps_a_model() -> None:
    net = nn.Conv2d(3, 2, 1)
    m = R.Normalized(net, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    x = torch.rand(2, 3, 4, 4)
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(m(x), net((x - mean) / std))
    with pytest.raises(ValueError, match="std"):
        R.Normalized(net, (0.5,) * 3, (0.0, 1.0, 1.0))


def test_attack_rejects_bad_inputs(linear_case) -> None:
    model, x, y, _ = linear_case
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.attack(model, x * 255, y, R.TABLE5_ATTACKS["pgd"])
    with pytest.raises(ValueError, match="labels"):
        R.attack(model, x, y[:3], R.TABLE5_ATTACKS["pgd"])
    with pytest.raises(ValueError, match="kind"):
        R.attack(model, x, y, {"kind": "fgsm"})


# ------------------------------------------------------------------------------------- backgrounds challenge


class CornerColour(nn.Module):
    """Reads the background family from the top-left pixel (the nearest family colour): a pure shortcut."""

    def __init__(self):
        super().__init__()
        self.register_buffer("palette", torch.from_numpy(_BG_COLORS.mean(1)))  # [10, 3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x[:, :, 0, 0], self.palette)


def test_adversarial_backgrounds_match_a_brute_force_loop() -> None:
    data = make_shapes(30, seed=1, size=16)
    bank = R.background_bank(data, 10, seed=0)
    assert torch.equal(bank, R.background_bank(data, 10, seed=0)) and len(torch.unique(bank)) == 10
    assert len(torch.unique(data.factors["bg_family"][bank])) >= 8  # stratified by family
    model = R.Normalized(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), (0.5,) * 3, (0.3,) * 3)
    got = R.adversarial_background_fooled(model, data.images, data.masks, data.labels, data.backgrounds[bank], 7)
    want = torch.zeros(len(data), dtype=torch.int64)
    with torch.no_grad():
        for i in range(len(data)):
            for j in bank:
                comp = torch.where(data.masks[i][None], data.images[i], data.backgrounds[j])
                want[i] += int(model(comp[None].float() / 255).argmax(1).item() != data.labels[i])
    assert torch.equal(got, want)


def test_a_background_shortcut_model_fails_the_challenge() -> None:
    data = DatasetConfig("shapes", size=16, n_train=10, n_test=300)
    tensors, manifest = R.evaluate(CornerColour(), "corner", data, "backgrounds", n=None, batch_size=100,
                                   chunk_size=100, bank_size=20, progress=False)
    s = R.summarize(tensors, manifest)
    assert s["original"] > 0.7 and s["mixed_same"] > 0.7
    assert s["mixed_rand"] < 0.3 and s["mixed_next"] < 0.15 and s["bg_gap"] > 0.4
    assert s["adversarial_bg"] == 0.0  # some background of the bank fools every foreground
    assert tensors["adv_bg.n_fooled"].max() <= 20 and len(tensors["adv_bg.bank"]) == 20


# --------------------------------------------------------------------------------------- cached evaluation


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 10))
    return R.Normalized(net, (0.5,) * 3, (0.25,) * 3)


SHAPES = DatasetConfig("shapes", size=16, n_train=10, n_test=120)
FAST = {"pgd": R.TABLE5_ATTACKS["pgd"], "apgd_ce": R.TABLE5_ATTACKS["apgd_ce"]}


def _config(**kw) -> dict:
    cfg = R.evaluation_config("attacks", n=80, batch_size=20, chunk_size=40, **kw)
    cfg["attacks"] = FAST
    return cfg


def test_evaluation_is_resumable_and_independent_of_the_pieces(monkeypatch) -> None:
    model = _tiny()
    calls = []
    real = R._attack_piece

    def counted(*args, **kwargs):
        calls.append(args[4])  # piece start
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second piece
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "_attack_piece", counted)
    with pytest.raises(KeyboardInterrupt):
        R.evaluate(model, "s1", SHAPES, _config(), progress=False)
    monkeypatch.setattr(R, "_attack_piece", lambda *a, **k: (calls.append(a[4]), real(*a, **k))[1])
    tensors, manifest = R.evaluate(model, "s1", SHAPES, _config(), progress=False)
    assert calls == [0, 40, 40]  # the first piece was kept
    # One piece of 80 gives the same predictions (seeds are per batch of the evaluated set).
    cfg = _config()
    cfg["chunk_size"] = 80
    whole, _ = R.evaluate(model, "s1", SHAPES, cfg, progress=False)
    for k in tensors:
        assert torch.equal(tensors[k], whole[k]), k
    s = R.summarize(tensors, manifest)
    with torch.no_grad():
        y = tensors["labels"]
        from paperlib.data import load_dataset

        images = load_dataset(SHAPES, "test")[0][tensors["index"]]
        clean = (model(images.float() / 255).argmax(1) == y).double().mean().item()
    assert s["clean"] == pytest.approx(clean)
    assert s["worst"] <= min(s["pgd"], s["apgd_ce"]) and set(s) == {"clean", "pgd", "apgd_ce", "worst", "worst_all"}
    assert manifest["model_sha"] == module_fingerprint(model) and manifest["config"]["student"] == "s1"
    assert tensors["pred.pgd"].dtype == torch.uint8 and len(tensors["index"]) == 80


def test_evaluation_refuses_another_model_under_the_same_key() -> None:
    R.evaluate(_tiny(0), "s2", SHAPES, _config(), progress=False)
    with pytest.raises(ProvenanceError, match="model_sha"):
        R.evaluate(_tiny(1), "s2", SHAPES, _config(), progress=False)


def test_evaluation_stops_on_its_time_budget() -> None:
    with pytest.raises(R.EvaluationIncomplete, match="0 of 2 pieces"):
        R.evaluate(_tiny(), "s3", SHAPES, _config(), max_minutes=-1, progress=False)


def test_an_evaluation_does_not_change_what_runs_after_it() -> None:
    model = _tiny()
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    cfg = _config()
    cfg["attacks"] = {**FAST, "apgd_dlr": R.TABLE5_ATTACKS["apgd_dlr"], "square": R.SQUARE_ATTACKS["square"]}
    cfg["attacks"]["square"] = {**cfg["attacks"]["square"], "n_queries": 20}
    R.evaluate(model, "s4", SHAPES, cfg, progress=False)
    assert torch.equal(torch.rand(4), expected)


def test_corruption_evaluation_summary() -> None:
    cfg = R.evaluation_config("corruptions", n=20, batch_size=20, chunk_size=20)
    cfg["corruptions"], cfg["severities"] = ["contrast", "gaussian_noise"], [1, 5]
    tensors, manifest = R.evaluate(_tiny(), "s5", SHAPES, cfg, progress=False)
    assert tensors["pred.corruptions"].shape == (2, 2, 20)
    s = R.summarize(tensors, manifest)
    per = [s[f"{c}/{v}"] for c in ("contrast", "gaussian_noise") for v in (1, 5)]
    assert s["mean"] == pytest.approx(float(np.mean(per)))
    assert s["contrast"] == pytest.approx((s["contrast/1"] + s["contrast/5"]) / 2)


def test_evaluation_config_checks() -> None:
    cfg = R.evaluation_config("attacks")
    assert cfg["n"] is None and set(cfg["attacks"]) == {"pgd", "pgd_alpha_eps_over_4", "cw", "apgd_dlr", "apgd_ce"}
    assert cfg["attacks"]["pgd"]["alpha"] == 0.5 and cfg["attacks"]["pgd_alpha_eps_over_4"]["alpha"] == 0.5 / 255
    assert R.evaluation_config("attacks_eps8")["n"] == 1000 and "cw" not in R.EPS8_ATTACKS
    assert json.loads(json.dumps(cfg)) == cfg
    with pytest.raises(ValueError, match="evaluation"):
        R.evaluation_config("fgsm")
    with pytest.raises(ValueError, match="multiple"):
        R.evaluation_config("attacks", batch_size=30, chunk_size=50)
    with pytest.raises(ValueError, match="shapes"):
        R.evaluate(_tiny(), "s6", DatasetConfig("cifar10", size=32), "backgrounds", progress=False)


def test_load_model_and_cli(capsys) -> None:
    from paperlib import classifiers
    from paperlib.cache import config_key, save_artifact
    from paperlib.paths import cache_dir

    cfg = classifiers.ClassifierConfig(arch="resnet")
    config = {**cfg.to_dict(), "num_classes": 10, "image_size": 16, "n_images": 1, "data": "tiny"}
    key = config_key(config, classifiers.CACHE_VERSION)
    torch.manual_seed(0)
    model = classifiers.make_classifier("resnet", 10, 16)
    save_artifact(cache_dir() / "classifier" / f"{key}.safetensors",
                  {f"model.{k}": v for k, v in model.state_dict().items()},
                  {"stage": "classifier", "key": key, "config": config, "data": "tiny"})
    loaded, _ = R.load_model(key)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(FileNotFoundError):
        R.load_model("0" * 16)
    R.main(["--student", key, "--eval", "backgrounds", "--dataset", "shapes", "--profile", "smoke", "--n", "40",
            "--batch-size", "40", "--chunk-size", "40"])
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["n"] == 40 and {"bg_gap", "adversarial_bg", "mixed_next"} <= set(summary)
    assert out.strip().endswith("done")
