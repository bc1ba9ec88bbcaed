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


def test_glue_not_available_notes_values_only_missing_datasets_give(monkeypatch, tmp_path):
    import pytest

    from paperlib import book

    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: glued.__setitem__(name, value))
    monkeypatch.setattr("paperlib.data.dataset_unavailable", lambda name: None)
    assert book.use_datasets(["shapes", "cifar10"]) == ["shapes", "cifar10"]
    with pytest.raises(ValueError, match="every dataset is available"):
        book.glue_not_available("table_ablation_class")
    assert book.use_datasets(["shapes"]) == ["shapes"]  # a run of one dataset (--set 'DATASETS=[shapes]')
    book.glue_not_available("kept_inputs_cifar10")
    assert glued.pop("kept_inputs_cifar10").data == "*n/a (cifar10 not run)*"
    monkeypatch.undo()
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: glued.__setitem__(name, value))
    _offline_without_data(monkeypatch, tmp_path)
    book.use_datasets(["shapes", "cifar10"])
    book.glue_not_available("n_ablation_class", "verdict_ablation_cifar10")
    book.glue_not_available("table_ablation_class", figure=True)
    assert set(glued) == {"n_ablation_class", "verdict_ablation_cifar10", "table_ablation_class"}
    assert glued["n_ablation_class"].data == "*n/a (no cifar10 data)*"
    assert glued["table_ablation_class"].data.startswith("*(Not built: cifar10 data")


def test_per_dataset_shows_the_datasets_that_are_done_and_notes_the_pending_ones(monkeypatch):
    import pytest

    from paperlib import book
    from paperlib.cache import PendingRun, check_may_compute
    from paperlib.claims import glue_answer

    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: glued.__setitem__(name, value))
    monkeypatch.setattr("paperlib.data.dataset_unavailable", lambda name: None)
    monkeypatch.setenv("PAPERLIB_READ_ONLY", "1")
    shown = []
    monkeypatch.setattr(book, "_show_markdown", shown.append)

    def compute(ds):
        if ds == "cifar10":
            check_may_compute("edit_run abc", "make edits DATASET=cifar10")
        return ds.upper()

    names = book.use_datasets(["shapes", "cifar10"])
    assert book.per_dataset(compute, names) == {"shapes": "SHAPES"}
    assert book.pending_datasets() == ["cifar10"] and "`edit_run abc`" in shown[-1]
    book.glue_md("regime_shapes", "holds")
    assert glued["regime_cifar10"].data == "*pending (cifar10 not computed yet)*"
    book.glue_not_available("table_scaling_cifar10", figure=True)
    assert glued["table_scaling_cifar10"].data.startswith("*(Not built yet: cifar10's results")
    glue_answer("Does it?", "holds", "On shapes it does.")
    assert glued["answer"].data.endswith("On shapes it does; CIFAR-10: results not computed yet.")
    with pytest.raises(PendingRun, match="edit_run abc"):  # nothing done: the chapter is pending
        book.per_dataset(compute, ["cifar10"])
    book.use_datasets(["shapes", "cifar10"])  # the next notebook starts afresh
    assert book.pending_datasets() == [] and book.missing_twins("regime_shapes") == []
    monkeypatch.delenv("PAPERLIB_READ_ONLY")
    assert book.per_dataset(compute, names) == {"shapes": "SHAPES", "cifar10": "CIFAR10"}  # computes


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
    twice = CELL.format(f'<div class="output text_html">{TABLE}</div>') + FIGURE.format("tab-a", TABLE)
    problems = check_html(PAGE.format(out=out, inj="", tables=twice), "ch.html", machine_paths=("/srv/build",))
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
def _page(body: str) -> str:
    return f"<html><body><main>{body}</main></body></html>"


CELL = ('<div class="cell docutils container"><div class="cell_output docutils container">{}</div></div>')
FIGURE = '<figure class="align-default" id="{}"><div class="output text_html">{}</div></figure>'


