"""Data shaping for the "Compare backbones" page: selection, the ROC/PR curves, the per-class,
calibration and subgroup tables, and the page's longer texts. Streamlit-free.

The page reads the experiment's analysis (``covidviz.runs.records.Analysis``) for the stored curves,
CIs, paired tests, thresholds, calibration and subgroups, and recomputes from the stored TEST
probabilities only what the user changes interactively (``compare_operating``: the confusion counts at
a free threshold, PPV/NPV at another prevalence; ``compare_gallery``). Figures: ``compare_figures``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.runs.records import Analysis, ClassMetrics
from covidviz.views import glossary
from covidviz.views.style import arch_label, task_label

MACRO = "Macro average (all classes)"
ALPHA = 0.05
COLUMN_NAMES = {"source": "Source", "sex": "Sex", "age_group": "Age group", "view": "View"}

# Glossary links of the statistics the page's captions name (``glossary.link`` refuses an unknown term).
AUC = glossary.link("AUC")
CI = glossary.link("95% CI")
MACRO_LINK = glossary.link("Macro average", "macro average")
CRAMERS_V = glossary.link("Cramér's V")
TEMPERATURE = glossary.link("Temperature scaling", "temperatures")

CURVES_CAPTION = (f"{glossary.link('ROC curve', 'ROC')}: each point is one threshold; the further up-left, the better. "
                  f"Legend: test {AUC} with its {CI} (patient bootstrap). Line style differs per backbone as well as "
                  f"colour. {glossary.link('Precision-recall curve', 'Precision–recall')} shows how many positive "
                  "calls are right, which matters for rare findings.")
NO_CONFOUNDING = ("No attribute (source, sex, age group, view) is strongly associated with a class in this "
                  f"experiment ({CRAMERS_V} below the warning level).")
SUBGROUP_CAPTION = (f"{glossary.link('Subgroup AUC')}: the AUC within one group. A subgroup where a class is absent (or "
                    "the only label) has no AUC and is shown without a point. Small groups have wide intervals: do not "
                    "read much into a difference that the intervals cover.")
NOT_ANALYSED = "This experiment has not been analysed yet, so there are no curves, CIs or tests to compare."
PAIR_HELP = "The table's differences and the disagreement gallery compare two backbones."
WORSE_THAN_CHANCE = "worse than chance"
BELOW_CHANCE_CAPTION = (f"*{WORSE_THAN_CHANCE.capitalize()}*: an {AUC} below 0.5, where the model ranks images with the "
                        "finding below those without it more often than not (a coin toss scores 0.5). Where its "
                        f"{CI} reaches 0.5 it may be chance; either way the model has not learnt that class there.")
CLASS_HELP = (f"Drives every section: curves, operating point, calibration, gallery, subgroups. The {MACRO_LINK} "
              "counts every class the same.")


# ---------------------------------------------------------------- selection

def analysed_backbones(analysis: Analysis, backbones: list[str]) -> list[str]:
    """Backbones of the experiment that the analysis covers (in experiment order)."""
    return [a for a in backbones if analysis.has(a)]


def class_options(names) -> list[str]:
    """The class selector's choices: every class, then the macro average."""
    return list(names) + [MACRO]


def pair_options(archs: list[str]) -> list[str]:
    """Every unordered pair of backbones as ``"a|b"`` (a before b in experiment order)."""
    return [f"{a}|{b}" for i, a in enumerate(archs) for b in archs[i + 1:]]


def pair_label(option: str) -> str:
    return " vs ".join(arch_label(x) for x in option.split("|"))


def default_pair(archs: list[str]) -> tuple[str, str] | None:
    """The pair compared without asking: None for one backbone, the first two otherwise (the page asks
    when there are more)."""
    return (archs[0], archs[1]) if len(archs) >= 2 else None


def parse_pair(option: str) -> tuple[str, str]:
    a, b = option.split("|")
    return a, b


# ---------------------------------------------------------------- texts

def _q(v) -> str:
    return "?" if v is None else str(v)


