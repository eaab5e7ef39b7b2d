"""``sources.json`` (one per experiment): the source probe and the within-source AUCs on the test split.

Written by ``covidviz.analysis.sources`` (the analysis step). Layout::

    {"version", "split", "n_images", "n_patients", "n_boot", "seed",
     "models": [arch, ...], "baseline": "thumbnails", "baseline_note",
     "sources": {source: test films},
     "probe": {"model", "folds", "min_patients", "films",
               "classes": {cls: {"n", "n_patients", "sources": {src: films}, "patients": {src: patients},
                                 "left_out": {src: films}, "folds", "reason",
                                 "scores": {arch | "thumbnails": SCORE}}}},
     "within": {"score", "min_films",
                "pairs": [{"source", "a", "b", "n_a", "n_b", "n_patients", "reason",
                           "aucs": {arch | "thumbnails": SCORE},
                           "diffs": {arch: {"diff", "ci_low", "ci_high"}}}]}}    # arch minus the baseline
    SCORE = {"auc", "ci_low", "ci_high", "n_boot_valid"}

``reason`` (non-empty) says why a class or pair was not measured. ``read_sources(exp)`` gives the typed
``SourceEvidence`` (or None: not analysed, or an analysis older than it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covidviz.runs.records import Record, _d, as_float, as_int, json_field

SOURCES = "sources.json"
BASELINE = "thumbnails"   # the key of the thumbnail features / thumbnail baseline beside the backbones


_int, _float = as_int, as_float


def _counts(value) -> dict[str, int]:
    return {str(k): _int(n) for k, n in _d(value).items()}


def _text(value) -> str:
    return str(value or "")


@dataclass(frozen=True)
class Score(Record):
    """An AUC with its 95 % CI (or a difference of AUCs: ``diff`` instead of ``auc``)."""

    raw: dict = field(default_factory=dict, repr=False)
    auc: float | None = json_field(conv=_float)
    diff: float | None = json_field(conv=_float)
    ci_low: float | None = json_field(conv=_float)
    ci_high: float | None = json_field(conv=_float)

    @property
    def measured(self) -> bool:
        return self.auc is not None or self.diff is not None


def _score_in(table: dict, key: str) -> Score:
    """``table[key]`` as a ``Score`` (empty when not measured)."""
    return Score.from_json(_d(table.get(key)))


@dataclass(frozen=True)
class _Measured(Record):
    """What a probe class and a within-source pair share: the patients behind them and, when they could
    not be measured, why (``reason``, empty otherwise)."""

    raw: dict = field(default_factory=dict, repr=False)
    n_patients: int = json_field(conv=_int)
    reason: str = json_field(conv=_text)


@dataclass(frozen=True)
class ProbeClass(_Measured):
    """The source probe inside one class: its films, sources, and one ``Score`` per feature set."""

    n: int = json_field(conv=_int)
    sources: dict = json_field(conv=_counts)
    patients: dict = json_field(conv=_counts)
    left_out: dict = json_field(conv=_counts)
    folds: int = json_field(conv=_int)
    scores: dict = json_field(conv=_d, repr=False)

    def score(self, key: str) -> Score:
        return _score_in(self.scores, key)

    @property
    def fewest_patients(self) -> int | None:
        """Patients of the rarer source (None when not stored: an older record)."""
        return min(self.patients.values()) if self.patients else None


@dataclass(frozen=True)
class WithinPair(_Measured):
    """Two classes inside one source: films of each, and one ``Score`` per model (+ the baseline)."""

    aucs: dict = json_field(conv=_d, repr=False)    # model (or the baseline) -> Score
    diffs: dict = json_field(conv=_d, repr=False)   # model -> its AUC minus the baseline's
    source: str = json_field(conv=_text)
    a: str = json_field(conv=_text)
    b: str = json_field(conv=_text)
    n_a: int = json_field(conv=_int)
    n_b: int = json_field(conv=_int)

    def auc(self, key: str) -> Score:
        return _score_in(self.aucs, key)

    def diff(self, key: str) -> Score:
        """``key``'s AUC minus the baseline's, with the paired CI (empty when not measured)."""
        return _score_in(self.diffs, key)


@dataclass(frozen=True)
class SourceEvidence(Record):
    """The whole ``sources.json`` (see the module docstring); missing parts read as defaults."""

    raw: dict = field(default_factory=dict, repr=False)
    version: int | None = json_field(conv=lambda v: _int(v, None))
    split: str = json_field(conv=lambda v: str(v or "test"))
    n_images: int = json_field(conv=_int)
    n_patients: int = json_field(conv=_int)
    n_boot: int | None = json_field(conv=lambda v: _int(v, None))
    models: list = json_field(conv=lambda v: [str(m) for m in v or []])
    baseline: str = json_field(conv=lambda v: str(v or BASELINE))
    sources: dict = json_field(conv=_counts)
    probe_model: str = json_field("probe", "model", conv=_text)
    probe_films: str = json_field("probe", "films", conv=_text)
    min_patients: int | None = json_field("probe", "min_patients", conv=lambda v: _int(v, None))
    probe_classes: dict = json_field("probe", "classes", conv=_d, repr=False)
    pair_score: str = json_field("within", "score", conv=_text)
    min_films: int | None = json_field("within", "min_films", conv=lambda v: _int(v, None))
    within_pairs: list = json_field("within", "pairs", conv=lambda v: [p for p in v or [] if isinstance(p, dict)],
                                    repr=False)

    def classes(self) -> list[str]:
        return list(self.probe_classes)

    def probe(self, cls: str) -> ProbeClass:
        return ProbeClass.from_json(_d(self.probe_classes.get(cls)))

    def pairs(self) -> list[WithinPair]:
        return [WithinPair.from_json(p) for p in self.within_pairs]


def read_sources(exp) -> SourceEvidence | None:
    """The experiment's ``sources.json`` (typed), or None (not analysed, or an analysis older than it)."""
    if not exp.has_artifact(SOURCES):
        return None
    return SourceEvidence.from_json(exp.load_json(SOURCES))
