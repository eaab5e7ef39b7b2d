"""The Compare page's source sections, without Streamlit: whether the experiment was trained against the
source (``--deconfound``), the source probe (does each backbone's test features still tell the hospitals
apart inside a class) and the within-source AUCs (disease signal inside one hospital, beside the
thumbnail baseline): a table each and plain sentences that read the CIs honestly. The numbers come from
``covidviz.analysis.sources`` (``runs.sources.SourceEvidence``) and the manifest's ``Deconfounding``."""

from __future__ import annotations

import pandas as pd

from covidviz.runs.manifest import Deconfounding
from covidviz.runs.sources import ProbeClass, Score, SourceEvidence
from covidviz.stats.sources import FEW_PATIENTS
from covidviz.views import glossary
from covidviz.views.compare import chance_mark
from covidviz.views.style import arch_label, signed_change

PROBE_TITLE = "Does the model still know the hospital? (source probe)"
WITHIN_TITLE = "Disease signal inside one source (within-source AUC)"
BASELINE_LABEL = "Thumbnail pixels"
NOT_ANALYSED = ("No source evidence stored for this experiment yet: `python train.py analyze {path}` measures how well "
                "the test features tell the hospitals apart inside each class, and each backbone's AUC inside one "
                "source at a time.")
NO_SOURCES = "The test images come from one source: there is no hospital to tell apart and no within-source comparison."
NO_PAIRS = "No two classes share a source in the test split, so no AUC can be measured inside one source."


def _ci(c: Score) -> str:
    if c.auc is None:
        return "—"
    return f"{c.auc:.2f}" + ("" if c.ci_low is None else f" [{c.ci_low:.2f}–{c.ci_high:.2f}]")


def _diff(d: Score) -> str:
    if d.diff is None:
        return ""
    return f" ({signed_change(d.diff)})"


def _diff_ci(d: Score) -> str:
    ci = "" if d.ci_low is None else f" [{signed_change(d.ci_low)}, {signed_change(d.ci_high)}]"
    return signed_change(d.diff) + ci


def _label(key: str, ev: SourceEvidence) -> str:
    return BASELINE_LABEL if key == ev.baseline else arch_label(key)


def _sources(counts: dict) -> str:
    return " vs ".join(f"{s} ({n})" for s, n in counts.items())


def deconfound_text(rec: Deconfounding | None) -> str | None:
    """One sentence on how the experiment was trained against the source; None when it was not asked for."""
    if rec is None or rec.method in ("", "none"):
        return None
    if not rec.active:
        return f"Trained with `--deconfound {rec.method}` asked for, but it was ignored: {rec.message.split(': ', 1)[-1]}"
    inside = "; ".join(f"inside {k}, {' vs '.join(v)}" for k, v in rec.per_class.items())
    return (f"Trained with `--deconfound {rec.method}` (peak strength {rec.strength:g}): an adversary learnt to tell the "
            f"sources apart from the pooled features ({inside}) and the backbone was trained to defeat it "
            f"{_HOW.get(rec.objective, 'through ' + rec.objective)}. See {glossary.link('Source deconfounding')}.")


_HOW = {"confusion": "by making its answer uniform over the sources (a confusion loss)",
        "reverse": "through gradient reversal"}


# ------------------------------------------------------------------------- source probe

def probe_caption(ev: SourceEvidence) -> str:
    return (f"How well a linear classifier on each backbone's pooled features tells the test films' sources apart "
            f"inside one class ({ev.probe_model}; {ev.n_images} {ev.split} images, {ev.n_patients} patients): ROC AUC "
            "with a 95 % CI from a bootstrap over patients; 0.5 means it cannot tell them apart. Beside it, the same "
            "probe on the 32×32 thumbnails' pixels: how different the hospitals' films look at all. A source needs "
            f"films of at least {ev.min_patients or 5} patients inside the class; the interval covers the choice of "
            "test films, not the probe's own fitting, so with few patients of a source it is too narrow. "
            f"See {glossary.link('Source probe')}.")


