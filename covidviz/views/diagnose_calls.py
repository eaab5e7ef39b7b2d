"""What the Diagnose page says about each backbone's calls, Streamlit-free.

- the headline: the most likely class with its calibrated probability (multi-class), or the findings
  above their threshold (multi-label);
- one table per backbone on ONE score, the calibrated probability the page shows, with each class's
  threshold put on that same scale (``covidviz.inference.calibrated_threshold``), so a call is
  "Positive" exactly when the probability shown reaches the threshold shown;
- the sentence that says why the screening calls differ from the headline when they do ("COVID-19 is
  the most likely class (0.43) but below its rule-in threshold ..."), for the operating point chosen;
- what that operating point meant on the test images: sensitivity, specificity and PPV / NPV at the
  test prevalence or at the one the user sets (Bayes' rule, ``stats.thresholds.ppv_npv_at_prevalence``);
- how each call reads given what the model knows (``views.reliability``: indeterminate near its threshold,
  not reliable where the class's test AUC interval includes chance), the reading at the top of the page
  (``top_call_lines``) and what "Normal: Positive" means (``one_vs_rest_note``).

A call here is the ``dict`` of ``covidviz.inference.Predictor.calls``, with its class's test AUC added
by ``calls_at`` (key ``"auc"``).
"""

from __future__ import annotations

import math

import pandas as pd

from covidviz.data.labels import MULTILABEL
from covidviz.runs.records import POINTS, Rate
from covidviz.stats.thresholds import TARGET, ppv_npv_at_prevalence
from covidviz.views import glossary
from covidviz.views import reliability as rel
from covidviz.views.formats import CALIBRATED, RAW, THRESHOLD_DIGITS, score_column, threshold_text
from covidviz.views.style import OPERATING_POINTS

POINT_WORDS = {"youden": "balanced", "high_sensitivity": "rule-out", "high_specificity": "rule-in"}
POINT_REASONS = {  # why a threshold sits where it does, said when a call differs from the headline
    "youden": "the balanced threshold is the cut-off where sensitivity + specificity peaked on the validation images",
    "high_sensitivity": "a rule-out threshold is set low, so that few images with the class are missed",
    "high_specificity": "a rule-in threshold is set high, so that few images without the class are flagged",
}
PREVALENCE_RANGE = (0.1, 99.9)   # percent, the prevalence input's range
RATE_COLUMNS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV"}

SCREENING_TITLE = "Screening at the chosen operating point"
POINT_HELP = ("Which validation-chosen threshold each class is screened at: balanced (Youden's J), rule-out "
              f"(sensitivity ≥ {100 * TARGET:.0f} % on validation) or rule-in (specificity ≥ {100 * TARGET:.0f} %). "
              "The headline, the most likely class, does not depend on it.")
PREVALENCE_HELP = ("How common the class is where you work. PPV and NPV depend on it; the test set's own share is "
                   "the starting value.")
CALLS_HELP = {
    "Probability": "Calibrated probability (temperature scaling fitted on validation): the number the call is made on.",
    "Threshold": ("The operating point's threshold, chosen on validation on the model's raw score and put on the "
                  "calibrated scale of the Probability column (for a multi-class model, at this image's mix of the "
                  "other classes). Positive = Probability ≥ Threshold."),
}
CALLS_NOTE = (f"Positive = calibrated probability ≥ threshold, both on the same scale: the "
              f"{glossary.link('Operating point', 'operating point')}'s threshold was chosen on validation on the "
              f"model's raw score and is mapped through the same {glossary.link('Temperature scaling')}, so "
              "each call is the validated rule. Each class is screened on its own (one against the "
              "rest), so more than one class, or none, can be positive.")
RATES_NOTE = (f"On the held-out test images: {glossary.link('Sensitivity')} and {glossary.link('Specificity')} with "
              f"their 95 % interval and denominator. {glossary.link('PPV')} and {glossary.link('NPV')} hold at the "
              f"{glossary.link('Prevalence', 'prevalence')} shown: the test set's own (measured, with interval) or "
              "the one you set (Bayes' rule from the test sensitivity and specificity, no interval).")


