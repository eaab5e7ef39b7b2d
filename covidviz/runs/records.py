"""Typed, read-only records of the analysis' JSON files (``analysis.json``, ``localisation.json``,
``projections.json``, ``som.json``, ``ood.json``, ``shortcuts.json``): the only code that knows their key
paths. The manifest's records (``ManifestInfo``, ``ManifestBackbone``) are dataclasses of their own in
``covidviz.runs.manifest``, re-exported here.

Pages and views ask ``Analysis.point(arch, cls, "youden")`` or ``ManifestBackbone.aucs("test")`` instead
of walking ``analysis["backbones"][arch]["thresholds"]["per_class"][cls]["points"]...``; when the
analysis writes a new layout, only this module changes.

Each record is a frozen dataclass read with ``from_json(d)`` (or built from the JSON object itself,
``Analysis(d)``): a field declared ``json_field()`` is read from the key of its own name, one declared
``json_field("key", "nested key", conv=...)`` from that path through a converter. Reading is therefore tolerant
of other versions of a file: a part an older analysis did not write reads as the field's default
(``None``, an empty list or dict; never a ``KeyError``), a key no field reads (a newer writer's, or one
only the analysis uses) is kept in ``extra``, and the whole object stays in ``raw``. Methods remain
only where there is logic: a lookup by class, backbone or layer, a fallback, a nested record.

Thresholds live once, in ``analysis.json``; the manifest keeps the training record (init, epochs,
metrics at training time) and the calibration temperature is read from the analysis too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache

# ManifestBackbone, ManifestInfo: re-exported (views import them from here).
from covidviz.runs.manifest import ManifestBackbone, ManifestInfo, _d, _list, _pair  # noqa: F401

POINTS = ("youden", "high_sensitivity", "high_specificity")  # analysis/thresholds.POINTS, by name


def _strs(value) -> list[str]:
    return [str(v) for v in _list(value)]


def _keys(value) -> list[str]:
    return list(_d(value))


def _or_none(value):
    return value or None


def _or(default):
    """A converter: the value as ``default``'s type, ``default`` when absent (or empty, zero)."""
    return lambda value: type(default)(value) if value else default


def _same(value):
    return value


