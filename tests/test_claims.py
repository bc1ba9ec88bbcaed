"""The registry of the paper's claims, the verdict rules and the results page's tables."""

import re

import pytest

from paperlib import claims
from paperlib.book import NOTEBOOK_DIR, notebooks
from paperlib.claims import (
    CLAIMS,
    PLANNED_CHAPTERS,
    Claim,
    answer,
    combine,
    conjunction,
    ours_of,
    results_summary,
    results_table,
    share_verdict,
    tally,
    verdict_of,
)


def test_conjunction_fails_when_any_part_fails():
    assert conjunction(["holds", "does not"]) == "does not"  # "A and B" with B false is false, not "partly"
    assert conjunction(["partly", "does not"]) == "does not"
    assert conjunction(["holds", "holds"]) == "holds"
    assert conjunction(["holds", "partly"]) == "partly"
    assert conjunction(["holds", "cannot tell"]) == "partly"  # half decided: not a full yes
    assert conjunction(["cannot tell", "not yet run"]) == "cannot tell"
    with pytest.raises(ValueError, match="at least one"):
        conjunction([])


def test_combine_and_share_verdict():
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["does not"]) == "does not"
    assert combine(["holds", "does not"]) == "partly"
    assert combine(["holds", "cannot tell"]) == "holds"  # an undecided dataset does not dilute the others
    assert combine(["cannot tell", "cannot tell"]) == "cannot tell"
    assert combine(["not yet run"]) == "not yet run"
    assert combine(iter(["partly", "holds"])) == "partly"  # generators are fine
    with pytest.raises(ValueError, match="at least one"):
        combine([])
    with pytest.raises(ValueError, match="verdict must be one of"):
        combine(["reproduced"])
    assert [share_verdict(k, 5) for k in (5, 3, 0)] == ["holds", "partly", "does not"]
    for k, n in [(6, 5), (-1, 5), (0, 0)]:
        with pytest.raises(ValueError):
            share_verdict(k, n)


def test_answer_starts_with_the_verdict_word():
    assert answer("Does it hold? ", "partly", "in 2 of 3 seeds.") == "**Does it hold?** Partly: in 2 of 3 seeds."
    assert answer("Q?", "holds", "x").startswith("**Q?** Yes: ")
    assert answer("Q?", "does not", "x").startswith("**Q?** No: ")
    with pytest.raises(ValueError):
        answer("Q?", "maybe", "x")


def test_glue_verdict_checks_the_claim_and_the_word(monkeypatch):
    glued = {}
    monkeypatch.setattr("paperlib.book.glue_md", lambda name, text: glued.__setitem__(name, text))
    assert claims.glue_verdict("toy_line", "holds") == "holds" and glued == {"claim_toy_line": "holds"}
    with pytest.raises(ValueError, match="unknown claim"):
        claims.glue_verdict("no_such_claim", "holds")
    with pytest.raises(ValueError, match="verdict must be one of"):
        claims.glue_verdict("toy_line", "reproduced")


C = Claim("c1", "Fig. 1", "a claim", "0.61", "01_x", "{a} vs {b} over {n} seeds", "fig-x")
D = Claim("d1", "Table 1", "a later claim", "47.9", "06_y")


def test_values_fill_the_template_and_the_verdict():
    values = {"01_x": {"a": "0.2 ± 0.1", "b": "0.3", "n": "5", "claim_c1": "partly"}}
    assert verdict_of(C, values) == "partly"
    assert ours_of(C, values) == "0.2 ± 0.1 vs 0.3 over 5 seeds"
    assert ours_of(C, {"01_x": {"a": "1"}}) == "1 vs — over — seeds"  # a value not glued shows as a dash
    assert verdict_of(C, {"01_x": {}}) == "not yet run"  # the chapter ran but glued no verdict
    assert verdict_of(C, {"01_x": {"claim_c1": "**reproduced**"}}) == "not yet run"  # not a verdict word
    assert verdict_of(D, values) == "not yet run" and ours_of(D, values) == ""  # chapter not written


