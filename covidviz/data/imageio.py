"""Decode X-ray files (PNG, JPEG, 16-bit PNG, DICOM) to one 8-bit grayscale array.

Every reader returns ``uint8`` of shape (H, W). High-bit-depth images are windowed: DICOM by its own
VOI LUT / window centre-width when present, otherwise (and for 16-bit PNG) by the 0.5–99.5 percentile
range, so a few hot pixels do not wash the film out. ``MONOCHROME1`` DICOMs are inverted so bone is
always bright. Anything unreadable raises ``ImageDecodeError`` with a message a user can act on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from covidviz.data.dicom import acquisition_facts
from covidviz.data.dicom import pixel_array as dicom_pixel_array

# Largest image we agree to decode (pixels). A chest film is ~3000x3000; 50 MP leaves room but
# stops decompression bombs (a tiny file that claims 30000x30000) before they eat the memory.
MAX_PIXELS = 50_000_000
MIN_SIDE = 16

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


class ImageDecodeError(ValueError):
    """The file is not an image we can read; the message says why."""


def _looks_like_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def window_to_uint8(arr: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map a high-bit-depth array to 0..255 between ``low`` and ``high`` (default: robust percentiles)."""
    arr = np.asarray(arr, dtype=np.float32)
    if low is None or high is None:
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            raise ImageDecodeError("image holds no finite pixel values")
        low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    out = (np.clip(arr, low, high) - low) / (high - low) * 255.0
    return np.nan_to_num(out).round().astype(np.uint8)


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"{what} is {width}x{height} pixels, over the {MAX_PIXELS // 1_000_000} MP limit "
            "(possibly a decompression bomb); downscale it first")
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(f"{what} is only {width}x{height} pixels; an X-ray needs at least {MIN_SIDE} px a side")


def _decode_pil(data: bytes, name: str) -> np.ndarray:
    return _decode_pil_full(data, name).gray


def _decode_pil_full(data: bytes, name: str) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            _check_size(img.width, img.height, name)
            if getattr(img, "n_frames", 1) > 1:
                raise ImageDecodeError(f"{name} is an animated/multi-frame image ({img.n_frames} frames); upload a single X-ray")
            img = ImageOps.exif_transpose(img)
            img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{name} is too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name} is not a readable image: its contents are not PNG, JPEG, DICOM or another "
                               "image format (a renamed or damaged file?)") from exc
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageDecodeError(f"{name} is not a readable image ({type(exc).__name__}: {exc})") from exc

    info = {"format": fmt or "image", "mode": img.mode, "width": img.width, "height": img.height}
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        info.update(GRAY_COLOUR_STATS)
        raw = np.asarray(img, dtype=np.float32)
        window = _percentile_window(raw)
        return DecodedImage(window_to_uint8(raw), raw, window, f"{info['format']} (high bit depth, {img.mode})", info)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels onto black (the film background), not white.
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    info.update(colour_stats(img))
    return DecodedImage(np.asarray(img.convert("L"), dtype=np.uint8), None, None,
                        f"{info['format']} ({info['mode']})", info)


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    return _decode_dicom_full(data, name).gray


