"""The diagnose step without Streamlit: one uploaded X-ray -> what every backbone of an experiment says.

``Predictor(exp)`` holds one model per backbone (built once, shared by all sessions: the app keeps one
``Predictor`` per experiment in ``st.cache_resource``) and the analysis artefacts the page needs.
``Predictor.predict(gray)`` takes a decoded uint8 film (``covidviz.data.imageio``) and returns a
``Diagnosis``: per backbone the calibrated probabilities, the call at the validation-chosen threshold
with what that threshold achieved on test, the pooled features, CAM heat maps (``covidviz.cam``: one
forward pass per backbone, the pooled features captured from that same pass), the k nearest TRAINING
images in feature space, the upload's place on the stored maps and SOM, and an out-of-distribution
check. ``case_report_png`` renders a one-page PNG report with PIL.

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
            "ood": bool}}}                   # True when unlike the training images (see OOD_PERCENTILE)

Backbones whose analysis artefacts are missing get empty coords/neighbours and None for the SOM keys.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from covidviz import runs
from covidviz.analysis.calibration import apply_temperature
from covidviz.analysis.projection import MapPlacer
from covidviz.analysis.som import som_place
from covidviz.cam import METHOD_NAMES, METHODS, CamResult, compute_cams, model_lock, overlay
from covidviz.data.labels import MULTICLASS

UPLOAD_KEY = "upload"
OOD_PERCENTILE = 99.0         # warn when the upload is farther from the training images than 99 % of them
K_SIMILAR = 8
OPERATING_POINTS = {
    "youden": "Balanced (Youden's J)",
    "high_sensitivity": "Rule-out (sensitivity ≥ 95 % on validation)",
    "high_specificity": "Rule-in (specificity ≥ 95 % on validation)",
}
NOTICE = ("For research and education only — not for clinical diagnosis. These models were trained on "
          "limited, possibly biased public data and have not been validated for patient care.")
FIXED_SCALE_IMAGES = 16


@dataclass
class BackboneResult:
    arch: str
    logits: np.ndarray             # (C,)
    raw_probs: np.ndarray          # (C,) the model's own probabilities (what the thresholds were chosen on)
    probs: np.ndarray              # (C,) temperature-calibrated probabilities (what the page shows)
    features: np.ndarray           # (D,) pooled features
    top: int                       # index of the highest probability
    calls: list[dict]              # per class: name, prob, raw_prob, threshold, positive, test rates
    cams: dict[str, CamResult]     # method -> maps for the top class (1 image)
    coords: dict[str, list[float]] = field(default_factory=dict)
    neighbors: list[int] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    nn_distance: float | None = None
    nn_pct: float | None = None
    som_node: int | None = None
    som_qe: float | None = None
    som_qe_pct: float | None = None
    ood: bool = False
    ood_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Diagnosis:
    name: str
    experiment: str
    pixels: np.ndarray             # (S, S) uint8: exactly what the models saw
    backbones: dict[str, BackboneResult]

    @property
    def ood(self) -> bool:
        return any(b.ood for b in self.backbones.values())

    def session_record(self) -> dict:
        """The ``st.session_state["upload"]`` contract of the module docstring (plain JSON types)."""
        return {"name": self.name, "experiment": self.experiment, "backbones": {
            arch: {"probs": [float(p) for p in b.probs],
                   "coords": {m: [float(v) for v in xy] for m, xy in b.coords.items()},
                   "neighbors": [int(i) for i in b.neighbors], "distances": [float(d) for d in b.distances],
                   "som_node": None if b.som_node is None else int(b.som_node),
                   "som_qe": None if b.som_qe is None else float(b.som_qe),
                   "som_qe_pct": None if b.som_qe_pct is None else float(b.som_qe_pct),
                   "ood": bool(b.ood)}
            for arch, b in self.backbones.items()}}


def _percentile(sorted_ref: np.ndarray, value: float) -> float:
    return float(100.0 * np.searchsorted(sorted_ref, value, side="right") / max(len(sorted_ref), 1))


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
        self.analysis = exp.load_json(runs.ANALYSIS) if exp.has_artifact(runs.ANALYSIS) else None
        self._placers: dict = {}
        self._nn_sorted: dict = {}
        self._soms: dict = {}
        self._fixed: dict = {}
        self._lock = threading.Lock()
        for arch in self.archs:
            if exp.has_artifact(runs.PROJECTIONS, arch):
                arrays = exp.load_arrays(runs.PROJECTIONS, arch)
                self._placers[arch] = MapPlacer.from_arrays(
                    {k[len("placer_"):]: v for k, v in arrays.items() if k.startswith("placer_")})
                if "train_nn_dist_sorted" in arrays:
                    self._nn_sorted[arch] = np.sort(np.asarray(arrays["train_nn_dist_sorted"], np.float64))
            if exp.has_artifact(runs.SOM, arch):
                self._soms[arch] = exp.load_arrays(runs.SOM, arch)

    # ------------------------------------------------------------------ facts about the experiment

    @property
    def analysed(self) -> bool:
        return self.analysis is not None

    def map_methods(self, arch: str) -> list[str]:
        placer = self._placers.get(arch)
        return placer.methods if placer else []

    def map_coords(self, arch: str, method: str) -> np.ndarray | None:
        """Stored (N, 2) coordinates of every image on one map (projections.npz ``coords_<method>``)."""
        if not self.exp.has_artifact(runs.PROJECTIONS, arch):
            return None
        arrays = self.exp.load_arrays(runs.PROJECTIONS, arch)
        return arrays.get(f"coords_{method}")

    def som_grid(self, arch: str) -> tuple[int, int] | None:
        som = self._soms.get(arch)
        if som is None:
            return None
        w = np.asarray(som["weights"])
        return (int(w.shape[0]), int(w.shape[1])) if w.ndim == 3 else None

    def temperature(self, arch: str):
        cal = (self.exp.backbone(arch).get("calibration") or {})
        return cal.get("temperature")

    def operating_point(self, arch: str, cls: str, point: str = "youden") -> dict | None:
        """``{"threshold", "val": {...}, "test": confusion_at(...)}`` of one class, or None."""
        if not self.analysis:
            return None
        b = (self.analysis.get("backbones") or {}).get(arch) or {}
        per_class = ((b.get("thresholds") or {}).get("per_class") or {}).get(cls) or {}
        p = (per_class.get("points") or {}).get(point)
        return p if p and p.get("threshold") is not None else None

    # ------------------------------------------------------------------ inference

    def model_input(self, gray: np.ndarray) -> np.ndarray:
        """(S, S) uint8: the preprocessing contract's resize (the input the models see)."""
        gray = np.asarray(gray)
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 image, got {gray.dtype} {gray.shape}")
        return self.prep.to_model_pixels(gray)

    def _forward(self, arch: str, pixels: np.ndarray, class_idx, methods) -> tuple[dict, np.ndarray]:
        """CAMs + the pooled features from ONE forward pass (a thread-filtered hook on the pool)."""
        model = self.models[arch]
        x = self.prep.to_tensor(pixels)
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
        feats = torch.flatten(captured["f"], 1)[0].float().cpu().numpy()
        return cams, feats

    def heatmaps(self, pixels: np.ndarray, arch: str, class_idx: int | None = None,
                 methods=METHODS) -> dict[str, CamResult]:
        """CAM maps of one backbone for ``class_idx`` (None: its top class)."""
        return self._forward(arch, pixels, class_idx, tuple(methods))[0]

    def predict(self, gray: np.ndarray, name: str = "image", methods=("cam",), point: str = "youden",
                archs=None) -> Diagnosis:
        pixels = self.model_input(gray)
        out = {}
        for arch in archs or self.archs:
            t0 = time.perf_counter()
            cams, feats = self._forward(arch, pixels, None, tuple(methods))
            logits = next(iter(cams.values())).logits[0].astype(np.float64)
            raw = _probs(logits, self.task)
            temp = self.temperature(arch)
            probs = apply_temperature(raw, temp, self.task) if temp is not None else raw.copy()
            res = BackboneResult(arch=arch, logits=logits, raw_probs=raw, probs=np.asarray(probs, np.float64),
                                 features=feats, top=int(np.argmax(probs)), calls=self._calls(arch, raw, probs, point),
                                 cams=cams)
            self._place(arch, feats, res)
            res.seconds = time.perf_counter() - t0
            out[arch] = res
        return Diagnosis(name=name, experiment=self.exp.name, pixels=pixels, backbones=out)

    def _calls(self, arch, raw, probs, point) -> list[dict]:
        calls = []
        for j, cls in enumerate(self.names):
            op = self.operating_point(arch, cls, point)
            thr = None if op is None else float(op["threshold"])
            test = (op or {}).get("test") or {}
            calls.append({"class": cls, "prob": float(probs[j]), "raw_prob": float(raw[j]), "threshold": thr,
                          "positive": None if thr is None else bool(raw[j] >= thr),
                          "test": {k: test.get(k) for k in ("sensitivity", "specificity", "ppv", "npv", "n")},
                          "val": (op or {}).get("val")})
        return calls

    def _place(self, arch: str, feats: np.ndarray, res: BackboneResult) -> None:
        placer = self._placers.get(arch)
        if placer is not None:
            placement = placer.place(feats[None])
            res.coords = {m: [float(v) for v in c[0]] for m, c in placement.coords.items()}
            res.neighbors = [int(i) for i in placement.neighbors[0]]
            res.distances = [float(d) for d in placement.distances[0]]
            res.nn_distance = res.distances[0]
            ref = self._nn_sorted.get(arch)
            if ref is not None and len(ref):
                res.nn_pct = _percentile(ref, res.nn_distance)
                if res.nn_pct > OOD_PERCENTILE:
                    res.ood_reasons.append(
                        f"its distance to the nearest training image in feature space ({res.nn_distance:.2f}) is "
                        f"larger than for {res.nn_pct:.1f} % of the training images")
        som = self._soms.get(arch)
        if som is not None:
            res.som_node, res.som_qe, res.som_qe_pct = som_place(som, feats)
            if res.som_qe_pct > OOD_PERCENTILE:
                res.ood_reasons.append(
                    f"its SOM quantisation error ({res.som_qe:.2f}) is larger than for {res.som_qe_pct:.1f} % "
                    "of the training images")
        res.ood = bool(res.ood_reasons)

    # ------------------------------------------------------------------ heat-map scale

    def fixed_scale(self, arch: str, method: str) -> float:
        """A per-(backbone, method) reference for the "fixed scale" display: the median over up to 16
        training images (their originals when readable, else their thumbnails) of each image's
        top-class map maximum. Raw maps divided by it are comparable between uploads; values above the
        reference saturate. Computed once per Predictor."""
        key = (arch, method)
        with self._lock:
            if key in self._fixed:
                return self._fixed[key]
        batch = self._reference_pixels()
        cams = self.heatmaps(batch, arch, None, (method,)) if len(batch) else {}
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