def test_results_table_and_summary():
    values = {"01_x": {"a": "1", "b": "2", "n": "3", "claim_c1": "holds"}}
    md = results_table(values, claims=[C, D])
    lines = md.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| ch. |")
    assert "{doc}`1 </notebooks/01_x>`" in lines[2] and "{numref}`fig-x`" in lines[2] and "**holds**" in lines[2]
    assert lines[3].startswith("| 6 |") and "*not yet run*" in lines[3] and "{doc}" not in lines[3]
    assert "left out of this build" in results_table(values, {"01_x": "no data"}, claims=[C])
    pending = results_table(values, {"01_x": "not computed yet: run x is not in artifacts/"}, claims=[C])
    assert "results pending" in pending and "data was not available" not in pending
    assert results_summary(values, [C, D]) == "Of the paper's 2 claims listed here, 1 holds, 1 not yet run."
    assert tally(["holds", "holds", "does not"]) == "2 hold, 1 does not"
    pipe = Claim("p", "s", "a | b", "x", "01_x")
    assert "a \\| b" in results_table({}, claims=[pipe])  # a pipe would break the Markdown table


def test_chapter_rows_list_written_then_planned_chapters():
    values = {"01_x": {"answer": "**Q?** Yes: x.", "claim_c1": "holds"}}
    rows = claims.chapter_rows(values, ["01_x", "02_z"], claims=[C, D])
    assert rows == [("01_x", "**Q?** Yes: x.", "1 holds"), ("02_z", "", ""), ("06_y", "", "1 not yet run")]


def test_chapter_values_and_table_include_a_companion_chapter(monkeypatch, tmp_path):
    import nbformat

    from paperlib import book

    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem in ("05_a", "05b_b", "scratch"):
        nbformat.write(nbformat.v4.new_notebook(), folder / f"{stem}.ipynb")
    monkeypatch.setattr(book, "source_dir", lambda profile: tmp_path)
    assert list(claims.chapter_values("x")) == ["05_a", "05b_b"]
    table = claims.chapter_table("x", ["05_a", "05b_b"])
    assert "{doc}`/notebooks/05_a`" in table and "{doc}`/notebooks/05b_b`" in table


def test_the_registry_is_consistent_with_the_notebooks():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids)), "claim ids must be unique"
    stems = {p.stem for p in notebooks()}
    for c in CLAIMS:
        assert c.chapter in stems or c.chapter in PLANNED_CHAPTERS, f"{c.id}: no chapter {c.chapter!r}"
        if c.chapter not in stems:
            continue
        source = (NOTEBOOK_DIR / f"{c.chapter}.ipynb").read_text()
        # the chapter glues the verdict, and the label the results page links to exists there
        assert re.search(rf'glue_verdict\(\\?"{c.id}\\?"', source), f"{c.chapter} does not glue {c.verdict_key}"
        assert not c.shown or f":name: {c.shown}" in source, f"{c.chapter} has no figure or table {c.shown!r}"
        assert c.ours and c.fields(), f"{c.id}: a written chapter's claim needs an `ours` template"


def test_stars_outside_math_are_escaped():
    from paperlib.claims import escape_stars

    assert escape_stars("t* = 500, $t^*$ and $k^*$; k* 2") == "t\\* = 500, $t^*$ and $k^*$; k\\* 2"
    assert answer("Giving t*?", "holds", "$t^*$ = 500") == "**Giving t\\*?** Yes: $t^*$ = 500."


def test_chapter_title_of_an_unexecuted_chapter_is_its_notebooks_heading():
    assert claims.chapter_title("05b_matched_controls").startswith("5b. Edit or regenerate?")
    assert claims.chapter_title("") == claims.PLANNED_CHAPTERS[""]
    assert claims.chapter_title("99_nowhere") == "99_nowhere"
