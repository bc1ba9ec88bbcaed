"""environment.yml (conda) and pyproject.toml (pip) must describe the same environment."""

import tomllib

import yaml

from paperlib.paths import REPO_ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        pins |= {r for r in reqs if not r.startswith("clarep-book")}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {p for p in pip_section if not p.startswith("-e")}
    assert conda_pins == pins
    assert "python=3.11" in env["dependencies"]


def test_no_deps_pins_are_installed_and_named_for_conda():
    """The packages `make env` installs with --no-deps: pinned in pyproject, installed, named in environment.yml."""
    import importlib.metadata

    no_deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["clarep-book"]["no-deps"]
    line = next(li for li in (REPO_ROOT / "environment.yml").read_text().splitlines() if "--no-deps" in li)
    for pin in no_deps:
        name, version = pin.split("==")
        assert importlib.metadata.version(name) == version
        assert pin in line.split()
