"""Typed, read-only views of the analysis' JSON files (``analysis.json``, ``localisation.json``,
``projections.json``, ``som.json``, ``ood.json``, ``shortcuts.json``): the only code that knows their key
paths. The manifest's records (``ManifestInfo``, ``ManifestBackbone``) are dataclasses of their own in
``covidviz.runs.manifest``, re-exported here.

Pages and views ask ``Analysis.point(arch, cls, "youden")`` or ``ManifestBackbone.aucs("test")`` instead
of walking ``analysis["backbones"][arch]["thresholds"]["per_class"][cls]["points"]...``; when the
analysis writes a new layout, only this module changes. Missing parts read as ``None`` (an experiment
analysed by an older version, a class with a single outcome), never as a ``KeyError``.

Thresholds live once, in ``analysis.json``; the manifest keeps the training record (init, epochs,
metrics at training time) and the calibration temperature is read from the analysis too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covidviz.runs.manifest import ManifestBackbone, ManifestInfo  # noqa: F401 (re-exported: views import them from here)

POINTS = ("youden", "high_sensitivity", "high_specificity")  # analysis/thresholds.POINTS, by name


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Rate:
    """A proportion with its Wilson 95 % CI and denominator (sensitivity, PPV, ...)."""

    value: float | None
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @classmethod
    def of(cls, raw) -> Rate:
        r = _d(raw)
        return cls(r.get("value"), r.get("n"), r.get("ci_low"), r.get("ci_high"))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold chosen on validation and what it achieved there and on test."""

    name: str
    threshold: float | None
    val_sensitivity: float | None
    val_specificity: float | None
    test: dict                      # confusion_at(): tp/fp/fn/tn and the four rates (raw, for tables)

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
        r = _d(raw)
        val = _d(r.get("val"))
        return cls(name, r.get("threshold"), val.get("sensitivity"), val.get("specificity"), _d(r.get("test")))


@dataclass(frozen=True)
class ClassMetrics:
    """One class's (or the macro average's) discrimination on a test set."""

    auc: float | None
    ci_low: float | None
    ci_high: float | None
    ap: float | None
    n: int | None
    n_pos: int | None
    roc: dict | None                # {"fpr": [...], "tpr": [...], ...} downsampled curve
    pr: dict | None

    @classmethod
    def of(cls, raw) -> ClassMetrics:
        r = _d(raw)
        return cls(r.get("auc"), r.get("ci_low"), r.get("ci_high"), r.get("ap"), r.get("n"), r.get("n_pos"),
                   r.get("roc"), r.get("pr"))


