"""The per-image table every dataset adapter returns: one row per image, the same columns everywhere.

Columns (``COLUMNS``):

- ``image_id``: unique within an experiment (prefixed by the dataset so merges cannot collide)
- ``path``: absolute path of the original file
- ``labels``: '|'-separated canonical label names ('' = no finding)
- ``patient_id``: the unit of splitting (prefixed by the dataset)
- ``dataset``: the adapter kind that produced the row (folder, csv, nih, covid-chestxray, synthetic)
- ``source``, ``view``, ``sex``, ``age``: metadata, '' / NaN when unknown
- ``given_split``: 'train' / 'val' / 'test' when the dataset prescribes one, else ''
- ``bbox``: JSON list of ``{"label", "x", "y", "w", "h"}`` in *fractions* of the image size, or ''
- ``mask``: path of a lesion mask image (synthetic phantoms), or ''
- ``lung_mask``: path of the lung fields drawn by an annotator (the Radiography Database's ``masks/``),
  or '' (the lung analysis then segments the film itself); experiments written before it lack it
"""

from __future__ import annotations

import pandas as pd

COLUMNS = [
    "image_id", "path", "labels", "patient_id", "dataset", "source", "view", "sex", "age",
    "given_split", "bbox", "mask", "lung_mask",
]
SPLITS = ("train", "val", "test")


def make_table(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Normalise adapter output to ``COLUMNS`` with consistent dtypes."""
    df = pd.DataFrame(rows).copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = float("nan") if col == "age" else ""
    df = df[COLUMNS]
    for col in COLUMNS:
        if col == "age":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        else:
            df[col] = df[col].fillna("").astype(str)
    df["sex"] = df["sex"].str.upper().str[:1].where(df["sex"].str.upper().str[:1].isin(["M", "F"]), "")
    df["given_split"] = df["given_split"].str.lower().replace({"valid": "val", "validation": "val"})
    bad = ~df["given_split"].isin(("",) + SPLITS)
    if bad.any():
        raise ValueError(f"unknown split values {sorted(df.loc[bad, 'given_split'].unique())}; use train/val/test")
    return df.reset_index(drop=True)


def concat_tables(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Merge several adapters' tables; image ids must stay unique."""
    df = pd.concat(tables, ignore_index=True) if tables else make_table([])
    dup = df["image_id"][df["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"duplicate image ids after merging datasets, e.g. {list(dup[:3])}")
    return df
