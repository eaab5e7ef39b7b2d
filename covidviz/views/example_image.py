"""The Diagnose page's example test image: the one a newcomer sees first must be one the models were
built for, not one the out-of-distribution verdict rejects (a demo's very first try).

``typical_rows`` ranks the experiment's test images by the fitted detector's score (``covidviz.ood``) on
their stored features, without running a model; ``example_row`` takes the first of them that the page
offers and whose film also passes the input gate (read from disk, a few at most). No Streamlit: the page
caches both (``ui.diagnose_cache``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np

from covidviz import runs
from covidviz.ood import OodDetector, check_image

log = logging.getLogger(__name__)
MAX_FILMS_READ = 8   # films read to find one that also passes the input gate (each ~20-50 ms)


def typical_rows(exp: runs.Experiment) -> list[int]:
    """images.parquet rows of the test images that the experiment's detector keeps in distribution
    (combined score at or below its cut-off), most typical first. Empty when the experiment has no
    fitted detector or no stored features (an older analysis): the page then keeps its own order."""
    try:
        det = OodDetector.from_experiment(exp)
        if not det.available:
            return []
        test = np.flatnonzero(exp.images()["split"].to_numpy() == "test")
        if not len(test):
            return []
        scores = det.combined({a: np.asarray(exp.features(a))[test] for a in det.archs})
        cut = det.cutoff()
    except Exception as exc:  # noqa: BLE001 - a missing or odd artefact only costs the choice of example
        log.info("no typical test images for %s (%s: %s)", getattr(exp, "path", exp), type(exc).__name__, exc)
        return []
    order = np.argsort(scores, kind="stable")
    return [int(test[i]) for i in order if scores[i] <= cut]


def passes_gate(gray) -> bool:
    """Whether a film passes the input gate (frontal chest radiograph, grayscale, ...: ``ood.check_image``)."""
    return bool(check_image(np.asarray(gray)).passed)


def example_row(typical: Iterable[int], offered: Iterable[int], film_passes: Callable[[int], bool | None]) -> int | None:
    """The first of the ``typical`` rows that the page ``offered`` (its filters) and whose film passes the
    gate (``film_passes(row)``: True, False, or None when the film cannot be read: the stored features
    already passed, so it counts); at most ``MAX_FILMS_READ`` films are read. None: no such row."""
    offered = set(int(r) for r in offered)
    read = 0
    for row in typical:
        if row not in offered:
            continue
        if read >= MAX_FILMS_READ:
            return None
        read += 1
        if film_passes(row) is not False:
            return int(row)
    return None

