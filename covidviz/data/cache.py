"""Preprocessing cache: decode and resize every image once, keep uint8 arrays memory-mapped.

Decoding a full-size PNG costs far more than a training step on a small image, so the first pass
writes ``pixels-<size>-<key>.npy`` (N, S, S; ``pixels-<size>-center-<key>.npy`` for the
``Preprocessing.crop="center"`` contract, e.g. torchxrayvision weights, which cuts the largest centred
square before the resize) and ``thumbs-<key>.npy`` (N, 64, 64; always the whole film) under the cache
folder; later epochs, later runs on the same files and the analysis read them back with
``np.load(mmap_mode='r')`` at memory speed. The key hashes the ordered paths with their sizes and
modification times, so an edited or replaced file invalidates the cache. Files are written to a temp
name and renamed, so a killed run never leaves a truncated cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.preprocess import CROPS, THUMB_SIZE, center_square, resize_square

log = logging.getLogger(__name__)


@dataclass
class PixelCache:
    pixels: np.ndarray          # uint8 (N, S, S), memory-mapped
    thumbs: np.ndarray          # uint8 (N, 64, 64), memory-mapped
    errors: list[tuple[int, str, str]]  # (row, path, reason) of images that failed to decode
    hit: bool                   # True when read from an earlier run's cache


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


def _decode_one(args: tuple[str, int, str]) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    path, size, crop = args
    try:
        gray = read_image(path)
    except ImageDecodeError as exc:
        return None, None, str(exc)
    # Model pixels as Preprocessing.to_model_pixels makes them (what the app feeds an upload); the
    # thumbnail shows the whole film whatever the models see.
    model = resize_square(center_square(gray) if crop == "center" else gray, size)
    return model, resize_square(gray, THUMB_SIZE), ""


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


def build_cache(paths: list[str], image_size: int, cache_dir: str | Path | None = None,
                workers: int | None = None, progress: bool = True, crop: str = "none") -> PixelCache:
    """Decode ``paths`` once at ``image_size`` (and thumbnails), or reuse an earlier cache. ``crop``:
    the experiment's ``Preprocessing.crop`` (``"center"``: the largest centred square, then the resize)."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose from {', '.join(CROPS)}")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _key(paths)
    shape = "" if crop == "none" else f"{crop}-"  # "none" keeps the names earlier caches were written under
    pix_path = cache_dir / f"pixels-{image_size}-{shape}{key}.npy"
    thumb_path = cache_dir / f"thumbs-{key}.npy"
    err_path = cache_dir / f"errors-{key}.tsv"
    if pix_path.exists() and thumb_path.exists() and err_path.exists():
        errors = []
        for line in err_path.read_text().splitlines():
            row, path, reason = line.split("\t", 2)
            errors.append((int(row), path, reason))
        return PixelCache(np.load(pix_path, mmap_mode="r"), np.load(thumb_path, mmap_mode="r"), errors, True)

    n = len(paths)
    pixels = np.zeros((n, image_size, image_size), np.uint8)
    thumbs = np.zeros((n, THUMB_SIZE, THUMB_SIZE), np.uint8)
    errors = []
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    jobs = [(p, image_size, crop) for p in paths]
    bar = tqdm(total=n, desc=f"decode+resize to {image_size}px", unit="img", disable=not progress, leave=False)
    if workers > 1 and n > 64:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_decode_one, jobs, chunksize=32)
            for i, (pix, th, err) in enumerate(results):
                _store(i, pix, th, err, pixels, thumbs, errors, paths)
                bar.update()
    else:
        for i, job in enumerate(jobs):
            _store(i, *_decode_one(job), pixels, thumbs, errors, paths)
            bar.update()
    bar.close()
    _save_atomic(pix_path, pixels)
    _save_atomic(thumb_path, thumbs)
    tmp = err_path.with_name(f".{err_path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{r}\t{p}\t{m}\n" for r, p, m in errors))
    os.replace(tmp, err_path)
    return PixelCache(np.load(pix_path, mmap_mode="r"), np.load(thumb_path, mmap_mode="r"), errors, False)


def _store(i, pix, th, err, pixels, thumbs, errors, paths):
    if err:
        log.warning("skipping unreadable image %s: %s", paths[i], err)
        errors.append((i, paths[i], err.replace("\t", " ").replace("\n", " ")))
    else:
        pixels[i], thumbs[i] = pix, th
