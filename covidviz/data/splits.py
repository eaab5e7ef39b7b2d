"""Patient-disjoint, stratified, seeded train/val/test splits, and the leakage check.

Rules of ``make_split``:

- The unit is the patient (``patient_id``): all images of a patient land in one split, so a model is
  never tested on a patient it saw in training.
- ``given_split`` is respected. A patient's given split applies to all of its images (rows with an
  empty given split follow their patient's). A patient given two different splits is an error
  (``LeakageError``), as the dataset's own split would leak.
- Given ``test`` and ``val`` stay as they are. Splits the given split does *not* provide are carved
  out of its given ``train`` patients: NIH's ``train_val_list`` is marked ``train`` by the adapter,
  so val is carved from it by patient (NIH's ``test_list`` stays the test set). Kermany's tiny val
  folder is folded into train by the adapter for the same reason.
- Patients with no given split are allocated over all three splits by ``fractions``.
- Stratification: each patient is a vector of image counts per class (multi-label: per finding,
  plus a "no finding" column) and, when the table mixes sources, per source. Allocation first
  makes sure every split gets at least one patient of every class when there are enough patients
  of that class (rarest class first; priority train, then test, then val), then places the
  remaining patients greedily, largest first (seeded order among equals), into the split whose
  per-class and total deficit it reduces most. This is a form of iterative stratification; it
  keeps rare multi-label findings spread over the splits.

Why not sklearn's ``StratifiedGroupKFold``: it gives k equal folds (1/k each) and one label per
sample, so it cannot honour 70/15/15, pre-assigned given splits, multi-label findings, or the "every
split sees every class" guarantee small datasets need. The greedy allocation does all four in a few
milliseconds per thousand patients and is deterministic for a given seed.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from covidviz.data.labels import MULTILABEL, NORMAL, split_labels
from covidviz.data.table import SPLITS

log = logging.getLogger(__name__)

# Who gets a rare class first when there are too few patients of it for all three splits: a model
# cannot learn a class it never sees, and an evaluation without it cannot report it.
_COVERAGE_PRIORITY = ("train", "test", "val")
_NONE = "(no finding)"


class LeakageError(ValueError):
    """Some patients appear in more than one split; ``patients`` maps each to its splits."""

    def __init__(self, message: str, patients: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.patients = patients or {}


def _leaks(patient_ids: pd.Series, splits: pd.Series) -> dict[str, list[str]]:
    both = pd.DataFrame({"p": patient_ids.to_numpy(), "s": splits.to_numpy()})
    both = both[both["s"] != ""]
    per = both.groupby("p", sort=True)["s"].unique()
    bad = per[per.map(len) > 1]
    return {str(p): sorted(s, key=SPLITS.index) for p, s in bad.items()}


def _leak_message(what: str, leaks: dict[str, list[str]]) -> str:
    shown = ", ".join(f"{p} ({'/'.join(s)})" for p, s in list(leaks.items())[:10])
    more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
    return f"{what}: {len(leaks)} patient(s) appear in more than one split: {shown}{more}"


def check_no_leakage(table: pd.DataFrame, split: pd.Series) -> None:
    """Raise ``LeakageError`` naming every patient whose images sit in more than one split."""
    split = pd.Series(split)
    if len(split) != len(table) or not split.index.equals(table.index):
        raise ValueError(f"split ({len(split)} rows) is not aligned with the table ({len(table)} rows)")
    unknown = set(split.unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"split holds values {sorted(map(str, unknown))}; expected {SPLITS}")
    leaks = _leaks(table["patient_id"].astype(str), split.astype(str))
    if leaks:
        raise LeakageError(_leak_message("patient leakage", leaks), leaks)


def _class_matrix(labels: pd.Series, label_space) -> tuple[np.ndarray, list[str]]:
    """(N, C) image-level 0/1 matrix over the label space's classes (+ a no-finding column)."""
    cells = [split_labels(c) for c in labels]
    if label_space is not None:
        names = list(label_space.names)
        multilabel = label_space.task == MULTILABEL
    else:
        multilabel = any(len(labs) != 1 for labs in cells)
        names = sorted({lab for labs in cells for lab in labs} - ({NORMAL} if multilabel else set()))
    cols = names + ([_NONE] if multilabel else [])
    index = {n: i for i, n in enumerate(cols)}
    mat = np.zeros((len(cells), len(cols)), dtype=np.int64)
    for r, labs in enumerate(cells):
        hit = False
        for lab in labs:
            i = index.get(lab)
            if i is not None:
                mat[r, i] = 1
                hit = True
        if not hit and multilabel:
            mat[r, index[_NONE]] = 1
    return mat, cols


