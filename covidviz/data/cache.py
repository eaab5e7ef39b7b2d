"""Preprocessing cache: decode and resize every image once, keep uint8 arrays memory-mapped.

Decoding a full-size PNG costs far more than a training step on a small image, so the first pass
writes ``pixels-<size>-<key>.npy`` (N, S, S; ``pixels-<size>-center-<key>.npy`` for the
``Preprocessing.crop="center"`` contract, e.g. torchxrayvision weights, which cuts the largest centred
square before the resize; ``pixels-<size>-lung-crop-<key>.npy`` / ``...-lung-mask-...`` for the lung
inputs) and ``thumbs-<key>.npy`` (N, 64, 64; always the whole film) under the cache folder. The model
pixels come from ``make_input`` (``covidviz.anatomy.inputs.cache_input``: the one function every caller
turns films into model pixels with; this layer cannot segment): the lung inputs segment every film once,
here, and record each film's segmentation quality and whether it fell back to the fixed lung boxes in
``lungs-<size>-<input>-<key>.npz``. Later epochs, later runs on the same files and the analysis read
them back with ``np.load(mmap_mode='r')`` at memory speed: a cached film is never decoded or segmented
again. The key hashes the ordered paths with their sizes and
modification times, so an edited or replaced file invalidates the cache. Files are written to a temp
name and renamed, so a killed run never leaves a truncated cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.preprocess import CROPS, INPUTS, THUMB_SIZE, Preprocessing, resize_square

log = logging.getLogger(__name__)


@dataclass
class PixelCache:
    pixels: np.ndarray          # uint8 (N, S, S), memory-mapped
    thumbs: np.ndarray          # uint8 (N, 64, 64), memory-mapped
    errors: list[tuple[int, str, str]]  # (row, path, reason) of images that failed to decode
    hit: bool                   # True when read from an earlier run's cache
    lungs: LungRecord | None = None  # the lung inputs' per-film segmentation record (None: input "full")


@dataclass
class LungRecord:
    """Per film of a lung-input cache: the segmentation's quality (NaN: not segmented, e.g. unreadable
    or under 32 px) and whether the input fell back to the fixed lung boxes."""

    quality: np.ndarray         # float32 (N,)
    fell_back: np.ndarray       # bool (N,)

    def summary(self, rows=None, paths=None, examples: int = 20) -> dict:
        """{"n", "fell_back", "examples"} over ``rows`` (default all): for the manifest."""
        rows = np.arange(len(self.fell_back)) if rows is None else np.asarray(rows, int)
        fb = rows[np.asarray(self.fell_back)[rows]]
        return {"n": int(len(rows)), "fell_back": int(len(fb)),
                "examples": [str(paths[r]) for r in fb[:examples]] if paths is not None else []}


def default_cache_dir() -> Path:
    return Path(os.environ.get("COVIDVIZ_CACHE", Path.home() / ".cache" / "covidviz"))


def _key(paths: list[str]) -> str:
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:16]


def _decode_one(args: tuple) -> tuple[np.ndarray | None, np.ndarray | None, str, float, bool]:
    path, size, crop, input_, make_input = args
    try:
        gray = read_image(path)
    except ImageDecodeError as exc:
        return None, None, str(exc), float("nan"), False
    # Model pixels as the app makes them from an upload (make_input: anatomy.inputs.cache_input; without
    # it, the whole-film contract's own resize); the thumbnail shows the whole film.
    prep = Preprocessing(size, crop=crop, input=input_)
    pixels, quality, fell_back = make_input(prep, gray) if make_input else (prep.to_model_pixels(gray), float("nan"), False)
    return pixels, resize_square(gray, THUMB_SIZE), "", quality, fell_back


def _one_thread() -> None:
    """Pool workers segment with torch: one intra-op thread each (as a DataLoader worker does), so a
    forked worker never waits on the parent's thread pool and the workers do not oversubscribe."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


