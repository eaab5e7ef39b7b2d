"""Batch scoring: many decoded X-rays through every backbone of an experiment, many images per forward pass.

Decoded films are made into model input by the experiment's preprocessing contract (``Predictor.prepare``:
the resize, and a lung input's segmentation first) and
stacked ``batch_size`` at a time; per backbone ONE forward pass per batch, under ONE
``cam.model_lock(model)`` hold, gives the logits, classic CAM for each image's top class
(``cam.compute_cams``) and the pooled features (captured from that same pass by
``inference.forward_with_features``, as ``Predictor`` does). Per image and backbone: the calibrated
probabilities (``Predictor.probabilities``), the top class, and the calls at the validation-chosen
operating point (Youden's J by default; the raw probability against the threshold, as ``Predictor``
does).

Out-of-distribution: each image gets ``Predictor.verdict`` called exactly as the Diagnose page calls it
(``Predictor.predict(..., image=decoded)``): on the upload's ``DecodedImage`` itself (the input gate reads
its colour statistics and DICOM tags, the view check its film) and every backbone's pooled features, so a
file gets the same verdict in a batch as on the Diagnose page (``tests/test_batch_verdict.py``).
``ood_fn(gray, {arch: features}, info) -> (ood, reason)`` replaces it (tests, experiments).

Lungs: each film's lung fields are found once (``inference.lung_fields``: the input gate's, else
``anatomy.segment_lungs``) and mapped onto the model input as ``Predictor`` does; each backbone's top-class
CAM is weighed against them (``BackboneScore.lung_weight``: the share of its weight on the lungs and where
the rest lies), beside the lungs' share of the film (chance). Films whose fields cannot be found reliably
get no share, and the row says how sure the segmentation was (``ScoredImage.lung_quality``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from covidviz.batch.inputs import BadFile, Inputs, Source
from covidviz.cam.lungshare import LungWeight, lung_weight
from covidviz.data.imageio import DecodedImage, ImageDecodeError, decode_upload
from covidviz.inference import forward_with_features, lung_fields, lung_mask_for
from covidviz.ood import OodVerdict
from covidviz.runs.records import POINTS

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16                 # images per forward pass (bench/predict.py)
DEFAULT_POINT = "youden"
ROW_INFO = ("format", "width", "height")  # the decoder facts a row keeps (the OOD check reads them all)

OodFn = Callable[[np.ndarray, dict, dict], tuple]


@dataclass
class BackboneScore:
    """One backbone's verdict on one image."""

    probs: np.ndarray                     # (C,) temperature-calibrated probabilities
    raw_probs: np.ndarray                 # (C,) the model's own (what thresholds were chosen on)
    top: int                              # argmax of probs
    calls: list[bool | None]              # per class: raw prob >= the operating point's threshold (None: no threshold)
    thresholds: list[float | None]
    cam_class: int                        # the class the CAM explains: the top logit (= top unless temperatures reorder)
    cam: np.ndarray                       # (h, w) float32 signed classic CAM at the CAM layer (CamResult.low_res)
    features: np.ndarray | None = None    # (D,) pooled features, when the BatchPredictor keeps them
    lung_weight: LungWeight | None = None  # the CAM against the lung fields (None: no reliable fields)


@dataclass
class ScoredImage:
    name: str
    pixels: np.ndarray                    # (S, S) uint8: what the models saw
    backbones: dict[str, BackboneScore]
    ood: bool | None = None               # OodVerdict.flag: True, False, or None (not checked)
    ood_reason: str = ""                  # OodVerdict.reason
    info: dict = field(default_factory=dict)  # DecodedImage.info's ROW_INFO (format, size)
    verdict: OodVerdict | None = None     # the whole verdict (None when a custom ood_fn judged)
    lung_quality: float | None = None     # LungFields.quality of the film (None: too small to segment)
    lung_area: float | None = None        # the lungs' share of the model input (None: no reliable fields)


@dataclass
class BatchResult:
    rows: list[ScoredImage]
    bad: list[BadFile]


