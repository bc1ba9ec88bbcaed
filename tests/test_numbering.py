"""paperlib.numbering: per-chapter figure and table numbers in a real (tiny) Sphinx build."""

from __future__ import annotations

import io
import re

import pytest

from paperlib.numbering import chapter_number, per_chapter_numbers


def test_chapter_number_from_the_document_name():
    assert chapter_number("notebooks/03_evr_elbow") == "3"
    assert chapter_number("notebooks/05b_matched_controls") == "5b"
    assert chapter_number("notebooks/00_results") == "0"
    assert chapter_number("index") is None
    assert chapter_number("reproducibility") is None
    assert chapter_number("notebooks/toy_2d") is None


def test_per_chapter_numbers_count_from_one_per_document_and_type_in_order():
    sphinx_numbers = {
        "notebooks/02_t_star": {"figure": {"fig-a": (1,), "fig-b": (2,)}, "table": {"tab-a": (1,)}},
        "notebooks/03_evr": {"figure": {"fig-c": (3,)}, "table": {"tab-b": (2,), "tab-c": (3,)}},
        "reproducibility": {"figure": {"fig-d": (4,)}},
    }
    assert per_chapter_numbers(sphinx_numbers) == {
        "notebooks/02_t_star": {"figure": {"fig-a": ("2", 1), "fig-b": ("2", 2)}, "table": {"tab-a": ("2", 1)}},
        "notebooks/03_evr": {"figure": {"fig-c": ("3", 1)}, "table": {"tab-b": ("3", 1), "tab-c": ("3", 2)}},
        "reproducibility": {"figure": {"fig-d": (1,)}},
    }


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def _figure(name: str, caption: str) -> str:
    return f"```{{figure}} dot.png\n:name: {name}\n\n{caption}\n```\n\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, str]:
    from sphinx.application import Sphinx

    src = tmp_path_factory.mktemp("src")
    (src / "notebooks").mkdir()
    (src / "conf.py").write_text(
        "extensions = ['myst_parser', 'paperlib.numbering']\nnumfig = True\n"
        "myst_enable_extensions = ['colon_fence']\n")
    (src / "index.md").write_text(
        "# Book\n\n```{toctree}\nnotebooks/02_a\nnotebooks/05b_b\nabout\n```\n")
    for d in ("notebooks", "."):
        (src / d / "dot.png").write_bytes(_png())
    (src / "notebooks" / "02_a.md").write_text(
        "# 2. A\n\n" + _figure("fig-first", "First figure.") + _figure("tab-first", "First table.")
        + _figure("fig-second", "Second figure.")
        + "See {numref}`tab-first`, {numref}`fig-second` and {numref}`tab-later`.\n")
    (src / "notebooks" / "05b_b.md").write_text(
        "# 5b. B\n\n" + _figure("tab-later", "A table of chapter 5b.") + _figure("fig-later", "A figure."))
    (src / "about.md").write_text("# About\n\n" + _figure("fig-about", "Unnumbered chapter."))
    out = src / "_build"
    warnings = io.StringIO()
    app = Sphinx(str(src), str(src), str(out), str(out / ".doctrees"), "html", status=None,
                 warning=warnings, freshenv=True)
    app.build()
    pages = {p.stem: p.read_text() for p in out.rglob("*.html")}
    pages["warnings"] = warnings.getvalue()
    return pages


def _captions(html: str) -> list[str]:
    return re.findall(r'<span class="caption-number">([^<]*)</span>', html)


def test_build_has_no_warnings(built):
    assert built["warnings"] == ""


def test_glued_tables_are_tables_and_numbers_restart_per_chapter(built):
    assert [c.strip() for c in _captions(built["02_a"])] == ["Fig. 2.1", "Table 2.1", "Fig. 2.2"]
    assert [c.strip() for c in _captions(built["05b_b"])] == ["Table 5b.1", "Fig. 5b.1"]
    assert [c.strip() for c in _captions(built["about"])] == ["Fig. 1"]


def test_references_carry_the_new_numbers(built):
    text = re.sub(r"<[^>]+>", "", built["02_a"])
    assert "See Table 2.1, Fig. 2.2 and Table 5b.1." in text


def test_table_figures_carry_the_css_class(built):
    assert re.search(r'<figure class="[^"]*book-table[^"]*" id="tab-first"', built["02_a"])
    assert not re.search(r'<figure class="[^"]*book-table[^"]*" id="fig-first"', built["02_a"])
