"""What the Diagnose page shows, without Streamlit: the test-image picker's choices, the window/level
controls, the busy and error texts, heat maps on a chosen scale, overlays as PNG, the
out-of-distribution sentence, the placement figure on the stored maps and the one-page case report (PIL).
The calls (headline, screening table, what the operating point meant) are ``views.diagnose_calls``."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from covidviz.cam import DEFAULT_COLORMAP, METHOD_NAMES, OVERLAY_ALPHA, CamResult, describe_grid, overlay
from covidviz.data.labels import MULTICLASS, split_labels
from covidviz.inference import K_SIMILAR, BackboneResult, Diagnosis
from covidviz.models import FINAL_LAYER
from covidviz.runs.records import ManifestInfo
from covidviz.views import diagnose_calls as dc
from covidviz.views import glossary
from covidviz.views.latent import METHOD_NAMES as MAP_NAMES
from covidviz.views.style import NO_FINDING, NOTICE, NOTICE_TITLE, arch_label, class_colours

TOP_CLASS = "Top class of each model"     # the "Explain class" choice that keeps each model's own top class
SCALE_MODES = ("Per image (min–max)", "Fixed (comparable between images)")
MAP_PREFERENCE = ("umap", "tsne", "pca")  # the map the page places the image on, when stored
COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA")  # PIL modes of colour files
PLACE_COLOUR = "#D00000"                  # the star that marks the image on the maps

# The page's fixed sentences (its notes under tables and figures), defined with the rest of what it shows.
INTRO = ("See what each backbone predicts for one chest X-ray, where it looks, and how the image compares with the "
         "training images. Research and teaching tool: not a diagnosis.")
UPLOAD_HELP = ("Processed in memory and never stored. 8/16-bit PNG, JPEG, DICOM (MONOCHROME1/2, rescale, VOI LUT or "
               "window) are supported.")
UPLOAD_PROMPT = ("Upload a frontal chest X-ray to see the models' predictions and heat maps, or pick one of this "
                 "experiment's test images above.")
OOD_NOTE = ":red[**Unlike the training images** (see the warning above): treat these numbers with caution.]"
NOT_ANALYSED = ("This experiment has not been analysed yet (`python train.py analyze`): no thresholds, calibration, "
                "similar cases or maps.")
SCALE_HELP = ("Per image: the strongest spot is always red. Fixed: red means as strong as a typical training image's "
              "peak, so weak evidence stays dark.")
HEAT_NOTE = ("Red = strongest evidence for the explained class, blue = little. Heat maps show what drives the score, "
             "not where disease is: check that they point at the lungs, not at text markers or edges. "
             f"See {glossary.link('CAM')}.")
REPORT_NOTE = ("Image, heat maps, probabilities and calls at the chosen operating point, model and experiment identity, "
               "the research-use notice.")
FILTER_HELP = "Show test images carrying any of these labels (empty: all)."
WINDOW_HELP = "High-bit-depth image: choose which value range is mapped to black..white."
PATIENT_HELP = "Hidden by default: patient name, ID, dates. Nothing is stored."
YOUDEN = glossary.link("Youden's J")
PAGE_RESULTS = "the results below"                   # where the page's OOD warning points
REPORT_SECTIONS = ("Images", "Out-of-distribution check", "Probabilities and calls")  # the case report's
REPORT_RESULTS = f'the probabilities and calls (section "{REPORT_SECTIONS[2]}")'  # ... and its OOD sentence, by name


def busy_text(archs, name: str) -> str:
    """The busy state at the top of the page while the models run: "Running DenseNet121 and ResNet50 on x.png…"."""
    return f"Running {dc._and([arch_label(a) for a in archs])} on {name or 'this image'}…"


def load_error(exp, exc: Exception) -> str:
    return (f"The models of experiment '{exp.name}' could not be loaded ({type(exc).__name__}: {str(exc)[:300]}). "
            "Retrain it with train.py or pick another experiment.")


def process_error(exc: Exception) -> str:
    return f"The models could not process this image ({type(exc).__name__}: {exc})."

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


def ood_message(diag: Diagnosis, labels=None, results: str = PAGE_RESULTS) -> str | None:
    """The image's ONE out-of-distribution verdict as plain sentences when it is OOD, else None.
    ``results`` names where the calls are (the page: below; the report: its section, by name)."""
    v = diag.verdict
    if v is None:
        flagged = [(a, b) for a, b in diag.backbones.items() if b.ood]
        if not flagged:
            return None
        parts = [f"{labels.get(a, a) if labels else a}: " + "; ".join(b.ood_reasons) for a, b in flagged]
        return f"This image is unlike the training X-rays; {results} should not be trusted. " + " · ".join(parts) + "."
    if not v.is_ood:
        return None
    return f"{v.summary} It may be a photo, a lateral view, a CT slice or another modality; {results} are withheld."


def verdict_caption(diag: Diagnosis) -> str | None:
    """The verdict in one line when the image passed (in distribution, or no feature check possible)."""
    v = diag.verdict
    if v is None or v.is_ood:
        return None
    mark = ":material/check_circle:" if v.checked else ":material/help:"
    return f"{mark} **Out-of-distribution check:** {v.summary} See {glossary.link('Out-of-distribution')}."


WITHHELD = ("**Calls withheld:** the out-of-distribution check (above) found this image unlike the training images, "
            "so the models' probabilities and calls are not shown. Turn on *Show the predictions anyway* to see "
            "them, greyed and marked as unreliable.")
SHOW_ANYWAY = "Show the predictions anyway"
SHOWN_ANYWAY = (":grey[Shown at your request although the image failed the out-of-distribution check: these numbers "
                "are not reliable for it.]")
REPORT_WITHHELD = ("Calls withheld: the image failed the out-of-distribution check (section "
                   f'"{REPORT_SECTIONS[1]}"), so the probabilities and calls are not reported.')
REPORT_SHOWN_ANYWAY = ("Shown at the user's request although the image failed the out-of-distribution check: "
                       "these numbers are not reliable for it.")


# ---------------------------------------------------------------------- the case report

REPORT_TILE, REPORT_MARGIN, REPORT_GAP, REPORT_LINE = 360, 30, 20, 24
REPORT_CLASS_WIDTH, REPORT_CALL_WIDTH = 260, 330   # the calls table's class column and each backbone's (px)


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    for path in (f"/usr/share/fonts/truetype/dejavu/DejaVuSans{'-Bold' if bold else ''}.ttf",):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def wrap_px(text: str, font, width: float) -> list[str]:
    """``text`` as lines no wider than ``width`` pixels in ``font``, broken between words; a single word
    wider than a line (a long file name) is broken between characters. Nothing is dropped: the lines'
    words are the text's words, in order."""
    def fits(t: str) -> bool:
        return font.getlength(t) <= width

    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}" if cur else word
        if fits(trial):
            cur = trial
            continue
        if cur:
            lines.append(cur)
        cur = word
        while len(cur) > 1 and not fits(cur):
            k = len(cur) - 1
            while k > 1 and not fits(cur[:k]):
                k -= 1
            lines.append(cur[:k])
            cur = cur[k:]
    if cur:
        lines.append(cur)
    return lines