class BatchPredictor:
    """Scores decoded images ``batch_size`` at a time through every backbone of a ``Predictor``.

    ``ood_fn``: ``(gray, {arch: features}, info) -> (bool | None, reason)``; default (None): the
    predictor's one verdict (``Predictor.verdict``). ``point``: the operating point of the calls
    (``runs.records.POINTS``: ``youden``, ``high_sensitivity``, ``high_specificity``), chosen on
    validation; a call is the raw probability >= its threshold. ``keep_features``: keep each image's
    pooled features on its row (memory: 4 KiB per 1024-d backbone).
    """

    def __init__(self, predictor, batch_size: int = DEFAULT_BATCH_SIZE, ood_fn: OodFn | None = None,
                 point: str = DEFAULT_POINT, archs: Sequence[str] | None = None, keep_features: bool = False):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if point not in POINTS:
            raise ValueError(f"unknown operating point {point!r}; choose from {', '.join(POINTS)}")
        self.predictor = predictor
        self.batch_size = int(batch_size)
        self.archs = list(archs or predictor.archs)
        unknown = [a for a in self.archs if a not in predictor.models]
        if unknown:
            raise ValueError(f"unknown backbone {unknown[0]!r}; the experiment has {', '.join(predictor.archs)}")
        self.names = list(predictor.names)
        self.task = predictor.task
        self.point = point
        self.keep_features = keep_features
        self.ood_fn = ood_fn
        self._thresholds = {}
        for a in self.archs:
            ops = [predictor.operating_point(a, c, point) for c in self.names]
            self._thresholds[a] = [None if op is None else float(op.threshold) for op in ops]

    # ---------------------------------------------------------------- one batch

    def _forward(self, arch: str, pixels: np.ndarray):
        """Logits (N, C), pooled features (N, D) and the top-class CAMs from ONE forward pass."""
        cams, feats = forward_with_features(self.predictor.models[arch], self.predictor.prep.to_tensor(pixels),
                                            None, ("cam",))
        cam = cams["cam"]
        return cam.logits.astype(np.float64), feats, cam

    def _judge(self, row: ScoredImage, image, features: dict, info: dict) -> None:
        """The row's out-of-distribution verdict (a failing check must not lose the scores). ``image``: the
        upload's ``DecodedImage`` (what Diagnose judges) or a gray film with its decoder ``info``."""
        try:
            if self.ood_fn is None:
                row.verdict = (self.predictor.verdict(image, features) if isinstance(image, DecodedImage)
                               else self.predictor.verdict(image, features, info))
                row.ood, row.ood_reason = row.verdict.flag, row.verdict.reason
            else:
                gray = image.gray if isinstance(image, DecodedImage) else image
                flag, reason = self.ood_fn(gray, features, info)
                row.ood, row.ood_reason = (None if flag is None else bool(flag)), str(reason or "")
        except Exception as exc:  # noqa: BLE001 - say so on the row, keep the batch going
            log.warning("OOD check failed on %s: %s", row.name, exc)
            row.ood, row.ood_reason = None, f"OOD check failed ({type(exc).__name__}: {exc})"

    def score(self, images: Sequence[tuple[str, np.ndarray | DecodedImage]], infos: Sequence[dict] | None = None
              ) -> list[ScoredImage]:
        """Films ``(name, film)`` -> one ``ScoredImage`` each, in order; one forward pass per backbone for all
        of them (call it with at most ``batch_size`` images). ``film``: the upload's ``DecodedImage`` (best:
        the verdict is then judged exactly as on the Diagnose page) or a decoded (H, W) uint8 gray film,
        whose ``DecodedImage.info`` ``infos`` may give (its colour statistics and DICOM tags feed the gate)."""
        if not len(images):
            return []
        grays = [f.gray if isinstance(f, DecodedImage) else f for _, f in images]
        inputs = [self.predictor.prepare(g) for g in grays]
        pixels = np.stack([inp.pixels for inp in inputs])
        per_arch = {}
        for arch in self.archs:
            logits, feats, cam = self._forward(arch, pixels)
            raw, probs = self.predictor.probabilities(arch, logits)
            per_arch[arch] = (raw, probs, feats, cam)
        rows = []
        for i, ((name, film), gray) in enumerate(zip(images, grays)):
            backbones = {}
            for arch, (raw, probs, feats, cam) in per_arch.items():
                thr = self._thresholds[arch]
                backbones[arch] = BackboneScore(
                    probs=probs[i].copy(), raw_probs=raw[i].copy(), top=int(np.argmax(probs[i])),
                    calls=[None if t is None else bool(raw[i, j] >= t) for j, t in enumerate(thr)], thresholds=list(thr),
                    cam_class=int(cam.class_idx[i]), cam=cam.low_res[i].copy(),
                    features=feats[i].copy() if self.keep_features else None)
            info = dict(film.info) if isinstance(film, DecodedImage) else dict(infos[i]) if infos else {}
            row = ScoredImage(name, pixels[i].copy(), backbones, info={k: info[k] for k in ROW_INFO if k in info})
            self._judge(row, film, {a: per_arch[a][2][i] for a in per_arch}, info)
            self._weigh(row, gray, {a: per_arch[a][3].raw[i] for a in per_arch}, inputs[i])
            rows.append(row)
        return rows

    def _weigh(self, row: ScoredImage, gray: np.ndarray, heats: dict, inp=None) -> None:
        """The row's lung fields and each backbone's CAM weight on them (a failure loses no score).
        ``inp``: the film's ``ModelInput`` (a lung input's fields are reused, its crop followed)."""
        try:
            lungs = inp.lungs if inp is not None and inp.lungs is not None else lung_fields(gray, row.verdict)
            mask = lung_mask_for(lungs, self.predictor.prep, None if inp is None else inp.region)
        except Exception as exc:  # noqa: BLE001 - say nothing on the lungs, keep the batch going
            log.warning("lung fields failed on %s: %s", row.name, exc)
            return
        row.lung_quality = None if lungs is None else float(lungs.quality)
        if mask is None:
            return
        row.lung_area = float(mask.mean())
        for arch, heat in heats.items():
            row.backbones[arch].lung_weight = lung_weight(heat, mask)

    # ---------------------------------------------------------------- many

    def iter_scored(self, sources: Iterable[Source], progress: Callable[[int], None] | None = None
                    ) -> Iterator[ScoredImage | BadFile]:
        """Read, decode and score ``sources`` batch by batch: yields each ``BadFile`` as it is found and
        the ``ScoredImage``s of a batch once it has run. ``progress(n)`` is called with the number of
        sources done (scored or bad) after each."""
        pending: list[tuple[str, DecodedImage]] = []

        def flush():
            done = self.score(pending)
            n = len(pending)
            pending.clear()
            if progress:
                progress(n)
            return done

        for src in sources:
            try:
                pending.append((src.name, decode_upload(src.read(), src.name)))
            except ImageDecodeError as exc:
                log.debug("skipping %s: %s", src.name, exc)
                if progress:
                    progress(1)
                yield BadFile(src.name, str(exc))
                continue
            except Exception as exc:  # anything else a strange file provokes: say so, keep going
                log.debug("skipping %s: %s", src.name, exc)
                if progress:
                    progress(1)
                yield BadFile(src.name, f"{src.name}: cannot decode it ({type(exc).__name__}: {exc})")
                continue
            if len(pending) >= self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def run(self, inputs: Inputs | Iterable[Source], progress: Callable[[int], None] | None = None) -> BatchResult:
        """Score everything; ``BatchResult.bad`` lists ``Inputs.bad`` first, then files that failed to decode."""
        sources = inputs.sources if isinstance(inputs, Inputs) else inputs
        bad = list(inputs.bad) if isinstance(inputs, Inputs) else []
        rows = []
        for item in self.iter_scored(sources, progress):
            (bad if isinstance(item, BadFile) else rows).append(item)
        return BatchResult(rows, bad)

    # ---------------------------------------------------------------- calls

    def thresholds(self, arch: str) -> list[float | None]:
        """The validation-chosen threshold of each class at ``point``, on the model's raw probability."""
        return list(self._thresholds[arch])

    def calls(self, row: ScoredImage, arch: str) -> list[dict]:
        """A row's calls for one backbone, as ``Predictor.calls`` gives them to the Diagnose page (per class:
        ``prob``, ``threshold`` on that calibrated scale for this film, ``positive``, ``raw_threshold``, the
        test rates of the threshold...) at this scorer's operating point: no model runs."""
        b = row.backbones[arch]
        return self.predictor.calls(SimpleNamespace(arch=arch, probs=b.probs, raw_probs=b.raw_probs), self.point)
