"""Dataset adapters: turn each supported on-disk layout into the one per-image table of ``table.py``.

A dataset is named on the command line (``train.py --data``) by a *spec* ``KIND:ARGUMENT``:

``folder:PATH``
    Class-per-folder. COVID-19 Radiography Database (``COVID/ Normal/ Viral Pneumonia/
    Lung_Opacity/``, each with or without an ``images/`` level) and
    Kermany (``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}``). Folder names are canonicalised
    (``Viral Pneumonia`` -> ``Pneumonia``, ``NORMAL`` -> ``Normal``, ``COVID`` -> ``COVID-19``).
    The class is the folder right below a ``train``/``val``/``test`` folder when there is one, else
    the first folder below the wrapper folders all images share; ``images`` levels are skipped.
    Split folders give ``given_split``. A given ``val`` that is tiny (Kermany's is 16 images, under
    5 % of train+val) or lacks a class is folded into ``train`` so the splitter carves a usable
    validation set out of it by patient. Patient ids come from Kermany file names
    (``person123_bacteria_456.jpeg`` -> ``person123``; ``IM-0115-0001.jpeg`` and
    ``NORMAL2-IM-1427-0001.jpeg`` -> ``IM-0115``/``IM-1427``), otherwise the file stem (one image
    per patient). Files with the same class, split and name found twice (the Kaggle Kermany zip
    ships a nested copy of itself) are loaded once and the copy is reported as skipped. ``masks/``
    (or ``mask/``) folders hold no X-rays: a mask there named like an image (same stem, any image
    suffix) beside that image's ``images/`` level, or beside the image itself (``COVID/images/x.png``
    + ``COVID/masks/x.png``, the Radiography Database's lung masks), is recorded as the image's
    ``lung_mask``; masks without an image are counted and ignored.
``csv:PATH``
    Generic manifest: a CSV file, or a folder holding ``metadata.csv``. Columns (names matched
    case-insensitively, with common variants): ``path`` (relative to the CSV's folder or absolute),
    ``label`` (one class) or ``labels`` (``|``-separated findings), optional ``patient_id``,
    ``split``, ``source``, ``view``, ``sex``, ``age``, ``mask`` (a lesion mask), ``lung_mask`` (the
    lung fields, drawn by an annotator), ``bbox``. The task is multi-label
    when the column is ``labels`` or any cell holds ``|``; otherwise multi-class.
``nih:PATH``
    NIH ChestX-ray14 release folder: ``Data_Entry_2017*.csv``, images in ``images/``,
    ``images_001/images`` ... or ``images_001`` ...; optional ``train_val_list.txt`` /
    ``test_list.txt`` and ``BBox_List_2017.csv``.
``covid-chestxray:PATH``
    The ieee8023 COVID-19 image data collection (``metadata.csv`` + ``images/``); frontal X-rays only.
``synthetic:N[:OPTIONS]``
    ``N`` procedural phantoms (``covidviz.data.synthetic``), generated once into a cache folder keyed by
    the parameters and the generator's source. OPTIONS are ``,`` or ``:`` separated: the flag
    ``multilabel``, and ``difficulty=F``, ``confounder=F``, ``seed=I``, ``size=I``. Examples:
    ``synthetic:600``, ``synthetic:600:multilabel``, ``synthetic:600:difficulty=0.3,confounder=0.8``.
    ``seed`` defaults to ``load_dataset``'s seed.

Ids. ``image_id`` is ``KIND:NAME/<path relative to the root>`` (NAME: the dataset folder's name), so
merged datasets cannot collide. ``patient_id`` is prefixed the same way (``folder:NAME/...``,
``csv:NAME/...``), except where the id is already globally namespaced: NIH patients are
``nih:<Patient ID>``, ieee8023 patients ``ieee8023:<patientid>``, and CSV ids that already carry a
``namespace:`` prefix (``covid3``'s ``nih:1036``) are kept. That way the *same* NIH patient found in
two merged datasets stays one patient for the splitter: grouping too much is harmless, grouping too
little would leak.

Broken inputs. With ``check_images`` every referenced file is checked cheaply (it exists and its
header gives a size); failures are skipped, listed in ``Dataset.skipped`` as ``(path, reason)`` and
logged as a warning, never dropped silently. No usable image -> ``ValueError`` naming the path.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from covidviz.data.imageio import image_size
from covidviz.data.labels import (
    COVID,
    MULTICLASS,
    MULTILABEL,
    NORMAL,
    PNEUMONIA,
    LabelSpace,
    canonical,
    infer_label_space,
    join_labels,
    split_labels,
)
from covidviz.data.table import concat_tables, make_table

log = logging.getLogger(__name__)

KINDS = ("folder", "csv", "nih", "covid-chestxray", "synthetic")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
_SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
# A given val smaller than this share of train+val is too small to pick checkpoints on (Kermany: 16
# of 5232 images); it is folded into train and the splitter carves a real one by patient.
MIN_GIVEN_VAL_SHARE = 0.05
_NAMESPACED = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*:\S")


@dataclass
class Dataset:
    """One loaded ``--data`` source."""

    kind: str
    root: str
    task: str                              # 'multiclass' or 'multilabel'
    table: pd.DataFrame                    # table.COLUMNS, one row per usable image
    skipped: list[tuple[str, str]]         # (path, reason) of every image left out
    description: str                       # one line for the dataset card
    name: str = ""                         # the id prefix's NAME part
    notes: list[str] = field(default_factory=list)  # rows excluded on purpose (e.g. lateral views)


# --------------------------------------------------------------------------------------------- specs

def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:ARGUMENT`` (the argument may itself contain ':'); validates the kind."""
    kind, sep, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or not arg.strip():
        raise ValueError(
            f"bad dataset spec {spec!r}: expected KIND:PATH (or synthetic:N[:options]) with KIND one of "
            f"{', '.join(KINDS)}; e.g. 'folder:/data/COVID-19_Radiography_Dataset' or 'synthetic:600'")
    return kind, arg.strip()