REPORT_COLUMNS = {"Probability": 125, "Threshold": 115, "Call": 90}  # per backbone in the report's table (px)


def _report_cells(c: dict, d: int) -> list[str]:
    return [f"{c['prob']:.{d}f}", "—" if c["threshold"] is None else f"{c['threshold']:.{d}f}", dc.call_text(c["positive"])]


def report_blocks(diag: Diagnosis, names: list[str], arch_labels: dict[str, str] | None = None, method: str = "cam",
                  extra: dict | None = None, explained: dict[str, str] | None = None,
                  calls: dict[str, list[dict]] | None = None, point: str = "youden",
                  task: str = MULTICLASS, show_anyway: bool = False) -> list[tuple[str, object]]:
    """What the case report says, in order, as ``(kind, payload)`` blocks: ``title``, ``text``, ``note``
    (grey), ``heading`` (a section, named in ``REPORT_SECTIONS``), ``bold``, ``images`` (the tiles),
    ``warning`` (red), ``table`` (``{"groups": backbone labels, "rows": [class, then REPORT_COLUMNS per
    backbone]}``) and ``notice`` (the boxed research-use notice).
    ``calls``: backbone -> ``Predictor.calls`` at ``point`` (default: the prediction's own, balanced).
    An out-of-distribution image's calls are withheld unless ``show_anyway`` (then marked unreliable)."""
    labels = arch_labels or {}
    calls = calls or {a: b.calls for a, b in diag.backbones.items()}
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    blocks: list[tuple[str, object]] = [
        ("title", "covidviz case report"),
        ("text", f"Image: {diag.name} · Experiment: {diag.experiment} · Generated: {when}")]
    blocks += [("text", f"{labels.get(a, a)}: {v}.") for a, v in (extra or {}).items()]
    target = "each model's top class" if not explained else "the class named above each map"
    blocks += [("heading", REPORT_SECTIONS[0]),
               ("note", f"The X-ray as given to the models, and each model's heat map: "
                        f"{METHOD_NAMES.get(method, method)}, explaining {target}."),
               ("images", None)]
    message = ood_message(diag, labels, REPORT_RESULTS)
    if message:
        blocks += [("heading", REPORT_SECTIONS[1]), ("warning", message)]
    elif diag.verdict is not None:
        blocks += [("heading", REPORT_SECTIONS[1]), ("text", diag.verdict.summary)]
    if diag.ood and not show_anyway:
        blocks += [("heading", REPORT_SECTIONS[2]), ("warning", REPORT_WITHHELD), ("notice", f"{NOTICE_TITLE} {NOTICE}")]
        return blocks
    blocks.append(("heading", REPORT_SECTIONS[2]))
    if diag.ood:
        blocks.append(("warning", REPORT_SHOWN_ANYWAY))
    blocks += [("note", f"{dc.SCREENING_TITLE}: {dc.point_label(point)}. A call is Positive when the calibrated "
                                 "probability reaches the class's threshold, chosen on validation and put on the same "
                                 "scale. Each class is screened on its own, one against the rest.")]
    for arch, b in diag.backbones.items():
        blocks.append(("bold", labels.get(arch, arch)))
        blocks.append(("text", dc.headline(calls[arch], b.top, task).replace("**", "") + "."))
        sentence = dc.screening_sentence(calls[arch], b.top, task, point)
        if sentence:
            blocks.append(("text", sentence))
    digits = {a: dc.decimals(calls[a]) for a in diag.backbones}  # enough that no call contradicts its printed numbers
    rows = [[cls] + [cell for a in diag.backbones for cell in _report_cells(calls[a][j], digits[a])]
            for j, cls in enumerate(names)]
    blocks += [("table", {"groups": [labels.get(a, a) for a in diag.backbones], "rows": rows}),
               ("notice", f"{NOTICE_TITLE} {NOTICE}")]
    return blocks


