"""The paper's claims, our numbers and our verdicts: the registry behind "Results at a glance".

Each claim of the paper the book tests is one entry of :data:`CLAIMS`. The chapter that tests it glues

- its verdict under ``claim_<id>`` (:func:`glue_verdict`; one of :data:`VERDICTS`, computed from that
  chapter's data, never typed), and
- the values its ``ours`` template names (``"{dist_clarid} vs {dist_orig}"``), with their ± and counts.

The results page (``notebooks/00_results.ipynb``, executed after the chapters) and the front page's chapter
table (:func:`chapter_table`, put into ``book/index.md`` when the book is staged) read those values from the
executed notebooks (:func:`paperlib.book.glued`). A claim whose chapter is not written yet, was left out,
or has not glued its verdict reads "not yet run". Adding a claim is adding one entry here and one
``glue_verdict`` call in its chapter.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from paperlib.cache import PENDING

VERDICTS: tuple[str, ...] = ("holds", "partly", "does not", "cannot tell", "not yet run")
"""What a verdict can say: the claim holds at our scale, partly (some datasets or seeds), does not, our
measurement cannot decide it (e.g. a saturated metric), or it has not been run (its chapter's results are
pending, or the chapter is not written)."""

ANSWER_WORDS: dict[str, str] = {"holds": "Yes", "partly": "Partly", "does not": "No",
                                "cannot tell": "We cannot tell", "not yet run": "Not yet run"}
"""The first word of a chapter's one-sentence answer, by verdict (:func:`answer`)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, and where the book tests it.

    Attributes:
        id: Short name; the testing chapter glues the verdict as ``claim_<id>``.
        source: Where the paper makes it (``"§3.3, Fig. 5"``).
        claim: The claim, in words.
        paper: The paper's number, or its words when it gives none (or lost it).
        chapter: Stem of the notebook that tests it (``"01_toy_2d"``); ``""`` while no chapter is planned.
        ours: Template over the chapter's glue names for our number(s), with ± and counts.
        shown: Label of the figure or table of that chapter that shows it (``{numref}`` target).
    """

    id: str
    source: str
    claim: str
    paper: str
    chapter: str
    ours: str = ""
    shown: str = ""

    @property
    def verdict_key(self) -> str:
        """Glue name of the verdict in the chapter."""
        return f"claim_{self.id}"

    def fields(self) -> list[str]:
        """The glue names the ``ours`` template uses."""
        return [f for _, f, _, _ in string.Formatter().parse(self.ours) if f]


C = Claim
CLAIMS: tuple[Claim, ...] = (
    C("toy_line", "§3.3, Fig. 5b", "CLARID moves class-1 samples onto a 1-D set, the class-1 core line",
      "in words: “most samples on a 1D manifold inside class 1”", "01_toy_2d",
      "median distance to the line (mean ± std over {n_seeds} seeds): CLARID {dist_clarid}, a random direction "
      "removed instead {dist_random}, originals {dist_orig}, CFG w=3 {dist_cfg3}; CLARID closer than CFG at "
      "every scale and than the random direction in {n_repro} of {n_seeds} seeds", "tab-toy"),
    C("toy_cfg_away", "§3.3, Fig. 5c", "CFG mainly steers samples away from class 0",
      "in words", "01_toy_2d", "median distance to the class-0 line {other_cfg5} at w=5 (originals "
      "{other_orig}; mean ± std over {n_seeds} seeds); farther in {n_push} of {n_seeds} seeds", "tab-toy"),
    C("t_star_saturates", "§3.2.1, App. H.1, Fig. 20", "two-stage sampling accuracy rises with the switch "
      "time and saturates; t* is the saturation point", "t* lost (DiT, SD, CIFAR-10)", "02_t_star",
      "shapes {uncond_acc_shapes} → {cond_acc_shapes}, t* = {t_star_shapes}; CIFAR-10 {uncond_acc_cifar10} → "
      "{cond_acc_cifar10}, t* = {t_star_cifar10} (± s.e.)", "fig-tstar-curve"),
    C("kstar_varies", "App. H.2, Fig. 24", "the elbow k* varies from image to image (no collapse to one value)",
      "histogram of 78,000 images, values lost", "03_evr_elbow",
      "at K = {kstar_K}: shapes {distinct_shapes} distinct k* over {n_shapes} images (mode {mode_share_shapes}), "
      "CIFAR-10 {distinct_cifar10} over {n_cifar10} (mode {mode_share_cifar10}); {collapsed}", "tab-evr-ksweep"),
    C("kstar_grows_with_K", "App. H.2", "a larger horizon K gives a larger k*", "stated, values lost",
      "03_evr_elbow", "mean k*: shapes {kstar_by_K_shapes}; CIFAR-10 {kstar_by_K_cifar10}", "tab-evr-ksweep"),
    C("nmi_clarid", "§3.2.1, Fig. 4", "CLARID's features cluster by class better than the originals'",
      "CLARID 0.6108 (ImageNet-20, DiT-XL/2; originals lost)", "04_nmi",
      "K-means NMI of image-only features (± s.d. over {n_nmi_seeds} K-means seeds), CLARID vs originals: shapes "
      "{nmi0_shapes_clarid} vs {nmi0_shapes_original}, CIFAR-10 {nmi0_cifar10_clarid} vs {nmi0_cifar10_original}; "
      "95 % interval of the gap over images: shapes {gap0_shapes_clarid_original}, CIFAR-10 "
      "{gap0_cifar10_clarid_original}", "tab-nmi-null"),
    C("nmi_clarid_adaptive", "§3.2.1, Fig. 4", "choosing k per sample, CLARID's features cluster by class "
      "better than with any fixed k", "in words: “CLARID adaptively chooses k … and achieves the highest NMI” "
      "(ImageNet-20, DiT-XL/2)", "04_nmi",
      "image-only features: shapes CLARID {nmi0_shapes_clarid} vs the best fixed k {nmi0_shapes_best_k} "
      "(k = {best_k0_shapes}); CIFAR-10 {nmi0_cifar10_clarid} vs {nmi0_cifar10_best_k} (k = {best_k0_cifar10}); "
      "95 % interval of CLARID's gap over images: shapes {gap0_shapes_clarid_best_k}, CIFAR-10 "
      "{gap0_cifar10_clarid_best_k}", "tab-nmi-null"),
    C("nmi_cfg_above", "App. G.2", "CFG's features give a higher NMI than CLARID's: the paper's example of why "
      "NMI cannot compare different methods", "CFG w=4 0.7808 vs CLARID 0.6108 (an example, not a finding)",
      "04_nmi", "decided by {nmi_basis}. CFG w=3 vs CLARID, image-only features: shapes {nmi0_shapes_cfg3} vs "
      "{nmi0_shapes_clarid}, CIFAR-10 {nmi0_cifar10_cfg3} vs "
      "{nmi0_cifar10_clarid}; class-conditioned (the chapter's other NMI table): shapes {nmi_shapes_cfg3} vs "
      "{nmi_shapes_clarid}, CIFAR-10 {nmi_cifar10_cfg3} vs {nmi_cifar10_clarid}", "tab-nmi-null"),
    C("nmi_cifar_saturated", "App. G.2", "on CIFAR-10 the originals' features already reach NMI = 1",
      "1.0", "04_nmi", "{nmi_cifar10_original} at (l_f, t_f): class-conditioned features of {n_images_cifar10} "
      "images of {n_classes_cifar10} classes; the layer × time sweep's {nmi_sweep_cifar10} at that cell is over "
      "{n_sweep_cifar10} images that hold {sweep_classes_cifar10} classes", "tab-nmi"),
    C("class_kept", "Fig. 6", "Canonical Samples keep the class of their input", "in pictures",
      "05_canonical_samples", "classifiers' accuracy, shapes {kept_shapes_clarid} vs originals "
      "{kept_shapes_orig}; CIFAR-10 {kept_cifar10_clarid} vs {kept_cifar10_orig} (± s.e.)", "tab-canon-kept"),
    C("removes_background", "Fig. 6", "CLARID removes class-irrelevant content such as class-correlated "
      "background", "in pictures", "05_canonical_samples", "shapes: the class read from the background of "
      "CLARID's outputs {bg_clarid}, of the originals {bg_orig} (± s.e. over {n_run} images; holds only if "
      "lower by more than two s.e.)", "tab-canon-factors"),
    C("cfg_paints_background", "Fig. 6", "CFG injects class-correlated background", "in pictures",
      "05_canonical_samples", "shapes: class read from another class's background {bgrand_cfg} for CFG "
      "(originals {bgrand_orig})", "tab-canon-factors"),
    C("edits_not_regenerates", "§3.3, Fig. 6", "decoded with CFG after the projection, CLARID keeps the class "
      "and the input while removing class-irrelevant content, beyond controls matched to its edit",
      "in pictures", "05b_matched_controls", "cells of the t* × k map where CLARID edits: shapes "
      "{regime_cells_shapes}, CIFAR-10 {regime_cells_cifar10} ({n_shapes} and {n_cifar10} images)", "tab-regime"),
    C("cadistill_clean_cifar10", "Table 1 (CIFAR-10, ResNet18)", "CaDistill keeps clean accuracy",
      "93.1 % (Vanilla 92.4 %)", "06_cadistill", "CaDistill {clean_cifar10_cadistill} vs Vanilla "
      "{clean_cifar10_vanilla} (mean ± std over {n_seeds_cifar10} seeds)", "tab-distill-clean"),
    C("cadistill_robust_cifar10", "Table 1 (CIFAR-10)", "CaDistill is more robust to white-box attacks than "
      "Vanilla, DMDistill and CFGDistill", "PGD accuracy 47.9 % vs 33.4 / 41.3 / 43.7 % (ε = 2/255)", "07_robustness",
      "PGD: CaDistill {table1_cifar10_cadistill_pgd}, Vanilla {table1_cifar10_vanilla_pgd}, DMDistill "
      "{table1_cifar10_dmdistill_pgd}, CFGDistill {table1_cifar10_cfgdistill_pgd} (over {n_seeds_cifar10} "
      "seeds); PGD, CW, APGD-DLR, APGD-CE: {checked_cadistill_robust_cifar10}", "tab-robust-table1"),
    C("cadistill_ordering_attacks_cifar10", "Table 1 (CIFAR-10)", "under attack the methods rank CaDistill > "
      "CFGDistill > DMDistill > Vanilla",
      "PGD accuracy 47.9 > 43.7 > 41.3 > 33.4 %, the same order in all four attacks",
      "07_robustness", "worst case of the four attacks: CaDistill {table1_cifar10_cadistill_worst}, CFGDistill "
      "{table1_cifar10_cfgdistill_worst}, DMDistill {table1_cifar10_dmdistill_worst}, Vanilla "
      "{table1_cifar10_vanilla_worst}; adjacent pairs × 4 attacks: {checked_cadistill_ordering_attacks_cifar10}",
      "tab-robust-checks"),
    C("cadistill_tenth_cifar10", "Table 1 (CIFAR-10)", "CLAReps of 10% of the data beat DMDistill on all of it",
      "accuracy under PGD 47.9 vs 41.3 %, under CW 43.1 vs 32.8 %", "07_robustness",
      "PGD {table1_cifar10_cadistill_pgd} vs {table1_cifar10_dmdistill_pgd}, CW {table1_cifar10_cadistill_cw} "
      "vs {table1_cifar10_dmdistill_cw} (CLAReps of {bank_share_cifar10} of the data); "
      "{checked_cadistill_tenth_cifar10}", "tab-robust-table1"),
    C("cadistill_corruption_cifar10", "Table 1 (CIFAR-10-C)", "CaDistill generalises better to corruptions",
      "77.7 % (Vanilla 76.1 %)", "07_robustness", "CIFAR-10-C-style mean: CaDistill "
      "{table1_cifar10_cadistill_corruption} vs Vanilla {table1_cifar10_vanilla_corruption}; "
      "{checked_cadistill_corruption_cifar10}", "tab-robust-table1"),
    C("cadistill_ordering_corruption_cifar10", "Table 1 (CIFAR-10-C)", "under corruption CaDistill ranks first "
      "and both other distilled students beat Vanilla", "CaDistill 77.7 %, CFGDistill 76.6 %, DMDistill 76.7 %, "
      "Vanilla 76.1 %", "07_robustness", "CaDistill {table1_cifar10_cadistill_corruption}, CFGDistill "
      "{table1_cifar10_cfgdistill_corruption}, DMDistill {table1_cifar10_dmdistill_corruption}, Vanilla "
      "{table1_cifar10_vanilla_corruption}; {checked_cadistill_ordering_corruption_cifar10}", "fig-robust-severity"),
    C("cadistill_bg_gap_shapes", "Table 2 (ImageNet-9; ours on shapes)", "CaDistill relies less on the "
      "background: a smaller BG-gap (Mixed-Same − Mixed-Rand) than Vanilla",
      "5.4 vs 6.9 points (89.0 − 83.6 %, 88.0 − 81.1 %; ImageNet-9)",
      "07_robustness", "shapes, BG-gap in points: CaDistill {table2_shapes_cadistill_bg_gap} vs "
      "Vanilla {table2_shapes_vanilla_bg_gap}; {checked_cadistill_bg_gap_shapes}", "tab-robust-table2"),
    C("cadistill_square_cifar10", "Table 10 (ImageNet; ours on CIFAR-10)", "CaDistill resists the black-box "
      "Square attack better than Vanilla", "25.6 vs 23.5 % (ImageNet)", "07_robustness",
      "ε = 2/255, {square_queries} queries, {n_square_cifar10} images: CaDistill "
      "{square_cifar10_cadistill_square} vs Vanilla {square_cifar10_vanilla_square}; "
      "{checked_cadistill_square_cifar10}", "tab-robust-square"),
    C("cadistill_imagenet", "Table 1 (ImageNet, ResNet50)", "at ImageNet scale, CaDistill is more robust",
      "PGD 21.9 % (Vanilla 15.6 %), IM-A 6.7 % (6.3 %)", ""),
    C("backgrounds_challenge", "Table 2 (ImageNet-9)", "at ImageNet scale, CaDistill relies less on the "
      "background", "Mixed-Rand 83.6 % (Vanilla 81.1 %)", ""),
    C("square_attack", "Table 10 (ImageNet)", "at ImageNet scale, CaDistill resists the black-box Square attack",
      "25.6 % (Vanilla 23.5 %)", ""),
    C("nmi_dit", "App. G.2 (ImageNet-20, DiT-XL/2)", "the paper's NMI at its own scale",
      "CLARID 0.6108, CFG w=4 0.7808, CLARID + CFG w=3 0.7762", ""),
)
"""Every claim of the paper the book tests or plans to test, in reading order."""

PLANNED_CHAPTERS: dict[str, str] = {
    "06_cadistill": "CaDistill: distilling Canonical Features into a classifier",
    "07_robustness": "Robustness of the distilled students",
    "": "The paper's scale: DiT-XL/2 on ImageNet (needs a GPU)",
}
"""Titles of chapters that claims name before their notebook exists."""


def claim(claim_id: str) -> Claim:
    """The registry entry ``claim_id``.

    Raises:
        ValueError: if there is none.
    """
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise ValueError(f"unknown claim {claim_id!r}; known: {[c.id for c in CLAIMS]}")


# ----------------------------------------------------------------------------------------------------------
# Verdicts, computed in the chapters
# ----------------------------------------------------------------------------------------------------------

def check_verdict(verdict: str) -> str:
    """``verdict`` if it is one of :data:`VERDICTS`.

    Raises:
        ValueError: otherwise.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return verdict


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several (datasets, seeds): all alike -> that one; "cannot tell" and "not yet run"
    are left out of a mixed set; a mix of the others -> "partly".

    Raises:
        ValueError: if ``verdicts`` is empty or holds an unknown verdict.
    """
    vs = [check_verdict(v) for v in verdicts]
    if not vs:
        raise ValueError("combine needs at least one verdict")
    decided = {v for v in vs if v in ("holds", "partly", "does not")}
    if not decided:
        return "cannot tell" if "cannot tell" in vs else "not yet run"
    return decided.pop() if len(decided) == 1 else "partly"


def conjunction(verdicts: Iterable[str]) -> str:
    """The verdict on "A and B" from the verdicts on A and on B: any "does not" -> "does not"; all "holds"
    -> "holds"; otherwise (some "partly", or "holds" beside undecided parts) "partly"; nothing decided ->
    "cannot tell" or "not yet run", as :func:`combine`.

    Raises:
        ValueError: if ``verdicts`` is empty or holds an unknown verdict.
    """
    vs = [check_verdict(v) for v in verdicts]
    if not vs:
        raise ValueError("conjunction needs at least one verdict")
    decided = [v for v in vs if v in ("holds", "partly", "does not")]
    if not decided:
        return combine(vs)
    if "does not" in decided:
        return "does not"
    return "holds" if len(decided) == len(vs) and set(decided) == {"holds"} else "partly"


def share_verdict(k: int, n: int) -> str:
    """A claim that holds for ``k`` of ``n`` cases (seeds): all -> holds, none -> does not, else partly.

    Raises:
        ValueError: unless ``0 <= k <= n`` and ``n > 0``.
    """
    if not 0 <= k <= n or n <= 0:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    return "holds" if k == n else "does not" if k == 0 else "partly"


def glue_verdict(claim_id: str, verdict: str) -> str:
    """Glue ``verdict`` as the chapter's verdict on claim ``claim_id`` (``claim_<id>``); returns it.

    Raises:
        ValueError: for an unknown claim or verdict.
    """
    from paperlib.book import glue_md

    glue_md(claim(claim_id).verdict_key, check_verdict(verdict))
    return verdict


def escape_stars(text: str) -> str:
    """``text`` with every ``*`` outside ``$...$`` math escaped, so that ``t*`` or ``k*`` in plain text
    does not open Markdown emphasis (``$t^*$`` stays math)."""
    parts = re.split(r"(\$[^$]*\$)", text)
    return "".join(p if p.startswith("$") and p.endswith("$") and len(p) > 1 else p.replace("*", "\\*")
                   for p in parts)


def answer(question: str, verdict: str, evidence: str) -> str:
    """The chapter's opening sentence: the question in bold, then the answer word of ``verdict``
    (:data:`ANSWER_WORDS`) and the evidence, e.g. ``**Does ...?** Yes: in 5 of 5 seeds ...``.

    Both are plain text with ``$...$`` math; any other ``*`` is escaped (:func:`escape_stars`).
    """
    question, evidence = escape_stars(question.strip()), escape_stars(evidence.strip().rstrip("."))
    return f"**{question}** {ANSWER_WORDS[check_verdict(verdict)]}: {evidence}."


def glue_answer(question: str, verdict: str, evidence: str) -> None:
    """Glue :func:`answer` as ``answer``, shown at the top of the chapter (``{glue:md}`answer:myst```);
    the evidence names the datasets :func:`paperlib.book.per_dataset` left out as pending. Returns nothing,
    so that a cell ending with it shows no output."""
    from paperlib.book import glue_md, pending_datasets
    from paperlib.data import DATASET_NAMES

    pending = [DATASET_NAMES.get(n, n) for n in pending_datasets()]
    if pending:
        evidence = f"{evidence.rstrip().rstrip('.')}; {' and '.join(pending)}: results not computed yet"
    glue_md("answer", answer(question, verdict, evidence))


# ----------------------------------------------------------------------------------------------------------
# Reading the executed chapters
# ----------------------------------------------------------------------------------------------------------

def chapter_values(profile: str) -> dict[str, dict[str, str]]:
    """``stem -> glued values`` of every executed notebook of ``profile`` (chapters not run are absent)."""
    from paperlib.book import NOTEBOOK_GLOB, glued, source_dir

    folder = source_dir(profile) / "notebooks"
    return {p.stem: glued(p) for p in sorted(folder.glob(NOTEBOOK_GLOB))} if folder.is_dir() else {}


def verdict_of(c: Claim, values: Mapping[str, Mapping[str, str]]) -> str:
    """The verdict chapter ``c.chapter`` glued for ``c`` ("not yet run" if none, or not a verdict)."""
    v = values.get(c.chapter, {}).get(c.verdict_key, "").strip().strip("*")
    return v if v in VERDICTS else "not yet run"


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "—"


def ours_of(c: Claim, values: Mapping[str, Mapping[str, str]]) -> str:
    """``c.ours`` filled from its chapter's glued values ("—" for a value not glued; "" if not run)."""
    glued = values.get(c.chapter)
    if not glued or not c.ours:
        return ""
    return c.ours.format_map(_Missing({k: v.strip() for k, v in glued.items()}))


