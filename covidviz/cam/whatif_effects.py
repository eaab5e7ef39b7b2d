"""Reading a what-if panel's numbers: on which scale, against which chance, and where they disagree.

Per condition (a what-if row: the hottest region hidden, the borders, the centre, the user's box, ...) and
per backbone, ``effect`` gives the change of the explained class's score and the *random band*: the same
change when a region of the same size is hidden at random places (``RANDOM_DRAWS`` of them, see
``covidviz.cam.whatif``), summarised as the ``BAND`` percentile interval. A change outside its band is
"beyond chance"; one that is also at least ``SMALL_ON`` the scale is ``clear`` (worth a reader's time).

The scale: a probability within ``SATURATION`` of 0 or 1 cannot show a change (1.00 -> 1.00 whatever is
hidden), so that backbone's changes are read in log-odds (``SCALES``), computed exactly from the logits
(``covidviz.cam.whatif.log_odds``), never from the rounded probability.

Contradictions (``contradictions``): hiding a region that lies inside another (``inside``) should not
change the score more than hiding the whole bigger region; when it does by more than the random band
(``margin``), the fill itself is likely moving the score and the two rows are flagged.

Numbers only; sentences and the chart are ``covidviz.views.whatif``'s. Streamlit-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SATURATION = 0.01          # p > 1 - SATURATION or p < SATURATION: saturated, changes read in log-odds
BAND = (5.0, 95.0)         # the random band: these percentiles of the random regions' changes
PROBABILITY, LOG_ODDS = "probability", "log-odds"
SCALES = (PROBABILITY, LOG_ODDS)
SMALL = 0.05               # a probability change below this reads as "stays"
# The same "small" on the log-odds scale: dp = p (1 - p) dz, and p (1 - p) <= 1/4, so 0.2 log-odds is at
# most 0.05 of probability. The floor of a contradiction's margin, whatever the bands say.
SMALL_ON = {PROBABILITY: SMALL, LOG_ODDS: SMALL / 0.25}
INSIDE = 0.05              # a region is inside another when at most this share of it lies outside


def saturated(p: float) -> bool:
    """THE saturation rule: the probability is within ``SATURATION`` of 0 or 1."""
    return not SATURATION <= float(p) <= 1.0 - SATURATION


def scale_for(p_before: float) -> str:
    """``LOG_ODDS`` for a saturated original probability, else ``PROBABILITY``."""
    return LOG_ODDS if saturated(p_before) else PROBABILITY


def percentile_band(changes: Sequence[float]) -> tuple[float, float] | None:
    """The ``BAND`` interval of the random regions' changes (None without any)."""
    c = np.asarray(changes, np.float64)
    if c.size == 0:
        return None
    lo, hi = np.percentile(c, BAND)
    return float(lo), float(hi)


@dataclass(frozen=True)
class Effect:
    """One backbone's result in one condition, on ``scale``: ``change`` (after - before; the mean over the
    images behind the row), ``band`` (the ``BAND`` interval of the changes of ``n_random`` same-size random
    regions; None without them), ``before``/``after`` (probabilities or log-odds, as ``scale``)."""

    arch: str
    scale: str
    before: float
    after: float
    band: tuple[float, float] | None
    n_random: int

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def beyond(self) -> bool | None:
        """True when the change lies outside the random band (None: no band to compare with)."""
        if self.band is None:
            return None
        return not self.band[0] <= self.change <= self.band[1]

    @property
    def clear(self) -> bool:
        """Beyond the random band AND by at least ``SMALL_ON`` the scale: a change worth reading (a model
        whose every change is a few thousandths can still step outside a narrow band)."""
        return bool(self.beyond) and abs(self.change) >= SMALL_ON[self.scale]

    @property
    def band_width(self) -> float:
        return 0.0 if self.band is None else self.band[1] - self.band[0]


def effect(row, arch: str, scale: str | None = None) -> Effect:
    """``row``'s (a ``covidviz.cam.whatif.WhatIfRow``) effect for ``arch`` on ``scale`` (default: by
    ``scale_for`` of the row's original probability). The log-odds scale needs the row's log-odds
    (``z_before``/``z_draws``); a row without them stays on the probability scale."""
    scale = scale or scale_for(row.before[arch])
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    if scale == LOG_ODDS and arch in row.z_before and row.z_draws.get(arch):
        before, draws, rand = row.z_before[arch], row.z_draws[arch], row.z_random.get(arch, [])
    else:
        scale = PROBABILITY
        before, draws, rand = row.before[arch], row.draws[arch], row.random.get(arch, [])
    return Effect(arch, scale, float(before), float(np.mean(draws)),
                  percentile_band([float(r) - before for r in rand]), len(rand))


# ------------------------------------------------------------------------------------------------
# contradictions between conditions
# ------------------------------------------------------------------------------------------------

def inside(inner: np.ndarray, outer: np.ndarray) -> bool:
    """``inner`` is a smaller region lying inside ``outer`` (at most ``INSIDE`` of it outside)."""
    inner, outer = np.asarray(inner, bool), np.asarray(outer, bool)
    if inner.shape != outer.shape:
        return False
    n = int(inner.sum())
    return 0 < n < int(outer.sum()) and int((inner & ~outer).sum()) <= INSIDE * n


def margin(a: Effect, b: Effect) -> float:
    """How much more the inner region may change the score before it contradicts the outer one: the wider
    of the two random bands, at least ``SMALL_ON`` the scale."""
    return max(a.band_width, b.band_width, SMALL_ON[a.scale])


@dataclass(frozen=True)
class Contradiction:
    """Hiding ``rows[inner]`` (inside ``rows[outer]``) changed ``arch``'s score by ``inner_effect.change``,
    more in size than hiding the whole outer region (``outer_effect.change``) by more than ``margin``."""

    arch: str
    inner: int
    outer: int
    inner_effect: Effect
    outer_effect: Effect
    margin: float


def contradictions(rows: Sequence, effects: dict[str, list[Effect]]) -> list[Contradiction]:
    """Every (backbone, inner row, outer row) where a region inside another changes the score more than the
    bigger region by more than ``margin``. ``effects``: arch -> one ``Effect`` per row (same order);
    rows without the backbone's hidden mask (``row.masks``) are skipped."""
    out = []
    for arch, effs in effects.items():
        masks = [r.masks.get(arch) for r in rows]
        for i, j in ((i, j) for i in range(len(rows)) for j in range(len(rows)) if i != j):
            if masks[i] is None or masks[j] is None or not inside(masks[i], masks[j]):
                continue
            a, b = effs[i], effs[j]
            m = margin(a, b)
            if abs(a.change) - abs(b.change) > m:
                out.append(Contradiction(arch, i, j, a, b, m))
    return out
