"""Out-of-distribution checks: is an upload a radiograph at all (``gate``), and is it like the
images the models were trained on (``detector``; ``legacy`` for experiments analysed before it)?
One verdict per image (``verdict``), Streamlit-free.

``load_detector(exp).verdict(decoded, {arch: features})`` -> ``OodVerdict``: the one interface the
inference service, the batch scorer, ``train.py evaluate`` and the pages judge through.
"""

from __future__ import annotations

import logging

from covidviz.ood.detector import DETECTORS, FALSE_ALARM_RATE, OodDetector, analyse_ood, fit_ood
from covidviz.ood.gate import GateResult, GateRules, check_image
from covidviz.ood.legacy import LEGACY_PERCENTILE, LegacyDetector
from covidviz.ood.reference import Place, TrainingReference, load_references
from covidviz.ood.verdict import LEGACY, Detector, GateOnly, OodVerdict

log = logging.getLogger(__name__)

__all__ = ["DETECTORS", "FALSE_ALARM_RATE", "LEGACY", "LEGACY_PERCENTILE", "Detector", "GateOnly", "GateResult",
           "GateRules", "LegacyDetector", "OodDetector", "OodVerdict", "Place", "TrainingReference", "analyse_ood",
           "check_image", "fit_ood", "load_detector", "load_references"]


def load_detector(exp, references: dict[str, TrainingReference] | None = None) -> Detector:
    """THE detector of an experiment: the fitted one (``ood.npz``); else, for an experiment analysed before
    it existed (or whose ``ood.npz`` is unreadable: logged), the legacy rule on its stored maps and SOM;
    else the input gate alone. ``references``: the experiment's ``load_references`` when the caller has
    them already (the legacy rule reuses them). Never raises for a missing or broken artefact."""
    try:
        fitted = OodDetector.from_experiment(exp)
        if fitted.available:
            return fitted
    except Exception as exc:  # noqa: BLE001 - a broken ood.npz must not stop predictions: say so, fall back
        log.warning("out-of-distribution detector of %s unreadable (%s); using the older checks", exp.path, exc)
    try:
        legacy = LegacyDetector.from_experiment(exp, references)
        if legacy.available:
            return legacy
    except Exception as exc:  # noqa: BLE001 - the same for broken maps
        log.warning("stored maps of %s unreadable for the out-of-distribution check (%s)", exp.path, exc)
    return GateOnly(path=str(exp.path))