def tally(verdicts: Sequence[str]) -> str:
    """``"2 hold, 1 partly"``: the verdicts of a set of claims, counted in :data:`VERDICTS` order."""
    names = {"holds": ("holds", "hold"), "partly": ("partly", "partly"), "does not": ("does not", "do not"),
             "cannot tell": ("cannot tell", "cannot tell"), "not yet run": ("not yet run", "not yet run")}
    parts = []
    for v in VERDICTS:
        n = sum(1 for x in verdicts if x == v)
        if n:
            parts.append(f"{n} {names[v][0] if n == 1 else names[v][1]}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    """``text`` fit for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _verdict_md(v: str) -> str:
    return f"**{v}**" if v in ("holds", "partly", "does not") else f"*{v}*"


def _chapter_number(stem: str) -> str:
    return stem.split("_", 1)[0].lstrip("0") if stem else "—"


def results_table(values: Mapping[str, Mapping[str, str]], left_out: Mapping[str, str] | None = None,
                  claims: Sequence[Claim] = CLAIMS) -> str:
    """The results at a glance, as a MyST Markdown table: per claim the chapter, the claim and where the
    paper makes it, the paper's number, ours, the verdict and a link to the figure or table that shows it.

    Args:
        values: :func:`chapter_values`.
        left_out: Chapters left out of this book (:func:`paperlib.book.skipped`): for want of data, or with
            their results pending (a message starting with :data:`paperlib.cache.PENDING`); their claims say which.
        claims: The claims to list.
    """
    left_out = left_out or {}
    rows = ["| ch. | the paper's claim | the paper | ours | verdict |", "|---|---|---|---|---|"]
    for c in claims:
        v = verdict_of(c, values)
        ours = ours_of(c, values)
        if c.chapter in left_out:
            pending = left_out[c.chapter].startswith(PENDING)
            ours = ("results pending: the chapter's page says what is missing" if pending
                    else "left out of this build: its data was not available")
        if ours and c.shown and c.chapter in values:
            ours += f" ({{numref}}`{c.shown}`)"
        chap = (f"{{doc}}`{_chapter_number(c.chapter)} </notebooks/{c.chapter}>`" if c.chapter in values
                else _chapter_number(c.chapter))
        rows.append("| " + " | ".join(_cell(x) for x in (chap, f"{c.claim} — {c.source}", c.paper,
                                                        ours or "—", _verdict_md(v))) + " |")
    return "\n".join(rows)


def results_summary(values: Mapping[str, Mapping[str, str]], claims: Sequence[Claim] = CLAIMS) -> str:
    """``"Of 19 claims, 4 hold, 2 partly, ..."`` over ``claims``."""
    verdicts = [verdict_of(c, values) for c in claims]
    return f"Of the paper's {len(verdicts)} claims listed here, {tally(verdicts)}."


def chapter_rows(values: Mapping[str, Mapping[str, str]], stems: Sequence[str],
                 claims: Sequence[Claim] = CLAIMS) -> list[tuple[str, str, str]]:
    """``(stem, its one-sentence answer, the tally of its claims)`` for the chapters ``stems`` and then for
    every planned chapter that claims name; "" where a chapter glued no answer or has no claims."""
    stems = list(stems) + [c.chapter for c in claims if c.chapter not in stems]
    out = []
    for stem in dict.fromkeys(stems):
        verdicts = [verdict_of(c, values) for c in claims if c.chapter == stem]
        out.append((stem, values.get(stem, {}).get("answer", "").strip(), tally(verdicts)))
    return out


def chapter_title(stem: str) -> str:
    """Title of a chapter that was not executed: its notebook's first heading, else :data:`PLANNED_CHAPTERS`'s."""
    import nbformat

    from paperlib.book import NOTEBOOK_DIR

    path = NOTEBOOK_DIR / f"{stem}.ipynb"
    if stem and path.exists():
        for cell in nbformat.read(path, as_version=4).cells:
            heading = next((li[2:].strip() for li in cell.source.splitlines() if li.startswith("# ")), None)
            if cell.cell_type == "markdown" and heading:
                return heading
    return PLANNED_CHAPTERS.get(stem, stem)


def chapter_table(profile: str, stems: Sequence[str], results_doc: str = "/notebooks/00_results",
                  pending: Sequence[str] = ()) -> str:
    """The front page's chapter table (MyST Markdown): every chapter in ``stems`` with its one-sentence
    answer and the verdicts on its claims, then the planned chapters, whose claims are not yet run.

    Args:
        profile: Whose executed notebooks to read.
        stems: The book's chapters in reading order (``01_toy_2d``, ...).
        results_doc: Document name of the results page, linked from the tallies.
        pending: Chapters of ``stems`` shown as a results-pending page (linked, answer "results pending").
    """
    values = chapter_values(profile)
    rows = ["| chapter | the question, and our answer | the paper's claims |", "|---|---|---|"]
    for stem, ans, count in chapter_rows(values, stems):
        linked = stem in values or stem in pending
        chap = f"{{doc}}`/notebooks/{stem}`" if linked else f"*{chapter_title(stem)}*"
        link = f"{count} ({{doc}}`details <{results_doc}>`)" if count else "—"
        if stem in pending:
            ans = "results pending: the page says what is missing"
        if not stem:
            ans = ans or "needs a GPU: chapters 2–5 run in the `paper` profile ({doc}`/reproducibility`), not run here"
        ans = ans or ("—" if stem in values else "not yet run")
        rows.append(f"| {_cell(chap)} | {_cell(ans)} | {_cell(link)} |")
    return "\n".join(rows)
