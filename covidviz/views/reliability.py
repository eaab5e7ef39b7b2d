"""What a call may claim, Streamlit-free: the reading of one screening call (Positive, Negative,
indeterminate, not reliable), the class's test AUC with its CI and the operating point's sensitivity and
specificity beside it, the banner of a weak experiment (macro AUC below ``MIN_MACRO_AUC``) and the
shortcut audit's findings as badges. Diagnose, its case report, the Overview and Batch read these, so a
call reads the same everywhere.

A call here is the ``dict`` of ``covidviz.inference.Predictor.calls``; ``views.diagnose_calls.calls_at``
adds its class's test AUC (``ClassAuc``, key ``"auc"``) so that ``call_reading`` can judge it.
"""

from __future__ import annotations

from dataclasses import dataclass

from covidviz.analysis.shortcuts import SIGNS, shortcut_signs
from covidviz.runs.records import Shortcuts
from covidviz.views import glossary
from covidviz.views.style import arch_label

# A calibrated probability this close to its threshold (same scale) is a coin toss between the two
# calls: 0.5004 against 0.4999 reads "indeterminate", not Positive.
BAND = 0.02
MIN_MACRO_AUC = 0.70  # below this test macro AUC an experiment's calls get a banner: little better than chance
CHANCE_AUC = 0.5

POSITIVE, NEGATIVE, INDETERMINATE, NOT_RELIABLE, NO_CALL = "Positive", "Negative", "indeterminate", "not reliable", "—"
READINGS = (POSITIVE, NEGATIVE, INDETERMINATE, NOT_RELIABLE, NO_CALL)

READING_HELP = (f"Positive / Negative: the calibrated probability is at least {BAND:.2f} above / below the class's "
                f"threshold, and the class's test AUC is clearly better than chance. *{INDETERMINATE}*: within "
                f"±{BAND:.2f} of the threshold, where a tiny change in the film flips the call. *{NOT_RELIABLE}*: the "
                "95 % interval of the class's test AUC includes 0.5 or lies below it (or no test AUC could be "
                "measured), so on the test images the model did not tell this class from the rest better than chance.")
READING_NOTE = (f"Calls read *{INDETERMINATE}* within ±{BAND:.2f} of their threshold and *{NOT_RELIABLE}* where the "
                f"class's test {glossary.link('AUC')} interval is not clearly above 0.5 (chance). See "
                f"{glossary.link('Call reliability', 'call reliability')}.")


@dataclass(frozen=True)
class ClassAuc:
    """A class's test AUC with its 95 % CI (None: not measured, e.g. no positive test image)."""

    auc: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def measured(self) -> bool:
        return self.auc is not None

    @property
    def chance_inside(self) -> bool:
        """The CI includes 0.5 (no CI stored: the AUC itself is 0.5)."""
        if self.auc is None:
            return True
        if self.ci_low is None or self.ci_high is None:
            return self.auc == CHANCE_AUC
        return self.ci_low <= CHANCE_AUC <= self.ci_high

    @property
    def reliable(self) -> bool:
        """Clearly better than chance: measured, its CI (or, without one, the AUC) above 0.5. A CI below 0.5
        is no better: that model ranks the class the wrong way round."""
        if self.auc is None:
            return False
        return (self.ci_low if self.ci_low is not None else self.auc) > CHANCE_AUC


def class_auc(analysis, arch: str, cls: str) -> ClassAuc | None:
    """The stored test AUC of ``cls`` for ``arch`` (``runs.records.Analysis``); None when not analysed."""
    if analysis is None:
        return None
    m = analysis.backbone(arch).metrics(cls)
    return ClassAuc(m.auc, m.ci_low, m.ci_high)


def call_reading(c: dict, band: float = BAND) -> str:
    """How one call reads (``READINGS``): no threshold -> "—"; the class's test AUC (``c["auc"]``, when
    the call carries one) not clearly above chance -> "not reliable"; the probability within ``band`` of
    the threshold -> "indeterminate"; else Positive / Negative (the validated rule, ``c["positive"]``)."""
    if c.get("positive") is None:
        return NO_CALL
    if "auc" in c and (c["auc"] is None or not c["auc"].reliable):
        return NOT_RELIABLE
    if c.get("threshold") is not None and abs(c["prob"] - c["threshold"]) < band:
        return INDETERMINATE
    return POSITIVE if c["positive"] else NEGATIVE


def auc_text(a: ClassAuc | None) -> str:
    """"0.91 [0.85–0.96]", "0.91" without a CI, "—" when not measured."""
    if a is None or a.auc is None:
        return "—"
    return f"{a.auc:.2f}" + ("" if a.ci_low is None or a.ci_high is None else f" [{a.ci_low:.2f}–{a.ci_high:.2f}]")


def _rate(rate) -> str:
    return "—" if rate is None or rate.value is None else f"{rate.value:.2f}"


def sens_spec(c: dict) -> tuple[str, str]:
    """The operating point's test sensitivity and specificity ("0.88", "—" when undefined)."""
    test = c.get("test") or {}
    return _rate(test.get("sensitivity")), _rate(test.get("specificity"))


def reliability_line(c: dict, sep: str = " · ") -> str:
    """"test AUC 0.91 [0.85–0.96] · sens 0.88 · spec 0.80": what the model knows about this class
    (``sep`` between the AUC and the rates: the reading at the top breaks the line there)."""
    sens, spec = sens_spec(c)
    return f"test AUC {auc_text(c.get('auc'))}{sep}sens {sens} · spec {spec}"


