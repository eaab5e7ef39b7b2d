"""Batch prediction: many X-rays through every backbone of an experiment, many images per forward pass.

Streamlit-free; used by ``python -m covidviz.predict`` (and ``train.py predict``), the app's batch view
and ``bench/predict.py``. Four parts, re-exported here (callers write ``batch.BatchPredictor``):

- ``inputs``: files, folders and ZIP archives -> ``Inputs`` (``Source``s to score, ``BadFile``s with a
  message), the ZIP limits (``MAX_ZIP_MEMBERS``, ``MAX_ZIP_BYTES``, ``MAX_MEMBER_BYTES``);
- ``scoring``: ``BatchPredictor`` (one forward pass per backbone and batch; calibrated probabilities,
  calls and the one out-of-distribution verdict, as ``Predictor`` gives them to the Diagnose page);
- ``export``: the CSV, defined once for ``train.py predict`` and the Batch page (identity columns, one
  row per file, unreadable files with their ``error``), and ``ood_kind``, a verdict's kind in a word;
- ``sheet``: ``contact_sheet``, a selection of scored rows drawn as one PNG with their heat maps.
"""

from covidviz.batch import export
from covidviz.batch.export import ood_kind
from covidviz.batch.inputs import (
    IMAGE_SUFFIXES,
    MAX_MEMBER_BYTES,
    MAX_ZIP_BYTES,
    MAX_ZIP_MEMBERS,
    ZIP_SUFFIXES,
    BadFile,
    Inputs,
    Source,
    bad_table,
    collect_inputs,
    open_zip,
    sources_from_bytes,
)
from covidviz.batch.scoring import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_POINT,
    BackboneScore,
    BatchPredictor,
    BatchResult,
    OodFn,
    ScoredImage,
)
from covidviz.batch.sheet import cam_heat, contact_sheet, contact_sheet_png

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_POINT", "IMAGE_SUFFIXES", "MAX_MEMBER_BYTES", "MAX_ZIP_BYTES",
           "MAX_ZIP_MEMBERS", "ZIP_SUFFIXES", "BackboneScore", "BadFile", "BatchPredictor", "BatchResult", "Inputs",
           "OodFn", "ScoredImage", "Source", "bad_table", "cam_heat", "collect_inputs", "contact_sheet",
           "contact_sheet_png", "export", "ood_kind", "open_zip", "sources_from_bytes"]