@dataclass(frozen=True)
class BackboneAnalysis:
    """One backbone's part of ``analysis.json``."""

    arch: str
    raw: dict = field(repr=False)

    @property
    def test(self) -> dict:
        return _d(self.raw.get("test"))

    def metrics(self, cls: str) -> ClassMetrics:
        return ClassMetrics.of(_d(self.test.get("per_class")).get(cls))

    @property
    def macro(self) -> ClassMetrics:
        return ClassMetrics.of(self.test.get("macro"))

    @property
    def n_test(self) -> int | None:
        return self.test.get("n")

    def point(self, cls: str, name: str = "youden") -> OperatingPoint:
        per_class = _d(_d(self.raw.get("thresholds")).get("per_class"))
        return OperatingPoint.of(name, _d(_d(per_class.get(cls)).get("points")).get(name))

    def points(self, cls: str) -> dict[str, OperatingPoint]:
        return {p: self.point(cls, p) for p in POINTS}

    def thresholds(self) -> dict[str, dict[str, float | None]]:
        """class -> point name -> threshold (None where no threshold could be chosen)."""
        per_class = _d(_d(self.raw.get("thresholds")).get("per_class"))
        return {cls: {p: self.point(cls, p).threshold for p in POINTS} for cls in per_class}

    def class_counts(self, cls: str) -> dict:
        """``{"val": {"n", "n_pos"}, "test": {"n", "n_pos"}}`` of the thresholds' class."""
        c = _d(_d(_d(self.raw.get("thresholds")).get("per_class")).get(cls))
        return {"val": _d(c.get("val")), "test": _d(c.get("test"))}

    @property
    def confusion(self) -> dict | None:
        """The multi-class argmax confusion matrix on test, or None (multi-label)."""
        return _d(self.raw.get("thresholds")).get("confusion")

    @property
    def calibration(self) -> dict | None:
        return self.raw.get("calibration") or None

    @property
    def temperature(self):
        """One float (multi-class) or one per class (multi-label); None when not calibrated."""
        return _d(self.raw.get("calibration")).get("temperature")

    @property
    def subgroup_rows(self) -> list[dict]:
        return list(_d(self.raw.get("subgroups")).get("rows") or [])

    def calibration_scores(self, when: str, cls: str | None = None) -> dict[str, float | None]:
        """``{"ece", "brier"}`` on test ``before`` | ``after`` temperature scaling; of one class when
        ``cls`` is given (multi-label stores both per class; multi-class only the Brier score, so its
        ECE stays the overall one)."""
        s = _d(_d(self.raw.get("calibration")).get(when))
        if cls is None:
            return {"ece": s.get("ece"), "brier": s.get("brier")}
        ece = _d(s.get("ece_per_class")).get(cls) if "ece_per_class" in s else s.get("ece")
        return {"ece": ece, "brier": _d(s.get("brier_per_class")).get(cls)}

    def reliability(self, when: str, cls: str | None = None) -> list[dict]:
        """Reliability bins (``centre``, ``confidence``, ``accuracy``, ``count``) on test ``before`` |
        ``after`` temperature scaling: of ``cls`` where stored per class (multi-label), else the
        stored default (top class for multi-class, every (image, class) pair pooled for multi-label)."""
        s = _d(_d(self.raw.get("calibration")).get(when))
        per_class = _d(s.get("reliability_per_class"))
        if cls and cls in per_class:
            return list(per_class[cls] or [])
        return list(s.get("reliability") or [])


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two backbones on the same test images."""

    a: str
    b: str
    raw: dict = field(repr=False)

    def per_class(self, cls: str) -> dict:
        return _d(_d(self.raw.get("per_class")).get(cls))

    @property
    def macro(self) -> dict:
        return _d(self.raw.get("macro"))


@dataclass(frozen=True)
class Analysis:
    """``analysis.json``: test metrics, thresholds, calibration, subgroups, comparisons, baseline."""

    raw: dict = field(repr=False)

    @property
    def meta(self) -> dict:
        return _d(self.raw.get("meta"))

    @property
    def names(self) -> list[str]:
        """The class names in the analysis' order (the order of per-class temperatures)."""
        return list(self.meta.get("names") or [])

    @property
    def task(self) -> str | None:
        return self.meta.get("task")

    @property
    def n_boot(self) -> int | None:
        """Patient-bootstrap resamples behind every CI."""
        return self.meta.get("n_boot")

    def n_images(self, split: str = "test") -> int | None:
        return _d(self.meta.get("n")).get(split)

    @property
    def n_patients_test(self) -> int | None:
        return self.meta.get("n_patients_test")

    @property
    def archs(self) -> list[str]:
        return list(_d(self.raw.get("backbones")))

    def has(self, arch: str) -> bool:
        return arch in _d(self.raw.get("backbones"))

    def backbone(self, arch: str) -> BackboneAnalysis:
        return BackboneAnalysis(arch, _d(_d(self.raw.get("backbones")).get(arch)))

    def comparison(self, a: str, b: str) -> tuple[Comparison | None, bool]:
        """The comparison of ``a`` and ``b`` and whether it is stored the other way round (b vs a)."""
        for c in self.raw.get("comparisons") or []:
            if (c.get("a"), c.get("b")) == (a, b):
                return Comparison(a, b, c), False
            if (c.get("a"), c.get("b")) == (b, a):
                return Comparison(b, a, c), True
        return None, False

    @property
    def confounding(self) -> list[str]:
        """Plain sentences: metadata groups (source, sex, ...) that predict a class (Cramér's V)."""
        return list(self.raw.get("confounding") or [])

    @property
    def confounding_details(self) -> list[dict]:
        return list(self.raw.get("confounding_details") or [])

    @property
    def baseline(self) -> dict:
        """The trivial thumbnail baseline (``{}`` when it could not be fitted)."""
        return _d(self.raw.get("baseline"))

    def baseline_auc(self, cls: str) -> float | None:
        """The baseline's test AUC of a class (``"macro"``: the macro average)."""
        test = _d(self.baseline.get("test"))
        if cls == "macro":
            return test.get("macro_auc")
        if "auc" in test:
            return _d(test.get("auc")).get(cls)
        return _d(_d(test.get("per_class")).get(cls)).get("auc")  # the layout analysis/report.py writes

    @property
    def baseline_source(self) -> dict | None:
        """How well the baseline tells the image source (``accuracy``, ``majority``,
        ``majority_accuracy``), or None (fewer than two sources, or no baseline)."""
        return self.baseline.get("source") or None


