"""The inference service: one X-ray -> what every backbone of an experiment says (no Streamlit).

``Predictor(exp)`` holds one model per backbone (built once, shared by all sessions: the app keeps one
``Predictor`` per experiment in ``st.cache_resource``) and the analysis artefacts the page needs.
``Predictor.predict(gray)`` takes a decoded uint8 film (``covidviz.data.imageio``) and returns a
``Diagnosis``: per backbone the calibrated probabilities, the call at the validation-chosen threshold
(``Predictor.calls``: the threshold put on the same calibrated scale, see ``calibrated_threshold``)
with what that threshold achieved on test, the pooled features, CAM heat maps (``covidviz.cam``: one
forward pass per backbone, the pooled features captured from that same pass), the k nearest TRAINING
images in feature space and the upload's place on the stored maps and SOM (``covidviz.ood.reference``),
and the image's one out-of-distribution verdict (``covidviz.ood.load_detector``: the same for every
backbone, and the same the batch scorer gives). The lung fields are found once per image (the input
gate's when it found them, else ``covidviz.anatomy.segment_lungs``: ``lung_fields``), mapped onto the
model input through the preprocessing (``cam.lungshare.model_mask``), and each backbone's map of its top
class is weighed against them (``cam.lungshare.lung_weight``). The model input itself comes from
``covidviz.anatomy.inputs.model_input`` (``Predictor.prepare``), the one path every caller uses: for an
experiment trained on a lung input (``train.py --input lung-crop | lung-mask``) it segments the film
first, and those fields are the ones shown. Drawing the results (overlays, the case report) is
``covidviz.views.diagnose``'s job.

Thread safety: every use of a model holds ``cam.model_lock(model)`` (CAM needs that anyway), so
concurrent sessions never see each other's activations; two backbones still run in parallel.

Session-state contract (written by ``app_pages/diagnose.py`` after a successful prediction, read by the
latent-space and SOM pages to mark the upload)::

    st.session_state["upload"] = {
        "name": str,                 # the file name (or "test image <id>")
        "experiment": str,           # exp.name the prediction was made with
        "backbones": {arch: {
            "probs": list[float],            # calibrated probabilities, one per class (exp.labels.names order)
            "coords": {method: [x, y]},      # place on each stored 2-D map (projections.npz methods)
            "neighbors": list[int],          # images.parquet rows of the nearest TRAINING images, nearest first
            "distances": list[float],        # their distances (standardised PCA-50 feature space)
            "som_node": int,                 # best-matching SOM node (flat index into som.npz weights)
            "som_qe": float,                 # quantisation error (distance to that node)
            "som_qe_pct": float,             # percentile of that QE among the training images' QEs
            "ood": bool}},                   # the image's one verdict (the same for every backbone)
        "verdict": dict,             # OodVerdict.to_json(): status, reasons, score, cut-off
        "source": str}               # added by the page: "upload" | "test" | "external" (views.image_name)

Backbones whose analysis artefacts are missing get empty coords/neighbours and None for the SOM keys.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from covidviz import runs
from covidviz.anatomy import LungFields, segment_lungs
from covidviz.anatomy.inputs import ModelInput, model_input
from covidviz.anatomy.view import FRONTAL
from covidviz.cam import METHODS, CamResult, compute_cams, model_lock
from covidviz.cam.lungshare import LungWeight, lung_weight, model_mask
from covidviz.models import FINAL_LAYER, probabilities
from covidviz.ood import OodVerdict, load_detector, load_references
from covidviz.runs.records import OperatingPoint, Rate
from covidviz.stats.calibration import apply_temperature, calibrated_probabilities

log = logging.getLogger(__name__)
K_SIMILAR = 8
FIXED_SCALE_IMAGES = 16
TEST_RATES = ("sensitivity", "specificity", "ppv", "npv")  # what a call's threshold achieved on test
WARM_UP_FILM = 256  # side (px) of the phantom film ``Predictor.warm_up`` predicts on


@dataclass
class BackboneResult:
    arch: str
    logits: np.ndarray             # (C,)
    raw_probs: np.ndarray          # (C,) the model's own probabilities (what the thresholds were chosen on)
    probs: np.ndarray              # (C,) temperature-calibrated probabilities (what the page shows)
    features: np.ndarray           # (D,) pooled features
    top: int                       # index of the highest probability
    calls: list[dict]              # at the balanced (Youden) point: see Predictor.calls
    cams: dict[str, CamResult]     # method -> maps for the top class (1 image)
    coords: dict[str, list[float]] = field(default_factory=dict)
    neighbors: list[int] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    nn_distance: float | None = None
    nn_pct: float | None = None
    som_node: int | None = None
    som_qe: float | None = None
    som_qe_pct: float | None = None
    ood: bool = False              # the image's one verdict (Diagnosis.verdict), the same for every backbone
    lung_weight: LungWeight | None = None  # its first method's top-class map against the lungs (None: no usable fields)
    seconds: float = 0.0


@dataclass
class Diagnosis:
    name: str
    experiment: str
    pixels: np.ndarray             # (S, S) uint8: exactly what the models saw
    backbones: dict[str, BackboneResult]
    verdict: OodVerdict | None = None  # the image's one out-of-distribution verdict (Predictor.verdict)
    lungs: LungFields | None = None    # the lung fields at the film's size (None: the film could not be segmented)
    lung_mask: np.ndarray | None = None  # (S, S) bool: those fields on the model input; None unless lungs.ok
    input: ModelInput | None = None      # how the film became ``pixels``: crop box, lung region, fallback

    def lung_weight(self, heat: np.ndarray) -> LungWeight | None:
        """A map of this image (model-input geometry, e.g. ``CamResult.raw[0]``) against its lung fields;
        None when the fields could not be found reliably (``lungs.ok`` False) or are off the model input."""
        return None if self.lung_mask is None else lung_weight(heat, self.lung_mask)

    @property
    def view(self) -> str | None:
        """The view check's kind (``anatomy.view``: frontal, lateral, ct, not a chest radiograph; None: not run)."""
        return None if self.verdict is None else self.verdict.view

    @property
    def ood(self) -> bool:
        return self.verdict.is_ood if self.verdict is not None else any(b.ood for b in self.backbones.values())

    def session_record(self) -> dict:
        """The ``st.session_state["upload"]`` contract of the module docstring (plain JSON types)."""
        return {"name": self.name, "experiment": self.experiment, "backbones": {
            arch: {"probs": [float(p) for p in b.probs],
                   "coords": {m: [float(v) for v in xy] for m, xy in b.coords.items()},
                   "neighbors": [int(i) for i in b.neighbors], "distances": [float(d) for d in b.distances],
                   "som_node": None if b.som_node is None else int(b.som_node),
                   "som_qe": None if b.som_qe is None else float(b.som_qe),
                   "som_qe_pct": None if b.som_qe_pct is None else float(b.som_qe_pct),
                   "ood": bool(self.ood)}
            for arch, b in self.backbones.items()},
            "verdict": None if self.verdict is None else self.verdict.to_json()}


