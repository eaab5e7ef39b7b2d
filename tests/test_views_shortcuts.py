"""The Compare page's shortcut-audit table and texts (Streamlit-free)."""

from __future__ import annotations

from covidviz.analysis.shortcuts import CONDITION_LABELS, CONDITIONS
from covidviz.runs.records import Shortcuts
from covidviz.views import shortcuts as view


def _audit() -> Shortcuts:
    def cell(auc, diff=None):
        return {"auc": auc, "ci_low": auc - 0.05, "ci_high": min(1.0, auc + 0.04), "diff": diff,
                "diff_ci_low": None if diff is None else diff - 0.03, "diff_ci_high": None if diff is None else diff + 0.03}

    per = {"COVID-19": {"n_pos": 12, "original": cell(0.95), "borders": cell(0.7, -0.25), "centre": cell(0.94, -0.01),
                        "hot10": cell(0.9, -0.05), "random10": cell(0.93, -0.02)},
           "Normal": {"n_pos": 20, "original": {"auc": None}, "borders": {}, "centre": {}, "hot10": {}, "random10": {}}}
    macro = {c: cell(0.9, None if c == "original" else -0.1) for c in CONDITIONS}
    return Shortcuts({"version": 1, "split": "test", "n_images": 40, "n_patients": 30, "n_boot": 200, "fraction": 0.1,
                      "border": 0.15, "centre": 0.65, "names": ["COVID-19", "Normal"], "conditions": list(CONDITIONS),
                      "condition_labels": dict(CONDITION_LABELS),
                      "backbones": {"densenet121": {"per_class": per, "macro": macro, "verdicts": ["x does not need"]}},
                      "verdicts": ["x does not need"]})


def test_audit_table_has_a_row_per_class_and_a_column_per_condition():
    t = view.audit_table(_audit(), "densenet121")
    assert list(t["Class"]) == ["COVID-19", "Normal", "Macro average"]
    assert list(t.columns) == ["Class", "Positives"] + [CONDITION_LABELS[c].capitalize() for c in CONDITIONS]
    covid = t.iloc[0]
    assert covid["Original"] == "0.95 [0.90–0.99]"  # no change printed for the original itself
    assert covid["Centre hidden"] == "0.94 [0.89–0.98] (−0.01)" and covid["Borders hidden"].endswith("(−0.25)")
    assert t.iloc[1]["Original"] == "—" and t.iloc[1]["Positives"] == "20"  # undefined AUC: a dash, not a crash


def test_caption_states_what_was_hidden_and_links_the_glossary():
    text = view.caption(_audit())
    assert "40 test images (30 patients)" in text and "outer 15 % strip" in text and "65 % of each side" in text
    assert "glossary#shortcut-audit" in text
