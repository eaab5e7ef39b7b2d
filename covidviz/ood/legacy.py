"""The out-of-distribution rule of experiments analysed before the fitted detector existed.

Such an experiment has no ``ood.npz`` but stores, per backbone, its map placer with the training images'
nearest-neighbour distances and its SOM (``covidviz.ood.reference``). An image is flagged when, for any
backbone, its distance to the nearest training image, or its SOM quantisation error, is larger than for
``LEGACY_PERCENTILE`` % of the training images' own. Each of those checks alone flags about
``100 - LEGACY_PERCENTILE`` % of new training-like images; with several backbones and two checks the
rate is higher (a rule of thumb, not a calibrated rate: re-run ``train.py analyze`` for the fitted one).
"""

from __future__ import annotations

import numpy as np

from covidviz import runs
from covidviz.ood.reference import TrainingReference, load_references
from covidviz.ood.verdict import LEGACY, Detector, FeatureCheck

LEGACY_PERCENTILE = 99.0
NO_REFERENCE = "No feature-space check: no stored reference for the backbones given ({archs})."


class LegacyDetector(Detector):
    """The nearest-training-image and SOM rule over the backbones that store a reference."""

    def __init__(self, references: dict[str, TrainingReference], percentile: float = LEGACY_PERCENTILE,
                 path: str = ""):
        self.references = {a: r for a, r in references.items() if r.nn_sorted is not None or r.som is not None}
        self.archs = list(self.references)
        self.percentile = float(percentile)
        self.path = path

    @classmethod
    def from_experiment(cls, exp: runs.Experiment, references: dict[str, TrainingReference] | None = None
                        ) -> LegacyDetector:
        return cls(load_references(exp) if references is None else references, path=str(exp.path))

    @property
    def available(self) -> bool:
        return bool(self.references)

    @property
    def false_alarm_rate(self) -> float:
        """The stated rate of each single check (see the module docstring)."""
        return 1.0 - self.percentile / 100.0

    def check(self, features: dict[str, np.ndarray]) -> FeatureCheck | str:
        reasons, nn_pcts, per = [], [], {}
        for arch, ref in self.references.items():
            if arch not in features:
                continue
            place = ref.place(features[arch])
            fired = []
            if place.nn_pct is not None:
                nn_pcts.append(place.nn_pct)
                if place.nn_pct > self.percentile:
                    fired.append(f"its distance to the nearest training image in feature space ({place.nn_distance:.2f}) "
                                 f"is larger than for {place.nn_pct:.1f} % of the training images")
            if place.som_qe_pct is not None and place.som_qe_pct > self.percentile:
                fired.append(f"its SOM quantisation error ({place.som_qe:.2f}) is larger than for "
                             f"{place.som_qe_pct:.1f} % of the training images")
            measured = [p for p in (place.nn_pct, place.som_qe_pct) if p is not None]
            if measured:
                per[arch] = max(measured)
            if fired:
                reasons.append(f"{arch}: " + "; ".join(fired) + ".")
        if not per:
            return NO_REFERENCE.format(archs=", ".join(features) or "none")
        return FeatureCheck(is_ood=bool(reasons), reasons=reasons, false_alarm_rate=self.false_alarm_rate,
                            detector=LEGACY, percentile=max(nn_pcts) if nn_pcts else None, per_backbone=per)
