"""Out-of-distribution checks: is an upload a radiograph at all (``gate``), and is it like the
images the models were trained on (``detector``)? One verdict per image, Streamlit-free.

``OodDetector.from_experiment(exp).verdict(decoded, {arch: features})`` -> ``OodVerdict``.
"""

from covidviz.ood.detector import DETECTORS, FALSE_ALARM_RATE, OodDetector, OodVerdict, analyse_ood, fit_ood
from covidviz.ood.gate import GateResult, GateRules, check_image

__all__ = ["DETECTORS", "FALSE_ALARM_RATE", "GateResult", "GateRules", "OodDetector", "OodVerdict", "analyse_ood",
           "check_image", "fit_ood"]