def lung_fields(gray: np.ndarray, verdict: OodVerdict | None = None) -> LungFields | None:
    """The lung fields of a film (its own size): those the input gate found for ``verdict`` when it
    did, else ``anatomy.segment_lungs(gray)``; None for a film too small to segment."""
    lungs = getattr(getattr(verdict, "gate", None), "lungs", None)
    if isinstance(lungs, LungFields) and lungs.mask.shape == np.shape(gray):
        return lungs
    try:
        return segment_lungs(gray)
    except ValueError as exc:
        log.debug("no lung fields: %s", exc)
        return None


def lung_mask_for(lungs: LungFields | None, prep, region: np.ndarray | None = None) -> np.ndarray | None:
    """Usable lung fields on the model input (``cam.lungshare.model_mask``), or None (none found, not
    reliable, or cropped away). ``region``: the film's ``ModelInput.region`` (a lung input's crop)."""
    if lungs is None or not lungs.ok:
        return None
    mask = model_mask(lungs.mask, prep, region)
    return mask if mask.any() else None


def calibrated_threshold(raw_probs, j: int, threshold: float | None, temperature, task: str) -> float | None:
    """A threshold on the model's raw probability of class ``j``, put on the calibrated scale the page shows.

    The thresholds were chosen on the raw probabilities; the page shows temperature-calibrated ones.
    Multi-label: calibration is a monotone map per class (sigmoid(logit(p) / T_j)), so the threshold is
    mapped through it and is the same for every image. Multi-class: the calibrated probability of a class
    depends on the other classes too (softmax(log p / T)), so no single number works for every image.
    The threshold is mapped at THIS image's mix of the other classes: class ``j`` set to ``threshold`` and
    the others keeping their shares of the rest. For a fixed mix the calibrated value
    ``x^a / (x^a + (1 - x)^a S)`` (a = 1/T > 0, S > 0 from the mix) strictly increases with ``x``, so
    ``raw_probs[j] >= threshold`` exactly when the calibrated probability >= the returned threshold: the
    call made on the validated raw rule never contradicts the calibrated number shown beside it.
    ``temperature`` None (not calibrated): the threshold unchanged."""
    if threshold is None or temperature is None:
        return None if threshold is None else float(threshold)
    p = np.asarray(raw_probs, np.float64)
    t = float(np.clip(threshold, 0.0, 1.0))
    if task == "multilabel":
        temps = np.broadcast_to(np.asarray(temperature, np.float64), p.shape)
        return float(apply_temperature(np.array([t]), [temps[j]], task)[0])
    rest = np.delete(np.clip(p, 0.0, None), j)
    shares = rest / rest.sum() if rest.sum() > 0 else np.full(len(rest), 1.0 / max(len(rest), 1))
    q = np.insert(shares * (1.0 - t), j, t)
    return float(apply_temperature(q, temperature, task)[j])


