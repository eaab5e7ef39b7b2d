"""The Compare page's shortcut-audit table and texts (Streamlit-free)."""

from __future__ import annotations

from covidviz.analysis.shortcuts import CONDITION_LABELS, CONDITIONS, LUNG_CONDITIONS
from covidviz.runs.lungs import LungShares
from covidviz.runs.records import Shortcuts
from covidviz.views import shortcuts as view

OLD_CONDITIONS = [c for c in CONDITIONS if c not in LUNG_CONDITIONS]  # an audit written before the lung conditions


def _audit() -> Shortcuts:
    """A version-1 audit: no lung conditions, no "lungs" record."""
    def cell(auc, diff=None):
        return {"auc": auc, "ci_low": auc - 0.05, "ci_high": min(1.0, auc + 0.04), "diff": diff,
                "diff_ci_low": None if diff is None else diff - 0.03, "diff_ci_high": None if diff is None else diff + 0.03}

    per = {"COVID-19": {"n_pos": 12, "original": cell(0.95), "borders": cell(0.7, -0.25), "centre": cell(0.94, -0.01),
                        "hot10": cell(0.9, -0.05), "random10": cell(0.93, -0.02)},
           "Normal": {"n_pos": 20, "original": {"auc": None}, "borders": {}, "centre": {}, "hot10": {}, "random10": {}}}
    macro = {c: cell(0.9, None if c == "original" else -0.1) for c in OLD_CONDITIONS}
    return Shortcuts({"version": 1, "split": "test", "n_images": 40, "n_patients": 30, "n_boot": 200, "fraction": 0.1,
                      "border": 0.15, "centre": 0.65, "names": ["COVID-19", "Normal"], "conditions": OLD_CONDITIONS,
                      "condition_labels": {c: CONDITION_LABELS[c] for c in OLD_CONDITIONS},
                      "backbones": {"densenet121": {"per_class": per, "macro": macro, "verdicts": ["x does not need"]}},
                      "verdicts": ["x does not need"]})


def test_audit_table_has_a_row_per_class_and_a_column_per_condition():
    t = view.audit_table(_audit(), "densenet121")
    assert list(t["Class"]) == ["COVID-19", "Normal", "Macro average"]
    assert list(t.columns) == ["Class", "Positives"] + [CONDITION_LABELS[c].capitalize() for c in OLD_CONDITIONS]
    covid = t.iloc[0]
    assert covid["Original"] == "0.95 [0.90–0.99]"  # no change printed for the original itself
    assert covid["Centre hidden"] == "0.94 [0.89–0.98] (−0.01)" and covid["Borders hidden"].endswith("(−0.25)")
    assert t.iloc[1]["Original"] == "—" and t.iloc[1]["Positives"] == "20"  # undefined AUC: a dash, not a crash


def test_caption_states_what_was_hidden_and_links_the_glossary():
    text = view.caption(_audit())
    assert "40 test images (30 patients)" in text and "outer 15 % strip" in text and "65 % of each side" in text
    assert "glossary#shortcut-audit" in text and "lungs hidden" not in text.lower()  # an old audit: no lung part


def _new_audit(n_skipped: int = 3) -> Shortcuts:
    """A version-2 audit with the lung conditions (3 films left out of them)."""
    raw = dict(_audit().raw)
    cells = {"auc": 0.6, "ci_low": 0.5, "ci_high": 0.7, "diff": -0.35, "diff_ci_low": -0.45, "diff_ci_high": -0.25,
             "base": 0.95}
    per = {cls: {**row, "lungs_hidden": dict(cells), "lungs_only": {**cells, "auc": 0.93, "diff": -0.02}}
           for cls, row in raw["backbones"]["densenet121"]["per_class"].items()}
    raw.update(version=2, conditions=list(CONDITIONS), condition_labels=dict(CONDITION_LABELS),
               lungs={"source": "covidviz segmenter", "sources": {"covidviz segmenter": 37}, "n_images": 37,
                      "n_skipped": n_skipped, "n_low_quality": n_skipped, "n_no_mask": 0, "quality_ok": 0.5},
               backbones={"densenet121": {**raw["backbones"]["densenet121"], "per_class": per}})
    return Shortcuts(raw)


def test_audit_with_lung_conditions_shows_them_and_says_where_the_fields_came_from():
    audit = _new_audit()
    t = view.audit_table(audit, "densenet121")
    assert "Lungs hidden" in t.columns and "Only the lungs kept" in t.columns
    covid = t.iloc[0]
    assert covid["Lungs hidden"] == "0.60 [0.50–0.70] (−0.35)" and covid["Only the lungs kept"].startswith("0.93")
    text = view.caption(audit)
    assert "covidviz segmenter" in text and "on 37 films" in text and "3 left out" in text
    assert "3 left out" not in view.caption(_new_audit(n_skipped=0))


def _shares(arch: str, share: float | None, lo: float | None, hi: float | None, chance: float = 0.3) -> LungShares:
    cell = {"n": 40, "n_flat": 0, "share": share, "ci_low": lo, "ci_high": hi, "chance": chance,
            "pointing": 0.7, "pointing_ci_low": 0.55, "pointing_ci_high": 0.82, "pointing_chance": chance}
    return LungShares.from_json({
        "version": 1, "split": "test", "n_images": 40, "n_patients": 30, "n_candidates": 42, "n_low_quality": 2,
        "source": "covidviz segmenter", "sources": {"covidviz segmenter": 40}, "names": ["COVID-19", "Normal"],
        "per_class": {"COVID-19": {"all": cell}, "Normal": {"all": {**cell, "n_flat": 3}}}})


def test_lungs_table_caption_and_reading():
    shares = {"densenet121": _shares("densenet121", 0.62, 0.55, 0.68),
              "resnet50": _shares("resnet50", 0.31, 0.26, 0.36)}
    t = view.lungs_table(shares, ["COVID-19", "Normal"])
    assert list(t.columns) == ["Backbone", "Class", "Weight on the lungs", "Chance", "Peak on the lungs", "Films"]
    assert len(t) == 4 and t.iloc[0]["Weight on the lungs"] == "62 % [55–68 %]" and t.iloc[0]["Chance"] == "30 %"
    assert t.iloc[0]["Peak on the lungs"] == "70 % [55–82 %]" and t.iloc[1]["Films"] == "40 (3 flat maps left out)"
    text = view.lungs_caption(shares)
    assert "40 test films (30 patients)" in text and "covidviz segmenter" in text and "2 films left out" in text
    assert "glossary#evidence-on-the-lungs" in text
    assert "40 films of site-B" in view.lungs_caption({"a": _shares("a", 0.5, 0.4, 0.6)}, "site-B")
    reading = view.lungs_reading(shares, ["COVID-19", "Normal"])
    assert reading.startswith("More weight on the lungs than chance for DenseNet") and "not for ResNet" in reading
    assert reading.count(".") >= 1 and "\n" not in reading
    assert view.lungs_reading({"densenet121": shares["densenet121"]}, ["COVID-19", "Normal"]).startswith("Every map")
    assert view.lungs_reading({"resnet50": shares["resnet50"]}, ["COVID-19", "Normal"]).startswith("No map")
    empty = {"x": _shares("x", None, None, None)}
    assert view.lungs_table(empty, ["Normal"]).iloc[0]["Weight on the lungs"] == "—"
    assert view.lungs_reading(empty, ["Normal"]) == view.LUNGS_NONE
