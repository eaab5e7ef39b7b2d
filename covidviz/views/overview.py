"""The Overview page's content, Streamlit-free: the identity line and configuration summary, images
per class and split, patients, sources, the confounding sentences (the analysis's, or a labelled
fallback), the training record, the AUC table (laid out beside its chart only where it fits) and chart, and
the external test sets' table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from covidviz.data.labels import MULTILABEL, LabelSpace, split_labels
from covidviz.data.table import SPLITS
from covidviz.runs.external import ExternalSet
from covidviz.runs.records import Analysis, ManifestInfo
from covidviz.views import glossary
from covidviz.views.compare import chance_mark
from covidviz.views.external import auc_ci_text, drop_text
from covidviz.views.style import (
    CHART_FONT,
    COLUMN_GAP_PX,
    MAIN_WIDTH,
    NO_FINDING,
    SPLIT_LABELS,
    arch_label,
    backbone_colours,
    format_seconds,
    label_order,
    min_table_width,
)

SMALL_TEST = 100  # below this many test images an AUC's 95% interval is typically wider than ±0.1
FALLBACK_CONFOUNDING = "Not analysed yet: a quick check of the class x source table says "
CRAMERS_V = glossary.link("Cramér's V")
NO_CONFOUNDING = ("The analysis found no attribute (source, sex, age group, view) strongly associated with a "
                  f"class ({CRAMERS_V} below the warning level).")
SOURCES_NOTE = ("A class drawn mostly from one source lets a model learn the source (scanner, hospital, text markers) "
                "instead of the disease: compare the rows before trusting the AUCs.")
CONFIG_KEYS = (("epochs", "Epochs (max)"), ("batch_size", "Batch size"), ("lr", "Learning rate"),
               ("weight_decay", "Weight decay"), ("patience", "Early-stopping patience"),
               ("weights", "Initial weights asked for"), ("seed", "Seed"))


def _findings(images: pd.DataFrame) -> pd.DataFrame:
    """One row per (image, finding); images without a finding get ``NO_FINDING``."""
    df = images[["image_id", "split", "source", "dataset", "patient_id"]].copy()
    df["finding"] = [split_labels(c) or [NO_FINDING] for c in images["labels"]]
    return df.explode("finding")


def label_split_counts(images: pd.DataFrame, labels: LabelSpace) -> pd.DataFrame:
    """Images per class x split (multi-label: positives per finding, a 'No finding' row and an
    'Images' row, since one image can count for several findings)."""
    f = _findings(images)
    table = pd.crosstab(f["finding"], f["split"]).reindex(index=label_order(labels), columns=list(SPLITS),
                                                           fill_value=0)
    if labels.task == MULTILABEL:
        per_split = images["split"].value_counts().reindex(list(SPLITS), fill_value=0)
        table.loc["Images"] = per_split.to_numpy()
    table["All"] = table.sum(axis=1)
    table.index.name, table.columns.name = "Class", None
    return table.rename(columns=SPLIT_LABELS).astype(int)


def patients_per_split(images: pd.DataFrame) -> pd.DataFrame:
    """Distinct patients and images per split."""
    out = pd.DataFrame({
        "Patients": images.groupby("split")["patient_id"].nunique(),
        "Images": images.groupby("split").size(),
    }).reindex(list(SPLITS), fill_value=0).astype(int)
    out.index = [SPLIT_LABELS[s] for s in out.index]
    return out


def leaked_patients(images: pd.DataFrame) -> int:
    """Patients with images in more than one split (must be 0: leakage inflates test metrics)."""
    return int((images.groupby("patient_id")["split"].nunique() > 1).sum())


def source_label_counts(images: pd.DataFrame, labels: LabelSpace) -> pd.DataFrame:
    """Images per class (rows) x source (columns): a class that comes from one source only lets a
    model learn the source (scanner, hospital, text markers) instead of the disease."""
    f = _findings(images)
    src = f["source"].where(f["source"].astype(str).str.len() > 0, f["dataset"])
    table = pd.crosstab(f["finding"], src.rename("Source"))
    table = table.reindex(index=[c for c in label_order(labels) if c in table.index], fill_value=0)
    table.index.name, table.columns.name = "Class", None
    return table.astype(int)


def source_confounding(table: pd.DataFrame, dominant: float = 0.8, elsewhere: float = 0.2) -> list[str]:
    """Plain-language warnings from a class x source table (``source_label_counts``).

    Flags a class when one source supplies at least ``dominant`` of its images but at most
    ``elsewhere`` of the other classes' images: then "which hospital" predicts the class, and a model
    can score a high AUC without looking at the lungs (the classic COVID-19 dataset pitfall).
    """
    if table.shape[1] < 2:
        return []
    notes = []
    for cls, row in table.iterrows():
        if row.sum() == 0:
            continue
        src = row.idxmax()
        share = row[src] / row.sum()
        others = table.drop(index=cls)
        total_others = others.to_numpy().sum()
        other_share = others[src].sum() / total_others if total_others else 0.0
        if share >= dominant and other_share <= elsewhere:
            supplies = "none" if other_share == 0 else f"only {other_share:.0%}"
            notes.append(f"{share:.0%} of the {cls} images come from source '{src}', which supplies {supplies} "
                         f"of the other images: a model can score well by recognising "
                         f"'{src}' images (scanner, markers, patient group) rather than {cls} itself.")
    return notes


def auc_table(exp, split: str = "test") -> pd.DataFrame:
    """Per-class AUC (rows: classes + 'Macro average', columns: backbones); NaN where undefined."""
    rows = list(exp.labels.names) + ["Macro average"]
    data = {}
    for arch in exp.backbones:
        rec = exp.record(arch)
        per_class = rec.aucs(split)
        values = [per_class.get(name) for name in exp.labels.names] + [rec.macro_auc(split)]
        data[arch_label(arch)] = [np.nan if v is None else float(v) for v in values]
    return pd.DataFrame(data, index=pd.Index(rows, name="Class"))


# The AUC table beside its chart: table : chart widths, tried in turn; the first whose table column holds
# the table at the narrowest layout (``MAIN_WIDTH``) wins, else the table goes above the chart.
AUC_COLUMNS = ([2, 3], [1, 1])


def auc_display(aucs: pd.DataFrame) -> pd.DataFrame:
    """``auc_table`` as shown: 3 decimals, "—" where undefined, an AUC below 0.5 marked as such."""
    return aucs.map(lambda v: "—" if pd.isna(v) else f"{v:.3f}{chance_mark(v)}")


def auc_columns(display: pd.DataFrame, width: int = MAIN_WIDTH) -> list[int] | None:
    """``st.columns`` spec for the AUC table and its chart side by side, or None: stack them (the table
    would scroll sideways, hiding backbones, in its column; e.g. 14 findings and three backbones)."""
    need = min_table_width(display) + COLUMN_GAP_PX
    return next((spec for spec in AUC_COLUMNS if need <= width * spec[0] / sum(spec)), None)


def dataset_tables(images: pd.DataFrame, labels: LabelSpace) -> dict:
    """Dataset-card tables ``label_split``, ``patients``, ``source_label`` and ``leaked_patients``."""
    return {"label_split": label_split_counts(images, labels),
            "patients": patients_per_split(images),
            "source_label": source_label_counts(images, labels),
            "leaked_patients": leaked_patients(images)}


def example_rows(images: pd.DataFrame, labels: LabelSpace, split: str = "test",
                 per_label: int = 8) -> dict[str, tuple[list[int], int]]:
    """Label -> (first ``per_label`` image rows of ``split`` with that label, how many there are)."""
    f = _findings(images)
    f = f[f["split"] == split]
    return {name: (list(f.index[f["finding"] == name][:per_label]), int((f["finding"] == name).sum()))
            for name in label_order(labels)}


# ---------------------------------------------------------------- identity

def identity_caption(exp) -> str:
    """"created … · completed … · covidviz … · folder `…`" (the parts the manifest has)."""
    info = ManifestInfo.from_json(exp.manifest)
    dates = [f"created {info.created}" if info.created else "",
             f"completed {info.completed}" if info.completed else "",
             f"covidviz {info.version}" if info.version else ""]
    return " · ".join(d.replace("T", " ") for d in dates if d) + f" · folder `{exp.path}`"


def config_text(info: ManifestInfo) -> str:
    """One markdown line: the data specs and the main training settings."""
    settings = info.settings
    parts = [f"{label}: **{settings[k]}**" for k, label in CONFIG_KEYS if settings.get(k) is not None]
    specs = ", ".join(f"`{s}`" for s in info.data_specs)
    if specs:
        parts.insert(0, f"Data: {specs}")
    return " · ".join(parts)


def init_warnings(exp) -> list[str]:
    """One markdown sentence per backbone whose initialisation went wrong (e.g. random instead of ImageNet)."""
    out = []
    for arch in exp.backbones:
        warning = exp.record(arch).init.get("warning")
        if warning:
            out.append(f"**{arch_label(arch)}:** {warning}")
    return out


# ---------------------------------------------------------------- dataset card

def single_source_text(sources: pd.DataFrame) -> str | None:
    """Why the class x source table is not shown (one source only), or None when it is."""
    if sources.shape[1] > 1:
        return None
    return (f"All images come from one source ({', '.join(map(str, sources.columns)) or 'unknown'}), so this "
            "experiment cannot show source confounding; it may still exist across datasets.")


def confounding_warnings(analysis: Analysis | None, source_table: pd.DataFrame) -> list[str]:
    """Markdown warnings: the analysis's Cramér's V sentences (the ones the Compare page shows); for an
    experiment not analysed yet, the class x source share rule's, clearly labelled as a fallback."""
    if analysis is not None:
        return [f"**Confounding.** {s}" for s in analysis.confounding]
    return [f"**Possible source confounding.** {FALLBACK_CONFOUNDING}{note}"
            for note in source_confounding(source_table)]


