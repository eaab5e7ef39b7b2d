"""What the Diagnose page shows, without Streamlit: the test-image picker's choices, the window/level
controls, the prediction tables and texts, heat maps on a chosen scale, overlays as PNG, the
out-of-distribution sentence, the placement figure on the stored maps and the one-page case report (PIL)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from covidviz.cam import DEFAULT_COLORMAP, METHOD_NAMES, OVERLAY_ALPHA, CamResult, overlay
from covidviz.data.labels import MULTICLASS, split_labels
from covidviz.inference import K_SIMILAR, TEST_RATES, BackboneResult, Diagnosis
from covidviz.runs.records import ManifestInfo, Rate
from covidviz.views.latent import METHOD_NAMES as MAP_NAMES
from covidviz.views.style import NO_FINDING, NOTICE, arch_label, class_colours

TOP_CLASS = "Top class of each model"     # the "Explain class" choice that keeps each model's own top class
SCALE_MODES = ("Per image (min–max)", "Fixed (comparable between images)")
MAP_PREFERENCE = ("umap", "tsne", "pca")  # the map the page places the image on, when stored
COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA")  # PIL modes of colour files
RATE_LABELS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV"}
PLACE_COLOUR = "#D00000"                  # the star that marks the image on the maps

# The page's fixed sentences (its notes under tables and figures), defined with the rest of what it shows.
INTRO = ("See what each backbone predicts for one chest X-ray, where it looks, and how the image compares with the "
         "training images. Research and teaching tool: not a diagnosis.")
UPLOAD_HELP = ("Processed in memory and never stored. 8/16-bit PNG, JPEG, DICOM (MONOCHROME1/2, rescale, VOI LUT or "
               "window) are supported.")
UPLOAD_PROMPT = ("Upload a frontal chest X-ray to see the models' predictions and heat maps, or pick one of this "
                 "experiment's test images above.")
OOD_NOTE = ":red[**Unlike the training images** (see the warning above): treat these numbers with caution.]"
CALLS_NOTE = ("Positive = model score ≥ threshold. Each class is judged on its own (one-vs-rest), so more than one "
              "class, or none, can be positive.")
NOT_ANALYSED = ("This experiment has not been analysed yet (`python train.py analyze`): no thresholds, calibration, "
                "similar cases or maps.")
PPV_NOTE = ("PPV and NPV depend on how common each class was in this test set; in another population they differ "
            "(see the Compare page for other prevalences).")
SCALE_HELP = ("Per image: the strongest spot is always red. Fixed: red means as strong as a typical training image's "
              "peak, so weak evidence stays dark.")
HEAT_NOTE = ("Red = strongest evidence for the explained class, blue = little. Heat maps show what drives the score, "
             "not where disease is: check that they point at the lungs, not at text markers or edges.")
REPORT_NOTE = "Image, heat maps, probabilities and calls, model and experiment identity, the research-use notice."
FILTER_HELP = "Show test images carrying any of these labels (empty: all)."
WINDOW_HELP = "High-bit-depth image: choose which value range is mapped to black..white."
PATIENT_HELP = "Hidden by default: patient name, ID, dates. Nothing is stored."
CALLS_HELP = {"Probability": "Calibrated probability",
              "Threshold": "Validation-chosen (Youden) threshold on the model score",
              "Model score": "The model's uncalibrated probability, compared with the threshold"}

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


def overlay_image(gray: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA,
                  colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """RGB uint8 heat map over the film at display size (the film's own aspect: the model saw the
    whole image, squashed to a square, so the square map is stretched back)."""
    return overlay(display_image(gray), heat, alpha, colormap)


def overlay_png(gray: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA,
                colormap: str = DEFAULT_COLORMAP) -> bytes:
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
                    alpha: float = OVERLAY_ALPHA, explained: dict[str, str] | None = None) -> bytes:
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


# ---------------------------------------------------------------------- input

def predicted_classes(predictions: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Each image's top class (by stored probability), row-aligned with ``images.parquet``."""
    probs = predictions[[f"p::{n}" for n in names]].to_numpy()
    return np.asarray(names)[probs.argmax(1)]


def picker_choices(images: pd.DataFrame, predicted: np.ndarray, want_labels=(), want_pred: str = "Any") -> dict[int, str]:
    """Row -> its label in the picker, for the test images carrying any of ``want_labels`` (none: all)
    and predicted ``want_pred`` ("Any": all)."""
    out = {}
    for r in images.index[images["split"] == "test"]:
        labels = split_labels(images.at[r, "labels"])
        if want_labels and not set(labels) & set(want_labels):
            continue
        if want_pred != "Any" and predicted[r] != want_pred:
            continue
        out[int(r)] = f"{images.at[r, 'image_id']} · label {images.at[r, 'labels'] or '—'} · predicted {predicted[r]}"
    return out


