"""Execute every notebook in the smoke profile (papermill) and check what it glued."""

import math
import re

import pytest

from paperlib.book import execute_notebook, glued, notebooks, profile_parameters

pytestmark = pytest.mark.notebook


@pytest.fixture(autouse=True)
def _notebook_cache(tmp_path_factory, monkeypatch):
    """The chapters share one cache of their own (chapter 3 reads chapter 2's choices), apart from the unit
    tests', which record choices of their own in the smoke profile."""
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path_factory.getbasetemp() / "notebook-cache"))


def _mean(text: str) -> float:
    return float(re.match(r"\s*(-?[\d.]+)", text).group(1))


def test_every_notebook_has_one_parameters_cell():
    import nbformat

    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"
        assert set(profile_parameters("smoke", path.stem)) <= set(_parameter_names(tagged[0].source)), path.name


def test_papermill_reads_every_parameter(caplog):
    """papermill skips (with a console warning) a parameter line holding a second '=', e.g. in its comment."""
    import nbformat
    import papermill as pm

    for path in notebooks():
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        caplog.clear()
        assert set(pm.inspect_notebook(str(path))) == set(_parameter_names(cell.source)), path.name
        assert "Unable to parse" not in caplog.text, path.name


def _parameter_names(source: str) -> list[str]:
    return re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", source, flags=re.M)


def test_toy_notebook_smoke(monkeypatch):
    path = next(p for p in notebooks() if p.stem == "01_toy_2d")
    out, _ = execute_notebook(path, "smoke")
    g = glued(out)
    for name in ["fig_data", "fig_clarid", "table_toy", "fig_sweep", "verdict", "dist_clarid", "dist_cfg3"]:
        assert name in g, name
    for name in ["dist_orig", "dist_clarid", "dist_cfg2", "dist_random", "sw_model", "sw_floor"]:
        value = _mean(g[name])
        assert math.isfinite(value) and value >= 0, (name, g[name])
    assert 0 <= _mean(g["in_support"]) <= 100
    assert g["verdict"].strip("*") in {"reproduced", "partly reproduced", "not reproduced"}
    assert 0 <= int(g["n_repro"]) <= int(g["n_beat_random"]) <= int(g["n_seeds"])
    assert "table_seeds" in g
    # the comparison with the random-direction control is stated, in words and numbers
    assert "random direction" in g["closer_on_average"] and "random direction" in g["answer"]
    assert "std over" in g["answer"] and g["ratio_range"].startswith("from ")
    assert all(_mean(g[n]) >= 0 for n in ["clarid_best", "random_best"])


def _run(stem: str) -> dict[str, str]:
    path = next(p for p in notebooks() if p.stem == stem)
    out, _ = execute_notebook(path, "smoke")
    return glued(out)


DATASETS = ["shapes", "cifar10"]


def test_t_star_notebook_smoke():
    g = _run("02_t_star")
    for name in ["table_cdm", "fig_cdm_loss", "table_clf", "fig_curve", "table_curve"]:
        assert name in g, name
    t_grid = profile_parameters("smoke", "02_t_star")["T_SWITCHES"]
    for ds in DATASETS:
        assert int(g[f"t_star_{ds}"]) in t_grid and int(g[f"t_star_{ds}"]) > 0
        for key in ("clf_acc", "cond_acc", "uncond_acc"):
            assert 0 <= _mean(g[f"{key}_{ds}"].rstrip("%")) <= 100


def test_evr_notebook_smoke():
    g = _run("03_evr_elbow")  # reads the t* recorded by 02_t_star (run just before, in file order)
    params = profile_parameters("smoke", "03_evr_elbow")
    for ds in DATASETS:
        assert f"fig_spectra_{ds}" in g and f"fig_ksweep_{ds}" in g
        assert 1 <= int(g[f"distinct_{ds}"]) <= params["K"]
        assert int(g[f"n_{ds}"]) == params["N_IMAGES"]
    assert "table_ksweep" in g and "fig_kstar_hist" in g


def test_nmi_notebook_smoke():
    g = _run("04_nmi")
    for ds in DATASETS:
        assert int(g[f"tf_{ds}"]) in profile_parameters("smoke", "04_nmi")["SWEEP_TIMES"]
        for method in ("original", "clarid", "random", "cfg3"):
            assert 0 <= _mean(g[f"nmi_{ds}_{method}"]) <= 1
    # each finding is written once, with both datasets in it (display names, not ids)
    for key in ("verdict_text", "verdict_null"):
        assert g[key].count("the saturation level") == 1 and "CIFAR-10 (" in g[key] and "cifar10" not in g[key]
    assert "fig_heat_null" in g and "fig_nmi_k_null" in g and "table_nmi" in g and "table_nmi_null" in g
    for ds in DATASETS:
        assert int(g[f"tf0_{ds}"]) in profile_parameters("smoke", "04_nmi")["SWEEP_TIMES"]
        assert 0 <= _mean(g[f"nmi0_{ds}_clarid"]) <= 1
        assert 0 <= _mean(g[f"nmi0_{ds}_best_k"]) <= 1 and int(g[f"best_k0_{ds}"]) >= 1
        lo, hi = (float(x) for x in g[f"gap0_{ds}_clarid_best_k"].split(" to "))
        assert -1 <= lo <= hi <= 1
    for claim in ("nmi_clarid", "nmi_clarid_adaptive", "nmi_cfg_above", "nmi_cifar_saturated"):
        assert g[f"claim_{claim}"].strip("*") in {"holds", "partly", "does not", "cannot tell"}