def sources_table(info: ManifestInfo) -> pd.DataFrame:
    """The datasets the experiment was built from (one row each; empty when unknown)."""
    return pd.DataFrame(info.sources)


def skipped_table(info: ManifestInfo) -> pd.DataFrame:
    """The images that could not be read: ``path`` and ``reason``."""
    return pd.DataFrame(info.skipped, columns=["path", "reason"])


# ---------------------------------------------------------------- model card

def n_test_images(exp) -> list[int | None]:
    """Test images per backbone (None where the manifest does not say)."""
    return [exp.record(a).n("test") for a in exp.backbones]


def n_text(ns: list) -> str:
    """"n = 120", "n = 100 / 120" or "n unknown"."""
    known = sorted({int(n) for n in ns if n is not None})
    return f"n = {known[0]}" if len(known) == 1 else ("n = " + " / ".join(map(str, known)) if known else "n unknown")


def auc_caption(ns: list) -> str:
    """What the test AUC table and chart show, with the statistics linked to the glossary."""
    return (f"{glossary.link('AUC', 'Area under the ROC curve')} on the held-out test images ({n_text(ns)}): how well "
            "the model ranks images with that class above images without it. 0.5 (dotted line) is chance, 1.0 is "
            f"perfect; the {glossary.link('Macro average', 'macro average')} weighs every class the same. Blank: the "
            "class is absent from the test split, so its AUC is undefined.")


