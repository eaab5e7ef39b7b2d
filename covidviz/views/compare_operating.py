"""The operating point of the "Compare backbones" page: the validation presets or a free threshold,
what each backbone's threshold gives on the test split (confusion counts, sensitivity, specificity,
PPV/NPV with Wilson CIs, PPV/NPV at another prevalence by Bayes' rule, the ROC point), and the
multi-class argmax confusion matrix. Streamlit-free. Thresholds are printed on the page's one scale, the
model's raw score (``SCALE``), and say so (``views.formats.threshold_text``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from covidviz.runs.records import Analysis
from covidviz.stats.thresholds import TARGET, confusion_at, ppv_npv_at_prevalence
from covidviz.stats.thresholds import argmax_confusion as confusion_of_argmax
from covidviz.views import glossary
from covidviz.views.formats import RAW, scale_name
from covidviz.views.formats import threshold_text as labelled_threshold
from covidviz.views.style import OPERATING_POINTS, arch_label

CUSTOM = "custom"
CUSTOM_LABEL = "Custom (slider, same for every backbone)"
PPV, NPV = glossary.link("PPV"), glossary.link("NPV")
PREVALENCE = glossary.link("Prevalence", "prevalence")
YOUDEN = glossary.link("Youden's J")
SCALE = RAW  # this page's probabilities and thresholds: the model's own score, as stored and as chosen on
SCALE_NOTE = (f"Thresholds here are on the model's {scale_name(SCALE)} (its uncalibrated probability), the scale they "
              "were chosen on; the Diagnose page shows the same thresholds on its calibrated scale too.")
PRESET_CAPTION = (f"Each backbone uses its own threshold (its {glossary.link('Operating point', 'operating point')}), "
                  f"chosen on the validation split: balanced maximises {YOUDEN}, rule-out keeps "
                  f"sensitivity ≥ {100 * TARGET:.0f} %, rule-in specificity ≥ {100 * TARGET:.0f} %. The numbers below "
                  "are what that threshold gives on "
                  f"test (so they can miss the validation target). {SCALE_NOTE}")
CUSTOM_CAPTION = (f"The same threshold for every backbone; an {glossary.link('Operating point', 'operating point')} "
                  f"chosen on the test images themselves flatters the rates below. {SCALE_NOTE}")


def preset_options() -> list[str]:
    """The operating-point choices: the validation presets (``style.OPERATING_POINTS``), then a free threshold."""
    return list(OPERATING_POINTS) + [CUSTOM]


def preset_label(key: str) -> str:
    return OPERATING_POINTS.get(key, CUSTOM_LABEL)


def preset_caption(preset: str) -> str:
    """What the chosen operating point means: each backbone's validation threshold, or one free threshold."""
    return CUSTOM_CAPTION if preset == CUSTOM else PRESET_CAPTION


def presets(analysis: Analysis, arch: str, cls: str) -> dict[str, float | None]:
    """Validation-chosen thresholds of one backbone and class: {youden|high_sensitivity|high_specificity: t}."""
    return {name: p.threshold for name, p in analysis.backbone(arch).points(cls).items()}


def test_prevalence(y) -> float:
    """Share of test images with the class (0 for an empty split)."""
    y = np.asarray(y)
    return float(np.mean(y > 0)) if len(y) else 0.0


def prevalence_help(y) -> str:
    """The prevalence slider's help: the test split's own prevalence and what the slider changes."""
    return (f"Test split: {test_prevalence(y):.1%}. {PPV} and {NPV} depend on the {PREVALENCE}; sensitivity and "
            "specificity do not.")


def default_prevalence_percent(y) -> float:
    """The prevalence slider's start: the test split's, in percent, within the slider's 0.1–99.9."""
    return round(max(0.1, min(99.9, 100 * test_prevalence(y))), 1)


def operating_point(y, s, threshold: float | None, prevalence: float | None = None) -> dict:
    """``confusion_at`` on the test labels/scores, plus PPV/NPV at ``prevalence`` (Bayes) and the ROC
    coordinates (fpr, tpr) of the point."""
    c = confusion_at(y, s, threshold)
    sens = (c["sensitivity"] or {}).get("value") if c["sensitivity"] else None
    spec = (c["specificity"] or {}).get("value") if c["specificity"] else None
    c["fpr"] = None if spec is None else 1.0 - spec
    c["tpr"] = sens
    c["at_prevalence"] = ppv_npv_at_prevalence(sens, spec, prevalence) if prevalence is not None else None
    return c