def test_canonical_samples_notebook_smoke():
    g = _run("05_canonical_samples")  # reads chapters 2-4's recorded choices
    for name in ["fig_gallery_shapes", "fig_gallery_cifar10", "table_factors", "table_probe_checks", "table_cache",
                 "verdict_factors", "table_ablation", "verdict_ablation", "table_ablation_class",
                 "verdict_ablation_cifar10"]:
        assert name in g, name
    for key in ("cls_orig", "cls_clarid", "cls_random", "fam_clarid"):
        assert 0 <= float(g[key]) <= 1, key
    assert float(g["inside_orig"]) == 0 and float(g["outside_orig"]) == 0  # an image does not change itself


def test_matched_controls_notebook_smoke():
    g = _run("05b_matched_controls")  # reads chapters 2-5's recorded choices and probes
    for name in ["table_controls", "table_regime", "fig_scaling", "table_scaling", "answer",
                 "claim_edits_not_regenerates"]:
        assert name in g, name
    for ds in DATASETS:
        for key in ("fig_guidance", "guidance_verdict", "fig_distance", "distance_verdict", "fig_map", "regime",
                    "regime_cells"):
            assert f"{key}_{ds}" in g, f"{key}_{ds}"
        assert int(g[f"n_{ds}"]) == profile_parameters("smoke", "05b_matched_controls")["N_IMAGES"][ds]
    assert g["claim_edits_not_regenerates"] in ("holds", "partly", "does not")
    assert 0 <= float(g["mask_iou"]) <= 1 and 0 <= float(g["mask_iou_mixed"]) <= 1


def test_cadistill_notebook_smoke():
    g = _run("06_cadistill")  # reads chapters 2-5's recorded choices and caches
    for name in ["table_banks", "table_terms", "fig_acc", "table_clean", "fig_sweep", "table_controls"]:
        assert name in g, name
    for ds in DATASETS:
        assert f"fig_terms_{ds}" in g and f"verdict_clean_{ds}" in g
        for method in ("vanilla", "dmdistill", "cfgdistill", "cadistill"):
            assert 0 <= _mean(g[f"clean_{ds}_{method}"].rstrip("%")) <= 100
    assert int(g["loss_n"]) == profile_parameters("smoke", "06_cadistill")["LOSS_BATCH"]
    assert 0 <= int(g["loss_fallback"]) <= int(g["loss_n"])
    assert "standard errors" in g["verdict_matched"] or "one seed" in g["verdict_matched"]


def test_robustness_notebook_smoke():
    from paperlib.robustness import CLAIM_TESTS

    g = _run("07_robustness")  # evaluates chapter 6's smoke students (run just before, in file order)
    for name in ["table_cost", "table1_attacks", "table1_corruptions", "fig_severity", "table2",
                 "table_square", "table_eps8", "fig_scatter", "table_checks", "answer"]:
        assert name in g, name
    settings = profile_parameters("smoke", "07_robustness")["SETTINGS"]
    for ds in DATASETS:
        assert int(g[f"n_attacks_{ds}"]) == settings["attacks"]["n"]
        assert int(g[f"n_square_{ds}"]) == settings["square"]["n"]
        for method in ("vanilla", "dmdistill", "cfgdistill", "cadistill"):
            for col in ("clean", "pgd", "cw", "worst", "corruption"):
                assert 0 <= _mean(g[f"table1_{ds}_{method}_{col}"]) <= 100, (ds, method, col)
            assert _mean(g[f"table1_{ds}_{method}_worst"]) <= _mean(g[f"table1_{ds}_{method}_pgd"])
    assert -100 <= _mean(g["table2_shapes_cadistill_bg_gap"]) <= 100
    assert int(g["square_queries"]) == settings["square"]["square_queries"]
    for cid in CLAIM_TESTS:
        assert g[f"claim_{cid}"] in ("holds", "partly", "does not", "cannot tell"), cid
        assert "comparison" in g[f"checked_{cid}"], cid
    assert g["answer"].startswith("**Are students taught")

def test_results_page_smoke():
    """Runs after the chapters (file order): every claim of an executed chapter has its verdict and the
    values its ``ours`` template names; the chapters' opening answers are glued."""
    from paperlib.claims import CLAIMS, chapter_values, verdict_of

    g = _run("00_results")
    assert "results" in g and g["summary"].startswith("Of the paper's")
    values = chapter_values("smoke")
    for c in CLAIMS:
        if c.chapter not in values:
            assert verdict_of(c, values) == "not yet run", c.id
            continue
        assert verdict_of(c, values) != "not yet run", f"{c.chapter} glued no verdict for {c.id}"
        missing = [f for f in c.fields() if f not in values[c.chapter]]
        assert not missing, f"{c.id}: {c.chapter} glued none of {missing}"
        assert values[c.chapter]["answer"].startswith("**"), c.chapter