def point_label(point: str) -> str:
    """"Balanced (Youden's J)", ... (``style.OPERATING_POINTS``)."""
    return OPERATING_POINTS.get(point, point)


def point_options() -> list[str]:
    return [p for p in POINTS if p in OPERATING_POINTS]


def calls_at(predictor, diag, point: str) -> dict[str, list[dict]]:
    """Backbone -> its calls at ``point`` (from the prediction already made: no model runs), each with
    its class's test AUC (``"auc"``: ``reliability.ClassAuc``) when the experiment was analysed and the
    scale its probability and threshold are on (``"scale"``: ``formats.CALIBRATED``, or ``formats.RAW``
    for a backbone without a stored temperature, whose probabilities are the model's own)."""
    out = {}
    for arch, b in diag.backbones.items():
        calls = predictor.calls(b, point)
        scale = CALIBRATED if predictor.temperature(arch) is not None else RAW
        for c in calls:
            c["scale"] = scale
            if predictor.analysis is not None:
                c["auc"] = rel.class_auc(predictor.analysis, arch, c["class"])
        out[arch] = calls
    return out


def call_scale(calls: list[dict]) -> str:
    """The scale of the calls' probabilities and thresholds (``calls_at``'s ``"scale"``; calibrated when
    the calls do not say: ``Predictor.calls`` puts the threshold on the calibrated scale)."""
    return next((c["scale"] for c in calls if c.get("scale")), CALIBRATED)


def prob_column(scale: str = CALIBRATED) -> str:
    """The calls table's probability column, named with its scale: "Probability (calibrated)"."""
    return score_column("Probability", scale)


def threshold_column(scale: str = CALIBRATED) -> str:
    """The calls table's threshold column, on the probability's scale and named so: "Threshold (calibrated)"."""
    return score_column("Threshold", scale)


def has_thresholds(calls: list[dict]) -> bool:
    return any(c["positive"] is not None for c in calls)


def call_text(positive: bool | None) -> str:
    return "—" if positive is None else ("Positive" if positive else "Negative")


def _reads_right(c: dict, d: int) -> bool:
    """Whether a call reads right with ``d`` decimals: the printed probability above the printed threshold
    when Positive (or both exactly equal), below it when Negative; no threshold: nothing to read."""
    if c["threshold"] is None or c["positive"] is None:
        return True
    p, t = round(c["prob"], d), round(c["threshold"], d)
    return (p > t or c["prob"] == c["threshold"]) if c["positive"] else p < t


def decimals(calls: list[dict], least: int = 3, most: int = 6) -> int:
    """How many decimals the calls need so that no call contradicts the numbers as printed: the fewest
    (from ``least``) at which every call ``_reads_right`` (0.3301 vs 0.3304, Negative, would both print
    as 0.330 with 3)."""
    return next((d for d in range(least, most + 1) if all(_reads_right(c, d) for c in calls)), most)


def _pair(c: dict, least: int = THRESHOLD_DIGITS) -> tuple[str, str]:
    """A call's probability and its threshold (labelled with its scale: ``formats.threshold_text``), printed
    with enough decimals to read like the call."""
    d = decimals([c], least)
    return f"{c['prob']:.{d}f}", threshold_text(c["threshold"], call_scale([c]), d)


AUC_COLUMN, AUDIT_COLUMN = "Test AUC [95 % CI]", "Shortcut audit"


def calls_columns(scale: str = CALIBRATED) -> list[str]:
    return ["Class", prob_column(scale), threshold_column(scale), "Call", AUC_COLUMN, "Sensitivity", "Specificity"]


def raw_thresholds_line(calls: list[dict]) -> str | None:
    """Under a calibrated calls table: the same thresholds on the model's raw score, the scale they were
    chosen on and that Compare, the maps and the stored predictions use ("COVID-19 0.594 (raw score), ..."),
    so a threshold read on one page can be found on the other; None when the calls are on the raw score
    already or have no threshold."""
    if call_scale(calls) == RAW or not has_thresholds(calls):
        return None
    listed = ", ".join(f"{c['class']} {threshold_text(c.get('raw_threshold'), RAW)}" for c in calls)
    return (f"The same thresholds on the model's raw score, the scale they were chosen on and that Compare uses: "
            f"{listed}.")