def _allocate(counts: np.ndarray, targets: dict[str, float], fixed: np.ndarray,
              rng: np.random.Generator) -> list[str]:
    """Assign each patient (row of ``counts``: images per class) to one of ``targets`` (split -> fraction).

    ``fixed`` (S, C) are images per class already placed in those splits by the given split; they
    count towards coverage but not towards this pool's proportions.
    """
    splits = [s for s in SPLITS if targets.get(s, 0) > 0]
    n = len(counts)
    out = [""] * n
    if n == 0:
        return out
    frac = np.array([targets[s] for s in splits], dtype=float)
    frac /= frac.sum()
    if len(splits) == 1:
        return [splits[0]] * n
    class_tot = counts.sum(0).astype(float)
    target = frac[:, None] * class_tot[None, :]          # (S, C) images per class wanted
    size_target = frac * counts.sum()                    # (S,) images wanted
    have = np.zeros((len(splits), counts.shape[1]), dtype=float)
    placed = fixed.astype(float).copy()                  # for coverage only
    sizes = counts.sum(1)
    order = rng.permutation(n)                           # seeded tie-break everywhere below
    free = np.ones(n, dtype=bool)

    def put(p: int, s: int) -> None:
        out[p] = splits[s]
        have[s] += counts[p]
        placed[s] += counts[p]
        free[p] = False

    # 1) coverage: rarest class first, the smallest patient that has it, for each split lacking it.
    prio = [splits.index(s) for s in _COVERAGE_PRIORITY if s in splits]
    for c in np.argsort(class_tot, kind="stable"):
        if class_tot[c] == 0:
            continue
        for s in prio:
            if placed[s, c] > 0:
                continue
            cands = order[free[order] & (counts[order, c] > 0)]
            if not len(cands):
                break
            put(int(cands[np.argmin(sizes[cands])]), s)

    # 2) greedy fill: big patients first (hard to place late), into the split they help most. The
    # cost is sum over splits and classes of (have - target)^2 / target (chi-square like): deficits
    # count relative to each split's and class's target, so a 15 % split fills at the same pace as a
    # 70 % one and a rare class weighs as much as a common one. The total image count is one more
    # "class" so group sizes stay near the fractions too.
    inv = 1.0 / np.maximum(target, 1e-6)
    inv_size = 1.0 / np.maximum(size_target, 1e-6)
    rest = sorted((p for p in order if free[p]), key=lambda p: -sizes[p])
    for p in rest:
        v = counts[p].astype(float)
        gain = ((2 * (have - target) + v) * v * inv).sum(1)   # cost increase of adding v to each split
        gain += (2 * (have.sum(1) - size_target) + sizes[p]) * sizes[p] * inv_size
        put(p, int(np.argmin(gain)))
    return out