def small_test_warning(ns: list, small: int = SMALL_TEST) -> str | None:
    """A warning when the smallest test set is below ``small`` images (AUCs too uncertain to quote)."""
    known = [int(n) for n in ns if n is not None]
    if not known or min(known) >= small:
        return None
    return (f"Only {min(known)} test images: these AUCs are very uncertain and may change a lot with other "
            "patients. Use them to compare backbones on this split, not as expected accuracy.")


def training_record(exp) -> pd.DataFrame:
    """One column per backbone, one row per fact: reads like a model card and fits any width."""
    record = {}
    for arch in exp.backbones:
        b = exp.record(arch)
        best_auc = b.get("best_val_auc")
        facts = {
            "Initial weights": init_text(b.init),
            "Epochs trained": _text(b.get("epochs_trained")),
            "Best epoch (kept)": _text(b.get("best_epoch")),
            "Best validation AUC (macro)": "—" if best_auc is None else f"{float(best_auc):.3f}",
            "Training time": format_seconds(b.get("train_seconds")),
            "Device": _text(b.get("device")),
            "Embedding size": _text(b.get("feature_dim")),
        }
        if b.get("stopped_early") is not None:
            facts["Stopped early"] = "yes" if b.get("stopped_early") else "no"
        record[arch_label(arch)] = facts
    # Strings throughout: one column mixes counts, times and names.
    return pd.DataFrame(record).fillna("—").rename_axis("Training")