def internal_split_text(analysis: Analysis) -> str:
    """"the internal test split (92 images)": the words every section that stays on it uses."""
    return f"the internal test split ({_q(analysis.n_images('test'))} images)"


def header_caption(analysis: Analysis, labels: LabelSpace, ext=None) -> str:
    """What the page is measured on: the internal test split, or the external set ``ext`` chosen as the
    test set (``runs.external.ExternalSet``: its own images and patients, thresholds carried over)."""
    if ext is None:
        return (f"Test split: {_q(analysis.n_images('test'))} images from {_q(analysis.n_patients_test)} patients · "
                f"{task_label(labels)} · {CI}s from {_q(analysis.n_boot)} patient-bootstrap resamples. "
                f"{glossary.link('Operating point', 'Thresholds')} and {TEMPERATURE} were chosen on the validation "
                "split and judged on test.")
    return (f"Test set: external site **{ext.name}**, {ext.n_images} images from "
            f"{_q(ext.metrics.get('n_patients'))} patients, not {internal_split_text(analysis)} · {task_label(labels)} · "
            f"{CI}s from {_q(ext.metrics.get('n_boot'))} patient-bootstrap resamples. "
            f"{glossary.link('Operating point', 'Thresholds')} and {TEMPERATURE} were chosen on the internal "
            f"validation split and carried over unchanged. Each section below names the test set it uses.")


def confounding_scope_text(ext) -> str:
    """Under the Subgroups header with an external set chosen: what the confounding warnings read."""
    return (f"The confounding warnings and the source baseline below read the experiment's own images (the "
            f"thumbnail baseline its test split), not {ext.name}; the subgroup AUCs are {ext.name}'s.")


def section_title(title: str, ext=None) -> str:
    """A section's header, naming the external set when the section reads it."""
    return title if ext is None else f"{title} on {ext.name}"


def internal_only_caption(analysis: Analysis, ext, what: str = "This section") -> str | None:
    """The caption of a section that stays on the internal test split while ``ext`` is chosen (None: none
    chosen, the section reads the test set the page names)."""
    if ext is None:
        return None
    return f"{what} is on {internal_split_text(analysis)}: {ext.name} is not measured here."


def confounding_banner(n: int) -> str:
    return (f"**{n} confounding warning(s):** an attribute such as the image source predicts a class ({CRAMERS_V}), "
            f"so part of any {AUC} may be shortcut learning. See *Subgroups* below.")


def confounding_warning(sentence: str) -> str:
    """One confounding sentence of the analysis, as the Subgroups section shows it (with its glossary link)."""
    return f"**Confounding.** {sentence} ({CRAMERS_V}: 0 = unrelated, 1 = the attribute alone gives the class.)"


def stale_text(archs: list[str], command: str) -> str:
    """Backbones trained after the analysis: not shown, and the command that includes them."""
    return (f"{', '.join(arch_label(a) for a in archs)} trained after the last analysis, so not shown. Run "
            f"`{command}` to include it.")


def one_backbone_text(arch: str) -> str:
    return (f"Only one backbone ({arch_label(arch)}) in this experiment: comparison needs two. The curves, "
            "operating points and calibration below describe it alone. Train another backbone on the same "
            "split, e.g. `python train.py --data ... --arch densenet121 resnet50`.")


def difference_caption(a: str, b: str, n_classes: int) -> str:
    return (f"Difference = {arch_label(a)} − {arch_label(b)} {AUC} on the same test images, with its {CI} and "
            f"two-sided p-value from the {glossary.link('DeLong test')}; in brackets the p after "
            f"{glossary.link('Holm correction')}, which allows for testing {n_classes} classes. "
            "A winner is named only where the Holm-adjusted p < 0.05 (macro row: where the paired "
            "patient-bootstrap 95% CI of the difference excludes 0). '—': no significant difference, "
            "which is not evidence that the backbones are equal.")