def make_split(table: pd.DataFrame, label_space=None, seed: int = 0,
               fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.Series:
    """Assign every row to 'train' / 'val' / 'test' (see the module docstring); index-aligned."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or not np.isclose(sum(fr), 1.0) or fr[0] <= 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 with train > 0, got {fractions}")
    if len(table) == 0:
        raise ValueError("cannot split an empty table")
    wanted = dict(zip(SPLITS, fr))

    pids = table["patient_id"].fillna("").astype(str)
    given = (table["given_split"].fillna("").astype(str).str.lower() if "given_split" in table
             else pd.Series("", index=table.index))
    if pids.eq("").any():
        raise ValueError(f"{int(pids.eq('').sum())} rows have no patient_id; adapters must set one (the image's own id "
                         "when the patient is unknown)")
    leaks = _leaks(pids, given)
    if leaks:
        raise LeakageError(_leak_message("the dataset's given split leaks", leaks), leaks)

    mat, names = _class_matrix(table["labels"], label_space)
    strata = mat
    if "source" in table and table["source"].nunique() > 1:
        # Sources are strata too: the test set should hold every hospital so results can be reported
        # per source (the shortcut check), not just every class.
        strata = np.hstack([mat, pd.get_dummies(table["source"].astype(str)).to_numpy(dtype=np.int64)])
    per_img = pd.DataFrame(strata, index=table.index)
    patients = per_img.groupby(pids.to_numpy(), sort=True).sum()   # sorted: row order must not matter
    counts = patients.to_numpy()
    pg = given[given != ""].groupby(pids[given != ""].to_numpy()).first()
    p_given = pg.reindex(patients.index).fillna("").to_numpy()

    present = set(p_given) - {""}
    missing = [s for s in ("val", "test") if s not in present]
    rng = np.random.default_rng(seed)
    assign = np.array([""] * len(patients), dtype=object)
    carve = "train" in present and bool(missing)
    for s in present:
        if not (s == "train" and carve):
            assign[p_given == s] = s

    def placed(splits_here: list[str]) -> np.ndarray:
        return np.stack([counts[assign == s].sum(0) for s in splits_here])

    # Pool 1: given-train patients, carved into the splits the given split lacks (NIH: val).
    if carve:
        idx = np.flatnonzero(p_given == "train")
        targets = {s: wanted[s] for s in ["train"] + missing}
        assign[idx] = _allocate(counts[idx], targets, placed([s for s in SPLITS if targets.get(s, 0) > 0]), rng)
    # Pool 2: patients without a given split, over all three splits.
    idx = np.flatnonzero(p_given == "")
    if len(idx):
        assign[idx] = _allocate(counts[idx], wanted, placed([s for s in SPLITS if wanted[s] > 0]), rng)

    by_patient = pd.Series(assign, index=patients.index)
    split = pd.Series(by_patient.reindex(pids.to_numpy()).to_numpy(), index=table.index, name="split", dtype=object)
    empty = [s for s in SPLITS if wanted[s] > 0 and not (split == s).any()]
    if empty:
        raise ValueError(f"cannot make a {'/'.join(s for s in SPLITS if wanted[s] > 0)} split: {', '.join(empty)} "
                         f"would be empty ({patients.shape[0]} patients, {len(table)} images); "
                         "add data or set that fraction to 0")
    check_no_leakage(table, split)
    _warn_missing_classes(split, mat, names)
    return split


def _warn_missing_classes(split: pd.Series, mat: np.ndarray, names: list[str]) -> None:
    for s in SPLITS:
        m = (split == s).to_numpy()
        if not m.any():
            continue
        missing = [n for n, k in zip(names, mat[m].sum(0)) if k == 0 and n != _NONE]
        if missing:
            log.warning("%s split has no image of %s (too few patients of %s to cover every split)",
                        s, ", ".join(missing), "it" if len(missing) == 1 else "them")


def split_counts(table: pd.DataFrame, split: pd.Series, label_space=None) -> pd.DataFrame:
    """Images per class (rows) and split (columns), plus patients and images totals: for dataset cards."""
    mat, names = _class_matrix(table["labels"], label_space)
    df = pd.DataFrame(mat, columns=names, index=table.index)
    out = df.groupby(split.to_numpy()).sum().T.reindex(columns=[s for s in SPLITS if (split == s).any()])
    out.loc["images"] = split.value_counts().reindex(out.columns)
    out.loc["patients"] = table.groupby(split.to_numpy())["patient_id"].nunique().reindex(out.columns)
    return out.fillna(0).astype(int)
