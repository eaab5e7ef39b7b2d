"""The glossary: entries well formed, anchors unique, links only to known terms, the page renders."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from covidviz.views import glossary

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("app_like_server")


def _sentences(text: str) -> int:
    text = text.replace("e.g.", "eg").replace("i.e.", "ie").strip()
    return len([s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", text) if s])


def test_entries_are_short_plain_and_uniquely_anchored():
    slugs = [glossary.slug(e.term) for e in glossary.entries()]
    assert len(slugs) == len(set(slugs)) and all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs)
    for e in glossary.entries():
        assert e.what and e.read, e.term
        assert _sentences(e.what) <= 2 and _sentences(e.read) <= 2, e.term
    # the statistics the issue names are all there
    for term in ("Youden's J", "ECE", "Brier score", "DeLong test", "Holm correction", "Cramér's V", "U-matrix",
                 "QE", "TE", "Trustworthiness", "PCA-50 units", "PPV", "NPV", "Pointing game"):
        assert term in glossary.ENTRIES


def test_link_points_at_the_anchor_and_refuses_unknown_terms():
    assert glossary.link("Youden's J") == "[Youden's J](/glossary#youdens-j)"
    assert glossary.link("ECE", "calibration error") == "[calibration error](/glossary#ece)"
    with pytest.raises(KeyError):
        glossary.link("Not a statistic")


def test_every_link_in_the_pages_names_a_known_term():
    """A caption that links a term the glossary lacks would fail at run time; catch it from the source."""
    for path in [*(REPO / "app_pages").glob("*.py"), *(REPO / "covidviz").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("glossary.link")
                    and node.args and isinstance(node.args[0], ast.Constant)):
                assert node.args[0].value in glossary.ENTRIES, f"{path.name}: {node.args[0].value!r}"


def test_glossary_page_renders_every_entry_and_filters(runs_root):
    at = AppTest.from_file(str(REPO / "app_pages" / "glossary.py"), default_timeout=60).run()
    assert not at.exception
    shown = [s.value for s in at.subheader]
    assert shown == [e.term for g in glossary.GROUPS for e in glossary.entries(g)]
    at.text_input(key="glossary_search").input("calibration").run()
    shown = {s.value for s in at.subheader}
    assert "ECE" in shown and "Calibration" in shown and "U-matrix" not in shown


def test_contents_list_links_every_group_and_term_to_its_anchor():
    links = re.findall(r"\[([^\]]+)\]\(#([a-z0-9-]+)\)", glossary.contents_markdown())
    assert [a for _, a in links] == [a for g in glossary.GROUPS
                                     for a in (glossary.group_anchor(g), *(glossary.slug(e.term) for e in glossary.entries(g)))]
    assert {t: a for t, a in links if t in glossary.ENTRIES} == {t: glossary.slug(t) for t in glossary.ENTRIES}
    anchors = glossary.anchors()
    assert len(anchors) == len(glossary.GROUPS) + len(glossary.ENTRIES)  # no group shares a term's anchor
    # What link() points at is an anchor the page draws.
    for term in glossary.ENTRIES:
        assert glossary.link(term).split("#", 1)[1].rstrip(")") in anchors


def test_glossary_page_draws_the_contents_and_the_anchors_links_target(runs_root):
    at = AppTest.from_file(str(REPO / "app_pages" / "glossary.py"), default_timeout=60).run()
    assert not at.exception
    assert any(glossary.contents_markdown() == m.value for m in at.markdown)
    drawn = {h.proto.anchor: h.value for h in [*at.main.header, *at.main.subheader]}
    assert glossary.anchors().items() <= drawn.items()
    assert at.title[0].proto.anchor == glossary.CONTENTS_ANCHOR
    assert sum(m.value == glossary.BACK_TO_CONTENTS for m in at.markdown) == len(glossary.GROUPS)
    at.text_input(key="glossary_search").input("calibration").run()
    assert not any(glossary.contents_markdown() == m.value for m in at.markdown)  # a search shows only what it finds