def baseline_text(analysis: Analysis, cls: str) -> str | None:
    """The trivial thumbnail baseline's test AUC for ``cls`` (or the macro average), as a sentence."""
    base = analysis.baseline_auc("macro" if cls == MACRO else cls)
    if base is None:
        return None
    what = "the macro average" if cls == MACRO else cls
    return (f"{glossary.link('Thumbnail baseline', 'Trivial baseline')} (logistic regression on 32×32 thumbnails) "
            f"test {AUC} for {what}: **{base:.3f}**. A backbone not clearly above it may be using shortcuts, not lungs.")


def mean_ap_text(analysis: Analysis, archs: list[str]) -> str:
    """What the macro view shows instead of a precision-recall curve: each backbone's mean AP."""
    aps = []
    for arch in archs:
        ap = analysis.backbone(arch).macro.ap
        aps.append(f"{arch_label(arch)} {ap:.3f}" if ap is not None else f"{arch_label(arch)} n/a")
    return ("Precision–recall curves are per class: choose a class above. Mean "
            f"{glossary.link('Precision-recall curve', 'average precision')} over classes: " + ", ".join(aps) + ".")


def source_baseline_text(analysis: Analysis) -> str | None:
    """How well the thumbnails alone tell the image source (a shortcut a CNN could take), or None."""
    src = analysis.baseline_source
    if not src or src.get("accuracy") is None:
        return None
    return (f"A logistic regression on 32×32 thumbnails (the {glossary.link('Thumbnail baseline', 'thumbnail baseline')}) "
            f"tells the image source with accuracy **{src['accuracy']:.0%}** (always guessing '{src['majority']}': "
            f"{src['majority_accuracy']:.0%}).")


def confounding_for(analysis: Analysis, cls: str | None = None) -> list[str]:
    """Confounding sentences (all, or those naming ``cls``)."""
    details = analysis.confounding_details
    if cls is None or not details:
        return analysis.confounding
    return [d["sentence"] for d in details if d.get("class") == cls]


# ---------------------------------------------------------------- an external set's hospitals

def image_sources(images: pd.DataFrame, split: str | None = None) -> list[str]:
    """The distinct sources (hospitals) of ``images`` (of one ``split``), as the maps name them: the
    ``source`` column, else the ``dataset``; empty values left out."""
    if split is not None and "split" in images:
        images = images[images["split"].astype(str).str.lower() == split]
    src = images["source"].astype(str) if "source" in images else pd.Series("", index=images.index)
    if "dataset" in images:
        src = src.where(src.str.strip().str.len() > 0, images["dataset"].astype(str))
    return sorted({s.strip() for s in src if s.strip() and s.strip().lower() not in ("nan", "none", "unknown")})


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def no_source_text(site: str) -> str:
    """The note when an external set's images carry no source to compare with the training hospitals."""
    return (f"The images of {site} carry no source, so whether they come from the training hospitals cannot be "
            "checked: a small drop is evidence of transfer only if they do not.")


def shared_sources_text(training: list[str], external: list[str]) -> str | None:
    """The warning when an external set's sources (``external``) include hospitals of the training images
    (``training``); None when they share none."""
    shared = sorted(set(training) & set(external))
    if not shared:
        return None
    which = "hospital" if len(shared) == 1 else "hospitals"
    only = (" (all of its images)" if set(external) <= set(training) else
            f" (besides {_and_list(sorted(set(external) - set(training)))})")
    return (f"This external set shares the {which} {_and_list(shared)} with the training data{only}: a small drop is "
            "not evidence of transfer. A test of transfer needs images from a hospital the model was not trained on.")


# ---------------------------------------------------------------- curves

def _metrics(analysis: Analysis, arch: str, cls: str) -> ClassMetrics:
    b = analysis.backbone(arch)
    return b.macro if cls == MACRO else b.metrics(cls)


def auc_text(m: ClassMetrics) -> str:
    if m.auc is None:
        return "AUC n/a"
    ci = "" if m.ci_low is None else f" (95% CI {m.ci_low:.3f}–{m.ci_high:.3f})"
    return f"AUC {m.auc:.3f}{ci}{chance_mark(m.auc)}"


