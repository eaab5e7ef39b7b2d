"""One formatter per fact that several places state (the Diagnose page, the SOM page, Compare and the case
report), so that the same image and experiment read the same everywhere. Streamlit-free.

- Where a node sits on a SOM (``som_cell``, ``som_position``): 1-based column and row as the map is
  drawn by ``views.som_figure`` (columns left to right, rows top to bottom), never the flat index split
  another way.
- A threshold (``threshold_text``, ``score_column``): always on a named scale, the one the probabilities
  beside it use: ``CALIBRATED`` (temperature-scaled, what Diagnose and the case report show) or ``RAW``
  (the model's own score: what the stored predictions, Compare and the maps use, and what the
  thresholds were chosen on).
- The out-of-distribution verdict (``ood_summary``, ``ood_yardstick``, ``ood_verdict_line``,
  ``ood_detail``): THE yardstick is the verdict's rule (``OodVerdict.rule``, from its stated false-alarm
  rate); a nearest-image distance or a SOM quantisation error is a secondary "why" detail that cites it,
  never a second yardstick. The sentences themselves are ``covidviz.ood.verdict``'s.
- Backbone display names: ``views.style.arch_label`` (the verdict's sentences get it too).
"""

from __future__ import annotations

import math

from covidviz.ood.verdict import OodVerdict, rule_text
from covidviz.views.style import arch_label

# ---------------------------------------------------------------------- SOM positions


def som_cell(node: int, grid) -> tuple[int, int]:
    """(column, row), 1-based, of a node as the map is drawn: columns left to right, rows top to bottom.

    Node = i * rows + j (``covidviz.stats.som``; ``grid`` = (columns, rows), as som.json's ``grid`` and the
    weights' first two axes); its hexagon is drawn at x ≈ i and at height j * sqrt(3) / 2 on an upward y
    axis (``views.som_figure``), so it is in column i + 1 and in the (rows - j)-th row from the top."""
    i, j = divmod(int(node), int(grid[1]))
    return i + 1, int(grid[1]) - j


def som_position(node: int, grid) -> str:
    """Where a node is in the picture, e.g. "column 14 of 15 (left to right), row 5 of 7 (top to bottom)"."""
    col, row = som_cell(node, grid)
    return f"column {col} of {int(grid[0])} (left to right), row {row} of {int(grid[1])} (top to bottom)"


def som_node_text(node: int, grid) -> str:
    """"node 93, at column 14 of 15 (left to right), row 5 of 7 (top to bottom)": a node and where it is."""
    return f"node {int(node)}, at {som_position(node, grid)}"


# ---------------------------------------------------------------------- thresholds

CALIBRATED, RAW = "calibrated", "raw"
SCALE_NAMES = {CALIBRATED: "calibrated", RAW: "raw score"}
THRESHOLD_DIGITS = 3  # a threshold's decimals wherever it is printed (Diagnose may need more: ``decimals``)


def scale_name(scale: str) -> str:
    """"calibrated" or "raw score": how a scale is named beside a number."""
    return SCALE_NAMES[scale]


def threshold_text(value: float | None, scale: str, digits: int = THRESHOLD_DIGITS) -> str:
    """"0.594 (raw score)", "0.999 (calibrated)"; "—" when there is no threshold."""
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.{digits}f} ({SCALE_NAMES[scale]})"


def score_column(name: str, scale: str) -> str:
    """A table column of numbers on ``scale``: "Threshold (calibrated)", "Probability (raw score)"."""
    return f"{name} ({SCALE_NAMES[scale]})"


# ---------------------------------------------------------------------- the out-of-distribution verdict

STATUS_WORDS = {"ood": "unlike the training images", "in-distribution": "like the training images",
                "no verdict": "no check beyond the input gate"}


def _fields(verdict) -> dict:
    """The verdict's status, stated rate and detector, from an ``OodVerdict`` or its ``to_json()`` (the
    session's upload record carries the latter to the SOM and Latent space pages)."""
    if isinstance(verdict, OodVerdict):
        return {"status": verdict.status, "false_alarm_rate": verdict.false_alarm_rate if verdict.checked else None,
                "detector": verdict.detector}
    verdict = verdict or {}
    return {"status": verdict.get("status"), "detector": verdict.get("detector"),
            "false_alarm_rate": verdict.get("false_alarm_rate") if verdict.get("checked", True) else None}


def ood_summary(verdict: OodVerdict) -> str:
    """The verdict in plain sentences with the backbones' display names: what it decided and, when the
    image is out of distribution, what was measured for it against which cut-off (``OodVerdict.explain``)."""
    return verdict.explain(arch_label)


def ood_yardstick(verdict) -> str | None:
    """THE yardstick of the app, one sentence (``OodVerdict.rule``): None without a feature-space check.
    ``verdict``: an ``OodVerdict`` or its ``to_json()``."""
    f = _fields(verdict)
    return rule_text(f["false_alarm_rate"], f["detector"])


def ood_verdict_line(verdict, name: str = "Out-of-distribution") -> str | None:
    """"Out-of-distribution verdict: like the training images. An image is flagged when ..." (the status,
    then the yardstick), for a page that shows a detail of the image's distance; None without a verdict.
    ``name``: how the check is named (a page passes its glossary link)."""
    f = _fields(verdict)
    if f["status"] not in STATUS_WORDS:
        return None
    rule = ood_yardstick(verdict)
    return f"{name} verdict: {STATUS_WORDS[f['status']]}." + (f" {rule}" if rule else "")


DETAIL_LEAD = "A detail behind the verdict, not a second test"


def ood_detail(detail: str) -> str:
    """A distance shown beside the verdict, said to be a detail of it ("why"), not another yardstick."""
    return f"{DETAIL_LEAD}: {detail.rstrip('.')}."


def share_text(pct: float) -> str:
    """A percentile (0–100) as printed: whole percent, one decimal above 99 (99.5 % is not 100 %)."""
    return f"{pct:.0f} %" if pct < 99 else f"{pct:.1f} %"


def qe_detail(qe: float, pct: float, name: str = "SOM quantisation error") -> str:
    """"its SOM quantisation error 1.25 is larger than that of 99.5 % of the training images" (``name``: how
    the quantity is named; a page passes its glossary link)."""
    return f"its {name} {qe:.3g} is larger than that of {share_text(pct)} of the training images"


__all__ = ["CALIBRATED", "RAW", "arch_label", "ood_detail", "ood_summary", "ood_verdict_line", "ood_yardstick",
           "qe_detail", "score_column", "som_cell", "som_node_text", "som_position", "threshold_text"]