def probe_table(ev: SourceEvidence, archs: list[str]) -> pd.DataFrame:
    """One row per class: its sources (test films) and the probe's AUC [CI] per backbone and for the pixels."""
    rows = []
    for cls in ev.classes():
        p = ev.probe(cls)
        row = {"Class": cls, "Sources (films)": _sources(p.sources) if not p.reason else _sources(p.left_out) or "—"}
        for key in [*archs, ev.baseline]:
            row[_label(key, ev)] = "—" if p.reason else _ci(p.score(key))
        row["Note"] = f"not measured: {p.reason}" if p.reason else (
            f"left out: {_sources(p.left_out)} (too few patients)" if p.left_out else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _probe_verdict(c: Score) -> str:
    if c.ci_low is not None and c.ci_low > 0.5:
        return "still tells the sources apart"
    return "no better than chance"


def probe_sentences(ev: SourceEvidence, archs: list[str]) -> list[str]:
    """Per measured class: what the probe says for each backbone, with the pixels as the reference."""
    out = []
    for cls in ev.classes():
        p: ProbeClass = ev.probe(cls)
        if p.reason:
            continue
        parts = []
        for arch in archs:
            c = p.score(arch)
            if c.auc is None:
                continue
            parts.append(f"on {arch_label(arch)}'s features, {_probe_verdict(c)} (AUC {_ci(c)})")
        if not parts:
            continue
        base = p.score(ev.baseline)
        text = f"Inside {cls}, a linear probe telling {' from '.join(p.sources)}: " + "; ".join(parts)
        if base.auc is not None:
            text += f"; on the thumbnails' pixels, AUC {_ci(base)}"
        few = p.fewest_patients
        if few is not None and few < FEW_PATIENTS:
            rare = min(p.patients, key=p.patients.get)
            text += f" (only {few} patients from {rare}: read with care)"
        out.append(text + ".")
    if not out:
        out.append("No class has two sources with enough test patients to probe; the source probe needs more test "
                   "films of the minority sources.")
    return out


# ------------------------------------------------------------------------- within-source AUC

def within_caption(ev: SourceEvidence) -> str:
    return (f"For every two classes that both have test films from one source, each backbone's AUC on that source's "
            f"films only (score: {ev.pair_score or 'p(b) / (p(a) + p(b))'}), so the hospital cannot explain it; 95 % CI "
            "from a bootstrap over patients. In brackets: the change from the thumbnail baseline scored the same way. "
            f"A pair needs {ev.min_films or 3} films of each class from the source. "
            f"See {glossary.link('Within-source AUC')}.")


def within_table(ev: SourceEvidence, archs: list[str]) -> pd.DataFrame:
    """One row per (source, pair): films of each class, each backbone's AUC [CI] (change), the baseline's."""
    rows = []
    for p in ev.pairs():
        row = {"Source": p.source, "Classes": f"{p.a} vs {p.b}", "Films": f"{p.n_a} / {p.n_b}"}
        for arch in archs:
            row[arch_label(arch)] = "—" if p.reason else _ci(p.auc(arch)) + _diff(p.diff(arch)) + chance_mark(p.auc(arch).auc)
        row["Thumbnail baseline"] = "—" if p.reason else _ci(p.auc(ev.baseline)) + chance_mark(p.auc(ev.baseline).auc)
        row["Note"] = f"not measured: {p.reason}" if p.reason else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _within_verdict(c: Score, d: Score) -> str:
    if c.ci_low is not None and c.ci_low <= 0.5:
        return "no better than chance inside this source"
    if d.diff is None or d.ci_low is None:
        return "above chance inside this source"
    if d.ci_low > 0:
        return f"clearly above the thumbnail baseline ({_diff_ci(d)}): disease signal the hospital cannot explain"
    if d.ci_high < 0:
        return f"below the thumbnail baseline ({_diff_ci(d)})"
    return f"not clearly above the thumbnail baseline ({_diff_ci(d)})"


def within_sentences(ev: SourceEvidence, archs: list[str]) -> list[str]:
    """Per measured pair and backbone: its AUC inside the source, read against chance and the baseline."""
    out = []
    for p in ev.pairs():
        if p.reason:
            continue
        base = p.auc(ev.baseline)
        for arch in archs:
            c = p.auc(arch)
            if c.auc is None:
                continue
            out.append(f"Inside {p.source}, {arch_label(arch)} separates {p.b} from {p.a} with AUC {_ci(c)}"
                       + (f" (thumbnail baseline {_ci(base)})" if base.auc is not None else "")
                       + f": {_within_verdict(c, p.diff(arch))}.")
    if not out:
        out.append(NO_PAIRS if not ev.pairs() else
                   "No pair of classes has enough test films inside one source to measure an AUC there.")
    return out


def unmeasured(ev: SourceEvidence) -> int:
    """How many (source, pair) rows could not be measured (too few films)."""
    return sum(1 for p in ev.pairs() if p.reason)