def file_caption(decoded) -> str:
    """"PNG · 1024×1024 px" of a decoded upload (``covidviz.data.imageio.DecodedImage``)."""
    return f"{decoded.kind} · {decoded.info.get('width')}×{decoded.info.get('height')} px"


def colour_warning(info: dict) -> str | None:
    """A warning for a colour file (X-rays are grayscale), or None."""
    mode = info.get("mode")
    if mode not in COLOUR_MODES:
        return None
    return (f"Colour image ({mode}) converted to grayscale. X-rays are grayscale: a colour file may be a photo "
            "or a screenshot.")


@dataclass(frozen=True)
class WindowControls:
    """Slider ranges and starting values of the window/level controls of a high-bit-depth image."""

    vmin: float
    vmax: float
    level: float
    width_min: float
    width_max: float
    width: float


def window_controls(raw: np.ndarray, default_window: tuple[float, float]) -> WindowControls:
    """Level over the image's value range, width from 0.5 % to 200 % of it, both starting at the
    file's own window (a flat image still gets a usable range)."""
    lo0, hi0 = default_window
    vmin, vmax = float(np.nanmin(raw)), float(np.nanmax(raw))
    vmax = max(vmax, vmin + 1.0)
    span = max(vmax - vmin, 1.0)
    return WindowControls(vmin, vmax, float(np.clip((lo0 + hi0) / 2, vmin, vmax)), span / 200, span * 2,
                          float(np.clip(hi0 - lo0, span / 200, span * 2)))


def model_input_caption(pixels: np.ndarray) -> str:
    return (f"Model input: {pixels.shape[1]}×{pixels.shape[0]} px, whole film resized, gray repeated to 3 channels, "
            "ImageNet-normalised")


def dicom_fields_caption(patient: dict) -> str:
    return (f"This DICOM holds {len(patient)} identifying field(s) (patient name, ID, dates); they are hidden and "
            "never stored.")


def window_from(level: float, width: float) -> tuple[float, float]:
    return (level - width / 2, level + width / 2)


def window_caption(window: tuple[float, float] | None, default_window: tuple[float, float]) -> str:
    lo, hi = window or default_window
    return ("Custom window " if window else "File's default window ") + f"{lo:.0f}…{hi:.0f}"


def prediction_key(exp, image_id: str, window) -> tuple:
    """What a prediction depends on: the experiment (and when it was completed), the image, the window."""
    return (str(exp.path), ManifestInfo(exp.manifest).completed, image_id, window)


# ---------------------------------------------------------------------- predictions

def task_caption(task: str) -> str:
    return (("Multi-class: the probabilities of the classes add up to 1. " if task == MULTICLASS else
             "Multi-label: each finding has its own probability (they need not add up to 1). ")
            + "Probabilities are temperature-calibrated on validation. The call compares the model's score "
              "with the threshold chosen on the validation split (Youden's J); \"What each threshold meant\" "
              "shows what that threshold achieved on the held-out test images (95 % interval, denominator).")


def call_text(positive: bool | None) -> str:
    return "—" if positive is None else ("Positive" if positive else "Negative")


def calls_table(b: BackboneResult) -> pd.DataFrame:
    """Per class: calibrated probability, the call, the model's score and the threshold it is compared with."""
    return pd.DataFrame([{"Class": c["class"], "Probability": c["prob"], "Call": call_text(c["positive"]),
                          "Model score": c["raw_prob"], "Threshold": c["threshold"]} for c in b.calls])


def rate_text(rate: Rate | None) -> str:
    """"0.83 (0.70–0.91), n=40", or "—" when undefined."""
    if rate is None or rate.value is None:
        return "—"
    ci = f" ({rate.ci_low:.2f}–{rate.ci_high:.2f})" if rate.ci_low is not None and rate.ci_high is not None else ""
    return f"{rate.value:.2f}{ci}, n={rate.n}"


def threshold_rates_table(b: BackboneResult) -> pd.DataFrame:
    """What each class's threshold achieved on the test images (sensitivity, specificity, PPV, NPV)."""
    return pd.DataFrame([{"Class": c["class"], **{RATE_LABELS[k]: rate_text(c["test"].get(k)) for k in TEST_RATES}}
                         for c in b.calls])


# ---------------------------------------------------------------------- heat maps

def target_class(target: str, names: list[str]) -> int | None:
    """The class index the "Explain class" choice asks for (None: each model's top class)."""
    return None if target == TOP_CLASS else names.index(target)