def build_cache(paths: list[str], image_size: int, cache_dir: str | Path | None = None,
                workers: int | None = None, progress: bool = True, crop: str = "none", input: str = "full",
                make_input: Callable | None = None) -> PixelCache:
    """Decode ``paths`` once at ``image_size`` (and thumbnails), or reuse an earlier cache. ``crop``:
    the experiment's ``Preprocessing.crop`` (``"center"``: the largest centred square, then the resize).
    ``input``: its ``Preprocessing.input``. ``make_input(prep, gray) -> (pixels, quality, fell_back)``
    (``covidviz.anatomy.inputs.cache_input``, a module-level function so pool workers can run it) makes
    each film's model pixels, once; the lung inputs need it."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose from {', '.join(CROPS)}")
    if input not in INPUTS:
        raise ValueError(f"unknown input {input!r}; choose from {', '.join(INPUTS)}")
    lung_input = input != "full"
    if lung_input and make_input is None:
        raise ValueError(f"input {input!r} needs make_input (covidviz.anatomy.inputs.cache_input)")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _key(paths)
    # "none" / "full" keep the names earlier caches were written under
    shape = ("" if crop == "none" else f"{crop}-") + (f"{input}-" if lung_input else "")
    pix_path = cache_dir / f"pixels-{image_size}-{shape}{key}.npy"
    thumb_path = cache_dir / f"thumbs-{key}.npy"
    err_path = cache_dir / f"errors-{key}.tsv"
    lungs_path = cache_dir / f"lungs-{image_size}-{shape}{key}.npz"
    if pix_path.exists() and thumb_path.exists() and err_path.exists() and (not lung_input or lungs_path.exists()):
        errors = []
        for line in err_path.read_text().splitlines():
            row, path, reason = line.split("\t", 2)
            errors.append((int(row), path, reason))
        lungs = None
        if lung_input:
            with np.load(lungs_path) as z:
                lungs = LungRecord(z["quality"], z["fell_back"])
        return PixelCache(np.load(pix_path, mmap_mode="r"), np.load(thumb_path, mmap_mode="r"), errors, True, lungs)

    n = len(paths)
    pixels = np.zeros((n, image_size, image_size), np.uint8)
    thumbs = np.zeros((n, THUMB_SIZE, THUMB_SIZE), np.uint8)
    record = LungRecord(np.full(n, np.nan, np.float32), np.zeros(n, bool))
    errors = []
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    jobs = [(p, image_size, crop, input, make_input) for p in paths]
    what = "decode+segment+resize" if lung_input else "decode+resize"
    bar = tqdm(total=n, desc=f"{what} to {image_size}px", unit="img", disable=not progress, leave=False)
    if workers > 1 and n > 64:
        with ProcessPoolExecutor(workers, initializer=_one_thread if lung_input else None) as pool:
            results = pool.map(_decode_one, jobs, chunksize=32)
            for i, res in enumerate(results):
                _store(i, *res, pixels, thumbs, record, errors, paths)
                bar.update()
    else:
        for i, job in enumerate(jobs):
            _store(i, *_decode_one(job), pixels, thumbs, record, errors, paths)
            bar.update()
    bar.close()
    _save_atomic(pix_path, pixels)
    _save_atomic(thumb_path, thumbs)
    if lung_input:
        tmp = lungs_path.with_name(f".{lungs_path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, quality=record.quality, fell_back=record.fell_back)
        os.replace(tmp, lungs_path)
    tmp = err_path.with_name(f".{err_path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{r}\t{p}\t{m}\n" for r, p, m in errors))
    os.replace(tmp, err_path)
    return PixelCache(np.load(pix_path, mmap_mode="r"), np.load(thumb_path, mmap_mode="r"), errors, False,
                      record if lung_input else None)


def _store(i, pix, th, err, quality, fell_back, pixels, thumbs, record, errors, paths):
    if err:
        log.warning("skipping unreadable image %s: %s", paths[i], err)
        errors.append((i, paths[i], err.replace("\t", " ").replace("\n", " ")))
    else:
        pixels[i], thumbs[i] = pix, th
        record.quality[i], record.fell_back[i] = quality, fell_back
