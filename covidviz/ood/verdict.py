"""THE out-of-distribution verdict of one image, and the interface every detector kind shares.

A verdict is assembled in one place, ``Detector.verdict``: the input gate (``covidviz.ood.gate``) on the
decoded upload, with its frontal-chest check (``covidviz.anatomy.view``: a lateral view, a CT slice or not
a chest radiograph fails with ONE sentence naming the kind, carried as the verdict's first reason;
``OodVerdict.view`` says which), then the detector's feature-space check (``Detector.check``) over every
backbone's pooled features. The detector kinds:

- ``OodDetector`` (``covidviz.ood.detector``): the fitted one (``ood.npz``), a cut-off for a stated
  false-alarm rate on validation images;
- ``LegacyDetector`` (``covidviz.ood.legacy``): experiments analysed before the fitted detector
  existed: the nearest-training-image and SOM distances against the training images' own;
- ``GateOnly`` (here): nothing stored to compare with; the gate alone.

``covidviz.ood.load_detector(exp)`` picks the kind. ``Predictor``, ``BatchPredictor``, ``train.py
evaluate`` and the pages all judge through it, and every sentence about a verdict is written here
(``OodVerdict.summary``, ``.measured``, ``.reason``, ``.rule``, ``rule_text``) from the verdict's own numbers;
the pages name the backbones through ``OodVerdict.explain(label)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from covidviz.ood.gate import GateResult, check_image

LEGACY = "legacy"  # OodVerdict.detector of a LegacyDetector's verdicts


def pct(x: float) -> str:
    """A share in [0, 1] as a whole percentage ("5 %")."""
    return f"{100 * x:.0f} %"


def rule_text(false_alarm_rate: float | None, detector: str | None) -> str | None:
    """THE out-of-distribution yardstick in one sentence, from a verdict's stated false-alarm rate and
    detector kind (``OodVerdict.rule``; the SOM page reads them from the verdict's JSON): None when no
    rate was stated (no feature-space check)."""
    if false_alarm_rate is None:
        return None
    if detector == LEGACY:
        return (f"An image is flagged when, for a backbone, its distance to the nearest training image or its SOM "
                f"quantisation error is larger than for {pct(1 - false_alarm_rate)} of the training images.")
    return (f"An image is flagged when it lies farther from the training images than the farthest "
            f"{pct(false_alarm_rate)} of the validation images, in the models' feature space.")


@dataclass(frozen=True)
class OodVerdict:
    """One image's out-of-distribution verdict.

    ``is_ood``: True when the gate failed or the feature-space check fired. ``checked``: the
    feature-space check ran (False: nothing stored to compare with, or no features were given; then
    ``is_ood`` rests on the gate alone). ``reasons``: plain sentences, one per thing that fired (or why
    there is no feature check). ``score``: the fitted detector's combined score (mean of the backbones'
    standardised scores; None for the other kinds); ``percentile``: the share (%) of the reference images
    (validation images for the fitted detector, training images for ``legacy``) scoring lower;
    ``cutoff``: the score above which an image is flagged; ``false_alarm_rate``: the stated rate the
    rule was set for; ``detector``: which score decided (``mahalanobis``, ``knn``, ``energy``,
    ``legacy``); ``per_backbone``: each backbone's score; ``gate``: the gate's result (None when no
    image was given).
    """

    is_ood: bool
    reasons: list[str]
    score: float | None
    percentile: float | None
    gate: GateResult | None
    checked: bool
    cutoff: float | None = None
    false_alarm_rate: float | None = None
    detector: str | None = None
    per_backbone: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"ood"``, ``"in-distribution"`` or ``"no verdict"`` (gate passed, no feature check)."""
        if self.is_ood:
            return "ood"
        return "in-distribution" if self.checked else "no verdict"

    @property
    def view(self) -> str | None:
        """What the gate's view check made of the image: ``"frontal"``, ``"lateral"``, ``"ct"`` or ``"not a
        chest radiograph"``; None when no image was given (or the check was not run)."""
        return None if self.gate is None else self.gate.view

    @property
    def flag(self) -> bool | None:
        """True (out of distribution), False (checked and in distribution) or None (not checked)."""
        if self.is_ood:
            return True
        return False if self.checked else None

    @property
    def reason(self) -> str:
        """Why, in one line, for a table cell: what fired, or why nothing could be checked; empty when
        the image was checked and passed."""
        return "" if self.flag is False else " ".join(self.reasons)

    @property
    def rule(self) -> str | None:
        """The rule this verdict applied, in one sentence (None without a feature-space check): THE
        out-of-distribution yardstick every page cites (``rule_text``)."""
        return rule_text(self.false_alarm_rate, self.detector) if self.checked else None

    def measured(self, label=str) -> list[str]:
        """What was measured for THIS image, one sentence per check that fired, each with the image's own
        number against its cut-off: the input gate's sentence (it names the kind of image and its
        numbers), then the feature-space check's score against its cut-off; when the gate passed and
        only the feature check fired, the gate's "it looks like a frontal chest radiograph" leads, so a
        real film is not told it may be a photo. A check that could not be made says why (``reasons``).
        ``label``: backbone id -> the name a sentence uses (the pages pass ``views.style.arch_label``)."""
        gate_failed = self.gate is not None and not self.gate.passed
        out = [self.gate.summary] if gate_failed else []
        fired = self._feature_sentences(label) if self.checked else []
        if fired and self.gate is not None and not gate_failed:  # a real film: say so before what fired
            out.append(f"{self.gate.summary.rstrip('.')}, but the models find it unlike their training images.")
        out += fired
        if not self.checked:  # why no feature-space check was made (the gate's sentence is already first)
            out += [r for r in self.reasons if not (gate_failed and r == self.gate.summary)]
        return out

    def _feature_sentences(self, label) -> list[str]:
        """The feature-space check's sentences when it fired (none when it passed)."""
        rate = self.false_alarm_rate or 0.0
        if self.detector == LEGACY:
            # The legacy rule's own sentences ("arch: its distance ... is larger than for 99.6 % of the
            # training images"), with the backbone named for people and the cut-off it was held against.
            out = []
            for r in self.reasons:
                arch = next((a for a in self.per_backbone if r.startswith(f"{a}: ")), None)
                text = r if arch is None else f"{label(arch)}: {r[len(arch) + 2:]}"
                out.append(text.rstrip(".") + f" (the check flags what is larger than for {pct(1 - rate)} of them).")
            return out
        if self.score is None or self.cutoff is None or self.score <= self.cutoff:
            return []
        pctile = self.percentile if self.percentile is not None else 100.0
        than = "every validation image" if pctile >= 99.5 else f"{pctile:.0f} % of the validation images"
        text = (f"In the models' feature space its distance score is {self.score:.2f}, above the cut-off of "
                f"{self.cutoff:.2f}: it lies farther from the training images than {than} (the check flags only "
                f"the farthest {pct(rate)})")
        if len(self.per_backbone) > 1:
            text += f", most of all for {label(max(self.per_backbone, key=self.per_backbone.get))}"
        return [text + "."]

    def explain(self, label=str) -> str:
        """``summary`` with the backbones named by ``label``."""
        if self.is_ood:
            return " ".join(["This image is unlike the images the models were trained on, so their outputs are not "
                             "reliable for it.", *self.measured(label)])
        if not self.checked:
            return " ".join(self.reasons) or "No out-of-distribution check could be made for this image."
        if self.detector == LEGACY or self.percentile is None:
            return (f"To the models this image looks like the training images: for every backbone it is closer to "
                    f"them than the farthest {pct(self.false_alarm_rate or 0.0)} of the training images are to "
                    f"their own nearest neighbours.")
        return (f"To the models this image looks like the training images: {100 - self.percentile:.0f} % of the "
                f"validation images lie farther from them in the models' feature space (only the farthest "
                f"{pct(self.false_alarm_rate)} are flagged).")

    @property
    def summary(self) -> str:
        """One or two plain sentences for the top of the results and the case report: the verdict and,
        when it is out of distribution, what was measured (``measured``)."""
        return self.explain()

    def to_json(self) -> dict:
        return {"is_ood": bool(self.is_ood), "status": self.status, "checked": bool(self.checked),
                "reasons": list(self.reasons), "score": self.score, "percentile": self.percentile,
                "cutoff": self.cutoff, "false_alarm_rate": self.false_alarm_rate, "detector": self.detector,
                "per_backbone": dict(self.per_backbone), "gate": None if self.gate is None else self.gate.to_json()}