# ---------------------------------------------------------------------- the experiment as a whole

def macro_aucs(exp, analysis=None) -> dict[str, float | None]:
    """Each backbone's test macro AUC (the manifest's training record; ``analysis``' when it has none)."""
    out = {}
    for arch in exp.backbones:
        value = exp.record(arch).macro_auc("test")
        if value is None and analysis is not None:
            value = analysis.backbone(arch).macro.auc
        out[arch] = value
    return out


def low_auc_banner(aucs: dict[str, float | None], floor: float = MIN_MACRO_AUC) -> str | None:
    """A warning when any backbone's test macro AUC is below ``floor`` (None: every one at or above it)."""
    low = {a: v for a, v in aucs.items() if v is not None and v < floor}
    if not low:
        return None
    named = " and ".join(f"{arch_label(a)} {v:.2f}" for a, v in low.items())
    return (f"**Weak models:** test macro {glossary.link('AUC')} {named}, below {floor:.2f}: "
            f"{'this model ranks' if len(low) == 1 else 'these models rank'} films little better than chance, so "
            f"{'its' if len(low) == 1 else 'their'} calls say little about a film. Each call is judged on its "
            f"own class's test AUC and reads *{NOT_RELIABLE}* where that is not clearly above chance.")


# ---------------------------------------------------------------------- the shortcut audit

@dataclass(frozen=True)
class ShortcutFinding:
    """One class of one backbone where the shortcut audit found a sign (``analysis.shortcuts.SIGNS``)."""

    arch: str
    cls: str
    signs: tuple[str, ...]
    lungs_hidden_auc: float | None = None

    @property
    def text(self) -> str:
        """"ranked with the lungs hidden (AUC 0.99)": what the audit found, in a few words."""
        parts = []
        for s in self.signs:
            words = SIGNS[s]
            if s == "lungs_not_needed" and self.lungs_hidden_auc is not None:
                words += f" (AUC {self.lungs_hidden_auc:.2f})"
            parts.append(words)
        return "; ".join(parts)


BADGE = "Shortcut"
SHORTCUT_HELP = ("The experiment's shortcut audit (Compare page) re-scored the test films with parts hidden: for this "
                 "class the score does not need the lungs (or needs what lies outside them, or the borders), so a "
                 "call may rest on hospital markers or processing rather than on disease.")


def shortcut_findings(audit: Shortcuts | None) -> dict[tuple[str, str], ShortcutFinding]:
    """(backbone, class) -> what the audit found there, for every class with a shortcut sign; {} when
    the experiment was not audited."""
    if audit is None:
        return {}
    out = {}
    for arch in audit.archs:
        for cls in audit.names:
            row = {cond: audit.cell(arch, cls, cond) for cond in audit.conditions}
            signs = shortcut_signs(row)
            if signs:
                out[(arch, cls)] = ShortcutFinding(arch, cls, tuple(signs), (row.get("lungs_hidden") or {}).get("auc"))
    return out


SHORT_SIGNS = {"lungs_not_needed": "lungs not needed", "outside_lungs": "relies outside the lungs",
               "centre_not_needed": "centre not needed", "borders": "uses the borders"}  # badges in a narrow tile


def shortcut_badge(finding: ShortcutFinding | None, with_class: bool = False, short: bool = False) -> str:
    """Markdown badge ":orange-badge[⚠ Shortcut: ranked with the lungs hidden (AUC 0.99)]" (``with_class``:
    naming the class; ``short``: a few words in orange text that wraps, "lungs not needed", for a narrow
    tile), or ''."""
    if finding is None:
        return ""
    if short:  # a badge never wraps (Streamlit cuts it with an ellipsis in a 200-px tile): coloured text does
        return f":orange[:material/warning: **{BADGE}**: {', '.join(SHORT_SIGNS[s] for s in finding.signs)}]"
    return f":orange-badge[:material/warning: {BADGE}: {finding.cls + ' ' if with_class else ''}{finding.text}]"


def shortcut_sentence(finding: ShortcutFinding) -> str:
    """A plain sentence for the case report and the Overview."""
    return (f"Shortcut audit, {arch_label(finding.arch)}, {finding.cls}: {finding.text} on the test films, so its "
            f"{finding.cls} calls may rest on something other than the lungs (markers, borders, hospital processing).")


NOT_AUDITED_BADGE = ":gray-badge[:material/help: Shortcut audit: not run]"
CLEAN_BADGE = ":green-badge[:material/check: Shortcut audit: no sign found]"


def audit_badges(archs, audit: Shortcuts | None) -> dict[str, str]:
    """Per backbone, the audit's verdict as badges (markdown) for a model card: each class with a
    shortcut sign, or "no sign found", or "not run" (also for a backbone the audit left out)."""
    findings = shortcut_findings(audit)
    out = {}
    for arch in archs:
        mine = [f for (a, _), f in findings.items() if a == arch]
        if mine:
            out[arch] = " ".join(shortcut_badge(f, with_class=True) for f in mine)
        else:
            out[arch] = CLEAN_BADGE if audit is not None and arch in audit.archs else NOT_AUDITED_BADGE
    return out
