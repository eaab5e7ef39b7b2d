"""Remedies side by side (no streamlit): experiments trained on the SAME test films with different
inputs (``--input full|lung-crop|lung-mask``) or with source deconfounding (``--deconfound source``),
one row per experiment and backbone, plus the thumbnail baseline, with the evidence issue 23 asks for:
overall and within-source AUCs with CIs, the lung-weight share, the shortcut audit (lungs hidden / only
the lungs kept / borders hidden), the source probe within each class.

Every number is read from what the analysis stored (``analysis.json``, ``sources.json``, ``lungs.json``,
``shortcuts.json``, the manifest's validation AUC); nothing is recomputed, so the Overview and
``experiments/remedies.py`` (which writes docs/remedies.md) print the same table. ``siblings`` finds the
experiments to compare: those whose test split holds exactly the same image ids (the only fair
comparison: the same films scored by every remedy). ``reading`` says in plain sentences what changed,
judging by the CIs only (no tuning to the test split: the lung input is picked on validation AUC).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

from covidviz.runs.lungs import read_lungs
from covidviz.runs.sources import BASELINE, read_sources
from covidviz.views.compare import ci_text
from covidviz.views.style import arch_label

FULL = "full"
BASELINE_LABEL = "thumbnail baseline"
AUDIT = {"lungs_hidden": "Lungs hidden", "lungs_only": "Only lungs kept", "borders": "Borders hidden"}
MIN_SIBLINGS = 2   # a table needs at least two experiments on the same films
LUNGS_ONLY_KEPT = 0.03  # issue 23's target: "only the lungs kept" within this of the model's own test AUC


def remedy_of(exp) -> str:
    """'full film', 'lung-mask input', 'lung-crop input', '+ source deconfounding (λ 0.3, confusion)' combined."""
    prep = exp.preprocessing
    kind = getattr(prep, "input", FULL) or FULL
    text = "full film" if kind == FULL else f"{kind} input"
    dec = exp.info.deconfound
    if dec is not None and dec.method != "none":
        text += (f" + source deconfounding (λ {dec.strength:g}, {dec.objective})" if dec.active
                 else " (deconfounding not active)")
    return text


def test_ids(exp) -> frozenset:
    images = exp.images()
    return frozenset(images.loc[images["split"] == "test", "image_id"].astype(str))


def siblings(exp, experiments) -> list:
    """``exp`` and every other analysed experiment scored on exactly the same test films, ``exp`` first,
    the others by name; [] when there is none besides ``exp``."""
    try:
        ids = test_ids(exp)
    except Exception:  # noqa: BLE001 - an unreadable images table: nothing to compare with
        return []
    same = []
    for other in experiments:
        if other.path == exp.path or not other.analysed:
            continue
        try:
            if test_ids(other) == ids:
                same.append(other)
        except Exception:  # noqa: BLE001 - a broken sibling is skipped, not fatal
            continue
    return [exp, *sorted(same, key=lambda e: e.path.name)] if same else []


@dataclass
class _Cols:
    pairs: list[tuple[str, str, str]]   # (source, a, b) within-source pairs, in the first experiment's order
    probe: list[str]                    # classes with a source probe


def _columns(experiments) -> _Cols:
    pairs, probe = [], []
    for exp in experiments:
        ev = read_sources(exp)
        if ev is None:
            continue
        for p in ev.pairs():
            key = (p.source, p.a, p.b)
            if not p.reason and key not in pairs:
                pairs.append(key)
        for cls in ev.classes():
            if not ev.probe(cls).reason and cls not in probe:
                probe.append(cls)
    return _Cols(pairs, probe)


def _score(s) -> str:
    return ci_text(s.auc, s.ci_low if s.ci_low is not None else np.nan, s.ci_high if s.ci_high is not None else np.nan) \
        if s is not None and s.auc is not None else "n/a"


def _pair_name(source: str, a: str, b: str) -> str:
    return f"{a} vs {b} in {source}"


def _lung_share(exp, arch: str) -> str:
    lungs = read_lungs(exp, arch)
    if lungs is None:
        return "n/a"
    cells = [lungs.cell(c) for c in lungs.names]
    cells = [c for c in cells if c.share is not None]
    if not cells:
        return "n/a"
    shares = [c.share for c in cells]
    chance = np.mean([c.chance for c in cells if c.chance is not None]) if any(c.chance is not None for c in cells) \
        else np.nan
    spread = f" ({min(shares):.2f}–{max(shares):.2f})" if len(shares) > 1 else ""
    return f"{np.mean(shares):.2f}{spread}; chance {chance:.2f}"


def _audit_score(exp, arch: str, cond: str):
    """The audit's macro AUC of ``arch`` under ``cond`` (auc, ci_low, ci_high), or None when not run."""
    audit = exp.shortcuts()
    if audit is None or cond not in audit.conditions:
        return None
    c = audit.cell(arch, "macro", cond)
    return None if c.get("auc") is None else SimpleNamespace(auc=c["auc"], ci_low=c.get("ci_low"),
                                                             ci_high=c.get("ci_high"))


