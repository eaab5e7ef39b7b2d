"""Batch prediction: many X-rays through every backbone of an experiment, many images per forward pass.

Streamlit-free; used by ``python -m covidviz.predict`` (and ``train.py predict``), the app's batch view
and ``bench/predict.py``.

Inputs (``collect_inputs``): files, folders (recursive: image and DICOM suffixes, plus suffix-less files
that start like a DICOM) and ZIP archives, read in memory and never extracted. Archives are checked
before anything is decompressed, against ``MAX_ZIP_MEMBERS`` files and ``MAX_ZIP_BYTES`` declared
uncompressed bytes in all (``MAX_MEMBER_BYTES`` per file), and every member is read with a cap at its
declared size, so a ZIP bomb costs nothing. Anything unusable becomes a ``BadFile`` with a message a
user can act on (``ImageDecodeError``'s for images); it never stops the batch.

Scoring (``BatchPredictor``): decoded films are resized by the experiment's preprocessing contract
(``Predictor.model_input``) and stacked ``batch_size`` at a time; per backbone ONE forward pass per
batch, under ONE ``cam.model_lock(model)`` hold, gives the logits, classic CAM for each image's top
class (``cam.compute_cams``) and the pooled features (captured from that same pass by a thread-filtered
hook on ``model.pool``, as ``Predictor`` does). Per image and backbone: temperature-calibrated
probabilities, the top class, and the calls at the validation-chosen operating point (Youden's J by
default; the raw probability against the threshold, as ``Predictor`` does).

Out-of-distribution: ``ood_fn(gray, {arch: features}, info) -> (ood, reason)`` is called once per image
(``ood`` None: not checked). The default, ``verdict_ood``, is the Diagnose page's one verdict
(``Predictor.verdict``: the input gate on the decoded film and its colour statistics, and the
experiment's fitted feature-space detector over every backbone), so a file gets the same verdict in a
batch as on its own.

``contact_sheet`` draws a selection of scored rows as a PNG: per image the film and each backbone's
overlay, with the name and each backbone's top class.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from covidviz import runs
from covidviz.cam import DEFAULT_COLORMAP, OVERLAY_ALPHA, overlay, resize_map
from covidviz.data.imageio import DICOM_SUFFIXES, ImageDecodeError, decode_upload
from covidviz.inference import OOD_PERCENTILE, forward_with_features
from covidviz.models import probabilities
from covidviz.runs.records import POINTS
from covidviz.stats.calibration import apply_temperature

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- limits

MAX_ZIP_MEMBERS = 5_000                 # image files in one archive
MAX_ZIP_BYTES = 4 * 1024**3             # their declared uncompressed size in all (4 GiB)
MAX_MEMBER_BYTES = 256 * 1024**2        # one file inside an archive (256 MiB: a large DICOM is ~50 MiB)
DEFAULT_BATCH_SIZE = 16                 # images per forward pass (bench/predict.py)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}) | frozenset(DICOM_SUFFIXES)
ZIP_SUFFIXES = frozenset({".zip"})
DEFAULT_POINT = "youden"

OodFn = Callable[[np.ndarray, dict, dict], tuple]


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Source:
    """One file to score: its display name and how to get its bytes (read lazily, once)."""

    name: str
    read: Callable[[], bytes] = field(repr=False, compare=False)


@dataclass(frozen=True)
class BadFile:
    """An input that could not be scored and why (a message for the user)."""

    name: str
    message: str


@dataclass
class Inputs:
    """What ``collect_inputs`` found: ``sources`` to score, ``bad`` inputs (missing paths, refused
    archives, empty folders), how many non-image files were ``ignored`` in folders and archives."""

    sources: list[Source] = field(default_factory=list)
    bad: list[BadFile] = field(default_factory=list)
    ignored: int = 0
    _archives: list = field(default_factory=list, repr=False)

    def close(self) -> None:
        for zf in self._archives:
            zf.close()
        self._archives.clear()

    def __enter__(self) -> Inputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.sources)


def _is_junk(parts: Sequence[str]) -> bool:
    """Hidden files and macOS archive litter (``__MACOSX/``, ``._name``, ``.DS_Store``)."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _looks_like_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _file_source(path: Path, name: str) -> Source:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return Source(name, read)


