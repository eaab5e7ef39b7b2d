"""Anatomy of a frontal chest film: the lung fields (``segment_lungs``), their sides and a quality
score that says when the segmentation itself is not to be trusted, and the frontal-chest check
(``check_view``: frontal / lateral / CT slice / not a chest radiograph, from the lung fields, the
film's intensity layout and DICOM tags). Offline, CPU, thread-safe; the small shipped network and how
it was made are described in docs/lungs.md."""

from covidviz.anatomy.lungs import QUALITY_OK, LungFields, dice, load_model, segment_lungs
from covidviz.anatomy.view import VIEWS, ViewCheck, check_view

__all__ = ["QUALITY_OK", "VIEWS", "LungFields", "ViewCheck", "check_view", "dice", "load_model", "segment_lungs"]
