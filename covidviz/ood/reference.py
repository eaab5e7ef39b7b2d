"""Where one image falls among a backbone's training images, from what the analysis stored: its place on
the 2-D maps and its nearest training images (the ``MapPlacer`` in projections.npz), how far that nearest
image is compared with the training images' own nearest neighbours, and its SOM node and quantisation
error (som.npz). Nothing is refitted.

``Predictor`` shows these (similar cases, the maps, the SOM); the ``legacy`` out-of-distribution rule
(``covidviz.ood.legacy``) judges on the two percentiles. Both read them through ``load_references``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from covidviz import runs
from covidviz.stats.projection import MapPlacer, stored_nn_distances
from covidviz.stats.som import som_place


def nn_percentile(sorted_reference: np.ndarray, value: float) -> float:
    """Share (%) of the reference distances at or below ``value`` (as ``som_place`` ranks a QE)."""
    return float(100.0 * np.searchsorted(sorted_reference, value, side="right") / max(len(sorted_reference), 1))


@dataclass
class Place:
    """One image among one backbone's training images (None / empty for what the experiment lacks)."""

    coords: dict[str, list[float]] = field(default_factory=dict)   # map method -> [x, y]
    neighbors: list[int] = field(default_factory=list)             # images.parquet rows, nearest first
    distances: list[float] = field(default_factory=list)           # standardised PCA-50 distances
    nn_distance: float | None = None                               # to the nearest training image
    nn_pct: float | None = None        # share (%) of training images closer to their own nearest neighbour
    som_node: int | None = None
    som_qe: float | None = None
    som_qe_pct: float | None = None    # share (%) of training images with a smaller quantisation error


@dataclass
class TrainingReference:
    """One backbone's stored reference: the map placer, the training images' sorted nearest-neighbour
    distances and the SOM arrays (each None when not stored). Read-only: one serves many threads."""

    placer: MapPlacer | None = None
    nn_sorted: np.ndarray | None = None
    som: dict | None = None

    @classmethod
    def from_experiment(cls, exp: runs.Experiment, arch: str) -> TrainingReference:
        ref = cls()
        if exp.has_artifact(runs.PROJECTIONS, arch):
            arrays = exp.load_arrays(runs.PROJECTIONS, arch)
            ref.placer = MapPlacer.from_stored(arrays)
            if ref.placer is not None:
                ref.nn_sorted = stored_nn_distances(arrays)
        if exp.has_artifact(runs.SOM, arch):
            ref.som = exp.load_arrays(runs.SOM, arch)
        return ref

    @property
    def empty(self) -> bool:
        return self.placer is None and self.som is None

    @property
    def som_grid(self) -> tuple[int, int] | None:
        w = None if self.som is None else np.asarray(self.som["weights"])
        return (int(w.shape[0]), int(w.shape[1])) if w is not None and w.ndim == 3 else None

    def place(self, features: np.ndarray) -> Place:
        """Where the (D,) pooled features fall (``Place``)."""
        out = Place()
        feats = np.asarray(features, np.float32).reshape(-1)
        if self.placer is not None:
            placement = self.placer.place(feats[None])
            out.coords = {m: [float(v) for v in c[0]] for m, c in placement.coords.items()}
            out.neighbors = [int(i) for i in placement.neighbors[0]]
            out.distances = [float(d) for d in placement.distances[0]]
            out.nn_distance = out.distances[0]
            if self.nn_sorted is not None and len(self.nn_sorted):
                out.nn_pct = nn_percentile(self.nn_sorted, out.nn_distance)
        if self.som is not None:
            out.som_node, out.som_qe, out.som_qe_pct = som_place(self.som, feats)
        return out


def load_references(exp: runs.Experiment, archs=None) -> dict[str, TrainingReference]:
    """arch -> its ``TrainingReference``, for the backbones (default: all) that have one stored."""
    refs = {a: TrainingReference.from_experiment(exp, a) for a in (archs or exp.backbones)}
    return {a: r for a, r in refs.items() if not r.empty}