def _probs(logits: np.ndarray, task: str) -> np.ndarray:
    if task == MULTICLASS:
        z = logits - logits.max()
        e = np.exp(z)
        return e / e.sum()
    return 0.5 * (1 + np.tanh(0.5 * logits))


# ---------------------------------------------------------------------- display helpers (no streamlit)

def display_image(gray: np.ndarray, max_side: int = 512) -> np.ndarray:
    """The film at most ``max_side`` px on its long side, aspect kept (for overlays and the report)."""
    from PIL import Image

    gray = np.asarray(gray, np.uint8)
    h, w = gray.shape
    f = max_side / max(h, w)
    if f >= 1:
        return gray
    img = Image.fromarray(gray, mode="L").resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
    return np.asarray(img)


def heat_for_display(cam: CamResult, scale: float | None = None) -> np.ndarray:
    """[0, 1] map of the first image: per-image min-max (``scale`` None) or ``raw / scale`` clipped."""
    if scale is None:
        return cam.normalised[0]
    return np.clip(cam.raw[0] / max(scale, 1e-12), 0.0, 1.0)


def overlay_image(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """RGB uint8 heat map over the film at display size (the film's own aspect: the model saw the
    whole image, squashed to a square, so the square map is stretched back)."""
    return overlay(display_image(gray), heat, alpha, colormap)


def overlay_png(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> bytes:
    """PNG bytes of ``overlay_image`` (fast zlib level: 5x quicker than the default, still lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay_image(gray, heat, alpha, colormap)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def ood_message(diag: Diagnosis, labels=None) -> str | None:
    """One plain sentence per flagged backbone, or None when every backbone finds the image familiar."""
    flagged = [(a, b) for a, b in diag.backbones.items() if b.ood]
    if not flagged:
        return None
    parts = [f"{labels.get(a, a) if labels else a}: " + "; ".join(b.ood_reasons) for a, b in flagged]
    return ("This image is unlike the training X-rays (above the 99th percentile of the training images). "
            "It may be a photo, a lateral view, a CT slice or another modality; the results below are "
            "shown but should not be trusted. " + " · ".join(parts) + ".")


# ---------------------------------------------------------------------- the case report

def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    for path in (f"/usr/share/fonts/truetype/dejavu/DejaVuSans{'-Bold' if bold else ''}.ttf",):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def case_report_png(diag: Diagnosis, gray: np.ndarray, heats: dict[str, np.ndarray], names: list[str],
                    arch_labels: dict[str, str] | None = None, method: str = "cam", extra: dict | None = None,
                    alpha: float = 0.4, explained: dict[str, str] | None = None) -> bytes:
    """A one-page PNG: the film, each backbone's heat map and probabilities with its call, the model
    and experiment identity, the out-of-distribution verdict and the research-use notice."""
    from PIL import Image, ImageDraw

    arch_labels = arch_labels or {}
    archs = list(diag.backbones)
    tile = 360
    margin = 30
    cols = 1 + len(archs)
    width = margin * 2 + cols * tile + (cols - 1) * 20
    n_rows_text = len(names) + 4
    height = 170 + tile + 60 + n_rows_text * 26 + 150 + (26 * 3 if diag.ood else 0)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    title, small, bold = _font(26, True), _font(16), _font(17, True)
    d.text((margin, 20), "covidviz case report", fill="#1F2A36", font=title)
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    d.text((margin, 60), f"Image: {diag.name}    Experiment: {diag.experiment}    Generated: {when}",
           fill="#333", font=small)
    ident = "    ".join(f"{arch_labels.get(a, a)}: {v}" for a, v in (extra or {}).items())
    if ident:
        d.text((margin, 84), ident, fill="#333", font=small)
    target = "each model's top class" if not explained else "the class named above each map"
    d.text((margin, 108), f"Heat maps: {METHOD_NAMES.get(method, method)}, explaining {target}",
           fill="#333", font=small)

    def paste(rgb_or_gray, x, label):
        im = Image.fromarray(rgb_or_gray)
        f = tile / max(im.size)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR)
        img.paste(im, (x + (tile - im.width) // 2, 170 + (tile - im.height) // 2))
        d.text((x, 140), label, fill="#1F2A36", font=bold)

    film = display_image(gray)
    paste(film, margin, "X-ray (as given to the models)")
    for i, arch in enumerate(archs):
        x = margin + (i + 1) * (tile + 20)
        b = diag.backbones[arch]
        cls = (explained or {}).get(arch, names[b.top])
        paste(overlay(film, heats[arch], alpha), x, f"{arch_labels.get(arch, arch)}: map for {cls}")

    y = 170 + tile + 30
    d.text((margin, y), "Class", fill="#1F2A36", font=bold)
    for i, arch in enumerate(archs):
        d.text((margin + 260 + i * 330, y), f"{arch_labels.get(arch, arch)} (calibrated p, call)",
               fill="#1F2A36", font=bold)
    y += 28
    for j, cls in enumerate(names):
        d.text((margin, y), cls, fill="#222", font=small)
        for i, arch in enumerate(archs):
            c = diag.backbones[arch].calls[j]
            call = "no threshold" if c["positive"] is None else ("POSITIVE" if c["positive"] else "negative")
            d.text((margin + 260 + i * 330, y), f"{c['prob']:.3f}   {call}", fill="#222", font=small)
        y += 26
    y += 6
    d.text((margin, y), "Calls: the model's score against the validation-chosen (Youden) threshold of each class.",
           fill="#555", font=small)
    y += 30
    if diag.ood:
        msg = ood_message(diag, arch_labels) or ""
        for line in _wrap(msg, 120)[:3]:
            d.text((margin, y), line, fill="#B00020", font=small)
            y += 26
    d.rectangle((margin, y, width - margin, y + 80), outline="#B00020", width=3, fill="#FFF4F4")
    for k, line in enumerate(_wrap(NOTICE, 105)[:3]):
        d.text((margin + 12, y + 10 + k * 22), line, fill="#B00020", font=bold if k == 0 else small)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