@dataclass(frozen=True)
class Localisation:
    """``localisation.json`` of one backbone: pointing game and energy per CAM method vs a random map."""

    raw: dict = field(repr=False)

    @property
    def methods(self) -> dict[str, dict]:
        return _d(self.raw.get("methods"))

    def pointing_rate(self, method: str) -> float | None:
        return _d(self.methods.get(method)).get("pointing_rate")

    @property
    def random_rate(self) -> float | None:
        """The pointing game of a random map of the same grid: the chance level."""
        return self.pointing_rate("random")

    @property
    def truth(self) -> str | None:
        """What the lesions are: "phantom masks" or "expert boxes"."""
        return self.raw.get("truth")

    @property
    def n_images(self) -> int | None:
        return self.raw.get("n_images")

    @property
    def default_method(self) -> str:
        """The method of the app's first map ("cam" for analyses written before it was recorded)."""
        return _d(self.raw.get("default")).get("method") or "cam"

    @property
    def default_layer(self) -> str:
        """The layer of the app's first map ("block4", the last block, for older analyses)."""
        return _d(self.raw.get("default")).get("layer") or "block4"

    @property
    def default_rate(self) -> float | None:
        """The pointing game of the default map (method at layer)."""
        return self.layer_pointing_rate(self.default_method, self.default_layer)

    @property
    def layers(self) -> list[str]:
        """Layers scored (last block first); just the default one for older analyses."""
        return list(_d(self.raw.get("layers"))) or [self.default_layer]

    def _layer_methods(self, layer: str | None) -> dict:
        if layer is None:
            return self.methods
        per_layer = _d(self.raw.get("layers"))
        if layer in per_layer:
            return _d(_d(per_layer[layer]).get("methods"))
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
        g = _d(_d(self.raw.get("layers")).get(layer)).get("grid") if layer is not None else None
        g = g or (self.raw.get("grid") if layer in (None, self.default_layer) else None)
        return (int(g[0]), int(g[1])) if isinstance(g, (list, tuple)) and len(g) == 2 else None


@dataclass(frozen=True)
class OodInfo:
    """``ood.json``: the out-of-distribution detector's record (``covidviz.ood.detector``): which
    score is used, the false-alarm rate its cut-off was chosen for on validation, and per detector the
    cut-off and the false-alarm rates it gave on validation and test."""

    raw: dict = field(repr=False)

    @property
    def version(self) -> int | None:
        return self.raw.get("version")

    @property
    def detector(self) -> str | None:
        """The detector the verdict uses (``mahalanobis`` | ``knn`` | ``energy``)."""
        return self.raw.get("detector")

    @property
    def detectors(self) -> list[str]:
        return [str(d) for d in self.raw.get("detectors") or []]

    @property
    def archs(self) -> list[str]:
        """The backbones combined into the one score."""
        return [str(a) for a in self.raw.get("archs") or []]

    @property
    def false_alarm_rate(self) -> float | None:
        """The stated rate: the share of in-distribution images the cut-off is chosen to flag."""
        return self.raw.get("false_alarm_rate")

    @property
    def n_val(self) -> int | None:
        return self.raw.get("n_val")

    def _detail(self, detector: str | None) -> dict:
        return _d(_d(self.raw.get("detectors_detail")).get(detector or self.detector))

    def cutoff(self, detector: str | None = None) -> float | None:
        return self._detail(detector).get("cutoff")

    def val_false_alarm(self, detector: str | None = None) -> float | None:
        return self._detail(detector).get("val_false_alarm")

    def test_false_alarm(self, detector: str | None = None) -> float | None:
        """The share of the experiment's own test images flagged at the cut-off (None: no test images)."""
        return self._detail(detector).get("test_false_alarm")


@dataclass(frozen=True)
class ProjectionsInfo:
    """``projections.json`` of one backbone: the 2-D maps fitted (``methods``), their parameters and
    quality (trustworthiness and kNN label agreement per map, the features' own kNN agreement)."""

    raw: dict = field(repr=False)

    @property
    def methods(self) -> list[str]:
        return [str(m) for m in self.raw.get("methods") or []]

    @property
    def params(self) -> dict:
        return _d(self.raw.get("params"))

    @property
    def quality(self) -> dict:
        """The raw quality block (per method, plus ``features_knn_agreement``, ``sample_size``, ``k``)."""
        return _d(self.raw.get("quality"))

    def trustworthiness(self, method: str) -> float | None:
        return _d(self.quality.get(method)).get("trustworthiness")

    def knn_agreement(self, method: str) -> float | None:
        """The share of each image's k nearest neighbours on the ``method`` map that carry its label."""
        return _d(self.quality.get(method)).get("knn_agreement")

    @property
    def features_knn_agreement(self) -> float | None:
        """The same share measured in the backbone's features (what a map should keep)."""
        return self.quality.get("features_knn_agreement")

    @property
    def sample_size(self) -> int | None:
        """Images the quality was measured on (a sample on large experiments); None when not recorded."""
        n = self.quality.get("sample_size")
        return int(n) if n else None

    @property
    def k(self) -> int:
        return int(self.quality.get("k") or 10)

    @property
    def fit_seconds(self) -> dict:
        return _d(self.raw.get("fit_seconds"))