def _folder(path: Path, inputs: Inputs) -> None:
    found = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not _is_junk([d]))
        for fname in sorted(files):
            p = Path(root) / fname
            if _is_junk([fname]):
                continue
            suffix = p.suffix.lower()
            if suffix in IMAGE_SUFFIXES or (suffix == "" and _looks_like_dicom_file(p)):
                inputs.sources.append(_file_source(p, str(p)))
                found += 1
            else:
                inputs.ignored += 1
    if not found:
        inputs.bad.append(BadFile(str(path), f"{path} holds no image files (PNG, JPEG, TIFF, BMP, WebP or DICOM)"))


def open_zip(data: bytes | str | Path, name: str, inputs: Inputs | None = None, *, max_members: int | None = None,
             max_bytes: int | None = None, max_member_bytes: int | None = None) -> Inputs:
    """Add a ZIP archive's image files (bytes, e.g. an upload, or a path) to ``inputs`` as ``Source``s
    named ``<name>:<member>``; nothing is decompressed here (but the first 132 bytes of suffix-less
    members, to recognise DICOMs). The whole archive becomes one ``BadFile`` when it is not a ZIP, or
    holds more than ``max_members`` image files or more than ``max_bytes`` declared uncompressed bytes;
    a member over ``max_member_bytes``, encrypted, or a nested archive is its own ``BadFile``. Limits
    default to ``MAX_ZIP_MEMBERS``, ``MAX_ZIP_BYTES`` and ``MAX_MEMBER_BYTES``."""
    max_members = MAX_ZIP_MEMBERS if max_members is None else int(max_members)
    max_bytes = MAX_ZIP_BYTES if max_bytes is None else int(max_bytes)
    max_member_bytes = MAX_MEMBER_BYTES if max_member_bytes is None else int(max_member_bytes)
    inputs = inputs if inputs is not None else Inputs()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        inputs.bad.append(BadFile(name, f"{name} is not a readable ZIP archive ({exc})"))
        return inputs
    members, bad, ignored = [], [], 0
    for info in zf.infolist():
        if info.is_dir():
            continue
        path = PurePosixPath(info.filename)
        label = f"{name}:{info.filename}"
        if _is_junk(path.parts):
            continue
        if path.suffix.lower() in ZIP_SUFFIXES:
            bad.append(BadFile(label, f"{label}: nested archives are not opened; add its images to the outer ZIP"))
        elif path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == "":
            members.append(info)
        else:
            ignored += 1
    # The limits are checked on the central directory alone, before a single byte is decompressed.
    total = sum(i.file_size for i in members)
    if len(members) > max_members or total > max_bytes:
        zf.close()
        inputs.bad.append(BadFile(name, (
            f"{name} holds {len(members)} image files, {total / 1024**2:.0f} MiB uncompressed: over the limit of "
            f"{max_members} files and {max_bytes / 1024**2:.0f} MiB per archive; split it into smaller archives")))
        return inputs
    dicom_like = [i for i in members if PurePosixPath(i.filename).suffix or _member_is_dicom(zf, i)]
    ignored += len(members) - len(dicom_like)
    members = dicom_like
    inputs.ignored += ignored
    inputs.bad.extend(bad)
    inputs._archives.append(zf)
    lock = threading.Lock()  # one ZipFile, one file position: reads are serialised
    for info in members:
        label = f"{name}:{info.filename}"
        if info.flag_bits & 0x1:
            inputs.bad.append(BadFile(label, f"{label} is encrypted; archives with passwords are not supported"))
        elif info.file_size > max_member_bytes:
            inputs.bad.append(BadFile(label, f"{label} is {info.file_size / 1024**2:.0f} MiB uncompressed, over the "
                                             f"{max_member_bytes / 1024**2:.0f} MiB limit per file"))
        else:
            inputs.sources.append(Source(label, _member_reader(zf, info, label, lock)))
    if not members and not bad:
        inputs.bad.append(BadFile(name, f"{name} holds no image files (PNG, JPEG, TIFF, BMP, WebP or DICOM)"))
    return inputs


