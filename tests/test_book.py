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