def roc_curves(analysis: Analysis, archs: list[str], cls: str) -> dict[str, dict]:
    """arch -> {"fpr", "tpr", "auc", "ci_low", "ci_high", "text"} for a class or ``MACRO``
    (None curve where the class has a single outcome in the test split)."""
    out = {}
    for arch in archs:
        m = _metrics(analysis, arch, cls)
        roc = m.roc or None
        out[arch] = {"fpr": roc["fpr"] if roc else None, "tpr": roc["tpr"] if roc else None,
                     "auc": m.auc, "ci_low": m.ci_low, "ci_high": m.ci_high, "text": auc_text(m)}
    return out


def missing_roc(analysis: Analysis, archs: list[str], cls: str) -> list[str]:
    """Backbones without a ROC curve for ``cls`` (a single outcome in the test split)."""
    return [a for a, c in roc_curves(analysis, archs, cls).items() if c["fpr"] is None]


def pr_curves(analysis: Analysis, archs: list[str], cls: str) -> dict[str, dict]:
    """arch -> {"precision", "recall", "ap", "prevalence"} of one class (None curve if undefined)."""
    out = {}
    for arch in archs:
        m = analysis.backbone(arch).metrics(cls)
        pr = m.pr or None
        out[arch] = {"precision": pr["precision"] if pr else None, "recall": pr["recall"] if pr else None,
                     "ap": m.ap, "prevalence": pr.get("prevalence") if pr else None}
    return out


# ---------------------------------------------------------------- per-class table

def _num(v) -> float:
    return np.nan if v is None else float(v)


def class_table(analysis: Analysis, archs: list[str], names: list[str], label=arch_label,
                pair: tuple[str, str] | None = None) -> pd.DataFrame:
    """One row per class (+ the macro average): positives in test, AUC and 95% CI per backbone, and for
    ``pair`` = (a, b) the difference a - b, its DeLong 95% CI, p-value, Holm-adjusted p-value and the
    winner, named only when the Holm-adjusted p < 0.05 (macro: when the paired bootstrap CI of the
    difference excludes 0). Numbers are floats (NaN where undefined), so the CSV is machine-readable.
    """
    cmp, flip = analysis.comparison(*pair) if pair else (None, False)
    sign = -1.0 if flip else 1.0
    rows = []
    for cls in class_options(names):
        first = _metrics(analysis, archs[0], cls)
        row = {"Class": "Macro average" if cls == MACRO else cls,
               "Test positives": np.nan if cls == MACRO else _num(first.n_pos)}
        for arch in archs:
            m = _metrics(analysis, arch, cls)
            row[f"{label(arch)} AUC"] = _num(m.auc)
            row[f"{label(arch)} CI low"] = _num(m.ci_low)
            row[f"{label(arch)} CI high"] = _num(m.ci_high)
        if pair and cmp is not None:
            a, b = pair
            c = cmp.macro if cls == MACRO else cmp.per_class(cls)
            diff = _num(c.get("diff")) * sign
            if cls == MACRO:  # no DeLong test for the macro: the paired patient bootstrap CI
                lo, hi = _num(c.get("boot_ci_low")) * sign, _num(c.get("boot_ci_high")) * sign
                p, p_holm = np.nan, np.nan
                significant = np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0)
            else:
                lo, hi = _num(c.get("ci_low")) * sign, _num(c.get("ci_high")) * sign
                p, p_holm = _num(c.get("p_value")), _num(c.get("p_holm"))
                significant = np.isfinite(p_holm) and p_holm < ALPHA
            if flip:
                lo, hi = hi, lo
            row.update({"Difference": diff, "Difference CI low": lo, "Difference CI high": hi,
                        "p-value (DeLong)": p, "p-value (Holm)": p_holm,
                        "Winner": (label(a) if diff > 0 else label(b)) if significant and np.isfinite(diff) else ""})
        rows.append(row)
    return pd.DataFrame(rows).set_index("Class")