def _member_is_dicom(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Does a suffix-less member start like a DICOM file (132 bytes decompressed, no more)?"""
    try:
        with zf.open(info) as fh:
            head = fh.read(132)
    except Exception:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _member_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, lock: threading.Lock) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with lock, zf.open(info) as fh:
                data = fh.read(info.file_size + 1)  # never more than declared (+1 byte to catch a lie)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
            raise ImageDecodeError(f"{label}: cannot extract it from the archive ({type(exc).__name__}: {exc})") from exc
        if len(data) > info.file_size:
            raise ImageDecodeError(f"{label}: decompresses to more than its declared {info.file_size} bytes "
                                   "(a damaged or malicious archive)")
        return data
    return read


def collect_inputs(paths: Iterable[str | Path], **zip_limits) -> Inputs:
    """Files, folders (recursive) and ZIP archives -> ``Inputs`` (close it, or use it as a context
    manager, when done: archives stay open until then). A file is always tried whatever its suffix
    (so a misnamed file gets a decoding message); a ``.zip`` file or one that is a ZIP is opened as an
    archive; ``zip_limits``: ``open_zip``'s keyword limits."""
    inputs = Inputs()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            _folder(path, inputs)
        elif path.is_file():
            if path.suffix.lower() in ZIP_SUFFIXES or (path.suffix.lower() not in IMAGE_SUFFIXES and zipfile.is_zipfile(path)):
                open_zip(path, str(path), inputs, **zip_limits)
            else:
                inputs.sources.append(_file_source(path, str(path)))
        else:
            inputs.bad.append(BadFile(str(path), f"{path}: no such file or folder"))
    if inputs.ignored:
        log.debug("ignored %d files that are not images (by their suffix)", inputs.ignored)
    return inputs


def sources_from_bytes(files: Iterable[tuple[str, bytes]], **zip_limits) -> Inputs:
    """In-memory uploads ``(name, bytes)`` -> ``Inputs``; ZIP uploads are opened as archives."""
    inputs = Inputs()
    for name, data in files:
        if PurePosixPath(name).suffix.lower() in ZIP_SUFFIXES or data[:4] == b"PK\x03\x04":
            open_zip(bytes(data), name, inputs, **zip_limits)
        else:
            inputs.sources.append(Source(name, (lambda d=bytes(data): d)))
    return inputs


# ---------------------------------------------------------------- out-of-distribution (the default rule)

def verdict_ood(predictor) -> OodFn:
    """The Diagnose page's verdict as an ``ood_fn``: ``Predictor.verdict`` from the film, its decoder
    statistics and every backbone's features (``(None, why)`` when nothing could be checked)."""
    from covidviz.inference import BackboneResult

    if not predictor.ood_detector.available:  # analysed before covidviz.ood: the per-backbone distance rule
        return nearest_neighbour_ood(predictor)

    def ood(gray: np.ndarray, features: dict, info: dict | None = None) -> tuple[bool | None, str]:
        results = {a: BackboneResult(a, np.zeros(0), np.zeros(0), np.zeros(0), np.asarray(f), 0, [], {})
                   for a, f in features.items()}
        v = predictor.verdict(gray, results, info)
        if not v.checked and not v.is_ood:
            return None, " ".join(v.reasons)
        return v.is_ood, " ".join(v.reasons) if v.is_ood else ""

    return ood


def nearest_neighbour_ood(predictor, percentile: float = OOD_PERCENTILE) -> OodFn:
    """``Predictor``'s per-backbone rule as an ``ood_fn``: an image is out of distribution when, for any
    backbone, its distance to the nearest training image (standardised PCA-50 feature space) is larger
    than for ``percentile`` % of the training images. ``(None, why)`` when the experiment stores no
    reference (not analysed)."""
    from covidviz.stats.projection import MapPlacer

    exp = predictor.exp
    refs = {}
    for arch in predictor.archs:
        if not exp.has_artifact(runs.PROJECTIONS, arch):
            continue
        arrays = exp.load_arrays(runs.PROJECTIONS, arch)
        if "train_nn_dist_sorted" not in arrays:
            continue
        placer = MapPlacer.from_arrays({k[len("placer_"):]: v for k, v in arrays.items() if k.startswith("placer_")})
        refs[arch] = (placer, np.sort(np.asarray(arrays["train_nn_dist_sorted"], np.float64)))

    def ood(gray: np.ndarray, features: dict, info: dict | None = None) -> tuple[bool | None, str]:
        if not refs:
            return None, "not checked: the experiment has no feature-space reference (run train.py analyze)"
        reasons = []
        for arch, (placer, ref) in refs.items():
            if arch not in features or not len(ref):
                continue
            d = float(placer.place(np.asarray(features[arch], np.float32)[None]).distances[0, 0])
            pct = float(100.0 * np.searchsorted(ref, d, side="right") / len(ref))
            if pct > percentile:
                reasons.append(f"{arch}: nearest training image at {d:.2f}, farther than for {pct:.1f} % of the "
                               "training images")
        return bool(reasons), "; ".join(reasons)

    return ood


# ---------------------------------------------------------------- scoring

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


@dataclass
class ScoredImage:
    name: str
    pixels: np.ndarray                    # (S, S) uint8: what the models saw
    backbones: dict[str, BackboneScore]
    ood: bool | None = None
    ood_reason: str = ""
    info: dict = field(default_factory=dict)  # DecodedImage.info (format, size...)


@dataclass
class BatchResult:
    rows: list[ScoredImage]
    bad: list[BadFile]


class BatchPredictor:
    """Scores decoded images ``batch_size`` at a time through every backbone of a ``Predictor``.

    ``ood_fn``: ``(gray, {arch: features}, info) -> (bool | None, reason)``; default ``verdict_ood``.
    ``point``: the operating point of the calls (``runs.records.POINTS``: ``youden``, ``high_sensitivity``,
    ``high_specificity``), chosen on validation; a call is the raw probability >= its threshold.
    ``keep_features``: keep each image's pooled features on its row (memory: 4 KiB per 1024-d backbone).
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
        self.ood_fn = ood_fn if ood_fn is not None else verdict_ood(predictor)
        self._temps = {a: predictor.temperature(a) for a in self.archs}
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

    def score(self, images: Sequence[tuple[str, np.ndarray]], infos: Sequence[dict] | None = None) -> list[ScoredImage]:
        """Decoded (H, W) uint8 films ``(name, gray)`` -> one ``ScoredImage`` each, in order; one forward
        pass per backbone for all of them (call it with at most ``batch_size`` images)."""
        if not len(images):
            return []
        pixels = np.stack([self.predictor.model_input(g) for _, g in images])
        per_arch = {}
        for arch in self.archs:
            logits, feats, cam = self._forward(arch, pixels)
            raw = probabilities(logits, self.task)
            temp = self._temps[arch]
            probs = np.asarray(apply_temperature(raw, temp, self.task) if temp is not None else raw, np.float64)
            per_arch[arch] = (raw, probs, feats, cam)
        rows = []
        for i, (name, gray) in enumerate(images):
            backbones = {}
            for arch, (raw, probs, feats, cam) in per_arch.items():
                thr = self._thresholds[arch]
                backbones[arch] = BackboneScore(
                    probs=probs[i].copy(), raw_probs=raw[i].copy(), top=int(np.argmax(probs[i])),
                    calls=[None if t is None else bool(raw[i, j] >= t) for j, t in enumerate(thr)], thresholds=list(thr),
                    cam_class=int(cam.class_idx[i]), cam=cam.low_res[i].copy(),
                    features=feats[i].copy() if self.keep_features else None)
            row = ScoredImage(name, pixels[i].copy(), backbones, info=dict(infos[i]) if infos else {})
            if self.ood_fn is not None:
                try:
                    verdict, reason = self.ood_fn(gray, {a: per_arch[a][2][i] for a in per_arch},
                                                  dict(infos[i]) if infos else {})
                    row.ood, row.ood_reason = (None if verdict is None else bool(verdict)), str(reason or "")
                except Exception as exc:  # a broken check must not lose the scores
                    log.warning("OOD check failed on %s: %s", name, exc)
                    row.ood, row.ood_reason = None, f"OOD check failed ({type(exc).__name__}: {exc})"
            rows.append(row)
        return rows

    # ---------------------------------------------------------------- many

    def iter_scored(self, sources: Iterable[Source], progress: Callable[[int], None] | None = None
                    ) -> Iterator[ScoredImage | BadFile]:
        """Read, decode and score ``sources`` batch by batch: yields each ``BadFile`` as it is found and
        the ``ScoredImage``s of a batch once it has run. ``progress(n)`` is called with the number of
        sources done (scored or bad) after each."""
        pending: list[tuple[str, np.ndarray]] = []
        infos: list[dict] = []

        def flush():
            done = self.score(pending, infos)
            n = len(pending)
            pending.clear()
            infos.clear()
            if progress:
                progress(n)
            return done

        for src in sources:
            try:
                decoded = decode_upload(src.read(), src.name)
                pending.append((src.name, decoded.gray))
                infos.append({k: decoded.info.get(k) for k in ("format", "width", "height") if k in decoded.info})
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

    # ---------------------------------------------------------------- tables

    def columns(self) -> list[str]:
        """The table's columns: ``file``, then per backbone ``<arch>::top``, ``<arch>::p::<class>`` (calibrated)
        and ``<arch>::call::<class>`` (at ``point``; empty without a threshold), then ``ood``, ``ood_reason``."""
        cols = ["file"]
        for arch in self.archs:
            cols += [f"{arch}::top", *(f"{arch}::p::{c}" for c in self.names), *(f"{arch}::call::{c}" for c in self.names)]
        return cols + ["ood", "ood_reason"]

    def record(self, row: ScoredImage) -> dict:
        """One ``ScoredImage`` as a flat dict of ``columns()`` (plain Python values; None for empty)."""
        out = {"file": row.name}
        for arch in self.archs:
            b = row.backbones[arch]
            out[f"{arch}::top"] = self.names[b.top]
            out.update({f"{arch}::p::{c}": round(float(b.probs[j]), 6) for j, c in enumerate(self.names)})
            out.update({f"{arch}::call::{c}": b.calls[j] for j, c in enumerate(self.names)})
        out["ood"], out["ood_reason"] = row.ood, row.ood_reason
        return out

    def table(self, rows: Iterable[ScoredImage]):
        """A pandas DataFrame with one row per scored image (``columns()``)."""
        import pandas as pd

        return pd.DataFrame([self.record(r) for r in rows], columns=self.columns())


def bad_table(bad: Iterable[BadFile]):
    """A pandas DataFrame ``file, message`` of the inputs that could not be scored."""
    import pandas as pd

    return pd.DataFrame([{"file": b.name, "message": b.message} for b in bad], columns=["file", "message"])


# ---------------------------------------------------------------- contact sheet

def cam_heat(score: BackboneScore, size: int) -> np.ndarray:
    """A [0, 1] heat map at ``size`` px from a row's stored CAM: rectified, upsampled, min-max
    normalised per image (what ``CamResult.normalised`` holds for the same pass)."""
    heat = resize_map(np.maximum(score.cam, 0.0), (size, size))
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text  # keep the end of a long path: the file name


def contact_sheet(rows: Sequence[ScoredImage], names: Sequence[str], archs: Sequence[str] | None = None,
                  columns: int = 3, tile: int = 160, colormap: str = DEFAULT_COLORMAP, alpha: float = OVERLAY_ALPHA):
    """A PIL RGB image: one tile per row (the film, then each backbone's CAM overlay for its top class),
    captioned with the file name and each backbone's top class and probability ("OOD" when flagged)."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("no images to draw")
    archs = list(archs or rows[0].backbones)
    font = ImageFont.load_default(size=12)
    line = 15
    caption = line * (1 + len(archs)) + 4
    tw, th = tile * (1 + len(archs)), tile + caption
    columns = max(1, min(int(columns), len(rows)))
    n_rows = -(-len(rows) // columns)
    pad = 6
    sheet = Image.new("RGB", (columns * (tw + pad) + pad, n_rows * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(rows):
        x0, y0 = pad + (k % columns) * (tw + pad), pad + (k // columns) * (th + pad)
        film = np.asarray(Image.fromarray(row.pixels).resize((tile, tile), Image.BILINEAR))
        sheet.paste(Image.fromarray(film).convert("RGB"), (x0, y0))
        for j, arch in enumerate(archs):
            heat = cam_heat(row.backbones[arch], tile)
            sheet.paste(Image.fromarray(overlay(film, heat, alpha, colormap)), (x0 + (j + 1) * tile, y0))
        y = y0 + tile + 2
        title = row.name + ("  [OOD]" if row.ood else "")
        draw.text((x0 + 2, y), _fit_text(draw, title, font, tw - 4), fill=(200, 0, 0) if row.ood else (0, 0, 0), font=font)
        for j, arch in enumerate(archs):
            b = row.backbones[arch]
            call = b.calls[b.top]
            mark = "" if call is None else (" (call +)" if call else " (call -)")
            text = f"{arch}: {names[b.top]} {b.probs[b.top]:.2f}{mark}"
            draw.text((x0 + 2, y + line * (j + 1)), _fit_text(draw, text, font, tw - 4), fill=(40, 40, 40), font=font)
    return sheet


def contact_sheet_png(rows: Sequence[ScoredImage], names: Sequence[str], **kwargs) -> bytes:
    """``contact_sheet`` encoded as PNG bytes (for a download button or a file)."""
    buf = io.BytesIO()
    contact_sheet(rows, names, **kwargs).save(buf, format="PNG")
    return buf.getvalue()
