"""Anatomy of a frontal chest film: the lung fields (``segment_lungs``), their sides and a quality
score that says when the segmentation itself is not to be trusted. Offline, CPU, thread-safe; the
small shipped network and how it was made are described in docs/lungs.md."""

from covidviz.anatomy.lungs import QUALITY_OK, LungFields, dice, load_model, segment_lungs

__all__ = ["QUALITY_OK", "LungFields", "dice", "load_model", "segment_lungs"]