def _text(value) -> str:
    return "—" if value is None else str(value)


def init_text(init: dict) -> str:
    """Where the starting weights really came from ('source'), not only what was asked ('weights')."""
    asked, source = init.get("weights"), str(init.get("source") or init.get("weights") or "—")
    if source == "random":
        return "Random (no pretraining)" + ("" if asked in (None, "", "none") else f"; asked for '{asked}'")
    if source == "imagenet":
        return "ImageNet (pretrained)"
    for prefix, text in (("experiment:", "Earlier experiment "), ("file:", "File ")):
        if source.startswith(prefix):
            return text + source.removeprefix(prefix)
    return source


def auc_chart(aucs: pd.DataFrame, archs) -> go.Figure:
    """Horizontal grouped bars of ``auc_table`` (columns: backbone display names); class names stay
    readable however many findings there are. ``archs``: the experiment's backbones (fixes the colours)."""
    colours = backbone_colours(archs)
    fig = go.Figure()
    for backbone in aucs.columns:
        fig.add_bar(y=list(aucs.index), x=aucs[backbone], name=backbone, orientation="h",
                    marker_color=colours.get(backbone),
                    text=[f"{v:.2f}" if pd.notna(v) else "n/a" for v in aucs[backbone]], textposition="outside",
                    hovertemplate="%{y}<br>" + backbone + ": AUC %{x:.3f}<extra></extra>")
    # Unlabelled: a text annotation would sit on the bars; the caption explains the dotted line.
    fig.add_vline(x=0.5, line_dash="dot", line_color="#555")
    bar_px = 16 * len(aucs.columns) + 12
    fig.update_layout(barmode="group", xaxis=dict(title="Test AUC", range=[0, 1.12], tickvals=[i / 10 for i in range(11)]),
                      yaxis=dict(autorange="reversed", title=None), legend_title_text="Backbone",
                      font=CHART_FONT, height=max(280, 90 + bar_px * len(aucs)),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0), margin=dict(t=40, b=10, l=10, r=10))
    return fig


PHANTOM_NOTE = (
    "**These images are synthetic phantoms, not real X-rays.** covidviz draws them (`covidviz/data/synthetic.py`) "
    "so that the demo runs anywhere and every lesion comes with its exact pixel mask, against which the heat maps "
    "are scored. On them, *COVID-19* means a few hazy, patchy ground-glass blobs in the outer lower zones of both "
    "lungs; *Pneumonia* one dense consolidation filling much of one lobe of one lung; *Normal* the same kind of "
    "anatomy with no lesion. A lead \"R\"/\"L\" marker sits in a corner of some films{marker}.")


def phantom_note(exp) -> str | None:
    """What the demo's phantoms are and what its classes mean on them; None for real data."""
    sources = (exp.manifest.get("dataset") or {}).get("sources") or []
    if not sources or any(s.get("kind") != "synthetic" for s in sources):
        return None
    confounded = any("confounder=0.0" not in str(s.get("description", "")) for s in sources)
    marker = (": here it goes with COVID-19 more often than with the other classes, a deliberate shortcut"
              if confounded else ", at the same rate in every class (no shortcut)")
    return PHANTOM_NOTE.format(marker=marker)