def calls_table(calls: list[dict], findings: dict | None = None, arch: str | None = None) -> pd.DataFrame:
    """Per class: the calibrated probability, the threshold on that scale (one score column, both headers
    naming the scale: ``prob_column``, ``threshold_column``), the call
    as it reads (``reliability.call_reading``), the class's test AUC with its CI and the operating
    point's test sensitivity and specificity; a "Shortcut audit" column when ``findings``
    (``reliability.shortcut_findings``) has one for ``arch``."""
    scale = call_scale(calls)
    rows = []
    for c in calls:
        sens, spec = rel.sens_spec(c)
        rows.append({"Class": c["class"], prob_column(scale): c["prob"],
                     threshold_column(scale): math.nan if c["threshold"] is None else c["threshold"],
                     "Call": rel.call_reading(c), AUC_COLUMN: rel.auc_text(c.get("auc")),
                     "Sensitivity": sens, "Specificity": spec})
    table = pd.DataFrame(rows, columns=calls_columns(scale))
    found = {cls: f for (a, cls), f in (findings or {}).items() if a == arch}
    if found:
        table[AUDIT_COLUMN] = [found[c["class"]].text if c["class"] in found else "" for c in calls]
    return table


GREY = "#8c8c8c"  # the text of numbers shown at the user's request (not calls)


def styled_calls(table: pd.DataFrame, digits: int, greyed: bool = False):
    """``calls_table`` for ``st.table``: probability and threshold with ``digits`` decimals (``decimals``:
    enough that no call contradicts them), "—" for no threshold; all grey when ``greyed``."""
    styler = table.style.format({c: f"{{:.{digits}f}}" for c in table.columns[1:3]}, na_rep="—")  # the two scores
    return styler.set_properties(color=GREY) if greyed else styler


def greyed(table: pd.DataFrame, grey: bool = True):
    """Any table of the page for ``st.table``, all grey when ``grey`` (numbers shown at the user's request)."""
    return table.style.set_properties(color=GREY) if grey else table


def _coloured(reading: str, greyed: bool = False) -> str:
    """A reading in markdown, coloured by what it says (all grey when ``greyed``: shown at the user's request)."""
    colour = "gray" if greyed else {rel.POSITIVE: "red", rel.NEGATIVE: "green", rel.INDETERMINATE: "orange"}.get(
        reading, "gray")
    return f":{colour}[**{reading}**]"


NOT_ANALYSED_LINE = "no threshold or test AUC: the experiment is not analysed"


def top_call(calls: list[dict], top: int, task: str) -> dict:
    """The call the reading at the top shows: the most likely class's (multi-label: the highest finding's)."""
    return calls[top] if task != MULTILABEL else max(calls, key=lambda c: c["prob"])


def top_call_lines(calls: list[dict], top: int, task: str, finding=None, greyed: bool = False) -> list[str]:
    """The reading at the top of the page for one backbone (markdown lines): its most likely class (the
    highest finding, multi-label) with its calibrated probability and call, what the model knows about
    that class (``reliability.reliability_line``), the shortcut badge when the audit found one for it
    (``finding``), and for multi-label how the other findings read. ``greyed``: shown at the user's request."""
    c = top_call(calls, top, task)
    reading = rel.call_reading(c)
    call = "" if reading == rel.NO_CALL else f" · {_coloured(reading, greyed)}"
    known = rel.reliability_line(c, sep="  \n") if "auc" in c or c["threshold"] is not None else NOT_ANALYSED_LINE
    lines = [f"**{c['class']}** {c['prob']:.2f}{call}", known]
    if task == MULTILABEL and has_thresholds(calls):
        counts = {r: sum(rel.call_reading(x) == r for x in calls) for r in rel.READINGS}
        parts = [f"{counts[r]} {r}" for r in (rel.POSITIVE, rel.INDETERMINATE, rel.NOT_RELIABLE) if counts[r]]
        lines.append(f"Of {len(calls)} findings: " + (", ".join(parts) if parts else "none Positive"))
    if finding is not None and finding.cls == c["class"]:
        lines.append(rel.shortcut_badge(finding, short=True))
    if greyed:
        lines = [f":gray[{line}]" if not line.startswith(":") else line for line in lines]
    return lines