def display_table(table: pd.DataFrame, archs: list[str], label=arch_label) -> pd.DataFrame:
    """``class_table`` as text: 'AUC (low–high)' per backbone, signed difference with CI, p-values."""
    out = pd.DataFrame(index=table.index)
    out["Test positives"] = [("" if not np.isfinite(v) else f"{int(v)}") for v in table["Test positives"]]
    for arch in archs:
        n = label(arch)
        out[f"{n} AUC (95% CI)"] = [auc_ci_text(a, lo, hi) for a, lo, hi in
                                    zip(table[f"{n} AUC"], table[f"{n} CI low"], table[f"{n} CI high"])]
    if "Difference" in table:
        out["Winner"] = [w or "—" for w in table["Winner"]]  # beside the AUCs: the first thing to read
        out["Difference (95% CI)"] = [ci_text(d, lo, hi, signed=True) for d, lo, hi in
                                      zip(table["Difference"], table["Difference CI low"], table["Difference CI high"])]
        out["p (Holm)"] = [p_text(p) if not np.isfinite(p) else f"{p_text(p)} ({p_text(h)})"
                           for p, h in zip(table["p-value (DeLong)"], table["p-value (Holm)"])]
    return out


def below_chance(auc) -> bool:
    """An AUC below 0.5: the model ranks the images the wrong way round more often than not."""
    return auc is not None and np.isfinite(auc) and float(auc) < 0.5


def chance_mark(auc) -> str:
    """What follows an AUC below 0.5 wherever one is written ('' otherwise)."""
    return f" — {WORSE_THAN_CHANCE}" if below_chance(auc) else ""


def auc_ci_text(v, lo, hi) -> str:
    """An AUC cell: '0.812 (0.780–0.843)', '0.452 (0.380–0.520) — worse than chance', 'n/a'."""
    return ci_text(v, lo, hi) + chance_mark(v)


def below_chance_note(*frames) -> str | None:
    """The caption under AUC tables of which some cell is marked worse than chance (None when none is)."""
    if not any(WORSE_THAN_CHANCE in str(v) for f in frames for v in np.asarray(f).ravel()):
        return None
    return BELOW_CHANCE_CAPTION


def ci_text(v, lo, hi, signed: bool = False) -> str:
    """'0.812 (0.780–0.843)', or signed '+0.031 (-0.010, +0.072)'; 'n/a' when undefined."""
    if v is None or not np.isfinite(v):
        return "n/a"
    f = "+.3f" if signed else ".3f"
    sep = ", " if signed else "–"  # an en dash would read as a minus sign between signed numbers
    ci = "" if not (np.isfinite(lo) and np.isfinite(hi)) else f" ({lo:{f}}{sep}{hi:{f}})"
    return f"{v:{f}}{ci}"


def p_text(p) -> str:
    if p is None or not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------- test split

def test_arrays(images: pd.DataFrame, labels, probs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, np.ndarray]:
    """(test one-hot (N, C), arch -> test probabilities (N, C) float64, images.parquet rows of the test images)."""
    test = (images["split"].astype(str).str.lower() == "test").to_numpy()
    rows = np.flatnonzero(test)
    onehot = labels.onehot(images["labels"].to_numpy())[test]
    return onehot, {a: np.asarray(p, np.float64)[test] for a, p in probs.items()}, rows



# ---------------------------------------------------------------- calibration

def calibration_class(task: str, cls: str) -> str | None:
    """The class whose own calibration is shown: ``cls`` for multi-label, None (the overall view) for
    multi-class or the macro average."""
    return None if (task == MULTICLASS or cls == MACRO) else cls


def has_calibration(analysis: Analysis, archs: list[str]) -> bool:
    return any(analysis.backbone(a).calibration for a in archs)