def test_check_html_flags_stderr_and_a_cell_showing_what_it_glued():
    from paperlib.book import check_html

    stderr = CELL.format('<div class="output stderr highlight-myst-ansi"><pre>some library notice</pre></div>')
    assert any("stderr shown" in p for p in check_html(_page(stderr)))
    shown_twice = CELL.format(f'<div class="output text_html">{TABLE}</div>') + FIGURE.format("tab-a", TABLE)
    assert any("a table is shown 2 times" in p for p in check_html(_page(shown_twice)))
    # two glued tables that happen to hold the same numbers (a tiny smoke run) are two tables, not one twice
    assert check_html(_page(FIGURE.format("tab-a", TABLE) + FIGURE.format("tab-b", TABLE))) == []
    # a table in the prose is not an output
    assert check_html(_page(TABLE + FIGURE.format("tab-a", TABLE))) == []
    img = '<img src="../_images/abc.png" />'
    twice = CELL.format(f'<div class="output text_png">{img}</div>') + f'<figure id="fig-a">{img}</figure>'
    assert any("a figure is shown 2 times" in p for p in check_html(_page(twice)))
    assert check_html(_page(f'<figure id="fig-a">{img}</figure>')) == []


def test_check_book_counts_every_page(tmp_path):
    from paperlib.book import check_book

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "intro.html").write_text(_page("<p>clean</p>"))
    (tmp_path / "search.html").write_text(_page(CELL.format("found cached x")))  # not a page of the book
    (tmp_path / "notebooks" / "ch.html").write_text(_page(CELL.format("saved to /home/me/x.npz")))
    problems = check_book(tmp_path)
    assert problems and all(p.startswith("notebooks/ch.html") for p in problems)
    import pytest

    with pytest.raises(FileNotFoundError, match="build the book first"):
        check_book(tmp_path / "nothing")


def test_check_book_wants_the_front_page_to_link_every_chapter(tmp_path):
    from paperlib.book import check_book, front_page_problems

    (tmp_path / "notebooks").mkdir()
    for name in ("01_a.html", "05_b.html", "05b_c.html"):
        (tmp_path / "notebooks" / name).write_text(_page("<p>clean</p>"))
    sidebar = "".join(f'<a href="notebooks/{n}">x</a>' for n in ("01_a.html", "05_b.html", "05b_c.html"))
    body = '<a href="notebooks/01_a.html">1</a> <a href="./notebooks/05_b.html#top">2</a>'
    (tmp_path / "index.html").write_text(f"<html><body><nav>{sidebar}</nav><article>{body}</article></body></html>")
    assert front_page_problems(tmp_path) == [
        "index.html: the front page does not link the chapter notebooks/05b_c.html"]
    assert check_book(tmp_path) == front_page_problems(tmp_path)
    (tmp_path / "index.html").unlink()
    assert front_page_problems(tmp_path) == []