def reading_notes(findings: dict, archs) -> str:
    """How to read the calls at the top (markdown): what the readings mean, one-vs-rest, the shortcut
    badge when the audit found one for these backbones, and where every class's call is."""
    text = (f"**How to read these calls.** {rel.READING_HELP} Each class is screened on its own, one against the "
            "rest, so more than one class (or none) can read Positive.")
    if any(a in archs for a, _ in findings):
        text += f" *Shortcut*: {rel.SHORTCUT_HELP}"
    return text + " Every class's call, with its interval, is under *Calls, class by class* below."


def one_vs_rest_note(calls: list[dict], task: str) -> str:
    """What a Positive call means (each class screened against all the others together), said with
    this image's own Positive classes ("Normal: Positive" beside "Pneumonia: Positive" is not a contradiction)."""
    positive = [c["class"] for c in calls if rel.call_reading(c) == rel.POSITIVE]
    kind, kinds = ("finding", "findings") if task == MULTILABEL else ("class", "classes")
    text = (f"Each {kind} is screened on its own, one against the rest: *{kind.capitalize()}: Positive* means the "
            f"film scored at or above that {kind}'s own threshold against all the other {kinds} taken together; it "
            f"does not rule the others out.")
    if len(positive) > 1:
        both = "both" if len(positive) == 2 else "all"
        text += (f" Here {_and(positive)} {both} read Positive: each reached its own threshold"
                 + (", and the most likely class is the one with the highest probability." if task != MULTILABEL
                    else "."))
    elif positive:
        text += f" Here *{positive[0]}: Positive* says exactly that."
    return text


def headline(calls: list[dict], top: int, task: str) -> str:
    """Markdown: the most likely class and its calibrated probability (multi-class); the findings above
    their threshold, or the highest one (multi-label)."""
    if task != MULTILABEL:
        c = calls[top]
        return f"Most likely: **{c['class']}** (probability {c['prob']:.2f})"
    ranked = sorted(calls, key=lambda c: -c["prob"])
    called = [c for c in ranked if rel.call_reading(c) == rel.POSITIVE]
    if called:
        return "Findings above their threshold: " + ", ".join(f"**{c['class']}** ({c['prob']:.2f})" for c in called)
    best = ranked[0]
    prefix = "No finding above its threshold; the highest is" if has_thresholds(calls) else "Highest probability:"
    return f"{prefix} **{best['class']}** ({best['prob']:.2f})"


def contradicts(calls: list[dict], top: int, task: str) -> bool:
    """Whether the screening calls tell another story than the headline (multi-class only): the most
    likely class not called positive, or another class called positive."""
    if task == MULTILABEL or not has_thresholds(calls):
        return False
    return calls[top]["positive"] is False or any(c["positive"] for j, c in enumerate(calls) if j != top)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def screening_sentence(calls: list[dict], top: int, task: str, point: str) -> str | None:
    """The sentence under the headline: which classes this operating point flags and, whenever that
    differs from the headline, why (None when nothing can be said: no thresholds)."""
    if not has_thresholds(calls):
        return None
    word, reason = POINT_WORDS.get(point, point), POINT_REASONS.get(point, "")
    if task == MULTILABEL:
        flagged = sum(bool(c["positive"]) for c in calls)
        doubts = [f"{n} {r}" for r in (rel.NOT_RELIABLE, rel.INDETERMINATE)
                  if (n := sum(rel.call_reading(c) == r for c in calls))]
        return (f"Each finding is screened on its own against its {word} threshold: {flagged} of {len(calls)} "
                "are above it" + (f" ({', '.join(doubts)})." if doubts else "."))
    best, others = calls[top], [c for j, c in enumerate(calls) if j != top and c["positive"]]
    parts = []
    if best["positive"] is None:
        parts.append(f"{best['class']} is the most likely class ({best['prob']:.2f}) but has no {word} threshold "
                     "(the validation images did not allow one), so this screen cannot call it.")
    elif not best["positive"]:
        p, t = _pair(best)
        parts.append(f"{best['class']} is the most likely class ({p}) but below its {word} threshold, {t}, so this "
                     f"screen does not flag it: {reason}, and being the most likely class does not mean reaching it.")
    elif others:
        p, t = _pair(best)
        parts.append(f"{best['class']} is the most likely class ({p}) and above its {word} threshold, {t}.")
    else:
        p, t = _pair(best)
        return f"{best['class']} is the most likely class ({p}) and the only one above its {word} threshold, {t}."
    if others:
        named = _and([f"{c['class']} at {p}, threshold {t}" for c, (p, t) in zip(others, map(_pair, others))]) + ","
        its = "its" if len(others) == 1 else "their"
        why = "" if best["positive"] is False else f" ({reason})"  # the reason is said once
        parts.append(f"{named} {'is' if len(others) == 1 else 'are'} above {its} {word} threshold although less "
                     f"likely: each class is screened on its own against the rest, with its own threshold{why}, so a "
                     "less likely class can still be flagged.")
    elif not best["positive"]:
        parts.append("No class is flagged at this operating point.")
    return " ".join(parts)