@dataclass(frozen=True)
class SomInfo:
    """``som.json`` of one backbone: grid, quantization and topographic error on the training images,
    the training images' QE percentiles and the fit's parameters."""

    raw: dict = field(repr=False)

    @property
    def grid(self) -> tuple[int, int] | None:
        """(columns, rows) of the hexagonal grid: node = column_index * rows + row_index."""
        g = self.raw.get("grid")
        return (int(g[0]), int(g[1])) if isinstance(g, (list, tuple)) and len(g) == 2 else None

    @property
    def quantization_error(self) -> float | None:
        return self.raw.get("quantization_error")

    @property
    def topographic_error(self) -> float | None:
        return self.raw.get("topographic_error")

    @property
    def qe_percentiles(self) -> dict[str, float]:
        return dict(_d(self.raw.get("qe_percentiles")))

    @property
    def params(self) -> dict:
        return _d(self.raw.get("params"))

    @property
    def fit_seconds(self) -> float | None:
        return self.raw.get("fit_seconds")


@dataclass(frozen=True)
class Shortcuts:
    """``shortcuts.json`` (``covidviz.analysis.shortcuts``): per backbone and class, the test AUC on the
    original films and with parts hidden (``conditions``: original, borders, centre, hot10, random10),
    each with a patient-bootstrap 95 % CI and its paired difference to the original, plus plain verdicts.

    ``cell(arch, cls, cond)`` -> ``{"auc", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high"}``
    (all None when undefined); ``cls="macro"`` gives the macro average."""

    raw: dict = field(repr=False)

    @property
    def version(self) -> int | None:
        return self.raw.get("version")

    @property
    def conditions(self) -> list[str]:
        return [str(c) for c in self.raw.get("conditions") or []]

    def condition_label(self, cond: str) -> str:
        """Human name of a condition ("centre hidden"), the condition itself when not recorded."""
        return str(_d(self.raw.get("condition_labels")).get(cond) or cond)

    @property
    def names(self) -> list[str]:
        return [str(n) for n in self.raw.get("names") or []]

    @property
    def archs(self) -> list[str]:
        return list(_d(self.raw.get("backbones")))

    @property
    def split(self) -> str:
        return str(self.raw.get("split") or "test")

    @property
    def n_images(self) -> int | None:
        return self.raw.get("n_images")

    @property
    def n_patients(self) -> int | None:
        return self.raw.get("n_patients")

    @property
    def n_boot(self) -> int | None:
        return self.raw.get("n_boot")

    @property
    def n_skipped(self) -> int:
        return int(self.raw.get("n_skipped") or 0)

    @property
    def settings(self) -> dict:
        """What was hidden: ``fraction`` (hot/random area), ``border`` (strip width), ``centre`` (box side),
        ``heatmap`` ({"method", "target"}), ``max_images``, ``seed``."""
        return {k: self.raw.get(k) for k in ("fraction", "border", "centre", "heatmap", "max_images", "seed")}

    _EMPTY = {"auc": None, "ci_low": None, "ci_high": None, "diff": None, "diff_ci_low": None, "diff_ci_high": None}

    def cell(self, arch: str, cls: str, cond: str) -> dict:
        b = _d(_d(self.raw.get("backbones")).get(arch))
        row = _d(b.get("macro")) if cls == "macro" else _d(_d(b.get("per_class")).get(cls))
        return {**self._EMPTY, **_d(row.get(cond))}

    def auc(self, arch: str, cls: str, cond: str = "original") -> float | None:
        return self.cell(arch, cls, cond)["auc"]

    def n_pos(self, arch: str, cls: str) -> int | None:
        return _d(_d(_d(_d(self.raw.get("backbones")).get(arch)).get("per_class")).get(cls)).get("n_pos")

    def rows(self, arch: str) -> list[dict]:
        """One dict per (class incl. "macro", condition): ``class, condition, label`` + the cell (a table)."""
        return [{"class": cls, "condition": cond, "label": self.condition_label(cond), **self.cell(arch, cls, cond)}
                for cls in [*self.names, "macro"] for cond in self.conditions]

    def verdicts(self, arch: str | None = None) -> list[str]:
        """Plain sentences (all backbones', or one backbone's)."""
        if arch is None:
            return [str(s) for s in self.raw.get("verdicts") or []]
        return [str(s) for s in _d(_d(self.raw.get("backbones")).get(arch)).get("verdicts") or []]