def operating_points(analysis: Analysis, archs: list[str], cls: str, y, scores: dict[str, np.ndarray], preset: str,
                     threshold: float, prevalence: float | None = None) -> tuple[dict[str, dict], list[str]]:
    """(arch -> ``operating_point`` on test, backbones without a ``preset`` threshold). With ``CUSTOM``
    every backbone uses ``threshold``; else each its own validation-chosen threshold for ``cls``."""
    points, missing = {}, []
    for arch in archs:
        t = threshold if preset == CUSTOM else analysis.backbone(arch).point(cls, preset).threshold
        if t is None:
            missing.append(arch)
        points[arch] = operating_point(y, scores[arch], t, prevalence)
    return points, missing


def missing_threshold_text(preset: str, archs: list[str], cls: str) -> str:
    return (f"No '{preset_label(preset)}' threshold for {', '.join(arch_label(a) for a in archs)}: the validation "
            f"split has a single outcome for {cls}, or no threshold reaches the target.")


def rates_heading(y, cls: str, where: str = "test") -> str:
    """The rates table's heading; ``where``: the test set's name ("test", or an external set's)."""
    y = np.asarray(y)
    return (f"**Rates on the {len(y)} {where} images** ({int(np.sum(y > 0))} with {cls}): "
            f"{glossary.link('Sensitivity')}, {glossary.link('Specificity', 'specificity')}, {PPV} and {NPV}; "
            "value (count/denominator) [Wilson 95% CI]. PPV/NPV at the chosen "
            f"{PREVALENCE} use Bayes' rule with the test sensitivity and specificity.")


def threshold_text(c: dict) -> str:
    """An operating point's threshold as printed: "0.594 (raw score)" (``formats.threshold_text``), "—"."""
    return labelled_threshold(c.get("threshold"), SCALE)


def custom_label(cls: str) -> str:
    """The free threshold slider's label, naming the scale it is on."""
    return f"Custom threshold ({scale_name(SCALE)}): call {cls} when the model's {scale_name(SCALE)} ≥"


def confusion_frame(c: dict, cls: str) -> pd.DataFrame:
    """2x2 table: rows = truth, columns = the call at the threshold."""
    return pd.DataFrame([[c["tp"], c["fn"]], [c["fp"], c["tn"]]],
                        index=pd.Index([f"{cls} present", f"{cls} absent"], name="Truth"),
                        columns=[f"Called {cls}", f"Called not {cls}"])


def rates_table(points: dict[str, dict], label=arch_label, prevalence: float | None = None) -> pd.DataFrame:
    """Per backbone: threshold, sensitivity, specificity, PPV and NPV on test (k/n and Wilson 95% CI);
    PPV/NPV at ``prevalence`` when given."""
    rows = {}
    for arch, c in points.items():
        r = {"Threshold": threshold_text(c)}
        for key, name in (("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("ppv", "PPV"), ("npv", "NPV")):
            r[name] = _rate_text(c[key], c, key)
        if prevalence is not None:
            at = c.get("at_prevalence") or {}
            r[f"PPV at {prevalence:.1%} prevalence"] = _pct(at.get("ppv"))
            r[f"NPV at {prevalence:.1%} prevalence"] = _pct(at.get("npv"))
        rows[label(arch)] = r
    return pd.DataFrame(rows).rename_axis("On test")


_NUMERATORS = {"sensitivity": "tp", "specificity": "tn", "ppv": "tp", "npv": "tn"}


def _rate_text(rate: dict | None, c: dict, key: str) -> str:
    if not rate or rate.get("value") is None:
        return "n/a (no images)" if rate is not None else "—"
    ci = "" if rate.get("ci_low") is None else f" [{rate['ci_low']:.0%}–{rate['ci_high']:.0%}]"
    return f"{rate['value']:.1%} ({c[_NUMERATORS[key]]}/{rate['n']}){ci}"


def _pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.1%}"


def argmax_confusion(analysis: Analysis, arch: str, site=None, names=()) -> tuple[pd.DataFrame, str] | None:
    """Multi-class: (confusion matrix of the most probable class, its heading), or None. On the internal
    test split from the analysis; ``site``: (name, one-hot, arch -> probabilities) of an external set,
    counted from its stored scores the same way (``stats.thresholds.argmax_confusion``; ``names``: the
    classes in column order)."""
    if site is None:
        m, where = analysis.backbone(arch).confusion, "test images"
    else:
        name, onehot, probs = site
        m = None if probs.get(arch) is None else confusion_of_argmax(onehot, probs[arch], list(names))
        where = f"images of {name}"
    if not m:
        return None
    frame = pd.DataFrame(m["matrix"], index=pd.Index(m["names"], name="Truth"),
                         columns=[f"Predicted {n}" for n in m["names"]])
    acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.1%}"
    return frame, f"**{arch_label(arch)}** — accuracy {acc} on {m['n']} {where}"