# Converters shared by the records of the lung-share and source-evidence files (tolerant: an absent or
# unreadable value reads as the default, never raises).
def as_int(value, default: int | None = 0) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def as_float(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def json_field(*path: str, conv=_same, repr: bool = True):
    """A record field read from the JSON object at ``path`` (keys into nested objects; none: the field's
    own key) through ``conv``, which receives None for a missing part and gives the field's default."""
    return field(init=False, repr=repr, metadata={"json": path, "conv": conv})


def _group(*keys: str):
    """A record field gathering several top-level keys of the object into one dict (None where absent)."""
    return field(init=False, metadata={"json": (), "keys": keys, "conv": lambda raw: {k: _d(raw).get(k) for k in keys}})


def _get(obj, path: tuple[str, ...]):
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


@cache
def _specs(cls) -> tuple[list[tuple[str, tuple, object]], frozenset[str]]:
    """``cls``'s JSON fields (name, path, converter) and the top-level keys it knows (read or named by a field)."""
    specs, known = [], {f.name for f in fields(cls) if f.init}
    for f in fields(cls):
        if "json" in f.metadata:
            path = f.metadata["json"] or (() if "keys" in f.metadata else (f.name,))
            specs.append((f.name, path, f.metadata["conv"]))
            known.update(path[:1] or f.metadata["keys"])
    return specs, frozenset(known)


@dataclass(frozen=True)
class Record:
    """A record read from one JSON object (``raw``, a field of each subclass): fills its ``_at`` fields and
    ``extra`` (the top-level keys no field reads) once, when built."""

    extra: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        raw = _d(self.raw)
        specs, known = _specs(type(self))
        object.__setattr__(self, "raw", raw)
        for name, path, conv in specs:
            object.__setattr__(self, name, conv(_get(raw, path)))
        object.__setattr__(self, "extra", {k: v for k, v in raw.items() if k not in known})

    @classmethod
    def from_json(cls, d, **init):
        """The record of the JSON object ``d`` (``init``: the other constructor arguments, e.g. ``arch``)."""
        return cls(raw=_d(d), **init)


@dataclass(frozen=True)
class Rate:
    """A proportion with its Wilson 95 % CI and denominator (sensitivity, PPV, ...)."""

    value: float | None = None
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @classmethod
    def of(cls, raw) -> Rate:
        """From its JSON object (keys named like the fields; missing ones: None, others ignored)."""
        r = _d(raw)
        return cls(**{f.name: r[f.name] for f in fields(cls) if f.name in r})


@dataclass(frozen=True)
class ClassMetrics(Record):
    """One class's (or the macro average's) discrimination on a test set: AUC with its 95 % CI, average
    precision, images and positives, the downsampled ROC and PR curves (``{"fpr": [...], "tpr": [...]}``)."""

    raw: dict = field(default_factory=dict, repr=False)
    auc: float | None = json_field()
    ci_low: float | None = json_field()
    ci_high: float | None = json_field()
    roc: dict | None = json_field(repr=False)
    ap: float | None = json_field()
    pr: dict | None = json_field(repr=False)
    n: int | None = json_field()
    n_pos: int | None = json_field()

    @classmethod
    def of(cls, raw) -> ClassMetrics:
        return cls.from_json(raw)


@dataclass(frozen=True)
class OperatingPoint(Record):
    """A threshold chosen on validation and what it achieved there and on test."""

    name: str
    raw: dict = field(default_factory=dict, repr=False)
    threshold: float | None = json_field()
    val_sensitivity: float | None = json_field("val", "sensitivity")
    val_specificity: float | None = json_field("val", "specificity")
    test: dict = json_field(conv=_d)  # confusion_at(): tp/fp/fn/tn and the four rates (raw, for tables)

    @property
    def defined(self) -> bool:
        return self.threshold is not None

    def rate(self, key: str) -> Rate:
        """``sensitivity`` | ``specificity`` | ``ppv`` | ``npv`` on test."""
        return Rate.of(self.test.get(key))

    def counts(self) -> dict:
        return {k: self.test.get(k) for k in ("tp", "fp", "fn", "tn")}

    @classmethod
    def of(cls, name: str, raw) -> OperatingPoint:
        return cls.from_json(raw, name=name)


@dataclass(frozen=True)
class BackboneAnalysis(Record):
    """One backbone's part of ``analysis.json``."""

    arch: str
    raw: dict = field(default_factory=dict, repr=False)
    test: dict = json_field(conv=_d, repr=False)
    macro: ClassMetrics = json_field("test", "macro", conv=ClassMetrics.of)
    n_test: int | None = json_field("test", "n")
    confusion: dict | None = json_field("thresholds", "confusion")  # multi-class argmax confusion on test; None: multi-label
    calibration: dict | None = json_field(conv=_or_none, repr=False)
    temperature: float | list | None = json_field("calibration", "temperature")  # one, or one per class; None: not calibrated
    subgroup_rows: list[dict] = json_field("subgroups", "rows", conv=_list, repr=False)
    _per_class: dict = json_field("thresholds", "per_class", conv=_d, repr=False)

    def metrics(self, cls: str) -> ClassMetrics:
        return ClassMetrics.of(_d(self.test.get("per_class")).get(cls))

    def point(self, cls: str, name: str = "youden") -> OperatingPoint:
        return OperatingPoint.of(name, _get(self._per_class, (cls, "points", name)))

    def points(self, cls: str) -> dict[str, OperatingPoint]:
        return {p: self.point(cls, p) for p in POINTS}

    def thresholds(self) -> dict[str, dict[str, float | None]]:
        """class -> point name -> threshold (None where no threshold could be chosen)."""
        return {cls: {p: self.point(cls, p).threshold for p in POINTS} for cls in self._per_class}

    def class_counts(self, cls: str) -> dict:
        """``{"val": {"n", "n_pos"}, "test": {"n", "n_pos"}}`` of the thresholds' class."""
        return {split: _d(_get(self._per_class, (cls, split))) for split in ("val", "test")}

    def calibration_scores(self, when: str, cls: str | None = None) -> dict[str, float | None]:
        """``{"ece", "brier"}`` on test ``before`` | ``after`` temperature scaling; of one class when
        ``cls`` is given (multi-label stores both per class; multi-class only the Brier score, so its
        ECE stays the overall one)."""
        s = _d(_d(self.calibration).get(when))
        if cls is None:
            return {"ece": s.get("ece"), "brier": s.get("brier")}
        ece = _d(s.get("ece_per_class")).get(cls) if "ece_per_class" in s else s.get("ece")
        return {"ece": ece, "brier": _d(s.get("brier_per_class")).get(cls)}

    def reliability(self, when: str, cls: str | None = None) -> list[dict]:
        """Reliability bins (``centre``, ``confidence``, ``accuracy``, ``count``) on test ``before`` |
        ``after`` temperature scaling: of ``cls`` where stored per class (multi-label), else the
        stored default (top class for multi-class, every (image, class) pair pooled for multi-label)."""
        s = _d(_d(self.calibration).get(when))
        per_class = _d(s.get("reliability_per_class"))
        if cls and cls in per_class:
            return list(per_class[cls] or [])
        return list(s.get("reliability") or [])


@dataclass(frozen=True)
class Comparison(Record):
    """A paired comparison of two backbones on the same test images."""

    a: str
    b: str
    raw: dict = field(default_factory=dict, repr=False)
    macro: dict = json_field(conv=_d)
    _per_class: dict = json_field("per_class", conv=_d, repr=False)

    def per_class(self, cls: str) -> dict:
        return _d(self._per_class.get(cls))


@dataclass(frozen=True)
class Analysis(Record):
    """``analysis.json``: test metrics, thresholds, calibration, subgroups, comparisons, baseline."""

    raw: dict = field(default_factory=dict, repr=False)
    meta: dict = json_field(conv=_d, repr=False)
    names: list[str] = json_field("meta", "names", conv=_list)  # the class names in order (that of per-class temperatures)
    task: str | None = json_field("meta", "task")
    n_boot: int | None = json_field("meta", "n_boot")            # patient-bootstrap resamples behind every CI
    n_patients_test: int | None = json_field("meta", "n_patients_test")
    archs: list[str] = json_field("backbones", conv=_keys)
    comparisons: list[dict] = json_field(conv=_list, repr=False)
    confounding: list[str] = json_field(conv=_list)  # sentences: metadata groups that predict a class
    confounding_details: list[dict] = json_field(conv=_list, repr=False)
    baseline: dict = json_field(conv=_d, repr=False)  # the trivial thumbnail baseline ({}: not fitted)
    # How well the baseline tells the image source (accuracy, majority, majority_accuracy); None: fewer
    # than two sources, or no baseline.
    baseline_source: dict | None = json_field("baseline", "source", conv=_or_none)
    _backbones: dict = json_field("backbones", conv=_d, repr=False)

    def n_images(self, split: str = "test") -> int | None:
        return _d(self.meta.get("n")).get(split)

    def has(self, arch: str) -> bool:
        return arch in self._backbones

    def backbone(self, arch: str) -> BackboneAnalysis:
        return BackboneAnalysis(arch, _d(self._backbones.get(arch)))

    def comparison(self, a: str, b: str) -> tuple[Comparison | None, bool]:
        """The comparison of ``a`` and ``b`` and whether it is stored the other way round (b vs a)."""
        for c in self.comparisons:
            if (c.get("a"), c.get("b")) == (a, b):
                return Comparison(a, b, c), False
            if (c.get("a"), c.get("b")) == (b, a):
                return Comparison(b, a, c), True
        return None, False

    def baseline_auc(self, cls: str) -> float | None:
        """The baseline's test AUC of a class (``"macro"``: the macro average)."""
        test = _d(self.baseline.get("test"))
        if cls == "macro":
            return test.get("macro_auc")
        if "auc" in test:
            return _d(test.get("auc")).get(cls)
        return _d(_d(test.get("per_class")).get(cls)).get("auc")  # the layout analysis/report.py writes


@dataclass(frozen=True)
class Localisation(Record):
    """``localisation.json`` of one backbone: pointing game and energy per CAM method vs a random map."""

    raw: dict = field(default_factory=dict, repr=False)
    methods: dict[str, dict] = json_field(conv=_d, repr=False)
    random_rate: float | None = json_field("methods", "random", "pointing_rate")  # a random map's pointing game: chance
    truth: str | None = json_field()  # what the lesions are: "phantom masks" or "expert boxes"
    n_images: int | None = json_field()
    # The app's first map; analyses written before it was recorded: "cam" at "block4" (the last block).
    default_method: str = json_field("default", "method", conv=_or("cam"))
    default_layer: str = json_field("default", "layer", conv=_or("block4"))
    _layers: dict = json_field("layers", conv=_d, repr=False)
    _grid: list | None = json_field("grid", repr=False)

    def pointing_rate(self, method: str) -> float | None:
        return _d(self.methods.get(method)).get("pointing_rate")

    @property
    def default_rate(self) -> float | None:
        """The pointing game of the default map (method at layer)."""
        return self.layer_pointing_rate(self.default_method, self.default_layer)

    @property
    def layers(self) -> list[str]:
        """Layers scored (last block first); just the default one for older analyses."""
        return list(self._layers) or [self.default_layer]

    def _layer_methods(self, layer: str | None) -> dict:
        if layer is None:
            return self.methods
        if layer in self._layers:
            return _d(_get(self._layers, (layer, "methods")))
        return self.methods if layer == self.default_layer else {}

    def layer_methods(self, layer: str | None = None) -> list[str]:
        """Methods scored at ``layer`` (default layer when None), without the "random" baseline."""
        return [m for m in self._layer_methods(layer) if m != "random"]

    def layer_pointing_rate(self, method: str, layer: str | None = None) -> float | None:
        """Pointing game of ``method`` at ``layer`` ("random": the chance level for that layer's grid)."""
        return _d(self._layer_methods(layer).get(method)).get("pointing_rate")

    def energy_inside(self, method: str, layer: str | None = None) -> float | None:
        """Mean share of the map's positive energy inside the lesion."""
        return _d(self._layer_methods(layer).get(method)).get("energy_inside")

    def grid(self, layer: str | None = None) -> tuple[int, int] | None:
        """(h, w) cells of ``layer``'s maps (the default layer when None); None when not recorded."""
        g = _get(self._layers, (layer, "grid")) if layer is not None else None
        return _pair(g or (self._grid if layer in (None, self.default_layer) else None))


@dataclass(frozen=True)
class OodInfo(Record):
    """``ood.json``: the out-of-distribution detector's record (``covidviz.ood.detector``): which
    score is used, the false-alarm rate its cut-off was chosen for on validation, and per detector the
    cut-off and the false-alarm rates it gave on validation and test."""

    raw: dict = field(default_factory=dict, repr=False)
    version: int | None = json_field()
    detector: str | None = json_field()  # the one the verdict uses (mahalanobis | knn | energy)
    detectors: list[str] = json_field(conv=_strs)
    archs: list[str] = json_field(conv=_strs)  # the backbones combined into the one score
    # The stated rate: the share of in-distribution images the cut-off is chosen to flag.
    false_alarm_rate: float | None = json_field()
    n_train: int | None = json_field()
    n_val: int | None = json_field()
    n_test: int | None = json_field()
    _details: dict = json_field("detectors_detail", conv=_d, repr=False)

    def _detail(self, detector: str | None) -> dict:
        return _d(self._details.get(detector or self.detector))

    def cutoff(self, detector: str | None = None) -> float | None:
        return self._detail(detector).get("cutoff")

    def val_false_alarm(self, detector: str | None = None) -> float | None:
        return self._detail(detector).get("val_false_alarm")

    def test_false_alarm(self, detector: str | None = None) -> float | None:
        """The share of the experiment's own test images flagged at the cut-off (None: no test images)."""
        return self._detail(detector).get("test_false_alarm")


@dataclass(frozen=True)
class ProjectionsInfo(Record):
    """``projections.json`` of one backbone: the 2-D maps fitted (``methods``), their parameters and
    quality (trustworthiness and kNN label agreement per map, the features' own kNN agreement)."""

    raw: dict = field(default_factory=dict, repr=False)
    methods: list[str] = json_field(conv=_strs)
    params: dict = json_field(conv=_d)
    # The raw quality block (per method, plus features_knn_agreement, sample_size, k).
    quality: dict = json_field(conv=_d, repr=False)
    # The share of each image's k nearest neighbours that carry its label, in the backbone's features
    # (what a map should keep).
    features_knn_agreement: float | None = json_field("quality", "features_knn_agreement")
    # Images the quality was measured on (a sample on large experiments); None when not recorded.
    sample_size: int | None = json_field("quality", "sample_size", conv=lambda n: int(n) if n else None)
    k: int = json_field("quality", "k", conv=_or(10))
    fit_seconds: dict = json_field(conv=_d)

    def trustworthiness(self, method: str) -> float | None:
        return _d(self.quality.get(method)).get("trustworthiness")

    def knn_agreement(self, method: str) -> float | None:
        """The share of each image's k nearest neighbours on the ``method`` map that carry its label."""
        return _d(self.quality.get(method)).get("knn_agreement")


@dataclass(frozen=True)
class SomInfo(Record):
    """``som.json`` of one backbone: grid, quantization and topographic error on the training images,
    the training images' QE percentiles and the fit's parameters."""

    raw: dict = field(default_factory=dict, repr=False)
    grid: tuple[int, int] | None = json_field(conv=_pair)  # (columns, rows): node = column_index * rows + row_index
    quantization_error: float | None = json_field()
    topographic_error: float | None = json_field()
    qe_percentiles: dict[str, float] = json_field(conv=lambda v: dict(_d(v)))
    params: dict = json_field(conv=_d)
    fit_seconds: float | None = json_field()


@dataclass(frozen=True)
class Shortcuts(Record):
    """``shortcuts.json`` (``covidviz.analysis.shortcuts``): per backbone and class, the test AUC on the
    original films and with parts hidden (``conditions``: original, borders, centre, hot10, random10),
    each with a patient-bootstrap 95 % CI and its paired difference to the original, plus plain verdicts.

    ``cell(arch, cls, cond)`` -> ``{"auc", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high"}``
    (all None when undefined); ``cls="macro"`` gives the macro average."""

    raw: dict = field(default_factory=dict, repr=False)
    version: int | None = json_field()
    conditions: list[str] = json_field(conv=_strs)
    names: list[str] = json_field(conv=_strs)
    archs: list[str] = json_field("backbones", conv=_keys)
    split: str = json_field(conv=_or("test"))
    n_images: int | None = json_field()
    n_patients: int | None = json_field()
    n_boot: int | None = json_field()
    n_skipped: int = json_field(conv=_or(0))
    # What was hidden: hot/random area (fraction), border strip width, centre box side, the heatmap
    # ({"method", "target"}), the images audited at most, the seed.
    settings: dict = _group("fraction", "border", "centre", "heatmap", "max_images", "seed")
    _labels: dict = json_field("condition_labels", conv=_d, repr=False)
    _backbones: dict = json_field("backbones", conv=_d, repr=False)
    _verdicts: list[str] = json_field("verdicts", conv=_strs, repr=False)

    _EMPTY = {"auc": None, "ci_low": None, "ci_high": None, "diff": None, "diff_ci_low": None, "diff_ci_high": None}

    def condition_label(self, cond: str) -> str:
        """Human name of a condition ("centre hidden"), the condition itself when not recorded."""
        return str(self._labels.get(cond) or cond)

    def cell(self, arch: str, cls: str, cond: str) -> dict:
        b = _d(self._backbones.get(arch))
        row = _d(b.get("macro")) if cls == "macro" else _d(_d(b.get("per_class")).get(cls))
        return {**self._EMPTY, **_d(row.get(cond))}

    def auc(self, arch: str, cls: str, cond: str = "original") -> float | None:
        return self.cell(arch, cls, cond)["auc"]

    def n_pos(self, arch: str, cls: str) -> int | None:
        return _get(self._backbones, (arch, "per_class", cls, "n_pos"))

    def rows(self, arch: str) -> list[dict]:
        """One dict per (class incl. "macro", condition): ``class, condition, label`` + the cell (a table)."""
        return [{"class": cls, "condition": cond, "label": self.condition_label(cond), **self.cell(arch, cls, cond)}
                for cls in [*self.names, "macro"] for cond in self.conditions]

    def verdicts(self, arch: str | None = None) -> list[str]:
        """Plain sentences (all backbones', or one backbone's)."""
        return list(self._verdicts) if arch is None else _strs(_get(self._backbones, (arch, "verdicts")))