# ---------------------------------------------------------------------- what the point meant on test

def prevalence_on_test(calls: dict[str, list[dict]], cls: str) -> float | None:
    """The test share of ``cls`` (the same test images for every backbone: the first one known)."""
    for rows in calls.values():
        for c in rows:
            if c["class"] == cls and c.get("test_prevalence") is not None:
                return c["test_prevalence"]
    return None


def default_prevalence_percent(prevalence: float | None) -> float:
    """The prevalence input's start: the test share in percent within ``PREVALENCE_RANGE`` (10 % when unknown)."""
    lo, hi = PREVALENCE_RANGE
    return 10.0 if prevalence is None else round(max(lo, min(hi, 100 * prevalence)), 1)


def chosen_prevalence(cls: str, percent: float | None, default_percent: float) -> dict[str, float]:
    """``{cls: share}`` when the user moved the prevalence away from the test's, else ``{}`` (the test's holds)."""
    if percent is None or abs(percent - default_percent) < 1e-9:
        return {}
    return {cls: percent / 100}


def rates_heading(point: str) -> str:
    return f"What the {POINT_WORDS.get(point, point)} operating point meant on the test images"


def rate_text(rate: Rate | None) -> str:
    """"0.83 (0.70–0.91), n=40", or "—" when undefined."""
    if rate is None or rate.value is None:
        return "—"
    ci = f" ({rate.ci_low:.2f}–{rate.ci_high:.2f})" if rate.ci_low is not None and rate.ci_high is not None else ""
    return f"{rate.value:.2f}{ci}, n={rate.n}"


def _share(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f}"


def rates_table(calls: list[dict], chosen: dict[str, float] | None = None) -> pd.DataFrame:
    """One backbone's table, a row per class: the prevalence its PPV/NPV hold at (the test's, or
    ``chosen``'s), and the test sensitivity, specificity, PPV and NPV of the operating point's threshold.
    One table per backbone (no "Backbone" column) so that it fits the page's width."""
    chosen = chosen or {}
    rows = []
    for c in calls:
        test = c["test"]
        row = {"Class": c["class"]}
        if c["class"] in chosen:
            prev = chosen[c["class"]]
            at = ppv_npv_at_prevalence(test["sensitivity"].value, test["specificity"].value, prev)
            row["Prevalence"] = f"{prev:.1%} (yours)"
            ppv, npv = _share(at["ppv"]), _share(at["npv"])
        else:
            prev = c.get("test_prevalence")
            row["Prevalence"] = "—" if prev is None else f"{prev:.1%} (test)"
            ppv, npv = rate_text(test["ppv"]), rate_text(test["npv"])
        row.update({"Sensitivity": rate_text(test["sensitivity"]), "Specificity": rate_text(test["specificity"]),
                    "PPV": ppv, "NPV": npv})
        rows.append(row)
    return pd.DataFrame(rows, columns=["Class", "Prevalence", "Sensitivity", "Specificity", "PPV", "NPV"])