def table(experiments) -> pd.DataFrame:
    """One row per experiment and backbone, then the thumbnail baseline (its AUCs on the first
    experiment's test films; the probe on thumbnails), columns as the module docstring says."""
    cols = _columns(experiments)
    rows = []
    for exp in experiments:
        analysis = exp.analysis()
        evidence = read_sources(exp)
        for arch in exp.backbones:
            rec = exp.record(arch)
            row = {"Experiment": exp.path.name, "Remedy": remedy_of(exp), "Backbone": arch_label(arch),
                   "Validation AUC": f"{rec.best_val_auc:.3f}" if rec.best_val_auc is not None else "n/a"}
            m = analysis.backbone(arch).macro if analysis is not None and analysis.has(arch) else None
            row["Test macro AUC"] = ci_text(m.auc, m.ci_low, m.ci_high) if m is not None and m.auc is not None \
                else "n/a"
            for source, a, b in cols.pairs:
                pair = next((p for p in (evidence.pairs() if evidence else []) if (p.source, p.a, p.b) == (source, a, b)),
                            None)
                row[_pair_name(source, a, b)] = _score(pair.auc(arch)) if pair is not None else "n/a"
            row["Lung-weight share"] = _lung_share(exp, arch)
            for cond, label in AUDIT.items():
                row[label] = _score(_audit_score(exp, arch, cond))
            for cls in cols.probe:
                row[f"Source probe in {cls}"] = _score(evidence.probe(cls).score(arch)) if evidence else "n/a"
            rows.append(row)
    first = experiments[0]
    analysis, evidence = first.analysis(), read_sources(first)
    base = {"Experiment": "—", "Remedy": BASELINE_LABEL, "Backbone": "logistic regression on 32×32 thumbnails",
            "Validation AUC": "n/a"}
    macro = analysis.baseline_auc("macro") if analysis is not None else None
    base["Test macro AUC"] = f"{macro:.3f}" if macro is not None else "n/a"
    for source, a, b in cols.pairs:
        pair = next((p for p in (evidence.pairs() if evidence else []) if (p.source, p.a, p.b) == (source, a, b)), None)
        base[_pair_name(source, a, b)] = _score(pair.auc(BASELINE)) if pair is not None else "n/a"
    base["Lung-weight share"] = "n/a"
    for label in AUDIT.values():
        base[label] = "n/a"
    for cls in cols.probe:
        base[f"Source probe in {cls}"] = _score(evidence.probe(cls).score(BASELINE)) if evidence else "n/a"
    rows.append(base)
    return pd.DataFrame(rows)


def _mean_auc(scores) -> float | None:
    vals = [s.auc for s in scores if s is not None and s.auc is not None]
    return float(np.mean(vals)) if vals else None


def _apart(new, ref) -> int:
    """+1 when ``new``'s 95 % CI lies wholly above ``ref``'s, -1 wholly below, 0 when they overlap (or a
    CI is missing): a change is only claimed when the intervals say so."""
    if new is None or ref is None or None in (new.ci_low, new.ci_high, ref.ci_low, ref.ci_high):
        return 0
    return 1 if new.ci_low > ref.ci_high else -1 if new.ci_high < ref.ci_low else 0


def _paired(ev, ref_ev, arch: str, kind: str) -> list[tuple]:
    """(remedy's score, full film's score) per within-source pair (``kind`` "pairs") or per class of the
    source probe ("probe"), where both experiments measured it."""
    if ev is None or ref_ev is None:
        return []
    if kind == "pairs":
        mine = {(p.source, p.a, p.b): p.auc(arch) for p in ev.pairs() if not p.reason}
        ref = {(p.source, p.a, p.b): p.auc(arch) for p in ref_ev.pairs() if not p.reason}
    else:
        mine = {c: ev.probe(c).score(arch) for c in ev.classes() if not ev.probe(c).reason}
        ref = {c: ref_ev.probe(c).score(arch) for c in ref_ev.classes() if not ref_ev.probe(c).reason}
    return [(mine[k], ref[k]) for k in mine if k in ref and mine[k] is not None and ref[k] is not None]