def reliability_caption(task: str, cls: str, ext=None) -> str:
    """How to read the reliability diagram; on the external set ``ext`` when one is chosen (its images,
    the temperature fitted on the internal validation split)."""
    per_class = calibration_class(task, cls)
    what = ("top-class probability vs how often the top class is right" if task == MULTICLASS else
            (f"probability of {cls} vs how often {cls} is present" if per_class else
             "every (image, finding) probability pooled vs how often the finding is present"))
    where = "test" if ext is None else f"the {ext.name} images"
    return (f"{glossary.link('Reliability diagram')} on {where}: {what}, in 15 equal-width bins (marker size ∝ number "
            f"of predictions). On the dotted diagonal the probabilities mean what they say "
            f"({glossary.link('Calibration', 'calibration')}). {glossary.link('ECE')}: the average gap (lower is "
            f"better); {glossary.link('Brier score', 'Brier')}: mean squared error of the probabilities (lower is "
            f"better). The {glossary.link('Temperature scaling', 'temperature')} is fitted on "
            f"{'validation' if ext is None else 'the internal validation split and carried over'}; T > 1 "
            "softens over-confident probabilities. It changes no ranking, so AUCs stay the same.")


def reliability(analysis: Analysis, arch: str, when: str, cls: str | None = None) -> list[dict]:
    """Reliability bins (``centre``, ``confidence``, ``accuracy``, ``count``) before/after; per class
    for multi-label when ``cls`` is given, else the stored default (top class / pooled)."""
    return analysis.backbone(arch).reliability(when, cls)


def calibration_table(analysis: Analysis, archs: list[str], label=arch_label, cls: str | None = None,
                      where: str = "test") -> pd.DataFrame:
    """Per backbone: temperature, ECE and Brier before/after temperature scaling (on ``where``: the test
    split, or an external set read through ``views.external.SiteMetrics``). ``cls`` (multi-label only):
    that class's ECE/Brier/temperature instead of the averages."""
    rows = {}
    for arch in archs:
        b = analysis.backbone(arch)
        if not b.calibration:
            rows[label(arch)] = {"Temperature": "—"}
            continue
        t = b.temperature
        if isinstance(t, list):
            names = analysis.names
            t = t[names.index(cls)] if cls in names else None
            t_text = "per class" if t is None else f"{t:.2f}"
        else:
            t_text = "—" if t is None else f"{t:.2f}"
        r = {"Temperature": t_text}
        for when in ("before", "after"):
            s = b.calibration_scores(when, cls)
            r[f"ECE {when}"] = "—" if s["ece"] is None else f"{s['ece']:.3f}"
            r[f"Brier {when}"] = "—" if s["brier"] is None else f"{s['brier']:.3f}"
        rows[label(arch)] = r
    return pd.DataFrame(rows).rename_axis(f"Calibration ({where})")


# ---------------------------------------------------------------- subgroups

def subgroup_table(analysis: Analysis, archs: list[str], cls: str, label=arch_label) -> pd.DataFrame:
    """Long table for one class: column, group, n images / patients / positives, per backbone AUC + CI."""
    rows = {}
    for arch in archs:
        for r in analysis.backbone(arch).subgroup_rows:
            if r["class"] != cls:
                continue
            key = (r["column"], r["value"])
            row = rows.setdefault(key, {"Attribute": COLUMN_NAMES.get(r["column"], r["column"]), "Group": r["value"],
                                        "Images": r["n"], "Patients": r["n_patients"], "Positives": r["n_pos"]})
            row[f"{label(arch)} AUC"] = _num(r["auc"])
            row[f"{label(arch)} CI low"] = _num(r["ci_low"])
            row[f"{label(arch)} CI high"] = _num(r["ci_high"])
    return pd.DataFrame(list(rows.values()))


def subgroup_display(table: pd.DataFrame, archs: list[str], label=arch_label) -> pd.DataFrame:
    """``subgroup_table`` as text, one row per subgroup ('Source: hospital-A', as the forest plot labels it):
    counts, then 'AUC (low–high)' per backbone that has a column."""
    shown = table[["Images", "Patients", "Positives"]].copy()
    shown.index = pd.Index([f"{a}: {g}" for a, g in zip(table["Attribute"], table["Group"])], name="Subgroup")
    for arch in archs:
        n = label(arch)
        if f"{n} AUC" in table:
            shown[f"{n} AUC (95% CI)"] = [auc_ci_text(v, lo, hi) for v, lo, hi in
                                          zip(table[f"{n} AUC"], table[f"{n} CI low"], table[f"{n} CI high"])]
    return shown