def _notebook(tmp_path, injected: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "full"\nN = 5  # size'),
                nbformat.v4.new_code_cell(f"# Parameters\n{injected}\n")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells[1].metadata["tags"] = ["injected-parameters"]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_injected_parameters_are_removed_when_redundant_and_collapsed_otherwise(tmp_path):
    import nbformat

    from paperlib.book import hide_injected_parameters

    for injected, tag in [('PROFILE = "full"', "remove-cell"), ('PROFILE = "smoke"\nN = 2', "hide-cell"),
                          ("M = 1", "hide-cell"), ("N = 5\nX = f(1)", "hide-cell")]:
        path = _notebook(tmp_path, injected)
        hide_injected_parameters(path)
        hide_injected_parameters(path)  # idempotent
        tags = nbformat.read(path, as_version=4).cells[1].metadata["tags"]
        assert tags == ["injected-parameters", tag], (injected, tags)


def test_summary_pages_run_after_the_chapters():
    from pathlib import Path

    from paperlib.book import execution_order

    paths = [Path(p) for p in ["00_results.ipynb", "01_toy.ipynb", "02_t.ipynb"]]
    assert [p.stem for p in execution_order(paths)] == ["01_toy", "02_t", "00_results"]


def test_book_environment_is_set_for_the_kernel_and_restored(monkeypatch, tmp_path):
    import os

    from paperlib.book import book_environment
    from paperlib.progress import PROGRESS_ENV
    from paperlib.setup import LOG_FILE_ENV

    monkeypatch.setenv("PYTHONWARNINGS", "default")
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    with book_environment(tmp_path / "x.log"):
        assert os.environ[PROGRESS_ENV] == "0" and os.environ[LOG_FILE_ENV] == str(tmp_path / "x.log")
        assert os.environ["PYTHONWARNINGS"] == "default,ignore:IProgress not found"
    assert PROGRESS_ENV not in os.environ and LOG_FILE_ENV not in os.environ
    assert os.environ["PYTHONWARNINGS"] == "default"


def test_choices_table():
    import pytest

    from paperlib.book import choices_frame, choices_table

    rows = [("K", 20, "O", "lost"), {"name": "steps", "value": [1, 2], "tag": "S/O", "note": "x"}]
    t = choices_frame(rows)
    assert list(t.index) == ["K", "steps"] and list(t.columns) == ["value", "tag", "note"]
    assert t.loc["K", "value"] == "20" and t.loc["steps", "tag"] == "S / O"
    long = "a value far longer than the fifty characters a DataFrame's display keeps"
    html = choices_table([*rows, ("long", long, "O", "")]).to_html()
    assert long in html and ">choice<" in html
    with pytest.raises(ValueError, match="tag of 'K'"):
        choices_frame([("K", 20, "X", "")])
    with pytest.raises(ValueError, match="choice, value, tag, note"):
        choices_table([("K", 20, "O")])


def _code_cells():
    import nbformat

    from paperlib.book import notebooks

    for path in notebooks():
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                yield path.name, i, cell


def test_notebook_code_fits_88_columns():
    wide = [f"{name} cell {i}: {len(line)} columns: {line[:60]}..." for name, i, cell in _code_cells()
            for line in cell.source.splitlines() if len(line) > 88]
    assert not wide, "\n".join(wide)


def test_setup_cells_are_collapsed_and_analysis_cells_shown():
    import re

    for name, i, cell in _code_cells():
        tags = cell.metadata.get("tags", [])
        if re.search(r"^\s*(device = )?setup\(", cell.source, flags=re.M):
            assert "hide-input" in tags, f"{name} cell {i} calls setup(): tag it hide-input"
        elif "parameters" not in tags:
            assert not {"remove-cell", "remove-input"} & set(tags), f"{name} cell {i}: analysis code is shown"


def _tiny_notebook(path, source: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "x"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_execute_runs_reading_chapters_in_parallel_and_summaries_last(monkeypatch, tmp_path, capsys):
    import json

    import pytest

    from paperlib import book

    nbdir, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    nbdir.mkdir(), profiles.mkdir()
    (profiles / "x.yaml").write_text("_all:\n  PROFILE: x\n")
    stamp = tmp_path / "stamps"
    stamp.mkdir()
    # each chapter leaves a stamp with its thread count; the summary page sees both chapters' stamps
    _tiny_notebook(nbdir / "01_a.ipynb", f"import os, pathlib\npathlib.Path({str(stamp)!r}, 'a').write_text("
                                         "os.environ.get('OMP_NUM_THREADS', '-'))")
    _tiny_notebook(nbdir / "02_b.ipynb",
                   "raise RuntimeError('not computed yet: run b is not in artifacts/; compute it with `make b`')")
    _tiny_notebook(nbdir / "03_c.ipynb", f"import os, pathlib\npathlib.Path({str(stamp)!r}, 'c').write_text("
                                         "os.environ.get('OMP_NUM_THREADS', '-'))")
    _tiny_notebook(nbdir / "00_summary.ipynb",
                   f"import pathlib\nassert sorted(p.name for p in pathlib.Path({str(stamp)!r}).iterdir()) "
                   "== ['a', 'c']")
    monkeypatch.setattr(book, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(book, "PROFILE_DIR", profiles)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "_build")
    with pytest.raises(ValueError, match="with read_only"):
        book.execute("x", jobs=2)
    timings = book.execute("x", read_only=True, jobs=2)
    assert set(timings) == {"01_a", "03_c", "00_summary"}
    # the whole message is kept: the pending page names the command from it
    assert book.skipped("x") == {"02_b": "not computed yet: run b is not in artifacts/; compute it with `make b`"}
    threads = str(max(1, (__import__("os").cpu_count() or 1) // 2))
    assert (stamp / "a").read_text() == (stamp / "c").read_text() == threads
    out = capsys.readouterr().out
    assert out.index("01_a.ipynb:") < out.index("02_b.ipynb left out") < out.index("03_c.ipynb:") \
        < out.index("00_summary.ipynb:")
    assert json.loads((tmp_path / "_build" / "x" / "timings.json").read_text()).keys() == timings.keys()
    _tiny_notebook(nbdir / "03_c.ipynb", "1 / 0")
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        book.execute("x", read_only=True, jobs=2)


def test_a_pending_chapter_gets_a_linked_page_and_a_chapter_without_data_is_dropped(monkeypatch, tmp_path):
    import json

    import nbformat
    import yaml

    from paperlib import book

    repo, nbdir = tmp_path / "repo", tmp_path / "repo" / "notebooks"
    (repo / "book").mkdir(parents=True), nbdir.mkdir()
    (repo / "book" / "_toc.yml").write_text(TOC)
    (repo / "book" / "intro.md").write_text("# Intro\n\n{{ chapter_table }}\n")
    (repo / "_config.yml").write_text("title: t\n")
    box = (":::{admonition} Reproduces\n:class: note\n**Paper:** Fig. 2 of {cite}`xu2025canonical`.\n\n"
           "**Runtime:** {glue:md}`hours` hours.\n:::\n\n{glue:md}`answer:myst`\n")
    for stem, title in [("01_toy_2d", "1. Toy"), ("02_t_star", "2. The time t*"), ("03_evr_elbow", "3. EVR")]:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{box}")]
        nbformat.write(nb, nbdir / f"{stem}.ipynb")
    monkeypatch.setattr(book, "REPO_ROOT", repo)
    monkeypatch.setattr(book, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "_build")
    src = book.source_dir("x") / "notebooks"
    src.mkdir(parents=True)
    nbformat.write(nbformat.read(nbdir / "01_toy_2d.ipynb", as_version=4), src / "01_toy_2d.ipynb")
    why = "not computed yet: student shapes/vanilla seed 0 (abc) is not in artifacts/; compute it with `make s`"
    (tmp_path / "_build" / "x" / "skipped.json").write_text(json.dumps(
        {"02_t_star": why, "03_evr_elbow": f"{book.DATA_UNAVAILABLE}: no CIFAR-10"}))
    staged = book.stage("x")
    page = (staged / "notebooks" / "02_t_star.md").read_text()
    assert page.startswith("# 2. The time t*\n") and "Results pending" in page
    assert "a trained student (`student shapes/vanilla seed 0 (abc)`), computed by `make s`." in page
    assert "They wait on CPU time" in page
    assert "**Paper:** Fig. 2" in page and "glue" not in page and "artifacts/" not in page
    toc = (staged / "_toc.yml").read_text()
    assert "notebooks/02_t_star" in toc and "notebooks/03_evr_elbow" not in toc
    table = yaml.safe_load((staged / "_config.yml").read_text())["parse"]["myst_substitutions"]["chapter_table"]
    assert "{doc}`/notebooks/02_t_star`" in table and "results pending" in table
    assert "{doc}`/notebooks/03_evr_elbow`" not in table
    # once the chapter runs, its pending page goes: it would shadow the executed notebook
    nbformat.write(nbformat.read(nbdir / "02_t_star.ipynb", as_version=4), src / "02_t_star.ipynb")
    (tmp_path / "_build" / "x" / "skipped.json").write_text(json.dumps({"03_evr_elbow": book.DATA_UNAVAILABLE}))
    staged = book.stage("x")
    assert not (staged / "notebooks" / "02_t_star.md").exists()
    assert (staged / "notebooks" / "02_t_star.ipynb").exists()


def test_kernel_manager_does_not_interrupt_a_kernel_it_is_shutting_down(monkeypatch):
    import asyncio

    from jupyter_client import AsyncKernelManager

    from paperlib.book import _ipc_kernel_manager

    sent = []

    async def interrupt(self):
        sent.append(self.shutting_down)

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", interrupt)
    km = _ipc_kernel_manager()()
    asyncio.run(km._async_interrupt_kernel())
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())
    assert sent == [False]
    assert km.transport == "ipc" and km.ip.startswith(tempfile_prefix())


def tempfile_prefix() -> str:
    import tempfile
    from pathlib import Path

    return str(Path(tempfile.gettempdir()) / "paperlib-kernel-")


def test_overrides_reach_only_the_notebooks_that_declare_them(monkeypatch, tmp_path):
    import nbformat
    import pytest

    from paperlib import book

    nbdir, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    nbdir.mkdir(), profiles.mkdir()
    (profiles / "x.yaml").write_text("_all:\n  PROFILE: x\n01_a:\n  DATASETS: [a, b]\n")
    out = tmp_path / "seen"
    for stem, declared in (("01_a", 'DATASETS = ["a"]'), ("00_summary", "")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f'PROFILE = "x"\n{declared}', metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(f"import pathlib\npathlib.Path({str(out)!r}, {stem!r}).write_text("
                                              "repr(sorted(k for k in dir() if k.isupper())) + "
                                              "repr(globals().get('DATASETS')))")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nbdir / f"{stem}.ipynb")
    out.mkdir()
    monkeypatch.setattr(book, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(book, "PROFILE_DIR", profiles)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "_build")
    assert book.parameters_for(nbdir / "01_a.ipynb", "x", {"DATASETS": ["b"], "OTHER": 1}) == {
        "PROFILE": "x", "DATASETS": ["b"]}
    book.main(["execute", "--profile", "x", "--set", "DATASETS=[b]", "OTHER=2"])
    assert (out / "01_a").read_text() == "['DATASETS', 'PROFILE']['b']"
    assert (out / "00_summary").read_text() == "['PROFILE']None"  # not declared there: not injected
    with pytest.raises(SystemExit):
        book.main(["execute", "--profile", "x", "--set", "DATASETS"])


def test_values_report_lists_what_the_executed_notebooks_glued(monkeypatch, tmp_path):
    import nbformat
    import pytest

    from paperlib import book

    def output(name, mime, text):
        return nbformat.v4.new_output("display_data", data={mime: text},
                                      metadata={"scrapbook": {"name": name, "mime_prefix": ""}})

    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [output("t_star_shapes", "text/markdown", "900"),
                    output("table_x", "text/plain", "   a\n0  1"),
                    output("fig_x", "text/plain", "<Figure size 640x480 with 1 Axes>")]
    folder = tmp_path / "full" / "src" / "notebooks"
    folder.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / "02_t_star.ipynb")
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path)
    text = book.values_report("full")
    assert text.startswith("## 02_t_star") and "- `t_star_shapes`: 900" in text
    assert "**table_x**\n\n```\n   a\n0  1\n```" in text and "fig_x" not in text
    with pytest.raises(FileNotFoundError, match="no executed notebook"):
        book.values_report("full", ["03_evr_elbow"])
