"""``lungs.json`` (per backbone): how much of each class's heat-map weight lies on the lung fields.

Written by ``covidviz.analysis.lungs`` (the analysis step, after localisation); the same object is stored
for an external test set under its ``metrics.json`` (``backbones.<arch>.lungs``). Layout::

    {"version", "split", "n_candidates", "n_images", "n_patients", "n_boot", "seed", "max_images",
     "source",                      # "annotator masks", "covidviz segmenter" or both joined by " and "
     "sources": {source: n films},
     "quality_ok",                  # the segmenter's quality cut-off (covidviz.anatomy.QUALITY_OK)
     "n_low_quality", "n_unreadable", "n_no_mask",   # films left out, and why
     "heatmap": {"method", "layer", "target"},
     "films": "all test films",     # which films each class's map is read on
     "names": [...],
     "per_class": {cls: {"all": CELL, "positives": CELL}},
     "image_ids": [...]}
    CELL = {"n", "n_flat", "share", "ci_low", "ci_high", "chance", "pointing", "pointing_ci_low",
            "pointing_ci_high", "pointing_chance"}

``share``: the mean share of the class's CAM weight inside the lungs (95 % CI, patient bootstrap);
``chance``: the mean share of the model input the lungs cover on the same films (what a map spread
evenly would score, and the chance of a random peak landing on the lungs); ``pointing``: the share of
films whose map peaks inside the lungs. ``n_flat``: films whose map has no positive weight (left out).

``read_lungs(exp, arch)`` / ``external_lungs(ext, arch)`` give the typed ``LungShares`` (or None).
"""

from __future__ import annotations

from dataclasses import dataclass, field

LUNGS = "lungs.json"
ANNOTATOR = "annotator masks"
SEGMENTER = "covidviz segmenter"
FILMS = ("all", "positives")


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _int(value, default: int | None = 0) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LungCell:
    """One class's map on one set of films (all, or the class's positives)."""

    n: int = 0
    n_flat: int = 0
    share: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    chance: float | None = None
    pointing: float | None = None
    pointing_ci_low: float | None = None
    pointing_ci_high: float | None = None
    pointing_chance: float | None = None

    @classmethod
    def from_json(cls, d) -> LungCell:
        d = _d(d)
        return cls(n=_int(d.get("n")), n_flat=_int(d.get("n_flat")),
                   **{k: _float(d.get(k)) for k in ("share", "ci_low", "ci_high", "chance", "pointing",
                                                    "pointing_ci_low", "pointing_ci_high", "pointing_chance")})

    @property
    def measured(self) -> bool:
        return self.share is not None


@dataclass(frozen=True)
class LungShares:
    """A backbone's lung-weight analysis (see the module docstring); missing parts read as defaults."""

    raw: dict = field(repr=False)
    version: int | None = None
    split: str = "test"
    source: str = ""
    sources: dict = field(default_factory=dict)
    n_candidates: int = 0
    n_images: int = 0
    n_patients: int = 0
    n_boot: int | None = None
    n_low_quality: int = 0
    n_unreadable: int = 0
    n_no_mask: int = 0
    quality_ok: float | None = None
    heatmap: dict = field(default_factory=dict)
    films: str = "all test films"
    names: list = field(default_factory=list)

    @classmethod
    def from_json(cls, d) -> LungShares:
        d = _d(d)
        return cls(raw=d, version=_int(d.get("version"), None), split=str(d.get("split") or "test"),
                   source=str(d.get("source") or ""),
                   sources={str(k): _int(v) for k, v in _d(d.get("sources")).items()},
                   n_candidates=_int(d.get("n_candidates")), n_images=_int(d.get("n_images")),
                   n_patients=_int(d.get("n_patients")), n_boot=_int(d.get("n_boot"), None),
                   n_low_quality=_int(d.get("n_low_quality")), n_unreadable=_int(d.get("n_unreadable")),
                   n_no_mask=_int(d.get("n_no_mask")), quality_ok=_float(d.get("quality_ok")),
                   heatmap=dict(_d(d.get("heatmap"))), films=str(d.get("films") or "all test films"),
                   names=[str(n) for n in d.get("names") or []])

    def cell(self, cls: str, films: str = "all") -> LungCell:
        """``cls``'s map on ``films`` ("all" or "positives"); an empty cell when not stored."""
        return LungCell.from_json(_d(_d(_d(self.raw.get("per_class")).get(cls)).get(films)))


def read_lungs(exp, arch: str) -> LungShares | None:
    """A backbone's ``lungs.json`` (typed), or None (not analysed, or an analysis older than it)."""
    if not exp.has_artifact(LUNGS, arch):
        return None
    return LungShares.from_json(exp.load_json(LUNGS, arch))


def external_lungs(ext, arch: str) -> LungShares | None:
    """The lung-weight analysis stored with an external test set (``runs.external.ExternalSet``), or None."""
    raw = _d(_d(_d(getattr(ext, "metrics", None)).get("backbones")).get(arch)).get("lungs")
    return LungShares.from_json(raw) if isinstance(raw, dict) else None