def _found(findings: dict | None) -> str:
    """"DenseNet121 ranks COVID-19 with the lungs hidden" for the audit's findings ('' when none)."""
    parts = [f"{arch_label(f.arch)}'s {f.cls} score: {f.text}" for f in (findings or {}).values()]
    return "; ".join(parts)


def baseline_sentence(exp, analysis: Analysis | None, findings: dict | None = None,
                      audited: bool = False) -> str | None:
    """How each backbone's test macro AUC compares with the thumbnail baseline's, in a sentence a clinician
    can read (and why a thumbnail can win on phantoms), agreeing with the shortcut audit: ``findings``
    (``reliability.shortcut_findings``), ``audited`` (the experiment has an audit). None without an
    analysed baseline."""
    base = analysis.baseline_auc("macro") if analysis is not None else None
    if base is None:
        return None
    aucs = {a: exp.record(a).macro_auc("test") for a in exp.backbones}
    losing = [a for a, v in aucs.items() if v is not None and v < base]
    named = ", ".join(f"{arch_label(a)} {v:.2f}" for a, v in aucs.items() if v is not None)
    text = (f"Test macro AUC: {named}; a logistic regression on 32×32-pixel thumbnails (the "
            f"{glossary.link('Thumbnail baseline', 'thumbnail baseline')}) scores {base:.2f}.")
    found = _found(findings)
    if not losing:
        if found:
            return (text + " Both backbones beat it, but that does not show they read the lungs: the "
                    f"{glossary.link('Shortcut audit', 'shortcut audit')} found a shortcut ({found}).")
        if audited:
            return (text + " Both backbones beat it: they use more than the coarse brightness pattern of the film, "
                    "and the shortcut audit found no sign of a shortcut.")
        return (text + " Both backbones beat it: they use more than a 32×32 thumbnail shows. Whether that is the "
                "lungs or a shortcut (markers, hospital processing), only the shortcut audit can tell: it has not "
                "been run on this experiment (`python train.py analyze EXPERIMENT --shortcuts`).")
    text += (f" The thumbnail beats {', '.join(arch_label(a) for a in losing)}: the difference between these "
             "classes is a large, smooth change in how dense a region of the lung is, which a 32×32 thumbnail already "
             "shows, while deep networks trained from scratch on a few hundred images for a few epochs have not yet "
             "learnt more than that.")
    if found:
        return text + f" The shortcut audit also found a shortcut: {found}."
    return text + " It is not a sign of a hidden shortcut unless the shortcut audit on Compare says so."


# ---------------------------------------------------------------- external test sets

def external_sets_text(sets: list[ExternalSet]) -> str:
    """One markdown line per external set: its data, images scored and left out."""
    return "  \n".join(f"**{s.name}**: {', '.join(f'`{x}`' for x in s.specs) or 'data not recorded'} · "
                       f"{s.n_images:,} images scored, {len(s.left_out):,} left out" for s in sets)


def external_table(sets: list[ExternalSet], archs: list[str]) -> pd.DataFrame:
    """One row per external set and backbone: the set's macro AUC (95% CI) and the drop from the internal
    test split (95% CI). Long, not one column pair per backbone: that table scrolled sideways at 1280 px."""
    rows = [{"Site": s.name, "Backbone": arch_label(arch),
             "Macro AUC (95% CI)": auc_ci_text(s.macro(arch)) if arch in s.archs else "not scored",
             "Drop from internal (95% CI)": drop_text(s.drop(arch, "macro")) if arch in s.archs else "—"}
            for s in sets for arch in archs]
    return pd.DataFrame(rows, columns=["Site", "Backbone", "Macro AUC (95% CI)", "Drop from internal (95% CI)"])