def _decode_dicom_full(data: bytes, name: str) -> DecodedImage:
    try:
        import pydicom
        try:
            from pydicom.pixels import apply_modality_lut, apply_voi_lut
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    except ImportError as exc:  # pragma: no cover - pydicom is a hard requirement
        raise ImageDecodeError("reading DICOM needs pydicom (pip install pydicom)") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise ImageDecodeError(f"{name} is not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise ImageDecodeError(f"{name} is a DICOM file without pixel data (a report or structured document?)")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(cols, rows, name)
    try:
        arr = dicom_pixel_array(ds)
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageDecodeError(
            f"{name}: cannot decode DICOM pixel data (transfer syntax {ts}: {exc}). "
            "Convert it to uncompressed DICOM or PNG first.") from exc
    colour = dict(GRAY_COLOUR_STATS)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and str(ds.get("PhotometricInterpretation", "")).startswith(("RGB", "YBR")):
        if str(ds.get("PhotometricInterpretation", "")).startswith("RGB"):
            colour = colour_stats(arr[..., :3])
        arr = arr[..., :3].mean(axis=-1)
    elif arr.ndim != 2:
        raise ImageDecodeError(f"{name} holds {arr.shape} pixels (a multi-frame series?); upload a single frontal image")
    arr = apply_modality_lut(arr, ds).astype(np.float32)
    modality = arr
    low = high = None
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        try:
            arr = apply_voi_lut(arr, ds).astype(np.float32)
        except Exception:
            pass  # a broken VOI tag should not lose the image; percentiles below still window it
    inverted = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if inverted:
        arr = arr.max() - arr
    gray = window_to_uint8(arr, low, high)
    # The window/level control works on the modality values (inverted like the image for MONOCHROME1).
    raw = (modality.max() - modality) if inverted else modality
    window = _dicom_window(ds)
    if window is not None and inverted:
        window = (float(modality.max()) - window[1], float(modality.max()) - window[0])
    if window is None:
        window = _percentile_window(raw)
    info = {"format": "DICOM", "width": cols, "height": rows,
            "photometric": str(ds.get("PhotometricInterpretation", "")),
            "bits_stored": ds.get("BitsStored"), "transfer_syntax": str(getattr(getattr(ds, "file_meta", None),
                                                                                 "TransferSyntaxUID", "")),
            "window_from_file": _dicom_window(ds) is not None or "VOILUTSequence" in ds, **colour}
    for key in DICOM_INFO_FIELDS:
        if key in ds and str(ds.get(key, "")).strip():
            info[key] = str(ds.get(key))
    info.update(acquisition_facts(ds))  # pixel spacing in mm, and whether at the detector or calibrated
    patient = {key: str(ds.get(key)) for key in DICOM_PATIENT_FIELDS if key in ds and str(ds.get(key, "")).strip()}
    return DecodedImage(gray, raw.astype(np.float32, copy=False), window,
                        f"DICOM ({info['photometric'] or 'unknown photometric'})", info, patient)


def decode_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """Decode raw file bytes (upload or file) to a (H, W) uint8 grayscale array."""
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")
    if _looks_like_dicom(data[:132]) or Path(name).suffix.lower() in DICOM_SUFFIXES:
        return _decode_dicom(data, name)
    return _decode_pil(data, name)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file from disk to (H, W) uint8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_bytes(data, str(path))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        return int(ds.Columns), int(ds.Rows)
    with Image.open(path) as img:
        return img.size


# ---------------------------------------------------------------- colour statistics (for the input gate)

# Chroma (max - min of R, G, B, in 0..1) above which a pixel counts as coloured: ~38 grey levels, far
# above the tint of a JPEG-compressed or colour-managed grayscale film, well below any real colour.
COLOUR_CHROMA = 0.15
COLOUR_STATS_SIDE = 256  # statistics on a copy at most this big: a few ms for any upload
GRAY_COLOUR_STATS = {"colour_saturation": 0.0, "colour_fraction": 0.0}


def colour_stats(img) -> dict[str, float]:
    """How colourful an image is, before it is converted to gray: ``colour_saturation`` (the mean
    chroma, 0..1) and ``colour_fraction`` (the share of pixels whose chroma exceeds ``COLOUR_CHROMA``).
    ``img``: a PIL image in any mode or an (H, W, 3) array; gray modes give zeros without any work.
    Chroma rather than HSV saturation: a near-black pixel with a little noise has a huge saturation
    but a tiny chroma."""
    if isinstance(img, Image.Image):
        if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
            return dict(GRAY_COLOUR_STATS)
        small = img.copy()
        small.thumbnail((COLOUR_STATS_SIDE, COLOUR_STATS_SIDE))
        rgb = np.asarray(small.convert("RGB"), dtype=np.float32)
    else:
        rgb = np.asarray(img)[..., :3].astype(np.float32)
        step = max(1, max(rgb.shape[:2]) // COLOUR_STATS_SIDE)
        rgb = rgb[::step, ::step]
        top = float(rgb.max()) if rgb.size else 0.0
        if top > 255.0:  # high-bit-depth colour DICOM
            rgb = rgb * (255.0 / top)
    if rgb.size == 0:
        return dict(GRAY_COLOUR_STATS)
    chroma = (rgb.max(axis=-1) - rgb.min(axis=-1)) / 255.0
    return {"colour_saturation": round(float(chroma.mean()), 4),
            "colour_fraction": round(float((chroma > COLOUR_CHROMA).mean()), 4)}


# ---------------------------------------------------------------- full decode (for the diagnose page)

# Shown on request only: identifying DICOM fields are never displayed by default.
DICOM_PATIENT_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
                        "OtherPatientIDs", "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
                        "StudyDate", "StudyTime", "StudyID")
# Non-identifying acquisition facts copied into ``info`` (BurnedInAnnotation: text burned into the pixels,
# which may itself identify the patient; Diagnose warns unless it is NO).
DICOM_INFO_FIELDS = ("Modality", "ViewPosition", "BodyPartExamined", "Manufacturer", "BurnedInAnnotation")


class DecodedImage:
    """One decoded upload: what the model sees by default plus what a window/level control needs.

    ``gray``: uint8 (H, W), exactly ``decode_bytes``' result. ``raw``: float32 (H, W) high-bit-depth
    values (DICOM after the modality LUT, MONOCHROME1 inverted like ``gray``; 16-bit PNG as stored),
    or None for 8-bit images. ``window``: the default (low, high) on ``raw`` (the file's window
    centre/width when present, else the 0.5-99.5 percentiles), or None. ``info``: non-identifying
    facts (format, size, photometric...), including ``colour_saturation`` and ``colour_fraction``
    (``colour_stats``: measured before the conversion to gray, 0 for gray files), which the input
    gate (``covidviz.ood.gate``) reads. ``patient``: identifying DICOM fields (empty for others).
    """

    __slots__ = ("gray", "raw", "window", "kind", "info", "patient")

    def __init__(self, gray, raw, window, kind, info, patient=None):
        self.gray, self.raw, self.window, self.kind = gray, raw, window, kind
        self.info, self.patient = dict(info), dict(patient or {})

    @property
    def high_bit_depth(self) -> bool:
        return self.raw is not None

    def windowed(self, low: float | None = None, high: float | None = None) -> np.ndarray:
        """uint8 image with another window on ``raw`` (``gray`` itself for 8-bit images or no window)."""
        if self.raw is None or low is None or high is None:
            return self.gray
        return window_to_uint8(self.raw, low, high)


def _percentile_window(raw: np.ndarray) -> tuple[float, float]:
    finite = raw[np.isfinite(raw)]
    if finite.size == 0:
        raise ImageDecodeError("image holds no finite pixel values")
    low, high = np.percentile(finite, [0.5, 99.5])
    return float(low), float(max(high, low + 1.0))


def _dicom_window(ds) -> tuple[float, float] | None:
    """(low, high) from the first WindowCenter/WindowWidth pair, or None (absent, broken or width <= 0)."""
    try:
        c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
        if c is None or w is None:
            return None
        c = float(c[0] if hasattr(c, "__len__") and not isinstance(c, str) else c)
        w = float(w[0] if hasattr(w, "__len__") and not isinstance(w, str) else w)
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(c) and np.isfinite(w)) or w <= 0:
        return None
    return c - w / 2.0, c + w / 2.0


def decode_upload(data: bytes, name: str = "image") -> DecodedImage:
    """Like ``decode_bytes`` (same checks, same ``gray``) plus the high-bit-depth data and metadata."""
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")
    try:
        if _looks_like_dicom(data[:132]) or Path(name).suffix.lower() in DICOM_SUFFIXES:
            return _decode_dicom_full(data, name)
        return _decode_pil_full(data, name)
    except ImageDecodeError as exc:
        if name in str(exc):
            raise
        raise ImageDecodeError(f"{name}: {exc}") from exc
