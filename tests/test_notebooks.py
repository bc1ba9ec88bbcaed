"""Execute every notebook in the smoke profile (papermill) and check what it glued."""

import math
import re

import pytest

from paperlib.book import execute_notebook, glued, notebooks, profile_parameters

pytestmark = pytest.mark.notebook


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
    assert g["verdict"].strip("*") in {"reproduced", "not reproduced"}
