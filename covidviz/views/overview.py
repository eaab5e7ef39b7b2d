"""The Overview page's tables, Streamlit-free: images per class and split, patients, sources, the
AUC table, training curves and the confounding sentences (the analysis's, or a labelled fallback)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from covidviz.data.labels import MULTILABEL, LabelSpace, split_labels
from covidviz.data.table import SPLITS
from covidviz.views.style import NO_FINDING, SPLIT_LABELS, arch_label, label_order


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


