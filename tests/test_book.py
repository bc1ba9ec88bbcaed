"""The papermill runner and book staging: chapters left out for want of data."""

from paperlib.book import DATA_UNAVAILABLE, without_chapters

TOC = """format: jb-book
root: intro
parts:
  - caption: Chapters
    chapters:
      - file: notebooks/01_toy_2d
      - file: notebooks/02_t_star
      - file: notebooks/03_evr_elbow
  - caption: About
    chapters:
      - file: reproducibility
"""


def test_without_chapters_drops_only_those_entries():
    out = without_chapters(TOC, ["02_t_star", "03_evr_elbow"])
    assert "02_t_star" not in out and "03_evr_elbow" not in out
    assert "notebooks/01_toy_2d" in out and "reproducibility" in out
    assert without_chapters(TOC, []) == TOC


def test_marker_matches_the_data_error():
    import pytest

    from paperlib.data import load_cifar10

    with pytest.raises(FileNotFoundError, match=DATA_UNAVAILABLE):
        load_cifar10("train", source="env")  # no $PAPERLIB_DATA in the test environment


def _offline_without_data(monkeypatch, tmp_path):
    monkeypatch.delenv("PAPERLIB_DATA", raising=False)
    monkeypatch.setenv("PAPERLIB_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("PAPERLIB_OFFLINE", "1")


def test_use_datasets_leaves_out_missing_cifar_and_glues_twins(monkeypatch, tmp_path):
    import pytest

    from paperlib import book

    _offline_without_data(monkeypatch, tmp_path)
    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: glued.__setitem__(name, value))
    assert book.use_datasets(["shapes", "cifar10"]) == ["shapes"]
    assert "PAPERLIB_OFFLINE" in book._UNAVAILABLE["cifar10"]
    assert book.missing_twins("nmi_shapes_clarid") == [("nmi_cifar10_clarid", "cifar10")]
    assert book.missing_twins("profile") == []
    book.glue_md("t_star_shapes", "600")
    book.glue_md("profile", "`smoke`")
    assert set(glued) == {"t_star_shapes", "t_star_cifar10", "profile"}
    assert glued["t_star_cifar10"].data.startswith("*n/a")
    with pytest.raises(ValueError, match="none of the datasets"):
        book.use_datasets(["cifar10"])
    with pytest.raises(ValueError, match="non-empty list"):
        book.use_datasets(["mnist"])
    assert book.use_datasets(["shapes"]) == ["shapes"] and book.missing_twins("t_star_shapes") == []


PAGE = """<html><body><main>
<div class="cell docutils container"><div class="cell_input"><pre>load("/work/x.npz")</pre></div>
<div class="cell_output docutils container"><div class="output stream"><pre>{out}</pre></div></div></div>
<div class="cell tag_injected-parameters docutils container">{inj}</div>
{tables}
</main></body></html>"""
TABLE = "<table><tr><th>method</th><th>NMI</th></tr><tr><td>CLARID</td><td>0.282</td></tr></table>"


def test_check_html_accepts_a_clean_page():
    from paperlib.book import check_html

    html = PAGE.format(out="NMI 0.282 ± 0.004", inj="", tables=TABLE).replace(
        "tag_injected-parameters", "tag_injected-parameters tag_hide-cell")
    assert check_html(html) == []  # a path in the code is allowed, not in outputs


def test_check_html_finds_paths_logs_duplicates_and_the_injected_cell():
    from paperlib.book import check_html

    out = "found cached classifier (classifier/x.safetensors), loading /work/main/_cache/cifar10/c.npz"
    problems = check_html(PAGE.format(out=out, inj="", tables=TABLE + TABLE), "ch.html",
                          machine_paths=("/srv/build",))
    text = "\n".join(problems)
    assert "absolute path in an output: '/work/main/_cache/cifar10/c.npz'" in text
    assert "log marker 'found cached'" in text and "shown 2 times" in text and "injected-parameters" in text
    assert check_html(PAGE.format(out="see /srv/build/x", inj="", tables=""), machine_paths=("/srv/build",))
    tqdm = PAGE.format(out="CDM training: 33%| 20069/60000 [32:19<83:27:12, 7.52s/it]", inj="", tables="")
    assert any("s/it]" in p for p in check_html(tqdm))
    assert any("C:\\\\" in p or "C:" in p for p in check_html(PAGE.format(out=r"C:\\Users\\me\\x", inj="",
                                                                        tables="")))


def test_every_profile_sets_only_parameters_the_notebooks_have():
    import re

    import nbformat

    from paperlib.book import PROFILE_DIR, notebooks, profile_parameters

    profiles = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    assert {"smoke", "full", "paper"} <= set(profiles)
    for path in notebooks():
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        names = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", cell.source, flags=re.M))
        for profile in profiles:
            assert set(profile_parameters(profile, path.stem)) <= names, (profile, path.name)


def test_the_paper_profile_runs_chapters_2_to_5_on_imagenet20_on_a_gpu():
    from paperlib.book import profile_parameters
    from paperlib.factors import ABLATIONS

    for stem in ("02_t_star", "03_evr_elbow", "04_nmi", "05_canonical_samples"):
        p = profile_parameters("paper", stem)
        assert p["PROFILE"] == "paper" and p["DEVICE"] == "cuda" and "imagenet20" in p["DATASETS"], stem
    assert profile_parameters("paper", "02_t_star")["N_PER_CLASS"] == 5  # the paper's
    assert profile_parameters("paper", "03_evr_elbow")["N_IMAGES"] == 1000
    variants = profile_parameters("paper", "05_canonical_samples")["ABLATION_VARIANTS"]
    assert set(variants) <= set(ABLATIONS) and not any("layer" in v for v in variants)  # no UNet layers on a DiT