def explained_map(predictor, diag: Diagnosis, arch: str, method: str, cls: int | None, cache: dict) -> CamResult:
    """The ``method`` map of ``arch`` for class ``cls`` (None: its top class, already computed by the
    prediction); other classes are computed once and kept in ``cache``."""
    b = diag.backbones[arch]
    if cls is None or cls == b.top:
        return b.cams[method]
    key = (arch, method, cls)
    if key not in cache:
        cache[key] = predictor.heatmaps(diag.pixels, arch, cls, (method,))[method]
    return cache[key]


def heat_caption(method: str, explained: str) -> str:
    return f"{METHOD_NAMES[method]} for {explained}" + (" (class-agnostic)" if method == "eigencam" else "")


# ---------------------------------------------------------------------- similar images and maps

def similar_images(images: pd.DataFrame, b: BackboneResult, k: int = K_SIMILAR) -> tuple[list[int], list[str]]:
    """The ``k`` nearest training images (rows, nearest first) and their captions ("label · d=distance")."""
    pairs = list(zip(b.neighbors[:k], b.distances))
    return [int(r) for r, _ in pairs], [f"{images.at[r, 'labels'] or NO_FINDING} · d={d:.1f}" for r, d in pairs]


def similar_caption(b: BackboneResult) -> str:
    """How the nearest-images and SOM out-of-distribution checks came out for this image."""
    parts = []
    if b.nn_pct is not None:
        parts.append(f"this image's nearest training image is at d = {b.nn_distance:.1f}, farther than "
                     f"{b.nn_pct:.0f} % of training images are from their own nearest neighbour")
    if b.som_qe_pct is not None:
        parts.append(f"its SOM quantisation error ({b.som_qe:.1f}) is above {b.som_qe_pct:.0f} % of the "
                     "training images'")
    return ("The training images closest in the model's feature space, nearest first (label · d = distance in "
            "standardised PCA-50 units). Out-of-distribution check: " + "; ".join(parts) + ". The page warns above 99 %.")


def map_method(b: BackboneResult) -> str | None:
    """The stored map the image is placed on (UMAP, else t-SNE, else PCA), or None."""
    return next((m for m in MAP_PREFERENCE if m in b.coords), None)


def placement_figure(images: pd.DataFrame, coords: np.ndarray, names: list[str], b: BackboneResult,
                     method: str) -> go.Figure:
    """The training images on one stored map, coloured by their (first) label, and this image as a star."""
    train = (images["split"] == "train").to_numpy()
    first = np.asarray([(split_labels(v) or [NO_FINDING])[0] for v in images["labels"]])
    colours = class_colours(list(names) + [NO_FINDING])
    fig = go.Figure()
    for cls in list(names) + [NO_FINDING]:
        m = train & (first == cls)
        if m.any():
            fig.add_scattergl(x=coords[m, 0], y=coords[m, 1], mode="markers", name=cls,
                              marker=dict(size=7, color=colours[cls], opacity=0.7))
    x, y = b.coords[method]
    fig.add_scatter(x=[x], y=[y], mode="markers", name="This image" + (" (approximate)" if b.ood else ""),
                    marker=dict(symbol="star", size=20, color=PLACE_COLOUR, line=dict(color="black", width=1.5)))
    fig.update_layout(title=f"{arch_label(b.arch)}: {MAP_NAMES.get(method, method)} of the training images",
                      height=360, margin=dict(t=40, b=10, l=10, r=10), xaxis=dict(showticklabels=False),
                      yaxis=dict(showticklabels=False), legend=dict(orientation="h", y=-0.05))
    return fig


def placement_caption(ood: bool) -> str:
    return (("Placed between its nearest training images, but it is far from all of them: the position is only "
             "indicative. " if ood else "Placed between its nearest training images (the maps were fitted "
             "without it). ") + "Colours: the training images' labels.")


def som_caption(node: int | None, grid: tuple[int, int] | None) -> str | None:
    """Where the image falls on the SOM ("node 7 (row 1, column 2 of 4×5)"), or None."""
    if node is None or not grid:
        return None
    r, c = divmod(int(node), grid[1])
    return (f"SOM node {node} (row {r}, column {c} of {grid[0]}×{grid[1]}). "
            "The Latent space and SOM pages mark this image too.")


# ---------------------------------------------------------------------- report identity

def report_identity(exp, archs) -> dict[str, str]:
    """Per backbone, the line the case report prints: initial weights, best epoch, image size."""
    out = {}
    for a in archs:
        rec = exp.record(a)
        out[a] = (f"initial weights {rec.init.get('source') or 'unknown'}, best epoch {rec.get('best_epoch', '?')}, "
                  f"{exp.preprocessing.image_size} px")
    return out