def parse_synthetic_options(arg: str, seed: int = 0) -> dict:
    """``'600:multilabel,difficulty=0.3'`` -> keyword arguments of ``make_synthetic_dataset``."""
    head, *rest = re.split(r"[,:]", arg)
    try:
        n = int(head)
    except ValueError:
        raise ValueError(f"synthetic spec needs an image count first, e.g. 'synthetic:600'; got {arg!r}") from None
    if n < 1:
        raise ValueError(f"synthetic image count must be positive, got {n}")
    opts = {"n": n, "seed": int(seed), "size": 256, "difficulty": 0.5, "multilabel": False, "confounder": 0.0}
    casts = {"seed": int, "size": int, "difficulty": float, "confounder": float}
    for item in filter(None, (r.strip() for r in rest)):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if key == "multilabel" and not eq:
            opts["multilabel"] = True
        elif key == "multilabel":
            opts["multilabel"] = value.strip().lower() in ("1", "true", "yes", "on")
        elif key in casts and eq:
            try:
                opts[key] = casts[key](value)
            except ValueError:
                raise ValueError(f"synthetic option {key}={value!r} is not a {casts[key].__name__}") from None
        else:
            raise ValueError(f"unknown synthetic option {item!r}; use multilabel, difficulty=F, confounder=F, "
                             "seed=I, size=I (separated by ',' or ':')")
    return opts


# ----------------------------------------------------------------------------------------- helpers

