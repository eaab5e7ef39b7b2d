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

from covidviz.runs.records import Record, _d, as_float, as_int, json_field

LUNGS = "lungs.json"
ANNOTATOR = "annotator masks"
SEGMENTER = "covidviz segmenter"
FILMS = ("all", "positives")


_int, _float = as_int, as_float


def _count():
    """A count field (0 when absent or unreadable)."""
    return json_field(conv=_int)


def _share():
    """A share or CI bound field (None when absent)."""
    return json_field(conv=_float)


@dataclass(frozen=True)
class LungCell(Record):
    """One class's map on one set of films (all, or the class's positives)."""

    raw: dict = field(default_factory=dict, repr=False)
    n: int = _count()
    n_flat: int = _count()
    share: float | None = _share()
    ci_low: float | None = _share()
    ci_high: float | None = _share()
    chance: float | None = _share()
    pointing: float | None = _share()
    pointing_ci_low: float | None = _share()
    pointing_ci_high: float | None = _share()
    pointing_chance: float | None = _share()

    @property
    def measured(self) -> bool:
        return self.share is not None


@dataclass(frozen=True)
class LungShares(Record):
    """A backbone's lung-weight analysis (see the module docstring); missing parts read as defaults."""

    raw: dict = field(default_factory=dict, repr=False)
    version: int | None = json_field(conv=lambda v: _int(v, None))
    split: str = json_field(conv=lambda v: str(v or "test"))
    source: str = json_field(conv=lambda v: str(v or ""))
    sources: dict = json_field(conv=lambda v: {str(k): _int(n) for k, n in _d(v).items()})
    n_candidates: int = _count()
    n_images: int = _count()
    n_patients: int = _count()
    n_boot: int | None = json_field(conv=lambda v: _int(v, None))
    n_low_quality: int = _count()
    n_unreadable: int = _count()
    n_no_mask: int = _count()
    quality_ok: float | None = _share()
    heatmap: dict = json_field(conv=lambda v: dict(_d(v)))
    films: str = json_field(conv=lambda v: str(v or "all test films"))
    names: list = json_field(conv=lambda v: [str(n) for n in v or []])
    per_class: dict = json_field(conv=_d, repr=False)
    image_ids: list = json_field(conv=lambda v: list(v or []), repr=False)

    def cell(self, cls: str, films: str = "all") -> LungCell:
        """``cls``'s map on ``films`` ("all" or "positives"); an empty cell when not stored."""
        return LungCell.from_json(_d(_d(self.per_class.get(cls)).get(films)))


def read_lungs(exp, arch: str) -> LungShares | None:
    """A backbone's ``lungs.json`` (typed), or None (not analysed, or an analysis older than it)."""
    if not exp.has_artifact(LUNGS, arch):
        return None
    return LungShares.from_json(exp.load_json(LUNGS, arch))


def external_lungs(ext, arch: str) -> LungShares | None:
    """The lung-weight analysis stored with an external test set (``runs.external.ExternalSet``), or None."""
    raw = _d(_d(_d(getattr(ext, "metrics", None)).get("backbones")).get(arch)).get("lungs")
    return LungShares.from_json(raw) if isinstance(raw, dict) else None
