"""The batch CSV, defined once: ``train.py predict`` (``covidviz.predict``) writes it, the Batch page offers it.

A row says what made it, so a CSV read months later, or merged with others, still names the model and the
thresholds behind every call. Columns (``columns``), in order:

- identity, the same on every row: ``experiment`` (its name), ``trained`` (when it was completed: the
  version of its models), ``backbones`` (space-separated), ``operating_point`` (``youden``, ...);
- ``file`` (the full name: a path, an upload's name, ``ARCHIVE:PATH`` for a ZIP member) and ``error`` (why
  it could not be scored; empty on scored rows, and every other column empty on error rows);
- the one out-of-distribution verdict: ``ood`` (True, False, or empty: not checked), ``ood_kind``
  (``ood_kind``: lateral, ct, not a chest radiograph, unlike the training images, ...) and ``ood_reason``;
- per backbone ``<arch>::top`` and per class ``<arch>::p::<class>`` (calibrated probability),
  ``<arch>::threshold::<class>`` (the threshold on that same scale for this film: the call is
  ``p >= threshold``), ``<arch>::call::<class>`` (True / False: the validated rule; empty without a
  threshold) and ``<arch>::raw_threshold::<class>`` (the threshold chosen on validation, on the model's
  raw score: the same on every row); then ``<arch>::lung_share`` and ``<arch>::lung_outside``;
- ``lung_area`` (the lungs' share of the model input: chance for a lung share) and ``lung_quality``.

Out-of-distribution rows keep every number here (the page withholds them on screen). Plain CSV, one
header line: ``pandas.read_csv(path)`` reads it as it is. Streamlit-free.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from covidviz.anatomy.view import CT, LATERAL, NOT_CHEST
from covidviz.batch.inputs import BadFile

IDENTITY = ("experiment", "trained", "backbones", "operating_point")
VERDICT = ("ood", "ood_kind", "ood_reason")

# ``ood_kind``: what kind of verdict a row got, in a word or three (the view check's kinds, then the rest).
IN_DISTRIBUTION, UNLIKE_TRAINING, GATE_FAILED = "in distribution", "unlike the training images", "not a radiograph"
NOT_CHECKED, FLAGGED = "not checked", "flagged"
OOD_KINDS = (IN_DISTRIBUTION, UNLIKE_TRAINING, LATERAL, CT, NOT_CHEST, GATE_FAILED, NOT_CHECKED, FLAGGED)


def ood_kind(verdict, flag: bool | None = None) -> str:
    """The kind of an ``OodVerdict`` (``OOD_KINDS``): the view check's kind when the input gate failed on it
    (``lateral``, ``ct``, ``not a chest radiograph``; ``not a radiograph`` for another gate failure), else
    ``unlike the training images`` (the feature-space check fired), ``in distribution`` or ``not checked``
    (no feature check could be made). ``verdict`` None (a custom ``ood_fn`` judged): from ``flag`` alone."""
    if verdict is None:
        return {True: FLAGGED, False: IN_DISTRIBUTION, None: NOT_CHECKED}[flag]
    gate = verdict.gate
    if gate is not None and not gate.passed:
        return gate.view if gate.view in (LATERAL, CT, NOT_CHEST) else GATE_FAILED
    if verdict.is_ood:
        return UNLIKE_TRAINING
    return IN_DISTRIBUTION if verdict.checked else NOT_CHECKED


def row_kind(row) -> str:
    """``ood_kind`` of a ``ScoredImage``."""
    return ood_kind(row.verdict, row.ood)


def identity(scorer) -> dict:
    """The identity columns of a ``BatchPredictor``'s rows."""
    exp = getattr(scorer.predictor, "exp", None)
    info = getattr(exp, "info", None)
    trained = (getattr(info, "completed", None) or getattr(info, "created", None) or "") if info is not None else ""
    return {"experiment": getattr(exp, "name", "") or "", "trained": trained, "backbones": " ".join(scorer.archs),
            "operating_point": scorer.point}


def columns(scorer) -> list[str]:
    """Every column of the CSV, in order (the module docstring)."""
    cols = [*IDENTITY, "file", "error", *VERDICT]
    for arch in scorer.archs:
        cols.append(f"{arch}::top")
        for part in ("p", "threshold", "call", "raw_threshold"):
            cols += [f"{arch}::{part}::{c}" for c in scorer.names]
        cols += [f"{arch}::lung_share", f"{arch}::lung_outside"]
    return cols + ["lung_area", "lung_quality"]


def _round(x, digits: int = 6):
    return None if x is None else round(float(x), digits)


def scored_record(scorer, row) -> dict:
    """One ``ScoredImage`` as a flat dict of ``columns`` (plain Python values; None for empty)."""
    out = {**identity(scorer), "file": row.name, "error": None, "ood": row.ood, "ood_kind": row_kind(row),
           "ood_reason": row.ood_reason}
    for arch in scorer.archs:
        b = row.backbones[arch]
        out[f"{arch}::top"] = scorer.names[b.top]
        calls = scorer.calls(row, arch)
        for j, (cls, c) in enumerate(zip(scorer.names, calls)):
            out[f"{arch}::p::{cls}"] = _round(b.probs[j])
            out[f"{arch}::threshold::{cls}"] = _round(c["threshold"])
            out[f"{arch}::call::{cls}"] = b.calls[j]
            out[f"{arch}::raw_threshold::{cls}"] = _round(b.thresholds[j])
        lw = b.lung_weight
        out[f"{arch}::lung_share"] = round(lw.share_inside, 4) if lw is not None and lw.measured else None
        out[f"{arch}::lung_outside"] = lw.where_outside if lw is not None and lw.mostly_outside else None
    out["lung_area"] = _round(row.lung_area, 4)
    out["lung_quality"] = _round(row.lung_quality, 4)
    return out


def bad_record(scorer, bad: BadFile) -> dict:
    """A file that could not be scored: its name and message, the identity, nothing else."""
    return {**identity(scorer), "file": bad.name, "error": bad.message}


def record(scorer, item) -> dict:
    """``scored_record`` or ``bad_record``, with every column present (None for empty)."""
    rec = bad_record(scorer, item) if isinstance(item, BadFile) else scored_record(scorer, item)
    return {c: rec.get(c) for c in columns(scorer)}


def csv_row(scorer, item) -> dict:
    """``record`` as ``csv.DictWriter`` writes it: empty cells for None."""
    return {k: ("" if v is None else v) for k, v in record(scorer, item).items()}


def writer(fh, scorer) -> csv.DictWriter:
    """A ``csv.DictWriter`` over ``fh`` with the header written (feed it ``csv_row``s)."""
    w = csv.DictWriter(fh, fieldnames=columns(scorer))
    w.writeheader()
    return w


def csv_text(scorer, items: Iterable) -> str:
    """The whole CSV of ``items`` (``ScoredImage``s and ``BadFile``s, in the order given)."""
    buf = io.StringIO(newline="")
    w = writer(buf, scorer)
    for item in items:
        w.writerow(csv_row(scorer, item))
    return buf.getvalue()


def table(scorer, items: Iterable):
    """A pandas DataFrame of ``items`` with ``columns`` (None for empty)."""
    import pandas as pd

    return pd.DataFrame([record(scorer, item) for item in items], columns=columns(scorer))