def _norm_col(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def _parse_age(value) -> float:
    """Ages as numbers, '058Y' (old NIH), '6M', '10D'; impossible ages (NIH has a few >400) -> NaN."""
    if value is None:
        return math.nan
    text = str(value).strip().upper()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([YMWD]?)", text)
    if not m:
        return math.nan
    age = float(m.group(1)) / {"": 1, "Y": 1, "M": 12, "W": 52, "D": 365}[m.group(2)]
    return age if 0 <= age <= 120 else math.nan


def _check_one(path: str) -> str:
    """'' when the image header reads, else why not (cheap: no pixel decoding)."""
    try:
        if not os.path.isfile(path):
            return "file not found"
        w, h = image_size(path)
        if w <= 0 or h <= 0:
            return f"image header gives size {w}x{h}"
        return ""
    except Exception as exc:  # PIL/pydicom raise many types for broken files
        return f"unreadable image header ({type(exc).__name__}: {exc})"


def _check_images(rows: list[dict], skipped: list[tuple[str, str]], check: bool) -> list[dict]:
    """Keep rows whose image is readable; report the others into ``skipped``."""
    if not rows:
        return rows
    if check:
        with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
            reasons = list(pool.map(_check_one, [r["path"] for r in rows], chunksize=64))
    else:
        reasons = [""] * len(rows)
    kept = []
    for row, reason in zip(rows, reasons):
        if reason:
            skipped.append((row["path"], reason))
        else:
            kept.append(row)
    return kept


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _finish(kind: str, root: Path, name: str, task: str, rows: list[dict], skipped: list[tuple[str, str]],
            description: str, notes: list[str] | None = None) -> Dataset:
    if not rows:
        why = f"; {len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise ValueError(f"{kind} dataset at {root} has no usable images{why}")
    if skipped:
        by_reason: dict[str, int] = {}
        for _, reason in skipped:
            key = reason.split(" (")[0]
            by_reason[key] = by_reason.get(key, 0) + 1
        log.warning("%s:%s: skipped %d of %d images (%s); first: %s: %s", kind, root, len(skipped),
                    len(rows) + len(skipped), ", ".join(f"{v} {k}" for k, v in by_reason.items()),
                    skipped[0][0], skipped[0][1])
    for row in rows:
        row.setdefault("dataset", kind)
    table = make_table(rows)
    dup = table["image_id"].duplicated()
    if dup.any():  # adapters dedupe themselves; this is a guard, not a code path
        raise ValueError(f"{kind} dataset at {root} lists images twice, e.g. {list(table.loc[dup, 'image_id'][:3])}")
    n_pat = table["patient_id"].nunique()
    counts = _label_counts(table["labels"])
    desc = f"{description}: {len(table)} images, {n_pat} patients, {task}; {counts}"
    if skipped:
        desc += f"; {len(skipped)} skipped"
    return Dataset(kind, str(root), task, table, skipped, desc, name, list(notes or []))


def _label_counts(cells) -> str:
    counts: dict[str, int] = {}
    for cell in cells:
        for lab in split_labels(cell) or ["(no finding)"]:
            counts[lab] = counts.get(lab, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _require_dir(path: Path, kind: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{kind} dataset path does not exist: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{kind} dataset path is not a folder: {path}")
    return path.resolve()


# ------------------------------------------------------------------------------------------ folder

_KERMANY_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_KERMANY_IM = re.compile(r"(IM-\d+)-\d+", re.IGNORECASE)


def kermany_patient(stem: str) -> str:
    """Patient id from a Kermany file name; the stem itself when the pattern is unknown."""
    m = _KERMANY_PERSON.match(stem)
    if m:
        return m.group(1).lower()
    m = _KERMANY_IM.search(stem)
    if m:
        return m.group(1).upper()
    return stem


_MASK_DIRS = ("masks", "mask")


def _folder_mask(path: Path, masks: dict[tuple[Path, str], Path]) -> Path | None:
    """The mask named like the image ``path`` in a ``masks/`` folder beside its ``images/`` level (or
    beside the image itself), or None."""
    parent = path.parent
    stem = path.stem.lower()
    if parent.name.lower() == "images" and (parent.parent, stem) in masks:
        return masks[(parent.parent, stem)]
    return masks.get((parent, stem))


def load_folder(root: str | Path, check_images: bool = True) -> Dataset:
    root = _require_dir(Path(root), "folder")
    name = root.name
    skipped: list[tuple[str, str]] = []
    found = []  # (path, dir parts)
    masks: dict[tuple[Path, str], Path] = {}  # (folder the masks/ folder sits in, lower-case stem) -> mask
    n_stray = 0  # images deeper inside a masks/ folder
    for dirpath, dirnames, filenames in os.walk(root):
        # Hidden folders and macOS zip debris (__MACOSX) are not data.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        parts = Path(dirpath).relative_to(root).parts
        if any(p.lower() in _MASK_DIRS for p in parts):
            for fn in sorted(filenames):
                if fn.startswith(".") or Path(fn).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if parts[-1].lower() in _MASK_DIRS:
                    masks.setdefault((Path(dirpath).parent, Path(fn).stem.lower()), Path(dirpath) / fn)
                else:
                    n_stray += 1
            continue
        for fn in sorted(filenames):
            if fn.startswith(".") or Path(fn).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            found.append((Path(dirpath) / fn, parts))
    if not found:
        raise ValueError(f"folder dataset at {root} holds no images (.png .jpg .jpeg .dcm) in class folders")

    # Class and split per file (see the module docstring for the rule).
    entries = []
    plain = [[p for p in parts if p.lower() != "images"] for _, parts in found]
    no_split = [ps for ps in plain if not any(p.lower() in _SPLIT_DIRS for p in ps)]
    common = 0
    if no_split:
        shortest = min(len(ps) for ps in no_split)
        while common < shortest - 1 and len({ps[common] for ps in no_split}) == 1:
            common += 1
    for (path, _), ps in zip(found, plain):
        split_at = [i for i, p in enumerate(ps) if p.lower() in _SPLIT_DIRS]
        if split_at:
            given = _SPLIT_DIRS[ps[split_at[-1]].lower()]
            rest = ps[split_at[-1] + 1:]
        else:
            given, rest = "", ps[common:]
        if not rest:
            skipped.append((str(path), "not inside a class folder"))
            continue
        entries.append((path, canonical(rest[0]), given))

    # Dedupe copies (same class, split and file name) before anything else looks at them.
    seen: dict[tuple, Path] = {}
    unique = []
    for path, label, given in entries:
        key = (label, given, path.name.lower())
        if key in seen:
            skipped.append((str(path), f"duplicate of {seen[key]}"))
            continue
        seen[key] = path
        unique.append((path, label, given))

    # Fold a tiny (or class-incomplete) given val into train; the splitter then carves one by patient.
    notes = []
    n_val = sum(g == "val" for _, _, g in unique)
    if n_val:
        n_trainval = sum(g in ("train", "val") for _, _, g in unique)
        train_classes = {lab for _, lab, g in unique if g == "train"}
        val_classes = {lab for _, lab, g in unique if g == "val"}
        if n_val < MIN_GIVEN_VAL_SHARE * n_trainval or not train_classes <= val_classes:
            unique = [(p, lab, "train" if g == "val" else g) for p, lab, g in unique]
            notes.append(f"given val folder ({n_val} images) folded into train: too small to select models on")

    rows, used = [], set()
    for path, label, given in unique:
        lung_mask = _folder_mask(path, masks)
        if lung_mask is not None:
            used.add(lung_mask)
        pid = kermany_patient(path.stem)
        # Kermany numbers patients within each release partition and draws its test set from other
        # children: 'person1' in train and in test are different patients, so ids are scoped by
        # partition (train and val share one scope, which can only over-group, never leak).
        scope = ("test/" if given == "test" else "train/") if given else ""
        rows.append({
            "image_id": f"folder:{name}/{_rel(path, root)}", "path": str(path), "labels": label,
            "patient_id": f"folder:{name}/{scope}{pid}", "source": name, "given_split": given,
            "lung_mask": "" if lung_mask is None else str(lung_mask),
        })
    rows = _check_images(rows, skipped, check_images)
    if n_with := sum(bool(r["lung_mask"]) for r in rows):
        notes.append(f"annotator lung masks for {n_with} images")
    if len(masks) - len(used) + n_stray:
        notes.append(f"{len(masks) - len(used) + n_stray} mask images without an image of the same name ignored")
    return _finish("folder", root, name, MULTICLASS, rows, skipped, f"{name} (class folders)", notes)


# --------------------------------------------------------------------------------------------- csv

_COLUMN_ALIASES = {
    "path": ["path", "filepath", "file_path", "image_path", "img_path", "image", "file", "filename",
             "file_name", "image_index", "img"],
    "labels": ["labels", "finding_labels", "findings"],
    "label": ["label", "class", "class_name", "finding", "diagnosis", "target", "category"],
    "patient_id": ["patient_id", "patientid", "patient", "subject_id", "subject", "case_id"],
    "split": ["split", "given_split", "partition", "subset", "set"],
    "source": ["source", "site", "hospital", "origin", "dataset_source"],
    "view": ["view", "view_position", "viewposition", "projection"],
    "sex": ["sex", "gender", "patient_gender", "patient_sex"],
    "age": ["age", "patient_age", "age_years"],
    "mask": ["mask", "mask_path", "lesion_mask"],
    "lung_mask": ["lung_mask", "lungs_mask", "lung_mask_path", "lung_masks"],
    "bbox": ["bbox", "boxes"],
}
_SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "": ""}


def _find_columns(columns) -> dict[str, str]:
    norm = {}
    for col in columns:
        norm.setdefault(_norm_col(col), col)
    found = {}
    for key, aliases in _COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in norm:
                found[key] = norm[alias]
                break
    return found


def _resolve_csv(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"csv dataset path does not exist: {path}")
    if path.is_dir():
        if (path / "metadata.csv").is_file():
            return (path / "metadata.csv").resolve()
        csvs = sorted(path.glob("*.csv"))
        if len(csvs) == 1:
            return csvs[0].resolve()
        raise FileNotFoundError(f"no metadata.csv in {path} (found {len(csvs)} other .csv files); "
                                "point csv: at the manifest file itself")
    return path.resolve()


def load_csv(path: str | Path, check_images: bool = True, *, kind: str = "csv", name: str | None = None,
             task: str | None = None, keep_namespaced_patients: bool = True, description: str | None = None) -> Dataset:
    csv_path = _resolve_csv(Path(path))
    base = csv_path.parent
    name = name or (base.name if csv_path.name == "metadata.csv" else csv_path.stem)
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"csv manifest {csv_path} is empty") from None
    except Exception as exc:
        raise ValueError(f"cannot parse csv manifest {csv_path}: {exc}") from exc
    cols = _find_columns(df.columns)
    if "path" not in cols:
        raise ValueError(f"csv manifest {csv_path} has no path column (looked for 'path', 'image', 'filename', ...); "
                         f"its columns: {list(df.columns)}")
    label_col = cols.get("labels") or cols.get("label")
    if label_col is None:
        raise ValueError(f"csv manifest {csv_path} has no 'label' or 'labels' column; its columns: {list(df.columns)}")
    if df.empty:
        raise ValueError(f"csv manifest {csv_path} lists no images")
    if task is None:
        multi = "labels" in cols or df[label_col].str.contains("|", regex=False).any()
        task = MULTILABEL if multi else MULTICLASS

    skipped: list[tuple[str, str]] = []
    rows, seen = [], {}
    for i, rec in enumerate(df.to_dict("records")):
        raw = str(rec[cols["path"]]).strip()
        if not raw:
            skipped.append((f"{csv_path}:row {i + 2}", "empty path"))
            continue
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        p = Path(os.path.normpath(p))
        labs = split_labels(rec[label_col])
        if task == MULTILABEL:
            # '' is "no finding" in a multi-label table; 'Normal'/'No Finding' tokens mean the same.
            labs = [lab for lab in labs if lab != NORMAL]
        elif len(labs) != 1:
            skipped.append((str(p), f"needs exactly one label, got {rec[label_col]!r}"))
            continue
        if str(p) in seen:
            skipped.append((str(p), f"listed twice (rows {seen[str(p)]} and {i + 2})"))
            continue
        seen[str(p)] = i + 2
        rel = _rel(p, base)
        pid = str(rec.get(cols.get("patient_id"), "") or "").strip() if "patient_id" in cols else ""
        if not pid:
            pid = f"{kind}:{name}/{Path(rel).with_suffix('').as_posix()}"  # unknown: one image per patient
        elif not (keep_namespaced_patients and _NAMESPACED.match(pid)):
            pid = f"{kind}:{name}/{pid}"
        split = _SPLIT_VALUES.get(str(rec.get(cols.get("split"), "")).strip().lower()) if "split" in cols else ""
        if split is None:
            raise ValueError(f"{csv_path} row {i + 2}: unknown split {rec[cols['split']]!r}; use train/val/test or empty")
        mask = str(rec.get(cols["mask"], "")).strip() if "mask" in cols else ""
        if mask:
            mp = Path(mask).expanduser()
            mask = os.path.normpath(mp if mp.is_absolute() else base / mp)
        lung_mask = str(rec.get(cols["lung_mask"], "")).strip() if "lung_mask" in cols else ""
        if lung_mask:
            lp = Path(lung_mask).expanduser()
            lung_mask = os.path.normpath(lp if lp.is_absolute() else base / lp)
        rows.append({
            "image_id": f"{kind}:{name}/{rel}", "path": str(p), "labels": join_labels(labs), "patient_id": pid,
            "source": (str(rec.get(cols["source"], "")).strip() if "source" in cols else "") or name,
            "view": str(rec.get(cols["view"], "")).strip() if "view" in cols else "",
            "sex": str(rec.get(cols["sex"], "")).strip() if "sex" in cols else "",
            "age": _parse_age(rec.get(cols["age"])) if "age" in cols else math.nan,
            "given_split": split, "mask": mask, "lung_mask": lung_mask,
            "bbox": str(rec.get(cols["bbox"], "")).strip() if "bbox" in cols else "",
        })
    rows = _check_images(rows, skipped, check_images)
    return _finish(kind, csv_path, name, task, rows, skipped, description or f"{name} (csv manifest {csv_path.name})")


# --------------------------------------------------------------------------------------------- nih

NIH_COLUMNS = ["image", "findings", "follow_up", "patient", "age", "sex", "view", "orig_width", "orig_height",
               "spacing_x", "spacing_y"]
NIH_BOX_SPACE = 1024.0  # BBox_List_2017 coordinates refer to the released 1024x1024 PNGs
_NIH_BOX_LABELS = {"infiltrate": "Infiltration"}  # the box file spells one finding differently


def _nih_entry_file(root: Path) -> Path:
    for name in ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"):
        if (root / name).is_file():
            return root / name
    cands = sorted(root.glob("Data_Entry*.csv"))
    if cands:
        return cands[0]
    raise FileNotFoundError(f"no Data_Entry_2017.csv in NIH folder {root}")


def read_nih_entries(path: str | Path) -> pd.DataFrame:
    """Parse ``Data_Entry_2017.csv`` robustly: its header names 9 columns but rows carry 11 fields
    (width/height and the two pixel spacings each take two), and the 2017 file adds a trailing comma.
    We ignore the header and name the first 11 fields ourselves (``NIH_COLUMNS``)."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for i, rec in enumerate(csv.reader(fh)):
            if not rec or (i == 0 and rec[0].strip().lower() == "image index"):
                continue
            if len(rec) < 7:
                raise ValueError(f"{path} line {i + 1} has {len(rec)} fields; expected 11 (is this the NIH label file?)")
            rows.append((rec + [""] * 11)[:11])
    return pd.DataFrame(rows, columns=NIH_COLUMNS, dtype=str)


def read_nih_boxes(path: str | Path) -> dict[str, list[dict]]:
    """``BBox_List_2017.csv`` -> {image name: [{"label","x","y","w","h"} in fractions of the image]}."""
    boxes: dict[str, list[dict]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for i, rec in enumerate(csv.reader(fh)):
            if not rec or (i == 0 and rec[0].strip().lower() == "image index"):
                continue
            try:
                x, y, w, h = (float(v) / NIH_BOX_SPACE for v in rec[2:6])
            except (ValueError, IndexError):
                log.warning("%s line %d: unreadable box %r, ignored", path, i + 1, rec)
                continue
            label = rec[1].strip()
            label = canonical(_NIH_BOX_LABELS.get(label.lower(), label))
            boxes.setdefault(rec[0].strip(), []).append(
                {"label": label, "x": round(x, 6), "y": round(y, 6), "w": round(w, 6), "h": round(h, 6)})
    return boxes


def _nih_image_index(root: Path) -> dict[str, Path]:
    """File name -> path across ``images/``, ``images_0NN/images/`` and ``images_0NN/``."""
    index: dict[str, Path] = {}
    dirs = [root / "images"]
    for d in sorted(root.glob("images_*")):
        dirs += [d / "images", d]
    for d in dirs:
        if d.is_dir():
            with os.scandir(d) as it:
                for entry in it:
                    if entry.is_file() and entry.name.lower().endswith(".png"):
                        index.setdefault(entry.name, Path(entry.path))
    return index


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()} if path.is_file() else set()


def load_nih(root: str | Path, check_images: bool = True) -> Dataset:
    root = _require_dir(Path(root), "nih")
    name = root.name
    entries = read_nih_entries(_nih_entry_file(root))
    if entries.empty:
        raise ValueError(f"NIH label file in {root} lists no images")
    files = _nih_image_index(root)
    boxes = read_nih_boxes(root / "BBox_List_2017.csv") if (root / "BBox_List_2017.csv").is_file() else {}
    # Official split: test_list -> 'test'; train_val_list -> 'train', from which the splitter carves
    # val by patient (it does so whenever a given split has train but no val).
    test_list, trainval_list = _read_list(root / "test_list.txt"), _read_list(root / "train_val_list.txt")
    skipped: list[tuple[str, str]] = []
    rows, seen = [], set()
    for rec in entries.to_dict("records"):
        img = rec["image"].strip()
        if img in seen:
            skipped.append((img, "listed twice in the label file"))
            continue
        seen.add(img)
        path = files.get(img)
        if path is None:
            skipped.append((str(root / "images" / img), "file not found (listed in the label file)"))
            continue
        labs = [lab for lab in split_labels(rec["findings"]) if lab != NORMAL]
        pid = rec["patient"].strip()
        pid = str(int(pid)) if pid.isdigit() else (pid or Path(img).stem.split("_")[0].lstrip("0"))
        given = "test" if img in test_list else ("train" if img in trainval_list else "")
        rows.append({
            "image_id": f"nih:{name}/{img}", "path": str(path), "labels": join_labels(labs),
            "patient_id": f"nih:{pid}", "dataset": "nih", "source": "nih", "view": rec["view"].strip(),
            "sex": rec["sex"].strip(), "age": _parse_age(rec["age"]), "given_split": given,
            "bbox": json.dumps(boxes[img]) if img in boxes else "",
        })
    rows = _check_images(rows, skipped, check_images)
    notes = []
    if test_list or trainval_list:
        notes.append("official split lists used: test_list -> test, train_val_list -> train (val carved by patient)")
    else:
        # Without the official lists, the expert boxes are the only localisation truth: keep them out of
        # training, so the pointing game on them is measured on images the model never saw. Their
        # patients go to test whole (the splitter moves a patient's other images with them).
        boxed = [r for r in rows if r["bbox"]]
        for r in boxed:
            r["given_split"] = "test"
        if boxed:
            notes.append(f"{len(boxed)} images with expert boxes (and their patients' other images) reserved for test")
    return _finish("nih", root, name, MULTILABEL, rows, skipped, f"{name} (NIH ChestX-ray14)", notes)


# ------------------------------------------------------------------------------- covid-chestxray

_FRONTAL_VIEWS = re.compile(r"^(PA|AP)\b", re.IGNORECASE)
_NO_FINDING = {"", "todo", "unknown", "na", "n/a"}


def map_ieee_finding(finding: str) -> str:
    """ieee8023 hierarchical finding -> one class.

    Ends in COVID-19 -> COVID-19; any other ``Pneumonia/...`` -> Pneumonia; ``No Finding`` -> Normal;
    anything else keeps its last path component, canonicalised (``Tuberculosis``); '' when unusable.
    Multiple findings joined by ',' use the first (the collection lists the main one first)."""
    text = str(finding).split(",")[0].strip()
    if text.lower() in _NO_FINDING:
        return ""
    last = text.rstrip("/").split("/")[-1].strip()
    if canonical(last) == COVID:
        return COVID
    if text.lower().startswith("pneumonia"):
        return PNEUMONIA
    return canonical(last)


def load_covid_chestxray(root: str | Path, check_images: bool = True) -> Dataset:
    root = _require_dir(Path(root), "covid-chestxray")
    name = root.name
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"no metadata.csv in covid-chestxray folder {root}")
    df = pd.read_csv(meta, dtype=str, keep_default_na=False)
    cols = {_norm_col(c): c for c in df.columns}
    need = ["patientid", "finding", "view", "filename"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise ValueError(f"{meta} lacks columns {missing}; is this the ieee8023 covid-chestxray-dataset?")
    get = lambda rec, key: str(rec.get(cols.get(key, ""), "") or "").strip()  # noqa: E731
    skipped: list[tuple[str, str]] = []
    excluded: dict[str, int] = {}
    rows, seen = [], set()
    for rec in df.to_dict("records"):
        modality, view = get(rec, "modality"), get(rec, "view")
        if modality and modality.lower().replace("-", "") != "xray":
            excluded[f"modality {modality}"] = excluded.get(f"modality {modality}", 0) + 1
            continue
        if not _FRONTAL_VIEWS.match(view):
            excluded[f"view {view or '?'}"] = excluded.get(f"view {view or '?'}", 0) + 1
            continue
        label = map_ieee_finding(get(rec, "finding"))
        if not label:
            excluded["no usable finding"] = excluded.get("no usable finding", 0) + 1
            continue
        path = root / (get(rec, "folder") or "images") / get(rec, "filename")
        if str(path) in seen:
            skipped.append((str(path), "listed twice in metadata.csv"))
            continue
        seen.add(str(path))
        rows.append({
            "image_id": f"covid-chestxray:{name}/{_rel(path, root)}", "path": str(path), "labels": label,
            "patient_id": f"ieee8023:{get(rec, 'patientid')}", "source": "ieee8023", "view": view,
            "sex": get(rec, "sex"), "age": _parse_age(get(rec, "age")),
        })
    rows = _check_images(rows, skipped, check_images)
    notes = ["excluded on purpose (frontal X-rays only): " + ", ".join(f"{v} {k}" for k, v in sorted(excluded.items()))] \
        if excluded else []
    return _finish("covid-chestxray", root, name, MULTICLASS, rows, skipped, f"{name} (ieee8023 COVID-19 collection)",
                   notes)


# ---------------------------------------------------------------------------------------- synthetic

def _synthetic_key(opts: dict) -> str:
    from covidviz.data import synthetic
    try:
        code = inspect.getsource(synthetic)  # a changed generator must not reuse stale phantoms
    except (OSError, TypeError):
        code = getattr(synthetic, "__version__", "")
    blob = json.dumps(opts, sort_keys=True) + hashlib.sha1(code.encode()).hexdigest()
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def synthetic_root(opts: dict, cache_dir: str | Path | None = None) -> Path:
    """Where the phantoms for ``opts`` live: ``<cache>/synthetic/<n>-<hash>``; generated once, atomically."""
    from covidviz.data.cache import default_cache_dir
    from covidviz.data.synthetic import make_synthetic_dataset

    parent = Path(cache_dir) if cache_dir else default_cache_dir()
    target = parent / "synthetic" / f"{opts['n']}-{_synthetic_key(opts)}"
    if (target / "metadata.csv").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp sibling and rename: an interrupted run never leaves half a dataset to reuse.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        make_synthetic_dataset(tmp, **opts)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "metadata.csv").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_synthetic(arg: str, cache_dir: str | Path | None = None, seed: int = 0, check_images: bool = True) -> Dataset:
    opts = parse_synthetic_options(arg, seed)
    root = synthetic_root(opts, cache_dir)
    task = MULTILABEL if opts["multilabel"] else MULTICLASS
    params = ", ".join(f"{k}={v}" for k, v in opts.items() if k != "n")
    # Phantom patient ids are generator-local ('p0001'), so they are always scoped by the cache key.
    ds = load_csv(root / "metadata.csv", check_images, kind="synthetic", name=root.name, task=task,
                  keep_namespaced_patients=False, description=f"synthetic phantoms ({params})")
    ds.root = str(root)
    return ds


# ------------------------------------------------------------------------------------------- entry

def load_dataset(spec: str, cache_dir: str | Path | None = None, seed: int = 0, check_images: bool = True) -> Dataset:
    """Load one ``KIND:PATH`` spec (see the module docstring) into a ``Dataset``."""
    kind, arg = parse_spec(spec)
    if kind == "synthetic":
        return load_synthetic(arg, cache_dir, seed, check_images)
    path = Path(arg).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{kind} dataset path does not exist: {path}")
    loader = {"folder": load_folder, "csv": load_csv, "nih": load_nih, "covid-chestxray": load_covid_chestxray}[kind]
    return loader(path, check_images=check_images)


def load_datasets(specs: list[str], cache_dir: str | Path | None = None, seed: int = 0,
                  check_images: bool = True) -> tuple[pd.DataFrame, LabelSpace, list[Dataset]]:
    """Load and merge several specs: one table, its label space (``labels.infer_label_space``), the parts."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ValueError(f"no dataset given; pass at least one KIND:PATH spec ({', '.join(KINDS)})")
    datasets = [load_dataset(s, cache_dir=cache_dir, seed=seed, check_images=check_images) for s in specs]
    table = concat_tables([d.table for d in datasets])
    space = infer_label_space([(d.task, [split_labels(c) for c in d.table["labels"]]) for d in datasets])
    return table, space, datasets


__all__ = ["Dataset", "KINDS", "load_dataset", "load_datasets", "parse_spec", "parse_synthetic_options",
           "load_folder", "load_csv", "load_nih", "load_covid_chestxray", "load_synthetic", "read_nih_entries",
           "read_nih_boxes", "map_ieee_finding", "kermany_patient", "synthetic_root"]