def case_report_png(diag: Diagnosis, gray: np.ndarray, heats: dict[str, np.ndarray], names: list[str],
                    arch_labels: dict[str, str] | None = None, method: str = "cam", extra: dict | None = None,
                    alpha: float = OVERLAY_ALPHA, explained: dict[str, str] | None = None,
                    calls: dict[str, list[dict]] | None = None, point: str = "youden", task: str = MULTICLASS,
                    show_anyway: bool = False) -> bytes:
    """A one-page PNG of ``report_blocks``: every sentence wrapped to the page (never cut), the page as
    tall as its text needs, the film and each backbone's heat map side by side."""
    from PIL import Image, ImageDraw

    labels = arch_labels or {}
    archs = list(diag.backbones)
    cols = 1 + len(archs)
    width = REPORT_MARGIN * 2 + cols * REPORT_TILE + (cols - 1) * REPORT_GAP
    text_width = width - 2 * REPORT_MARGIN
    fonts = {"title": _font(26, True), "text": _font(16), "note": _font(16), "warning": _font(16),
             "heading": _font(20, True), "bold": _font(17, True), "notice": _font(16)}
    colours = {"title": "#1F2A36", "text": "#222", "note": "#555", "warning": "#B00020", "heading": "#1F2A36",
               "bold": "#1F2A36", "notice": "#B00020"}
    blocks = report_blocks(diag, names, labels, method, extra, explained, calls, point, task, show_anyway)
    film = display_image(gray)
    tiles = [("X-ray (as given to the models)", film)]
    tiles += [(f"{labels.get(a, a)}: map for {(explained or {}).get(a, names[diag.backbones[a].top])}"
               + (" (no evidence: no heat drawn)" if heats.get(a) is None else ""),
               np.repeat(film[..., None], 3, axis=2) if heats.get(a) is None else overlay(film, heats[a], alpha))
              for a in archs]
    tile_labels = [wrap_px(t, fonts["bold"], REPORT_TILE) for t, _ in tiles]
    offsets = np.cumsum([0, *REPORT_COLUMNS.values()])[:-1]
    group_x = [REPORT_MARGIN + REPORT_CLASS_WIDTH + i * REPORT_CALL_WIDTH for i in range(len(archs))]
    col_x = [REPORT_MARGIN] + [x + int(o) for x in group_x for o in offsets]
    col_w = [REPORT_CLASS_WIDTH - 10] + [w - 8 for w in REPORT_COLUMNS.values()] * len(archs)

    def layout(img) -> int:
        """Draw the blocks on ``img`` (None: only measure); returns the height used."""
        d = None if img is None else ImageDraw.Draw(img)
        y = 20

        def text(x, yy, line, kind):
            if d is not None:
                d.text((x, yy), line, fill=colours[kind], font=fonts[kind])

        for kind, payload in blocks:
            if kind == "images":
                top = y + max(len(t) for t in tile_labels) * REPORT_LINE + 6
                for i, ((_, arr), lines) in enumerate(zip(tiles, tile_labels)):
                    x = REPORT_MARGIN + i * (REPORT_TILE + REPORT_GAP)
                    for k, line in enumerate(lines):
                        text(x, y + k * REPORT_LINE, line, "bold")
                    if img is not None:
                        im = Image.fromarray(arr)
                        f = REPORT_TILE / max(im.size)
                        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR)
                        img.paste(im, (x + (REPORT_TILE - im.width) // 2, top + (REPORT_TILE - im.height) // 2))
                y = top + REPORT_TILE + 14
            elif kind == "table":
                groups = [(x, wrap_px(g, fonts["bold"], REPORT_CALL_WIDTH - 10)) for x, g in zip(group_x, payload["groups"])]
                header = [["Class"] + list(REPORT_COLUMNS) * len(archs)]
                for x, lines in groups:
                    for k, line in enumerate(lines):
                        text(x, y + k * REPORT_LINE, line, "bold")
                y += max(len(lines) for _, lines in groups) * REPORT_LINE
                for r, row in enumerate(header + payload["rows"]):
                    kind_r = "bold" if r == 0 else "text"
                    cells = [wrap_px(cell, fonts[kind_r], w) for cell, w in zip(row, col_w)]
                    for x, lines in zip(col_x, cells):
                        for k, line in enumerate(lines):
                            text(x, y + k * REPORT_LINE, line, kind_r)
                    y += max(len(c) for c in cells) * REPORT_LINE + (6 if r == 0 else 2)
                y += 14
            elif kind == "notice":
                lines = wrap_px(payload, fonts["notice"], text_width - 24)
                box = len(lines) * REPORT_LINE + 20
                if d is not None:
                    d.rectangle((REPORT_MARGIN, y, width - REPORT_MARGIN, y + box), outline="#B00020", width=3,
                                fill="#FFF4F4")
                for k, line in enumerate(lines):
                    text(REPORT_MARGIN + 12, y + 10 + k * REPORT_LINE, line, "notice")
                y += box + 20
            else:
                if kind == "heading":
                    y += 8
                step = {"title": 38, "heading": 30}.get(kind, REPORT_LINE)
                for line in wrap_px(str(payload), fonts[kind], text_width):
                    text(REPORT_MARGIN, y, line, kind)
                    y += step
                y += 4
        return y

    height = layout(None)
    img = Image.new("RGB", (width, height), "white")
    layout(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

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
    return (("Multi-class: the probabilities of the classes add up to 1; the headline is the most likely class. "
             if task == MULTICLASS else
             "Multi-label: each finding has its own probability (they need not add up to 1) and its own call. ")
            + f"Probabilities are calibrated on validation ({glossary.link('Calibration', 'calibration')} by "
              f"{glossary.link('Temperature scaling', 'temperature scaling')}). Each class is then screened at the chosen "
              f"{glossary.link('Operating point', 'operating point')} (e.g. balanced: {YOUDEN} on validation), "
              "with its threshold on the same scale as the probability.")


# ---------------------------------------------------------------------- heat maps

def target_class(target: str, names: list[str]) -> int | None:
    """The class index the "Explain class" choice asks for (None: each model's top class)."""
    return None if target == TOP_CLASS else names.index(target)


def explained_map(predictor, diag: Diagnosis, arch: str, method: str, cls: int | None, cache: dict,
                  layer: str = FINAL_LAYER) -> CamResult:
    """The ``method`` map of ``arch`` for class ``cls`` (None: its top class) at ``layer``: the top class
    at the last block was computed with the prediction; others are computed once and kept in ``cache``."""
    b = diag.backbones[arch]
    if layer == FINAL_LAYER and (cls is None or cls == b.top) and method in b.cams:
        return b.cams[method]
    key = (arch, method, b.top if cls is None else cls, layer)
    if key not in cache:
        cache[key] = predictor.heatmaps(diag.pixels, arch, key[2], (method,), layer)[method]
    return cache[key]


def heat_caption(method: str, explained: str, grid: tuple[int, int] | None = None, image_size: int | None = None) -> str:
    """"CAM (class activation map) for COVID-19 · 8×8 cells, each 8 px": what the map is and its true resolution."""
    text = f"{METHOD_NAMES[method]} for {explained}" + (" (class-agnostic)" if method == "eigencam" else "")
    return text + (f" · {describe_grid(grid, image_size)}" if grid and image_size else "")


def no_evidence_text(explained: str) -> str:
    return (f"**No evidence for {explained} in this image:** nothing in it raises this model's {explained} score "
            "(its map has no positive cell), so no heat is drawn. A uniform colour here would only be noise.")


LAYER_HELP = ("Which feature map the heat map is read from. The last block is what the classifier pools (exact "
              "CAM); earlier blocks have a finer grid but are less specific to the class (gradient methods only).")


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
            f"standardised {glossary.link('PCA-50 units')}). {glossary.link('Out-of-distribution')} check: " + "; ".join(parts)
            + f". The page warns above 99 % ({glossary.link('QE', 'QE')}: the SOM's quantisation error).")


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
