"""Typed, read-only views of the run's JSON files (``manifest.json``, ``analysis.json``,
``localisation.json``): the only code that knows their key paths.

Pages and views ask ``Analysis.point(arch, cls, "youden")`` or ``ManifestBackbone.test_aucs`` instead
of walking ``analysis["backbones"][arch]["thresholds"]["per_class"][cls]["points"]...``; when the
analysis writes a new layout, only this module changes. Missing parts read as ``None`` (an experiment
analysed by an older version, a class with a single outcome), never as a ``KeyError``.

Thresholds live once, in ``analysis.json``; the manifest keeps the training record (init, epochs,
metrics at training time) and the calibration temperature is read from the analysis too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        test = _d(self.baseline.get("test"))
        if cls == "macro":
            return test.get("macro_auc")
        return _d(test.get("auc")).get(cls)


@dataclass(frozen=True)
class ManifestBackbone:
    """One backbone's record in ``manifest.json`` (written at training time)."""

    arch: str
    raw: dict = field(repr=False)

    @property
    def init(self) -> dict:
        return _d(self.raw.get("init"))

    def split_metrics(self, split: str = "test") -> dict:
        return _d(_d(self.raw.get("metrics")).get(split))

    def aucs(self, split: str = "test") -> dict[str, float | None]:
        return dict(_d(self.split_metrics(split).get("auc")))

    def macro_auc(self, split: str = "test") -> float | None:
        return self.split_metrics(split).get("macro_auc")

    def n(self, split: str = "test") -> int | None:
        return self.split_metrics(split).get("n")

    def get(self, key: str, default=None):
        return self.raw.get(key, default)


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
