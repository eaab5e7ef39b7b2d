"""What a call may claim (``covidviz.views.reliability``) and where it is said: the readings (indeterminate
near the threshold, not reliable when the class's test AUC interval includes chance), the reading at the
top of Diagnose, the one-vs-rest note, the weak-experiment banner, the shortcut audit's findings as badges
(and ``analysis.shortcuts.shortcut_signs`` agreeing with the audit's sentences), the Overview's sentence
agreeing with the audit, and the case report when calls are withheld or shown at the user's request."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from covidviz.analysis import shortcuts as audit_mod
from covidviz.data.labels import MULTICLASS, MULTILABEL
from covidviz.inference import BackboneResult, Diagnosis
from covidviz.ood import OodVerdict
from covidviz.runs.records import Rate, Shortcuts
from covidviz.views import diagnose as dv
from covidviz.views import diagnose_calls as dc
from covidviz.views import overview as ov
from covidviz.views import reliability as rel
from covidviz.views import report as rv

NAMES = ["COVID-19", "Normal", "Pneumonia"]
GOOD, CHANCE = rel.ClassAuc(0.9, 0.85, 0.95), rel.ClassAuc(0.58, 0.45, 0.7)


def call(cls, prob, threshold, auc=GOOD, positive=None, sens=0.8, spec=0.75) -> dict:
    c = {"class": cls, "prob": prob, "raw_prob": prob, "threshold": threshold, "raw_threshold": threshold,
         "positive": (None if threshold is None else prob >= threshold) if positive is None else positive,
         "test_prevalence": 0.2, "test": {"sensitivity": Rate(sens, 10), "specificity": Rate(spec, 20),
                                          "ppv": Rate(None), "npv": Rate(None)}}
    if auc != "absent":
        c["auc"] = auc
    return c


def test_a_call_reads_what_the_model_knows():
    assert rel.call_reading(call("A", 0.70, 0.50)) == rel.POSITIVE
    assert rel.call_reading(call("A", 0.30, 0.50)) == rel.NEGATIVE
    # the case: 0.5004 against 0.4999 is a coin toss, not a Positive
    assert rel.call_reading(call("A", 0.5004, 0.4999)) == rel.INDETERMINATE
    assert rel.call_reading(call("A", 0.50 - rel.BAND + 1e-6, 0.50)) == rel.INDETERMINATE
    assert rel.call_reading(call("A", 0.50 + rel.BAND + 1e-6, 0.50)) == rel.POSITIVE
    # a class the model cannot tell from the rest (CI includes 0.5), or never measured: not reliable, however far
    assert rel.call_reading(call("A", 0.99, 0.10, auc=CHANCE)) == rel.NOT_RELIABLE
    assert rel.call_reading(call("A", 0.99, 0.10, auc=None)) == rel.NOT_RELIABLE
    assert rel.call_reading(call("A", 0.99, 0.10, auc=rel.ClassAuc(None))) == rel.NOT_RELIABLE
    assert rel.call_reading(call("A", 0.99, 0.10, auc=rel.ClassAuc(0.3, 0.2, 0.45))) == rel.NOT_RELIABLE
    # no threshold: no call; a call carrying no AUC at all (not judged) keeps the threshold's reading
    assert rel.call_reading(call("A", 0.99, None)) == rel.NO_CALL
    assert rel.call_reading(call("A", 0.99, 0.10, auc="absent")) == rel.POSITIVE


@pytest.mark.parametrize("auc, inside, reliable", [
    ((0.9, 0.85, 0.95), False, True), ((0.6, 0.5, 0.7), True, False), ((0.6, 0.51, 0.7), False, True),
    ((0.4, 0.3, 0.49), False, False),  # clearly below chance: ranks the class the wrong way round, no better
    ((0.55, None, None), False, True), ((0.5, None, None), True, False)])
def test_chance_inside_the_auc_interval(auc, inside, reliable):
    assert rel.ClassAuc(*auc).chance_inside is inside and rel.ClassAuc(*auc).reliable is reliable
    assert rel.auc_text(rel.ClassAuc(*auc)).startswith(f"{auc[0]:.2f}")


def test_the_reading_at_the_top_says_call_reliability_and_shortcut():
    calls = [call("COVID-19", 0.93, 0.5, auc=rel.ClassAuc(0.99, 0.97, 1.0), sens=0.95, spec=0.9),
             call("Normal", 0.05, 0.3), call("Pneumonia", 0.02, 0.4)]
    finding = rel.ShortcutFinding("densenet121", "COVID-19", ("lungs_not_needed",), 0.99)
    lines = dc.top_call_lines(calls, 0, MULTICLASS, finding)
    assert lines[0] == "**COVID-19** 0.93 · :red[**Positive**]"
    assert lines[1] == "test AUC 0.99 [0.97–1.00]  \nsens 0.95 · spec 0.90"
    assert lines[2] == ":orange[:material/warning: **Shortcut**: lungs not needed]"
    # a finding for another class is not put beside this one; shown at the user's request: all grey
    other = dataclasses.replace(finding, cls="Normal")
    assert len(dc.top_call_lines(calls, 0, MULTICLASS, other)) == 2
    grey = dc.top_call_lines(calls, 0, MULTICLASS, greyed=True)
    assert ":gray[**Positive**]" in grey[0] and all(line.startswith(":gray[") for line in grey)
    # multi-label: the highest finding, and how the others read
    ml = [call(f"F{j}", p, 0.5, auc=CHANCE if j < 10 else GOOD) for j, p in enumerate(np.linspace(0.1, 0.9, 14))]
    text = " ".join(dc.top_call_lines(ml, 0, MULTILABEL))
    assert text.startswith("**F13** 0.90") and "Of 14 findings:" in text and "10 not reliable" in text
    # not analysed: no call, and said why rather than a row of dashes
    assert dc.top_call_lines([call("A", 0.6, None, auc="absent")], 0, MULTICLASS) == ["**A** 0.60", dc.NOT_ANALYSED_LINE]


def test_one_vs_rest_is_explained_with_the_images_own_positives():
    calls = [call("COVID-19", 0.1, 0.5), call("Normal", 0.45, 0.3), call("Pneumonia", 0.45, 0.2)]
    note = dc.one_vs_rest_note(calls, MULTICLASS)
    assert "*Class: Positive* means the film scored at or above that class's own threshold" in note
    assert "Here Normal and Pneumonia both read Positive" in note and "does not rule the others out" in note
    assert "Here" not in dc.one_vs_rest_note([call("A", 0.1, 0.5)], MULTICLASS)
    assert "finding" in dc.one_vs_rest_note(calls, MULTILABEL)


def test_weak_experiments_get_a_banner():
    assert rel.low_auc_banner({"densenet121": 0.95, "resnet50": 0.7}) is None
    assert rel.low_auc_banner({"densenet121": None}) is None
    text = rel.low_auc_banner({"densenet121": 0.62, "resnet50": 0.91})
    assert "DenseNet121 0.62" in text and "ResNet50" not in text and "below 0.70" in text and "this model ranks" in text
    exp = SimpleNamespace(backbones=["a", "b"], record=lambda a: SimpleNamespace(macro_auc=lambda split: {"a": 0.6}.get(a)))
    analysis = SimpleNamespace(backbone=lambda a: SimpleNamespace(macro=SimpleNamespace(auc=0.55)))
    assert rel.macro_aucs(exp) == {"a": 0.6, "b": None} and rel.macro_aucs(exp, analysis) == {"a": 0.6, "b": 0.55}


def _cell(auc, base, hi):
    return {"auc": auc, "ci_low": auc - 0.05, "ci_high": min(1.0, auc + 0.05), "diff": auc - base,
            "diff_ci_low": auc - base - 0.05, "diff_ci_high": hi, "base": base}


PER_CLASS = {  # COVID-19: ranked with the lungs hidden; Pneumonia: needs the lungs; Normal: too weak to judge
    "COVID-19": {"original": _cell(0.99, 0.99, 0.0), "borders": _cell(0.98, 0.99, 0.01),
                 "lungs_hidden": _cell(0.99, 0.99, 0.01), "lungs_only": _cell(0.97, 0.99, 0.01)},
    "Pneumonia": {"original": _cell(0.90, 0.90, 0.0), "borders": _cell(0.89, 0.90, 0.01),
                  "lungs_hidden": _cell(0.60, 0.88, -0.2), "lungs_only": _cell(0.87, 0.88, 0.02)},
    "Normal": {"original": _cell(0.55, 0.55, 0.0), "lungs_hidden": _cell(0.55, 0.55, 0.01)},
}


def _audit(per_class=PER_CLASS) -> Shortcuts:
    conds = ["original", "borders", "lungs_hidden", "lungs_only"]
    return Shortcuts.from_json({"conditions": conds, "names": NAMES,
                                "backbones": {"densenet121": {"per_class": per_class}}})


def test_shortcut_signs_are_the_audits_own_verdicts():
    signs = {cls: audit_mod.shortcut_signs(row) for cls, row in PER_CLASS.items()}
    assert signs == {"COVID-19": ["lungs_not_needed"], "Pneumonia": [], "Normal": []}
    says = audit_mod.verdicts("densenet121", PER_CLASS, NAMES)
    assert any(s.startswith("densenet121, COVID-19") and "does not need the lung fields" in s for s in says)
    assert not any("Pneumonia" in s and "shortcut" in s for s in says)


def test_shortcut_findings_become_badges_and_sentences():
    findings = rel.shortcut_findings(_audit())
    assert list(findings) == [("densenet121", "COVID-19")]
    f = findings[("densenet121", "COVID-19")]
    assert f.text == "ranked with the lungs hidden (AUC 0.99)"
    assert rel.shortcut_badge(f, with_class=True) == (
        ":orange-badge[:material/warning: Shortcut: COVID-19 ranked with the lungs hidden (AUC 0.99)]")
    assert "DenseNet121, COVID-19: ranked with the lungs hidden" in rel.shortcut_sentence(f)
    assert rel.shortcut_findings(None) == {} and rel.shortcut_badge(None) == ""
    badges = rel.audit_badges(["densenet121", "resnet50"], _audit())
    assert "COVID-19 ranked with the lungs hidden" in badges["densenet121"] and badges["resnet50"] == rel.NOT_AUDITED_BADGE
    clean = {"Pneumonia": PER_CLASS["Pneumonia"]}
    assert rel.audit_badges(["densenet121"], _audit(clean)) == {"densenet121": rel.CLEAN_BADGE}
    assert rel.audit_badges(["densenet121"], None) == {"densenet121": rel.NOT_AUDITED_BADGE}
    # beside the affected class's row in the calls table only
    table = dc.calls_table([call(n, 0.3, 0.5) for n in NAMES], findings, "densenet121")
    assert table[dc.AUDIT_COLUMN].tolist() == ["ranked with the lungs hidden (AUC 0.99)", "", ""]
    assert dc.AUDIT_COLUMN not in dc.calls_table([call(n, 0.3, 0.5) for n in NAMES], findings, "resnet50")


def test_overview_sentence_agrees_with_the_audit():
    exp = SimpleNamespace(backbones=["densenet121", "resnet50"],
                          record=lambda a: SimpleNamespace(macro_auc=lambda split="test": 0.95))
    analysis = SimpleNamespace(baseline_auc=lambda cls: 0.8)
    found = ov.baseline_sentence(exp, analysis, rel.shortcut_findings(_audit()), audited=True)
    assert "coarse brightness" not in found and "found a shortcut" in found and "ranked with the lungs hidden" in found
    clean = ov.baseline_sentence(exp, analysis, {}, audited=True)
    assert "coarse brightness" in clean and "no sign of a shortcut" in clean
    unaudited = ov.baseline_sentence(exp, analysis)
    assert "coarse brightness" not in unaudited and "has not been run" in unaudited


# ------------------------------------------------------------------------------ withheld means withheld

def _diag(ood: bool) -> Diagnosis:
    probs = np.array([0.7, 0.2, 0.1])
    b = BackboneResult(arch="densenet121", logits=np.zeros(3), raw_probs=probs, probs=probs, features=np.zeros(4),
                       top=0, calls=[call(n, float(p), 0.5) for n, p in zip(NAMES, probs)], cams={}, ood=ood)
    verdict = OodVerdict(is_ood=ood, reasons=["It is in colour."] if ood else [], score=None, percentile=40.0,
                         gate=None, checked=True, false_alarm_rate=0.05)
    return Diagnosis("x.png", "exp", np.zeros((8, 8), np.uint8), {"densenet121": b}, verdict)


def test_the_page_texts_never_say_withheld_for_what_they_show():
    diag = _diag(True)
    assert dv.ood_message(diag).endswith("the results below are withheld.")
    shown = dv.ood_message(diag, shown_anyway=True)
    assert "withheld and are shown only at your request, not as calls" in shown
    assert "the user's request" in dv.ood_message(diag, results=dv.REPORT_RESULTS, shown_anyway=True)
    assert dv.verdict_short(diag) is None and "Looks like the training images" in dv.verdict_short(_diag(False))
    img = dv.stamp(np.full((64, 80), 200, np.uint8))
    assert img.shape == (64, 80, 3) and img[:3].mean() < 150 and (img[-10:] == 200).all()  # a dark band on top only


def test_the_report_withholds_and_marks():
    findings = rel.shortcut_findings(_audit())
    case = rv.CaseReport(_diag(True), NAMES, MULTICLASS, {"densenet121": "DenseNet121"}, findings=findings,
                         weak="**Weak models:** test macro [AUC](/glossary#auc) DenseNet121 0.62")
    gray = np.full((32, 32), 100, np.uint8)
    heats = {"densenet121": np.ones((4, 4), np.float32)}
    withheld = rv.report_blocks(case)
    text = " ".join(str(p) for _, p in withheld)
    assert "table" not in [k for k, _ in withheld] and not [n for n in NAMES if n in text]
    tiles = rv._tiles(case, gray, heats, 0.5)
    assert tiles[1][0] == "DenseNet121: heat map withheld" and (tiles[1][1] == rv.WITHHELD_TILE).all()
    anyway = dataclasses.replace(case, show_anyway=True)
    blocks = rv.report_blocks(anyway)
    warnings = [p for k, p in blocks if k == "warning"]
    assert any("shown only at the user's request" in w for w in warnings)
    assert "Weak models: test macro AUC DenseNet121 0.62" in warnings  # the banner, as plain text
    assert any(w.startswith("Shortcut audit, DenseNet121, COVID-19") for w in warnings)
    assert all(t["greyed"] for k, t in blocks if k == "table")
    caption, tile = rv._tiles(anyway, gray, heats, 0.5)[1]
    assert caption.endswith("shown at the user's request") and tile[:2].mean() < 120  # stamped
    fine = rv.report_blocks(dataclasses.replace(case, diag=_diag(False)))
    assert not any("user's request" in str(p) for _, p in fine)
    assert not next(t for k, t in fine if k == "table")["greyed"]
