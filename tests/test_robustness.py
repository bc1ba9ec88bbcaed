"""Attacks against models with known behaviour, RNG isolation, the backgrounds challenge and cached evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
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
        if k != "pieces.wall_time_s":  # two pieces' times against one
            assert torch.equal(tensors[k], whole[k]), k
    assert len(tensors["pieces.wall_time_s"]) == 2 and len(whole["pieces.wall_time_s"]) == 1
    s = R.summarize(tensors, manifest)
    with torch.no_grad():
        y = tensors["labels"]
        from paperlib.data import load_dataset

        images = load_dataset(SHAPES, "test")[0][tensors["index"]]
        clean = (model(images.float() / 255).argmax(1) == y).double().mean().item()
    assert s["clean"] == pytest.approx(clean)
    assert s["worst"] <= min(s["pgd"], s["apgd_ce"], s["clean"])
    assert set(s) == {"clean", "pgd", "apgd_ce", "worst", "worst_linf", "worst_all"}
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


def _attack_result(clean: list[int], pgd: list[int], cw: list[int]) -> tuple[dict, dict]:
    """A made-up attacks result of three images of class 0 (1: predicted correctly)."""
    y = torch.zeros(3, dtype=torch.uint8)
    tensors = {"labels": y, **{f"pred.{k}": 1 - torch.tensor(v, dtype=torch.uint8)
                               for k, v in (("clean", clean), ("pgd", pgd), ("cw", cw))},
               "linf.cw": torch.tensor([1.0, 3.0, 7.0]) / 255, "l2.cw": torch.tensor([0.1, 0.2, 0.3])}
    attacks = {"pgd": R.TABLE5_ATTACKS["pgd"], "cw": R.TABLE5_ATTACKS["cw"]}
    return tensors, {"config": {"evaluation": "attacks", "attacks": attacks}}


def test_worst_case_needs_a_correct_clean_prediction_and_cw_norms_are_reported() -> None:
    # image 0: wrong clean but right under both attacks (a random start can do that): not robust
    tensors, manifest = _attack_result(clean=[0, 1, 1], pgd=[1, 1, 1], cw=[1, 1, 0])
    s = R.summarize(tensors, manifest)
    assert s["pgd"] == 1 and s["cw"] == pytest.approx(2 / 3)
    assert s["worst"] == pytest.approx(1 / 3) and s["worst_linf"] == pytest.approx(2 / 3)
    assert s["cw_linf_median"] == pytest.approx(3 / 255) and s["cw_linf_max"] == pytest.approx(7 / 255)
    assert s["cw_l2_median"] == pytest.approx(0.2)


def test_cw_norms_are_stored_and_a_bounded_attack_must_stay_in_its_ball(monkeypatch) -> None:
    model = _tiny()
    cfg = R.evaluation_config("attacks", n=20, batch_size=10, chunk_size=20)
    cfg["attacks"] = {"cw": R.TABLE5_ATTACKS["cw"], "pgd": R.TABLE5_ATTACKS["pgd"]}
    tensors, _ = R.evaluate(model, "s_cw", SHAPES, cfg, progress=False)
    assert tensors["linf.cw"].shape == (20,) and (tensors["l2.cw"] >= tensors["linf.cw"] - 1e-6).all()
    assert "linf.pgd" not in tensors
    real = R.attack
    monkeypatch.setattr(R, "attack", lambda m, x, y, spec, seed=0: (real(m, x, y, spec, seed) + 3 / 255).clamp(0, 1)
                        if spec["kind"] == "pgd" else real(m, x, y, spec, seed))
    with pytest.raises(RuntimeError, match="ε-ball"):
        R.evaluate(model, "s_cw2", SHAPES, cfg, progress=False)


def test_the_corruption_key_follows_the_corruption_table(monkeypatch) -> None:
    before = R.evaluation_config("corruptions")["parameters"]
    monkeypatch.setitem(R.CIFAR10C_PARAMS, "contrast", (0.4, 0.3, 0.2, 0.1, 0.05))
    assert R.evaluation_config("corruptions")["parameters"] != before
    monkeypatch.undo()
    monkeypatch.setattr(R, "CODE_VERSION", R.CODE_VERSION + 1)
    assert R.evaluation_config("corruptions")["parameters"] != before


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
    short = R.evaluation_config("square", square_queries=20)["attacks"]
    assert {s["n_queries"] for s in short.values()} == {20} and R.SQUARE_ATTACKS["square"]["n_queries"] == 1000
    assert R.evaluation_config("square")["attacks"]["square"]["n_queries"] == 1000
    with pytest.raises(ValueError, match="square_queries"):
        R.evaluation_config("attacks", square_queries=20)
    with pytest.raises(ValueError, match="multiple"):
        R.evaluation_config("attacks", batch_size=30, chunk_size=50)
    with pytest.raises(ValueError, match="shapes"):
        R.evaluate(_tiny(), "s6", DatasetConfig("cifar10", size=32), "backgrounds", progress=False)


def _saved_then_loaded(stage: str, key: str, model: nn.Module, config: dict) -> tuple[nn.Module, dict]:
    """Save ``model`` as an artifact of ``stage`` in the scratch cache, load it with :func:`R.load_model` and
    check that it computes the same logits."""
    from paperlib.cache import save_artifact
    from paperlib.paths import cache_dir

    save_artifact(cache_dir() / stage / f"{key}.safetensors", {f"model.{k}": v for k, v in model.state_dict().items()},
                  {"stage": stage, "key": key, "config": config, "data": "tiny"})
    loaded, manifest = R.load_model(key)
    x = torch.rand(2, 3, config["image_size"], config["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    return loaded, manifest


def test_load_model_and_cli(capsys) -> None:
    from paperlib import classifiers
    from paperlib.cache import config_key

    cfg = classifiers.ClassifierConfig(arch="resnet")
    config = {**cfg.to_dict(), "num_classes": 10, "image_size": 16, "n_images": 1, "data": "tiny"}
    key = config_key(config, classifiers.CACHE_VERSION)
    torch.manual_seed(0)
    model = classifiers.make_classifier("resnet", 10, 16)
    _saved_then_loaded("classifier", key, model, config)
    with pytest.raises(FileNotFoundError):
        R.load_model("0" * 16)
    R.main(["--student", key, "--eval", "backgrounds", "--dataset", "shapes", "--profile", "smoke", "--n", "40",
            "--batch-size", "40", "--chunk-size", "40"])
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["n"] == 40 and {"bg_gap", "adversarial_bg", "mixed_next"} <= set(summary)
    assert out.strip().endswith("done")


def _student(key: str, image_size: int = 16):
    from paperlib.students import StudentConfig, make_student

    model = make_student(StudentConfig(blocks=1, widths=(4, 8, 8)), 10, image_size, seed=0).eval()
    return model, {"key": key, "test_accuracy": 0.5, "test_n": 200, "wall_time_s": 1.0}


def test_load_model_loads_a_student() -> None:
    from paperlib.students import StudentConfig, make_student

    config = {"student": {"blocks": 1, "widths": [4, 8, 8], "mean": [0.5] * 3, "std": [0.25] * 3},
              "num_classes": 10, "image_size": 16}
    model = make_student(StudentConfig.from_dict(config["student"]), 10, 16, seed=3)
    loaded, manifest = _saved_then_loaded("student", "5" * 16, model, config)
    assert not loaded.training and manifest["stage"] == "student"


# ------------------------------------------------------------------------------------------ the book's level


def test_book_robustness_runs_every_evaluation_of_every_student() -> None:
    students = {(m, s): _student(f"{m}{s}") for m in ("vanilla", "cadistill") for s in (0, 1)}
    settings = {"backgrounds": {"n": 20, "batch_size": 20, "chunk_size": 20, "bank_size": 5},
                "attacks": {"n": 20, "batch_size": 10, "chunk_size": 10}}
    frame = R.book_robustness("shapes", ["vanilla", "cadistill"], [0, 1], "smoke", ["attacks", "backgrounds"],
                              settings=settings, students=students, progress=False)
    assert set(frame.student) == {"vanilla0", "vanilla1", "cadistill0", "cadistill1"}
    one = frame[(frame.student == "cadistill1")]
    assert set(one.evaluation) == {"training", "attacks", "backgrounds"}
    assert (one[one.evaluation == "attacks"].n == 20).all() and (one[one.evaluation == "backgrounds"].n == 20).all()
    cw_norms = {"cw_linf_median", "cw_linf_max", "cw_l2_median"}
    assert set(one[one.evaluation == "attacks"].metric) == {"clean", *R.TABLE5_ATTACKS, "worst", "worst_linf",
                                                            "worst_all", *cw_norms}
    assert one.set_index("metric").loc["test_accuracy", "value"] == 0.5
    # Loaded again from the cache: the same numbers, and the compute time of the pieces is kept.
    again = R.book_robustness("shapes", ["vanilla", "cadistill"], [0, 1], "smoke", ["attacks", "backgrounds"],
                              settings=settings, students=students, progress=False)
    assert again["value"].tolist() == frame["value"].tolist()
    assert again["wall_time_s"].tolist() == frame["wall_time_s"].tolist()
    hours = R.evaluation_hours(frame)
    assert hours.loc[("shapes", "attacks"), "students"] == 4 and hours.loc[("shapes", "attacks"), "images"] == 20
    with pytest.raises(ValueError, match="no student"):
        R.book_robustness("shapes", ["dmdistill"], [0], "smoke", ["attacks"], students=students)
    with pytest.raises(ValueError, match="settings"):
        R.book_robustness("shapes", ["vanilla"], [0], "smoke", ["attacks"], settings={"fgsm": {}},
                          students=students)


def test_book_robustness_reads_only_in_a_read_only_run(monkeypatch) -> None:
    from paperlib.cache import READ_ONLY_ENV, PendingRun

    monkeypatch.setenv(READ_ONLY_ENV, "1")
    students = {("vanilla", 0): _student("never-computed")}
    with pytest.raises(PendingRun, match="make robustness DATASET=shapes METHOD=vanilla SEEDS=0 EVALS=attacks"):
        R.book_robustness("shapes", ["vanilla"], [0], "full", ["attacks"], students=students, progress=False)


def test_the_book_cli_evaluates_trained_students_and_never_trains(monkeypatch, capsys) -> None:
    import paperlib.cadistill as cadistill
    from paperlib.cache import PendingRun

    students = {("vanilla", 0): _student("cli-v0"), ("cadistill", 0): _student("cli-c0")}
    seen = {}

    def fake(dataset, methods, seeds, profile, **kw):
        import os

        seen["read_only"] = os.environ.get("PAPERLIB_READ_ONLY")
        return {k: students[k] for k in students if k[0] in methods and k[1] in seeds}

    monkeypatch.setattr(cadistill, "book_students", fake)
    R.main(["--dataset", "shapes", "--profile", "smoke", "--method", "vanilla", "--seeds", "0",
            "--eval", "backgrounds"])
    out = capsys.readouterr().out
    assert seen["read_only"] == "1" and "Mixed-Rand" in out and out.strip().endswith("done")

    def untrained(*a, **k):
        raise PendingRun("not computed yet: student shapes/vanilla seed 0")

    monkeypatch.setattr(cadistill, "book_students", untrained)
    R.main(["--dataset", "shapes", "--profile", "smoke", "--method", "vanilla", "--seeds", "0"])
    assert "not trained yet" in capsys.readouterr().out


# Synthetic summaries: the tables and the verdicts -----------------------------------------------------------


def _frame(values: dict, dataset: str = "cifar10"):
    """A :func:`book_robustness`-like frame from ``{(method, seed): {(evaluation, metric): value}}``."""
    return pd.DataFrame([{"dataset": dataset, "method": m, "seed": s, "student": f"{m}{s}", "evaluation": ev,
                          "metric": metric, "value": v, "n": 100, "wall_time_s": 36.0}
                         for (m, s), cells in values.items() for (ev, metric), v in cells.items()])


def _attack_frame(pgd: dict[str, list[float]], corruption: dict[str, list[float]] | None = None):
    values = {}
    for m, runs in pgd.items():
        for s, v in enumerate(runs):
            cells = {("attacks", "clean"): 0.9, ("attacks", "pgd"): v, ("attacks", "cw"): v - 0.1,
                     ("attacks", "apgd_dlr"): v, ("attacks", "apgd_ce"): v, ("attacks", "worst"): v - 0.2}
            if corruption is not None:
                cells[("corruptions", "mean")] = corruption[m][s]
            values[(m, s)] = cells
    return _frame(values)


def test_seed_table_means_and_sample_std_over_seeds() -> None:
    frame = _attack_frame({"cadistill": [0.50, 0.54, 0.52], "vanilla": [0.30, 0.31, 0.35]})
    table = R.seed_table(frame, "table1")
    assert list(table.index) == ["vanilla", "cadistill"]  # the book's method order, not the frame's
    assert table.loc["cadistill", ("pgd", "mean")] == pytest.approx(52.0)
    assert table.loc["vanilla", ("pgd", "std")] == pytest.approx(np.std([30, 31, 35], ddof=1))
    assert table.loc["vanilla", ("pgd", "seeds")] == 3
    assert "corruption" not in table.columns.get_level_values(0)  # not run: left out
    per = R.student_table(frame, "table1")
    assert per.loc[("cadistill", 1), "worst"] == pytest.approx(34.0)
    assert R.cell_text(table, "cadistill", "pgd") == "52.0 ± 2.0"
    with pytest.raises(ValueError, match="several datasets"):
        R.student_table(pd.concat([frame, frame.assign(dataset="shapes")], ignore_index=True), "table1")


def test_display_table_puts_the_papers_numbers_beside_ours() -> None:
    frame = _attack_frame({"cadistill": [0.5], "vanilla": [0.3]})
    shown = R.display_table(R.seed_table(frame, "table1"), R.PAPER_TABLE1_CIFAR10, "paper (ResNet-18)")
    assert list(shown.index) == ["vanilla (1)", "paper (ResNet-18)", "cadistill (1)", "paper (ResNet-18)"]
    assert shown.loc["cadistill (1)", "PGD"] == "50.0 (1 seed)"
    assert shown.iloc[3]["PGD"] == "47.9" and shown.iloc[1]["CW (L2, unbounded)"] == "20.9"  # each under its own method
    assert shown.iloc[1]["worst of 4"] == "—"  # the paper has no worst case
    assert "seeds" not in shown.columns
    assert list(R.display_table(R.seed_table(frame, "table1")).index) == ["vanilla (1)", "cadistill (1)"]
    assert R.PAPER_TABLE2_IMAGENET["cadistill"]["bg_gap"] == pytest.approx(5.4)
    assert R.PUBLIC_CONTEXT["in9_resnet50"]["bg_gap"] == pytest.approx(
        R.PUBLIC_CONTEXT["in9_resnet50"]["mixed_same"] - R.PUBLIC_CONTEXT["in9_resnet50"]["mixed_rand"])


def test_comparisons_apply_the_two_standard_error_rule() -> None:
    # cadistill 52 ± 2 (3 seeds), vanilla 32 ± 2.65 (3 seeds): gap 20, two s.e. = 2 sqrt(4/3 + 7/3) = 3.83
    frame = _attack_frame({"cadistill": [0.50, 0.54, 0.52], "vanilla": [0.30, 0.31, 0.35]})
    table = R.seed_table(frame, "table1")
    comps = R.comparisons(table, [("cadistill", "vanilla")], ["pgd"])
    row = comps.iloc[0]
    assert row["gap"] == pytest.approx(20.0)
    assert row["two_se"] == pytest.approx(2 * np.sqrt(4 / 3 + 7 / 3))
    assert row["outcome"] == "as claimed" and row["comparison"] == "cadistill > vanilla"
    flipped = R.comparisons(table, [("cadistill", "vanilla")], ["pgd"], higher_is_better=False).iloc[0]
    assert flipped["gap"] == pytest.approx(-20.0) and flipped["outcome"] == "reversed"
    with pytest.raises(ValueError, match="no column"):
        R.comparisons(table, [("cadistill", "vanilla")], ["bg_gap"])
    with pytest.raises(ValueError, match="methods"):
        R.comparisons(table, [("cadistill", "dmdistill")], ["pgd"])


def test_the_ordering_verdict_holds_partly_or_does_not() -> None:
    assert R.ordering_pairs() == (("cadistill", "cfgdistill"), ("cfgdistill", "dmdistill"), ("dmdistill", "vanilla"))
    spread = [-0.01, 0.0, 0.01]
    ranked = {"cadistill": 0.50, "cfgdistill": 0.45, "dmdistill": 0.40, "vanilla": 0.35}
    holds = R.seed_table(_attack_frame({m: [v + d for d in spread] for m, v in ranked.items()}), "table1")
    comps = R.comparisons(holds, R.ordering_pairs(), R.PAPER_ATTACKS)
    assert len(comps) == 12 and R.comparison_verdict(comps) == "holds"
    assert R.comparison_summary(comps) == "12 of 12 comparisons as claimed beyond two standard errors"
    # All four equal up to seed noise: no pair is in the claimed order beyond two standard errors.
    tied = R.seed_table(_attack_frame({m: [0.40 + d for d in spread] for m in ranked}), "table1")
    comps = R.comparisons(tied, R.ordering_pairs(), R.PAPER_ATTACKS)
    assert R.comparison_verdict(comps) == "does not" and set(comps.outcome) == {"within noise"}
    # CaDistill best, the middle two swapped: partly.
    swapped = {**ranked, "cfgdistill": 0.40, "dmdistill": 0.45}
    part = R.seed_table(_attack_frame({m: [v + d for d in spread] for m, v in swapped.items()}), "table1")
    comps = R.comparisons(part, R.ordering_pairs(), R.PAPER_ATTACKS)
    assert R.comparison_verdict(comps) == "partly" and (comps.outcome == "reversed").sum() == 4
    assert "4 reversed" in R.comparison_summary(comps)
    one = R.seed_table(_attack_frame({m: [v] for m, v in ranked.items()}), "table1")
    assert R.comparison_verdict(R.comparisons(one, R.ordering_pairs(), ["pgd"])) == "cannot tell"
    assert R.comparison_verdict(R.comparisons(one, [], ["pgd"])) == "not yet run"


def test_claim_checks_decide_every_registered_claim() -> None:
    from paperlib.claims import CLAIMS, VERDICTS

    registered = {c.id: c for c in CLAIMS}
    for cid in R.CLAIM_TESTS:
        assert registered[cid].chapter == "07_robustness" and registered[cid].ours, cid
    spread = [-0.01, 0.0, 0.01]
    ranked = {"cadistill": 0.50, "cfgdistill": 0.45, "dmdistill": 0.40, "vanilla": 0.35}
    cifar = _attack_frame({m: [v + d for d in spread] for m, v in ranked.items()},
                          corruption={m: [0.7 + d for d in spread] for m in ranked})  # corruptions: all tied
    square = _frame({(m, s): {("square", "clean"): 0.9, ("square", "square"): v + spread[s]}
                     for m, v in ranked.items() for s in range(3)})
    # Shapes: CaDistill has the LARGER BG-gap (the claim is that it is smaller).
    bg = {"cadistill": 0.20, "vanilla": 0.10}
    shapes = _frame({(m, s): {("backgrounds", "mixed_same"): 0.9, ("backgrounds", "mixed_rand"): 0.9 - g - spread[s],
                              ("backgrounds", "bg_gap"): g + spread[s]} for m, g in bg.items() for s in range(3)},
                    dataset="shapes")
    tables = {"cifar10": {"table1": R.seed_table(cifar, "table1"), "square": R.seed_table(square, "square")},
              "shapes": {"table2": R.seed_table(shapes, "table2")}}
    verdicts, checked = R.claim_checks(tables)
    assert verdicts == {"cadistill_robust_cifar10": "holds", "cadistill_ordering_attacks_cifar10": "holds",
                        "cadistill_tenth_cifar10": "holds", "cadistill_corruption_cifar10": "does not",
                        "cadistill_ordering_corruption_cifar10": "does not", "cadistill_bg_gap_shapes": "does not",
                        "cadistill_square_cifar10": "holds"}
    assert set(verdicts.values()) <= set(VERDICTS)
    bg_row = checked[checked.claim == "cadistill_bg_gap_shapes"].iloc[0]
    assert bg_row["comparison"] == "cadistill < vanilla" and bg_row["gap"] == pytest.approx(-10.0)
    assert bg_row["outcome"] == "reversed" and bg_row["dataset"] == "shapes"
    assert len(checked[checked.claim == "cadistill_robust_cifar10"]) == 12
    # Without CIFAR-10, its claims are not yet run; the shapes claim is still decided.
    verdicts, checked = R.claim_checks({"shapes": tables["shapes"]})
    assert verdicts["cadistill_robust_cifar10"] == "not yet run" and verdicts["cadistill_bg_gap_shapes"] == "does not"
    assert set(checked.claim) == {"cadistill_bg_gap_shapes"}
    assert R.claim_checks({})[1].empty


def test_corruption_ranking_is_the_papers_cadistill_first_vanilla_last_not_the_attack_order() -> None:
    spread = [-0.01, 0.0, 0.01]
    # The paper's corruption column: CFGDistill and DMDistill level (76.6 vs 76.7), between CaDistill and Vanilla.
    level = {"cadistill": 0.80, "cfgdistill": 0.766, "dmdistill": 0.767, "vanilla": 0.70}
    frame = _attack_frame({m: [0.4 + d for d in spread] for m in level},
                          corruption={m: [v + d for d in spread] for m, v in level.items()})
    tables = {"cifar10": {"table1": R.seed_table(frame, "table1")}}
    verdicts, checked = R.claim_checks(tables)
    assert verdicts["cadistill_ordering_corruption_cifar10"] == "holds"
    rows = checked[checked.claim == "cadistill_ordering_corruption_cifar10"]
    assert sorted(rows.comparison) == ["cadistill > cfgdistill", "cadistill > dmdistill", "cfgdistill > vanilla",
                                       "dmdistill > vanilla"]
    # Under the attack ranking's adjacent pairs the same numbers would not hold (cfgdistill vs dmdistill).
    assert R.comparison_verdict(R.comparisons(tables["cifar10"]["table1"], R.ordering_pairs(),
                                              ["corruption"])) != "holds"


def test_severity_curves_average_the_corruptions_per_severity() -> None:
    from paperlib.corruptions import CORRUPTIONS, SEVERITIES

    cells = {("corruptions", "clean"): 0.9, ("corruptions", "mean"): 0.5}
    for a, name in enumerate(CORRUPTIONS):
        cells[("corruptions", name)] = 0.5
        for s in SEVERITIES:
            cells[("corruptions", f"{name}/{s}")] = 0.9 - 0.1 * s - 0.001 * a
    curves = R.severity_curves(_frame({("cadistill", 0): cells, ("cadistill", 1): cells}))
    want = [0.9] + [0.9 - 0.1 * s - 0.001 * np.mean(range(len(CORRUPTIONS))) for s in SEVERITIES]
    assert curves["cadistill"].shape == (2, 6)
    np.testing.assert_allclose(curves["cadistill"][1], want)


def test_book_table_shows_the_paper_beside_its_own_dataset_only() -> None:
    cifar = R.seed_table(_attack_frame({"cadistill": [0.5, 0.6], "vanilla": [0.3, 0.4]}), "table1")
    shapes = R.seed_table(_attack_frame({"cadistill": [0.7, 0.8], "vanilla": [0.6, 0.7]}), "table1")
    shown = R.book_table({"shapes": {"table1": shapes}, "cifar10": {"table1": cifar}}, "table1")
    assert list(shown.index) == [("shapes", "vanilla (2)"), ("shapes", "cadistill (2)"),
                                 ("cifar10", "vanilla (2)"), ("cifar10", "paper"),
                                 ("cifar10", "cadistill (2)"), ("cifar10", "paper")]
    assert shown.iloc[5]["PGD"] == "47.9"
    assert shown.loc[("shapes", "cadistill (2)"), "PGD"] == "75.0\u202f±\u202f7.1"  # never wraps
    assert R.cell_texts(cifar)[("vanilla", "pgd")] == "35.0 ± 7.1"
    assert "not run" in R.book_table({"shapes": {}}, "table2").columns
    frame = _attack_frame({"cadistill": [0.5, 0.6], "vanilla": [0.3, 0.4]},
                          corruption={"cadistill": [0.7, 0.8], "vanilla": [0.6, 0.7]})
    frame = pd.concat([frame, frame[frame.metric == "mean"].assign(metric="clean", value=0.95)])
    part = R.book_table({"cifar10": {"table1": R.seed_table(frame, "table1")}}, "table1",
                        columns=R.TABLE1_PARTS["corruptions"])
    assert list(part.columns) == ["Clean (same images)", "Corruption"]
    assert part.loc[("cifar10", "cadistill (2)"), "Clean (same images)"].startswith("95.0")
    assert part.iloc[3]["Clean (same images)"] == "93.1"  # the paper's test accuracy
    assert part.iloc[3]["Corruption"] == "77.7"
    with pytest.raises(ValueError, match="no columns"):
        R.book_table({"cifar10": {"table1": cifar}}, "table1", columns=["nope"])