def reading(experiments) -> list[str]:
    """Plain sentences comparing every remedy with the full-film experiment (the first one whose input
    is full and that is not deconfounded), per backbone: the headline, the within-source AUCs and the
    source probe (means, for the eye), judged by the 95 % CIs of each pair and class (``_verdict``). A
    remedy that lowers the headline but raises a within-source AUC is named the better model; one whose
    changes all lie within the CIs is said to change nothing measurable on these films."""
    ref = next((e for e in experiments if remedy_of(e) == "full film"), None)
    if ref is None:
        return ["No full-film experiment on these test films: nothing to compare the remedies with."]
    out = []
    ref_ev, ref_an = read_sources(ref), ref.analysis()
    for exp in experiments:
        if exp is ref:
            continue
        ev, an = read_sources(exp), exp.analysis()
        for arch in exp.backbones:
            if arch not in ref.backbones or an is None or ref_an is None:
                continue
            name = f"{remedy_of(exp)} ({exp.path.name}), {arch_label(arch)}"
            head, head_ref = an.backbone(arch).macro, ref_an.backbone(arch).macro
            pairs, probes = _paired(ev, ref_ev, arch, "pairs"), _paired(ev, ref_ev, arch, "probe")
            parts = []
            if head.auc is not None and head_ref.auc is not None:
                parts.append(f"headline macro AUC {head_ref.auc:.3f} → {head.auc:.3f} "
                             f"({_overlap_word(head, head_ref)})")
            if pairs:
                parts.append(f"mean within-source AUC {_mean_auc([r for _, r in pairs]):.3f} → "
                             f"{_mean_auc([m for m, _ in pairs]):.3f}")
            if probes:
                parts.append(f"mean source probe {_mean_auc([r for _, r in probes]):.2f} → "
                             f"{_mean_auc([m for m, _ in probes]):.2f}")
            only, only_ref = _audit_score(exp, arch, "lungs_only"), _audit_score(ref, arch, "lungs_only")
            if only is not None and only_ref is not None:
                parts.append(f"with only the lungs kept {only_ref.auc:.3f} → {only.auc:.3f}")
            verdict = _verdict(_apart(head, head_ref), [_apart(m, r) for m, r in pairs],
                               [_apart(m, r) for m, r in probes])
            if _apart(only, only_ref) > 0:  # the audit: keeping only the lungs costs less than before
                verdict = verdict.replace("No change beyond", "Otherwise no change beyond")
                if head.auc is not None and only.auc >= head.auc - LUNGS_ONLY_KEPT:
                    lead = (f"Its score survives with only the lungs kept ({only.auc:.3f} of its {head.auc:.3f}): "
                            "it rests on the lungs.")
                else:
                    lead = (f"Keeping only the lungs costs it less than the full-film model, but it still falls to "
                            f"{only.auc:.3f}.")
                verdict = f"{lead} {verdict}"
            out.append(f"{name}: " + "; ".join(parts) + (f". {verdict}" if verdict else "."))
    return out


def _overlap_word(a, b) -> str:
    if None in (a.ci_low, a.ci_high, b.ci_low, b.ci_high):
        return "no CI"
    return "CIs overlap" if a.ci_low <= b.ci_high and b.ci_low <= a.ci_high else "CIs apart"


def _verdict(head: int, within: list[int], probe: list[int]) -> str:
    """The reading from which CIs moved apart (+1 up, -1 down, 0 overlapping: ``_apart``): the headline,
    each within-source pair, each class's source probe."""
    up, down = any(w > 0 for w in within), any(w < 0 for w in within)
    if up and not down:
        return ("Lower headline but more disease signal inside a source: the better model." if head < 0
                else "More disease signal inside a source.")
    if down and not up:
        return "Less disease signal inside a source: not an improvement."
    if up and down:
        return "More disease signal inside one source and less inside another: mixed."
    if any(p < 0 for p in probe) and not any(p > 0 for p in probe):
        return "It knows less about the hospital, with no measurable loss of disease signal inside a source."
    if head < 0:
        return "A lower headline and no measurable change inside the sources: not an improvement."
    return "No change beyond the 95 % CIs on these test films."
