"""Label spaces: the one place that knows label names, their synonyms and how datasets merge.

A *label space* is an ordered list of class names plus a task:

- ``multiclass``: every image has exactly one label (softmax head), e.g. COVID-19 / Normal / Pneumonia.
- ``multilabel``: every image has zero or more findings (sigmoid head), e.g. ChestX-ray14; an image
  with no finding ("No Finding", "Normal") is the all-negative vector.

Merging several datasets (the paper's 15-class COVID + ChestX-ray14 problem) gives a multi-label space
when any of them is multi-label or their class sets differ: "normal" classes become the empty set, and
synonyms ("Viral Pneumonia", "PNEUMONIA") fold into one canonical name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"

# The 14 findings of NIH ChestX-ray14, in the release's customary order.
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

NORMAL = "Normal"
COVID = "COVID-19"
PNEUMONIA = "Pneumonia"

# Lower-cased spelling -> canonical name. Anything not listed keeps its own spelling.
_SYNONYMS = {
    "normal": NORMAL, "no finding": NORMAL, "no_finding": NORMAL, "healthy": NORMAL,
    "covid": COVID, "covid-19": COVID, "covid19": COVID, "covid_19": COVID,
    "sars-cov-2": COVID, "pneumonia/viral/covid-19": COVID,
    "pneumonia": PNEUMONIA, "viral pneumonia": PNEUMONIA, "bacterial pneumonia": PNEUMONIA,
    "viral_pneumonia": PNEUMONIA, "lung_opacity": "Lung Opacity", "lung opacity": "Lung Opacity",
    "pleural thickening": "Pleural_Thickening",
}
_NORMAL_NAMES = {NORMAL}


def canonical(name: str) -> str:
    """Canonical spelling of one label name (strips blanks, folds known synonyms)."""
    clean = str(name).strip()
    return _SYNONYMS.get(clean.lower(), clean)


def split_labels(value) -> list[str]:
    """Parse a stored label cell ('A|B', 'A', '' or NaN) into a list of canonical names."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    parts = [canonical(p) for p in str(value).split("|")]
    return [p for p in parts if p]


def join_labels(labels) -> str:
    """Store a list of labels as one '|'-separated cell (the on-disk form)."""
    return "|".join(labels)


@dataclass(frozen=True)
class LabelSpace:
    """Ordered class names and the task; turns label lists into training targets."""

    names: tuple[str, ...]
    task: str

    def __post_init__(self):
        if self.task not in (MULTICLASS, MULTILABEL):
            raise ValueError(f"unknown task {self.task!r}; expected {MULTICLASS!r} or {MULTILABEL!r}")
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"label names must be unique and non-empty: {self.names}")
        if self.task == MULTICLASS and len(self.names) < 2:
            raise ValueError("a multi-class problem needs at least two classes")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(canonical(name))

    def encode(self, labels: list[str]):
        """Labels of one image -> class index (multiclass) or 0/1 float vector (multilabel)."""
        if self.task == MULTICLASS:
            if len(labels) != 1:
                raise ValueError(f"multi-class image needs exactly one label, got {labels}")
            return self.names.index(labels[0])
        vec = np.zeros(self.num_classes, dtype=np.float32)
        for lab in labels:
            if lab in _NORMAL_NAMES:
                continue
            vec[self.names.index(lab)] = 1.0
        return vec

    def targets(self, label_cells) -> np.ndarray:
        """A column of stored label cells -> (N,) int64 or (N, C) float32 targets."""
        rows = [self.encode(split_labels(c)) for c in label_cells]
        if self.task == MULTICLASS:
            return np.asarray(rows, dtype=np.int64)
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.num_classes), np.float32)

    def onehot(self, label_cells) -> np.ndarray:
        """(N, C) 0/1 matrix for either task (one-vs-rest view for metrics)."""
        t = self.targets(label_cells)
        if self.task == MULTICLASS:
            out = np.zeros((len(t), self.num_classes), dtype=np.float32)
            out[np.arange(len(t)), t] = 1
            return out
        return t

    def to_json(self) -> dict:
        return {"names": list(self.names), "task": self.task}

    @classmethod
    def from_json(cls, d: dict) -> LabelSpace:
        return cls(tuple(d["names"]), d["task"])


def _sort_key(name: str):
    # NIH findings keep their release order; COVID first among the rest; then alphabetical.
    if name in NIH_FINDINGS:
        return (1, NIH_FINDINGS.index(name), name)
    return (0 if name == COVID else 2, 0, name)


def infer_label_space(per_dataset: list[tuple[str, list[list[str]]]]) -> LabelSpace:
    """Build the label space of one experiment from each dataset's task and label lists.

    ``per_dataset`` holds ``(task, labels_per_image)`` for every ``--data`` source. One multi-class
    dataset (or several with the same classes) stays multi-class; anything else merges into a
    multi-label space in which normal images are the empty set.
    """
    tasks = {task for task, _ in per_dataset}
    class_sets = [frozenset(lab for labs in labels for lab in labs) for _, labels in per_dataset]
    if tasks == {MULTICLASS} and len(set(class_sets)) == 1:
        names = sorted(class_sets[0], key=lambda n: (n != COVID, n != NORMAL, n))
        return LabelSpace(tuple(names), MULTICLASS)
    names = set().union(*class_sets) - _NORMAL_NAMES
    return LabelSpace(tuple(sorted(names, key=_sort_key)), MULTILABEL)
