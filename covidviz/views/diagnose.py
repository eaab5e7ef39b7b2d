"""What the Diagnose page shows, without Streamlit: the test-image picker's choices, the window/level
controls, the busy and error texts, heat maps on a chosen scale, overlays as PNG, the
out-of-distribution sentence (the page's and the case report's), the lung outline and the "evidence on
the lungs" sentence (the page's and the case report's), the placement figure on the stored maps, the
reading's short verdict and map captions, the page's sections (``SECTIONS``, in the order a reader asks)
and what withheld calls and calls shown at the user's request say (``WITHHELD``, ``SHOWN_LABEL``, ``stamp``).
The calls (headline, screening table, what the operating point meant) are ``views.diagnose_calls``, what
a call may claim ``views.reliability``; the one-page case report (PIL) is ``views.report``."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from covidviz.anatomy import LungFields
from covidviz.anatomy.view import CT, FRONTAL, LATERAL, NOT_CHEST
from covidviz.cam import DEFAULT_COLORMAP, METHOD_NAMES, OVERLAY_ALPHA, CamResult, describe_grid, lungshare, overlay
from covidviz.cam.lungshare import LungWeight
from covidviz.data.labels import MULTICLASS, split_labels
from covidviz.data.preprocess import center_square
from covidviz.inference import K_SIMILAR, BackboneResult, Diagnosis
from covidviz.models import FINAL_LAYER
from covidviz.ood import OodVerdict
from covidviz.runs.records import ManifestInfo
from covidviz.views import diagnose_calls as dc
from covidviz.views import formats, glossary
from covidviz.views.latent import METHOD_NAMES as MAP_NAMES
from covidviz.views.style import NO_FINDING, arch_label, class_colours

TOP_CLASS = "Top class of each model"     # the "Explain class" choice that keeps each model's own top class
SCALE_MODES = ("Per image (min–max)", "Fixed (comparable between images)")
MAP_PREFERENCE = ("umap", "tsne", "pca")  # the map the page places the image on, when stored
COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA")  # PIL modes of colour files
PLACE_COLOUR = "#D00000"                  # the star that marks the image on the maps

# The page's fixed sentences (its notes under tables and figures), defined with the rest of what it shows.
INTRO = ("See what each backbone predicts for one chest X-ray, where it looks, and how the image compares with the "
         "training images. Research and teaching tool: not a diagnosis.")
UPLOAD_HELP = ("Processed in memory and never stored. 8/16-bit PNG, JPEG, DICOM (MONOCHROME1/2, rescale, VOI LUT or "
               "window; uncompressed, RLE, JPEG baseline, 12-bit and lossless, JPEG-LS, JPEG 2000) are supported.")
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


def as_model_sees(image: np.ndarray, prep, inp=None) -> np.ndarray:
    """The part of a film (or of a mask at the film's size) the model sees: ``inp.seen`` when the film's
    ``ModelInput`` is given (``Diagnosis.input``: a lung crop's box), else the preprocessing's centre
    square when it crops, else all of it. Heat maps and the lung outline are drawn over this."""
    if inp is not None:
        return inp.seen(image)
    return center_square(image) if getattr(prep, "crop", "none") == "center" else np.asarray(image)


def overlay_image(gray: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA,
                  colormap: str = DEFAULT_COLORMAP, lungs: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 heat map over the film at display size (the film's own aspect: the model saw the
    whole image, squashed to a square, so the square map is stretched back). ``lungs``: a lung mask of
    the film (any size), outlined over the result (``cam.lungshare.draw_outline``)."""
    rgb = overlay(display_image(gray), heat, alpha, colormap)
    return rgb if lungs is None else lungshare.draw_outline(rgb, lungs)


def film_image(gray: np.ndarray, lungs: np.ndarray | None = None) -> np.ndarray:
    """The film at display size, with the outline of the lung mask ``lungs`` when given (RGB then)."""
    film = display_image(gray)
    return film if lungs is None else lungshare.draw_outline(film, lungs)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a gray or RGB uint8 array (fast zlib level: 5x quicker than the default, still lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def overlay_png(gray: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA,
                colormap: str = DEFAULT_COLORMAP, lungs: np.ndarray | None = None) -> bytes:
    """PNG bytes of ``overlay_image``."""
    return png_bytes(overlay_image(gray, heat, alpha, colormap, lungs))


# ---------------------------------------------------------------------- the lungs

LUNG_TOGGLE = "Lung outline"
LUNG_TOGGLE_HELP = ("Draw the lung fields found on the film (a small segmentation network, see the Glossary) on the "
                    "film and on every heat map.")
LUNG_PREFIX = "Evidence on the lungs: "
# where the weight outside the lungs lies (cam.lungshare.OUTSIDE_REGIONS), as a place and what sits there
LUNG_PLACES = {lungshare.EDGE: ("at the film's edge", "where markers, labels and collimation edges sit"),
               lungshare.BELOW: ("below the diaphragm", "the abdomen"),
               lungshare.ABOVE: ("above the lungs", "the neck and shoulders"),
               lungshare.BETWEEN: ("between the lungs", "the heart and mediastinum"),
               lungshare.BESIDE: ("beside the lungs", "the chest wall and arms")}


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


VIEW_NAMES = {LATERAL: "a lateral film", CT: "a CT slice", NOT_CHEST: "something other than a chest radiograph"}


def lungs_problem(lungs: LungFields | None, view: str | None = None) -> str | None:
    """Why no lung share is given for this film (None: its lung fields are usable); ``view``: the view
    check's kind (``Diagnosis.view``): lung fields are only drawn on a frontal film."""
    if view not in (None, FRONTAL):
        return f"the view check found {VIEW_NAMES.get(view, view)}, and lung fields are only drawn on frontal films"
    if lungs is None:
        return "the lung fields could not be looked for on this film (too small, or not segmented)"
    if not lungs.ok:
        why = "; ".join(lungs.issues) or "the segmentation is unsure"
        return f"the lung fields could not be found reliably ({why}; quality {lungs.quality:.2f})"
    return None


def lung_text(weight: LungWeight | None, lungs: LungFields | None, view: str | None = None) -> str:
    """The "evidence on the lungs" sentence of one heat map (markdown; the case report prints it plain):
    the share of the map's weight inside the lung fields beside the lungs' share of the film (chance);
    when most of it lies outside, that it does and where; when the fields could not be found, why."""
    problem = lungs_problem(lungs, view)
    if problem:
        return f"{LUNG_PREFIX}not measured: {problem}."
    if weight is None:
        return f"{LUNG_PREFIX}not measured: the lung fields lie outside the part of the film the model sees."
    if not weight.measured:
        return f"{LUNG_PREFIX}not measured: this map has no positive weight."
    text = (f"{LUNG_PREFIX}**{_pct(weight.share_inside)}** of this map's weight lies inside the lung fields "
            f"(the lungs are {_pct(weight.lung_area_share)} of the film).")
    if weight.mostly_outside and weight.where_outside:
        place, what = LUNG_PLACES[weight.where_outside]
        text += (f" **Most of it lies outside the lungs**, the largest part **{place}** ({what}: "
                 f"{_pct(weight.outside[weight.where_outside])} of the map); the score may rest on something other "
                 "than the lungs.")
    elif weight.below_chance:
        text += " That is less than a map spread evenly over the film would put there."
    return text


def lungs_caption(lungs: LungFields | None, lung_mask: np.ndarray | None, outlined: bool = True,
                  view: str | None = None) -> str:
    """Under the film: what the outline is (``outlined`` False: the outline is switched off), or why there is none."""
    problem = lungs_problem(lungs, view)
    if problem:
        return f"Film. No lung outline: {problem}."
    area = f"; they are {_pct(float(lung_mask.mean()))} of what the model sees" if lung_mask is not None else ""
    return (("Film with the lung fields found on it outlined" if outlined else "Film (lung outline off)")
            + f" (segmentation quality {lungs.quality:.2f}{area}).")


LUNG_NOTE = (f"The {glossary.link('Lung-weight share', 'lung-weight share')} says how much of each map lies on the lungs; "
             "a map spread evenly over the film would score the lungs' own share.")


def ood_message(diag: Diagnosis, labels=None, results: str = PAGE_RESULTS, shown_anyway: bool = False) -> str | None:
    """The image's ONE out-of-distribution verdict as plain sentences when it is OOD, else None: what it
    decided and what was measured for THIS image against which cut-off (``formats.ood_summary``: the
    check that fired, with its number; no fixed list of what the image "may be"). ``results`` names where
    the calls are (the page: below; the report: its section, by name); ``shown_anyway``: the user asked to
    see them, so they are said to be shown at request, not withheld. ``labels`` is not used (the
    backbones are named by ``style.arch_label``); kept for the callers."""
    if not diag.ood:
        return None
    said = formats.ood_summary(diag.verdict) if diag.verdict is not None else "This image is unlike the training X-rays."
    who = "your" if results == PAGE_RESULTS else "the user's"
    fate = f"were withheld and are shown only at {who} request, not as calls" if shown_anyway else "are withheld"
    return f"{said} So {results} {fate}."


def verdict_caption(diag: Diagnosis) -> str | None:
    """The verdict in one line when the image passed (in distribution, or no feature check possible)."""
    v = diag.verdict
    if v is None or v.is_ood:
        return None
    mark = ":material/check_circle:" if v.checked else ":material/help:"
    return f"{mark} **Out-of-distribution check:** {formats.ood_summary(v)} See {glossary.link('Out-of-distribution')}."


def verdict_short(diag: Diagnosis) -> str | None:
    """The passed verdict in a few words for the reading at the top, under the film (the full sentence
    is its tooltip, ``verdict_caption``); None when the image is OOD (the warning says it then)."""
    v = diag.verdict
    if v is None or v.is_ood:
        return None
    if not v.checked:
        return ":material/help: **No out-of-distribution check** beyond the input gate: read the calls with care."
    where = "" if v.percentile is None else f": {100 - v.percentile:.0f} % of validation films lie farther"
    return f":green[:material/check_circle:] **Looks like the training images** (check passed{where})."


WITHHELD = ("**Calls withheld:** the out-of-distribution check (above) found this image unlike the training images, "
            "so the models' probabilities, calls, heat maps, similar images, what-ifs and map placements are not "
            "shown. Turn on *Show the predictions anyway* to see them, greyed and marked as not calls.")
WITHHELD_SECTION = "Withheld: the image failed the out-of-distribution check (see the verdict at the top)."
SHOW_ANYWAY = "Show the predictions anyway"
SHOWN_LABEL = "shown at your request — not a call"   # stamped on every map and said beside every number shown anyway
SHOWN_ANYWAY = (":grey[Shown at your request although the image failed the out-of-distribution check: these numbers "
                "are not reliable for it and are not calls.]")
REPORT_WITHHELD = ("Calls withheld: the image failed the out-of-distribution check (section "
                   f'"{REPORT_SECTIONS[1]}"), so the probabilities, calls and heat maps are not reported.')
REPORT_SHOWN_ANYWAY = ("Shown at the user's request although the image failed the out-of-distribution check: "
                       "these numbers are not reliable for it and are not calls.")


def stamp(image: np.ndarray, text: str = SHOWN_LABEL) -> np.ndarray:
    """``image`` (gray or RGB uint8) with ``text`` on a grey band across its top, so a map shown at the
    user's request cannot be mistaken for a call wherever it is copied to (page, download, report)."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = np.asarray(image, np.uint8)
    rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
    img = Image.fromarray(np.ascontiguousarray(rgb))
    size = max(9, img.width // 22)
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", size)
    except OSError:
        font = ImageFont.load_default()
    band = int(size * 1.7)
    draw = ImageDraw.Draw(img, "RGBA")
    draw.rectangle((0, 0, img.width, band), fill=(70, 70, 70, 215))
    draw.text((max(2, (img.width - draw.textlength(text, font=font)) / 2), (band - size) / 2 - 1), text,
              fill=(255, 255, 255, 255), font=font)
    return np.asarray(img)


def tile_caption(method: str, explained: str, name_class: bool = True) -> str:
    """The short caption of a heat map in the reading at the top: "CAM for COVID-19", or just "CAM" when
    the map explains the class named under it (``name_class`` False). The full caption, with its true
    resolution, is ``heat_caption``'s in the heat-map section."""
    short = METHOD_NAMES[method].split(" (")[0]
    return f"{short} for {explained}" if name_class else short


# The page's sections under the reading, in the order a reader asks (each opened on demand).
SECTIONS = {"calls": "Calls, class by class: how reliable each is, the operating point and what it meant on test",
            "maps": "Heat maps: method, class, opacity and the evidence on the lungs",
            "whatif": "Test this explanation: hide parts of the film and score it again",
            "similar": "Similar training images",
            "place": "Where it falls on the latent maps and the SOM",
            "image": "The image: file, window / level and model input",
            "report": "Case report (PNG)"}


def file_warnings(decoded) -> list[str]:
    """The upload's own warnings that the verdict does not already say (burned-in text): the image
    section opens when there are any (a colour file is the verdict's to say)."""
    if decoded is None:
        return []
    return [w for w in (burned_in_warning(decoded.info),) if w]


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
    """"PNG · 1024×1024 px" of a decoded upload (``covidviz.data.imageio.DecodedImage``), then for a DICOM
    the acquisition facts it states (``dicom_facts``)."""
    return " · ".join([f"{decoded.kind} · {decoded.info.get('width')}×{decoded.info.get('height')} px",
                       *dicom_facts(decoded.info)])


def dicom_facts(info: dict) -> list[str]:
    """Modality, view position, body part and pixel spacing as a DICOM states them (``DecodedImage.info``,
    the keys the frontal-view check reads too), one short phrase each; none for other files. ``info``
    never holds patient identifiers (``DecodedImage.patient`` does), so neither does this."""
    out = [f"{label} {info[key]}" for key, label in (("Modality", "Modality"), ("ViewPosition", "View"),
                                                     ("BodyPartExamined", "Body part")) if info.get(key)]
    if spacing := info.get("pixel_spacing_mm"):
        row, col = spacing
        mm = f"{row:.3g} mm" if np.isclose(row, col) else f"{row:.3g} × {col:.3g} mm (row × column)"
        how = info.get("pixel_spacing_kind", "")
        if info.get("pixel_spacing_calibration"):
            how += f" ({info['pixel_spacing_calibration']})"
        size = ""
        if info.get("width") and info.get("height"):  # the film's size shows at a glance whether the spacing is plausible
            size = f", film {info['width'] * col / 10:.1f} × {info['height'] * row / 10:.1f} cm"
        out.append(f"{mm} per pixel, {how}, from {info.get('pixel_spacing_tag')}{size}")
    return out


def burned_in_warning(info: dict) -> str | None:
    """A warning when the DICOM says text is burned into its pixels (``BurnedInAnnotation`` present and not NO), or None."""
    value = str(info.get("BurnedInAnnotation", "")).strip().upper()[:16]
    if not value or value == "NO":
        return None
    return (f"Burned-in annotation (BurnedInAnnotation = {value}): text is written into the pixels. It may show the "
            "patient's name or ID on the film itself, which hiding the DICOM fields does not remove, and text markers "
            "can sway the models (check that the heat maps avoid them).")


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


def model_input_caption(pixels: np.ndarray, prep=None, inp=None) -> str:
    """What the model input shows: its size, what part of the film (``prep.describe_input``: the whole
    film or the experiment's lung input) and, when ``inp`` (the film's ``ModelInput``) fell back from an
    unreliable segmentation to the fixed lung boxes, that."""
    seen = "whole film" if prep is None else prep.describe_input()
    text = (f"Model input: {pixels.shape[1]}×{pixels.shape[0]} px, {seen}, resized, gray repeated to 3 channels, "
            "normalised")
    if inp is not None and inp.fell_back:
        quality = "" if inp.lungs is None else f" (segmentation quality {inp.lungs.quality:.2f})"
        text += (f". The lung fields could not be found reliably{quality}: the model saw the fixed boxes where "
                 "lungs usually lie")
    return text


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
    return (str(exp.path), ManifestInfo.from_json(exp.manifest).completed, image_id, window)


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
    target = b.top if cls is None else cls
    if layer == FINAL_LAYER and method in b.cams and int(b.cams[method].class_idx[0]) == target:
        return b.cams[method]
    key = (arch, method, target, layer)
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


def similar_caption(b: BackboneResult, verdict: OodVerdict | None = None) -> str:
    """How far this image is from the training images (nearest image, SOM), as details of the page's ONE
    out-of-distribution ``verdict``, whose rule (``formats.ood_yardstick``) is the yardstick they cite."""
    rule = (formats.ood_yardstick(verdict) if verdict is not None else None) or ""
    parts = []
    if b.nn_pct is not None:
        parts.append(f"this image's nearest training image is at d = {b.nn_distance:.1f}, farther than "
                     f"{b.nn_pct:.0f} % of training images are from their own nearest neighbour")
    if b.som_qe_pct is not None:
        parts.append(f"its SOM quantisation error ({b.som_qe:.1f}) is above {b.som_qe_pct:.0f} % of the "
                     "training images'")
    text = ("The training images closest in the model's feature space, nearest first (label · d = distance in "
            f"standardised {glossary.link('PCA-50 units')}).")
    if parts:
        text += f" {formats.ood_detail('; '.join(parts))}"
    return (text + f" The {glossary.link('Out-of-distribution', 'out-of-distribution')} verdict at the top of the "
            f"page decides.{' ' + rule if rule else ''} ({glossary.link('QE', 'QE')}: the SOM's quantisation error.)")


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
    """Where the image falls on the SOM, as the SOM page draws and names it ("SOM node 7, at column 2 of
    4 (left to right), row 4 of 5 (top to bottom)": ``formats.som_node_text``), or None."""
    if node is None or not grid:
        return None
    return f"SOM {formats.som_node_text(node, grid)}. The Latent space and SOM pages mark this image too."