class Predictor:
    """Models + analysis artefacts of one experiment; ``predict`` is safe from many threads."""

    def __init__(self, exp: runs.Experiment, models: dict | None = None):
        self.exp = exp
        self.prep = exp.preprocessing
        self.labels = exp.labels
        self.names = list(self.labels.names)
        self.task = self.labels.task
        self.archs = list(exp.backbones)
        self.models = {a: (models or {}).get(a) or exp.load_model(a) for a in self.archs}
        self.analysis = exp.analysis()
        self.references = load_references(exp, self.archs)   # arch -> stored maps, neighbours, SOM
        self.ood_detector = load_detector(exp, self.references)
        self._fixed: dict = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ facts about the experiment

    @property
    def analysed(self) -> bool:
        return self.analysis is not None

    def map_methods(self, arch: str) -> list[str]:
        ref = self.references.get(arch)
        return ref.placer.methods if ref is not None and ref.placer is not None else []

    def map_coords(self, arch: str, method: str) -> np.ndarray | None:
        """Stored (N, 2) coordinates of every image on one map (projections.npz ``coords_<method>``)."""
        if not self.exp.has_artifact(runs.PROJECTIONS, arch):
            return None
        arrays = self.exp.load_arrays(runs.PROJECTIONS, arch)
        return arrays.get(f"coords_{method}")

    def som_grid(self, arch: str) -> tuple[int, int] | None:
        ref = self.references.get(arch)
        return ref.som_grid if ref is not None else None

    def temperature(self, arch: str):
        return self.analysis.backbone(arch).temperature if self.analysis else None

    def probabilities(self, arch: str, logits) -> tuple[np.ndarray, np.ndarray]:
        """(raw, calibrated) float64 probabilities of ``logits`` ((C,) or (N, C)) of one backbone: the
        head's link (``models.probabilities``), then the stored temperature
        (``stats.calibration.calibrated_probabilities``). The one path from logits to what pages show."""
        raw = np.asarray(probabilities(np.asarray(logits, np.float64), self.task), np.float64)
        return raw, calibrated_probabilities(raw, self.temperature(arch), self.task)

    def operating_point(self, arch: str, cls: str, point: str = "youden") -> OperatingPoint | None:
        """The validation-chosen operating point of one class (``runs.records.OperatingPoint``), or None."""
        if not self.analysis:
            return None
        p = self.analysis.backbone(arch).point(cls, point)
        return p if p.defined else None

    def test_prevalence(self, arch: str, cls: str) -> float | None:
        """Share of the test images carrying ``cls`` (the prevalence the test PPV and NPV hold at), or None."""
        if not self.analysis:
            return None
        test = self.analysis.backbone(arch).class_counts(cls)["test"]
        return test["n_pos"] / test["n"] if test.get("n") and test.get("n_pos") is not None else None

    def calls(self, b: BackboneResult, point: str = "youden") -> list[dict]:
        """Per class, the screening call of ``b`` at one operating point (``youden`` | ``high_sensitivity`` |
        ``high_specificity``) without running the model again:

        ``class``, ``prob`` (calibrated, what the page shows), ``threshold`` (on that same scale for this
        image: ``calibrated_threshold``), ``positive`` (``prob >= threshold``, which is exactly the validated
        rule ``raw_prob >= raw_threshold``; None without a threshold), ``raw_prob``, ``raw_threshold``
        (the model's score and the threshold chosen on it), ``test`` (``TEST_RATES`` -> ``Rate`` of that
        threshold on the test images), ``test_prevalence`` and ``val`` (its validation sensitivity and
        specificity)."""
        out = []
        temp = self.temperature(b.arch)
        for j, cls in enumerate(self.names):
            op = self.operating_point(b.arch, cls, point)
            raw_thr = None if op is None else float(op.threshold)
            out.append({"class": cls, "prob": float(b.probs[j]), "raw_prob": float(b.raw_probs[j]),
                        "threshold": calibrated_threshold(b.raw_probs, j, raw_thr, temp, self.task),
                        "raw_threshold": raw_thr,
                        "positive": None if raw_thr is None else bool(b.raw_probs[j] >= raw_thr),
                        "test": {k: (op.rate(k) if op is not None else Rate(None)) for k in TEST_RATES},
                        "test_prevalence": self.test_prevalence(b.arch, cls),
                        "val": None if op is None else {"sensitivity": op.val_sensitivity,
                                                        "specificity": op.val_specificity}})
        return out

    # ------------------------------------------------------------------ inference

    def prepare(self, gray: np.ndarray, lungs: LungFields | None = None) -> ModelInput:
        """The film as the models see it (``anatomy.inputs.model_input`` with the experiment's
        preprocessing: the resize, and for a lung input the film's lung fields first)."""
        gray = np.asarray(gray)
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 image, got {gray.dtype} {gray.shape}")
        return model_input(self.prep, gray, lungs)

    def model_input(self, gray: np.ndarray) -> np.ndarray:
        """(S, S) uint8: the input the models see (``prepare(gray).pixels``)."""
        return self.prepare(gray).pixels

    def _forward(self, arch: str, pixels: np.ndarray, class_idx, methods) -> tuple[dict, np.ndarray]:
        """CAMs + the pooled features of one image from ONE forward pass."""
        cams, feats = forward_with_features(self.models[arch], self.prep.to_tensor(pixels), class_idx, methods)
        return cams, feats[0]

    def heatmaps(self, pixels: np.ndarray, arch: str, class_idx: int | None = None,
                 methods=METHODS, layer: str | None = None) -> dict[str, CamResult]:
        """CAM maps of one backbone for ``class_idx`` (None: its top class) at ``layer`` (a name from
        ``models.layer_names``; None: the last block, which the head pools)."""
        if layer in (None, FINAL_LAYER):
            return self._forward(arch, pixels, class_idx, tuple(methods))[0]
        return compute_cams(self.models[arch], self.prep.to_tensor(pixels), class_idx, tuple(methods), layer=layer)

    def verdict(self, image, features: dict[str, np.ndarray], info: dict | None = None) -> OodVerdict:
        """THE out-of-distribution verdict of one image (``covidviz.ood``): the input gate on ``image`` (the
        upload's ``DecodedImage``, whose colour statistics and DICOM modality the gate reads, or the gray
        film with its ``DecodedImage.info`` as ``info``) and the experiment's detector over every
        backbone's pooled features (arch -> (D,))."""
        return self.ood_detector.verdict(image, features, info)

    def predict(self, gray: np.ndarray, name: str = "image", methods=("cam",), point: str = "youden",
                archs=None, image=None) -> Diagnosis:
        """What every backbone (or those in ``archs``) says about ``gray``. ``image``: the upload's
        ``DecodedImage`` for the OOD gate's colour checks (default: ``gray`` itself)."""
        inp = self.prepare(gray)
        pixels = inp.pixels
        out = {}
        for arch in archs or self.archs:
            t0 = time.perf_counter()
            cams, feats = self._forward(arch, pixels, None, tuple(methods))
            logits = next(iter(cams.values())).logits[0].astype(np.float64)
            raw, probs = self.probabilities(arch, logits)
            top = int(np.argmax(probs))
            if int(next(iter(cams.values())).class_idx[0]) != top:
                # The maps explained the top raw logit; per-class calibration (multi-label temperatures) can
                # put another class on top, and every page shows the maps of the class it names.
                cams = self._forward(arch, pixels, top, tuple(methods))[0]
            res = BackboneResult(arch=arch, logits=logits, raw_probs=raw, probs=probs,
                                 features=feats, top=top, calls=[], cams=cams)
            res.calls = self.calls(res, point)
            self._place(arch, feats, res)
            res.seconds = time.perf_counter() - t0
            out[arch] = res
        verdict = self.verdict(gray if image is None else image, {a: r.features for a, r in out.items()})
        diag = Diagnosis(name=name, experiment=self.exp.name, pixels=pixels, backbones=out, verdict=verdict, input=inp)
        diag.lungs = inp.lungs if inp.lungs is not None else lung_fields(gray, verdict)
        # Lung fields are drawn and measured on frontal films only: on a lateral film or a CT slice the
        # segmenter still finds dark fields, but calling them "the lungs" of a chest film would mislead.
        diag.lung_mask = lung_mask_for(diag.lungs, self.prep, inp.region) if diag.view in (None, FRONTAL) else None
        for res in out.values():  # one verdict for every backbone: pages never show them disagreeing
            res.ood = verdict.is_ood
            res.lung_weight = diag.lung_weight(next(iter(res.cams.values())).raw[0])
        return diag

    def warm_up(self, methods=METHODS) -> float:
        """Pay ``predict``'s one-time costs now, on one phantom film; returns the seconds spent.

        The first prediction of a process is several times slower than the next: each backbone's first
        forward and backward passes (the allocator, the convolution kernels chosen for the input size),
        the lung segmenter's load and first pass, the input gate's and the detector's first calls. The app
        calls this once per experiment as Diagnose or Batch opens (``ui.diagnose_predictor``), so that
        the first upload of a session is as fast as the next (``bench/cold_start.py`` measures it)."""
        from covidviz.data.synthetic import render_phantom

        t0 = time.perf_counter()
        film = np.asarray(render_phantom(0, (), size=WARM_UP_FILM)[0], np.uint8)
        self.predict(film, "warm-up", methods=methods)
        return time.perf_counter() - t0

    def _place(self, arch: str, feats: np.ndarray, res: BackboneResult) -> None:
        """The image among the training images (``ood.reference``): maps, neighbours, SOM."""
        ref = self.references.get(arch)
        if ref is None:
            return
        place = ref.place(feats)
        res.coords, res.neighbors, res.distances = place.coords, place.neighbors, place.distances
        res.nn_distance, res.nn_pct = place.nn_distance, place.nn_pct
        res.som_node, res.som_qe, res.som_qe_pct = place.som_node, place.som_qe, place.som_qe_pct

    # ------------------------------------------------------------------ heat-map scale

    def fixed_scale(self, arch: str, method: str, layer: str | None = None) -> float:
        """A per-(backbone, method) reference for the "fixed scale" display: the median over up to 16
        training images (their originals when readable, else their thumbnails) of each image's
        top-class map maximum. Raw maps divided by it are comparable between uploads; values above the
        reference saturate. Computed once per Predictor and layer."""
        key = (arch, method, layer or FINAL_LAYER)
        with self._lock:
            if key in self._fixed:
                return self._fixed[key]
        batch = self._reference_pixels()
        cams = self.heatmaps(batch, arch, None, (method,), layer) if len(batch) else {}
        peaks = cams[method].raw.reshape(len(batch), -1).max(1) if cams else np.array([1.0])
        scale = float(np.median(peaks)) if np.median(peaks) > 0 else 1.0
        with self._lock:
            self._fixed[key] = scale
        return scale

    def _reference_pixels(self) -> np.ndarray:
        with self._lock:
            if "ref" in self._fixed:
                return self._fixed["ref"]
        from covidviz.data.imageio import ImageDecodeError, read_image

        images = self.exp.images()
        rows = np.flatnonzero((images["split"] == "train").to_numpy())[:FIXED_SCALE_IMAGES]
        thumbs = self.exp.thumbnails()
        out = []
        for r in rows:
            try:
                gray = read_image(images["path"].iloc[r])
            except (ImageDecodeError, KeyError, OSError):
                gray = np.asarray(thumbs[r])
            out.append(self.model_input(gray))
        batch = np.stack(out) if out else np.zeros((0, self.prep.image_size, self.prep.image_size), np.uint8)
        with self._lock:
            self._fixed["ref"] = batch
        return batch


def forward_with_features(model, x: torch.Tensor, class_idx, methods) -> tuple[dict, np.ndarray]:
    """CAMs and the pooled features (N, D) from ONE forward pass: a hook on the pool that only fires
    in the calling thread, removed in ``finally``, under the model's lock (shared with every session)."""
    owner = threading.get_ident()
    captured = {}

    def hook(module, inputs, output):
        if threading.get_ident() == owner:
            captured["f"] = output.detach()

    with model_lock(model):
        handle = model.pool.register_forward_hook(hook)
        try:
            cams = compute_cams(model, x, class_idx, methods)
        finally:
            handle.remove()
    return cams, torch.flatten(captured["f"], 1).float().cpu().numpy()
