"""Sphinx extension: chapter-prefixed numbers, and glued tables numbered as tables.

Jupyter Book numbers every captioned figure of the book in one sequence ("Fig. 21"), and myst-nb's
``glue:figure`` makes every glued table a figure. In a book whose chapters reproduce the paper's figures, "Fig.
21" of chapter 3 reads as the paper's Fig. 21. This extension

- turns a glued figure whose ``:name:`` starts with ``tab-`` into an enumerable node of type ``table``, so it
  is captioned and cross-referenced as "Table …" (caption above the table, see ``book/_static/custom.css``);
- numbers figures and tables per chapter, the chapter taken from the document name
  (``notebooks/03_evr_elbow`` → "Fig. 3.1", "Table 3.1"; ``05b_…`` → "Fig. 5b.1"); pages without a chapter
  number count from 1 on their own.

Enabled from ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from docutils import nodes
from sphinx.transforms import SphinxTransform

TABLE_PREFIX = "tab-"
"""``:name:`` prefix of the book's glued tables."""

TABLE_CLASS = "book-table"
"""HTML class of a glued table (its caption goes above it)."""

_CHAPTER = re.compile(r"^(\d+)([a-z]?)_")


class glued_table(nodes.figure):  # noqa: N801 (docutils node classes are lower case)
    """A ``glue:figure`` that holds a table: numbered and referenced as a table."""


def chapter_number(docname: str) -> str | None:
    """The chapter of a document, from its file name: ``"notebooks/05b_matched"`` → ``"5b"``; else ``None``."""
    m = _CHAPTER.match(docname.rsplit("/", 1)[-1])
    return None if m is None else f"{int(m.group(1))}{m.group(2)}"


def per_chapter_numbers(
    fignumbers: Mapping[str, Mapping[str, Mapping[str, tuple]]],
) -> dict[str, dict[str, dict[str, tuple]]]:
    """Renumber Sphinx's book-wide figure numbers per document.

    Args:
        fignumbers: ``env.toc_fignumbers``: ``{docname: {figtype: {id: number}}}``, ids in document order.

    Returns:
        The same ids numbered ``(chapter, i)`` (``i`` from 1 in document order, per document and type), or
        ``(i,)`` in a document without a chapter number.
    """
    out: dict[str, dict[str, dict[str, tuple]]] = {}
    for docname, by_type in fignumbers.items():
        chapter = chapter_number(docname)
        out[docname] = {
            figtype: {fid: ((i,) if chapter is None else (chapter, i)) for i, fid in enumerate(ids, start=1)}
            for figtype, ids in by_type.items()
        }
    return out


class MarkTables(SphinxTransform):
    """Make each figure named ``tab-…`` a :class:`glued_table`, before the domains collect labels."""

    default_priority = 800  # sphinx.transforms.SphinxDomains: 850

    def apply(self, **kwargs) -> None:  # noqa: ARG002
        for fig in list(self.document.findall(nodes.figure)):
            if type(fig) is nodes.figure and any(i.startswith(TABLE_PREFIX) for i in fig["ids"]):
                fig.__class__ = glued_table  # in place: the document's ids and names keep pointing at it
                fig["classes"].append(TABLE_CLASS)


def _renumber(app, env) -> list[str]:  # noqa: ARG001
    env.toc_fignumbers = per_chapter_numbers(env.toc_fignumbers)
    return []


def _visit(self, node) -> None:
    self.visit_figure(node)


def _depart(self, node) -> None:
    self.depart_figure(node)


def setup(app) -> dict:
    """Register the table node, the doctree pass and the renumbering (after Sphinx numbers figures)."""
    app.add_enumerable_node(glued_table, "table", html=(_visit, _depart), latex=(_visit, _depart),
                            text=(_visit, _depart))
    app.add_transform(MarkTables)
    app.connect("env-get-updated", _renumber, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