@dataclass(frozen=True)
class FeatureCheck:
    """What a detector's feature-space check found: the part of a verdict after the gate."""

    is_ood: bool
    reasons: list[str]
    false_alarm_rate: float
    detector: str
    score: float | None = None
    percentile: float | None = None
    cutoff: float | None = None
    per_backbone: dict = field(default_factory=dict)


class Detector:
    """The interface of every detector kind: ``available`` (a feature-space check can be made),
    ``archs`` (the backbones it reads), ``check(features)`` (the feature-space part: a ``FeatureCheck``,
    or a sentence saying why none was made) and ``verdict`` (gate + check, THE verdict). Read-only after
    construction, so one instance may serve many threads."""

    archs: list[str]
    path: str = ""

    @property
    def available(self) -> bool:
        raise NotImplementedError

    def check(self, features: dict[str, np.ndarray]) -> FeatureCheck | str:
        raise NotImplementedError

    def verdict(self, image=None, features: dict[str, np.ndarray] | None = None, info: dict | None = None) -> OodVerdict:
        """Judge one image. ``image``: the ``DecodedImage`` from ``decode_upload`` (best: its colour
        statistics and DICOM modality feed the gate), a (H, W) uint8 gray array at its original size, or
        None (skip the gate). ``features``: arch -> the image's pooled features ((D,) or (1, D)); backbones
        missing here are left out. ``info``: the decoder's statistics of a gray ``image``
        (``DecodedImage.info``: colour, modality)."""
        gate = check_image(image, info) if image is not None else None
        failed = gate is not None and not gate.passed
        reasons = [gate.summary] if failed else []
        given = {a: np.asarray(f, np.float32).reshape(-1) for a, f in (features or {}).items() if f is not None}
        found = self.check(given)
        if isinstance(found, str):
            return OodVerdict(is_ood=failed, reasons=reasons + [found], score=None, percentile=None, gate=gate,
                              checked=False)
        return OodVerdict(is_ood=bool(failed or found.is_ood), reasons=reasons + list(found.reasons), score=found.score,
                          percentile=found.percentile, gate=gate, checked=True, cutoff=found.cutoff,
                          false_alarm_rate=found.false_alarm_rate, detector=found.detector,
                          per_backbone=dict(found.per_backbone))

    def verdicts(self, features: dict[str, np.ndarray]) -> list[OodVerdict]:
        """The feature-space verdicts (no gate) of many images: arch -> (M, D) features."""
        n = len(next(iter(features.values()))) if features else 0
        return [self.verdict(None, {a: f[i] for a, f in features.items()}) for i in range(n)]


NO_ANALYSIS = ("No feature-space check: this experiment has no stored analysis to compare with (run `python "
               "train.py analyze {path}`); only the input gate was applied.")


class GateOnly(Detector):
    """No feature-space reference stored: every verdict is the input gate's, and says so (``why``)."""

    def __init__(self, why: str = NO_ANALYSIS, path: str = ""):
        self.archs = []
        self.path = path
        self.why = why.format(path=path or "runs/EXP")

    @property
    def available(self) -> bool:
        return False

    def check(self, features) -> str:
        return self.why
