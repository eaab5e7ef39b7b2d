"""Batch inputs: files, folders and ZIP archives -> ``Sources`` to score, and ``BadFile``s for the rest.

Folders are searched recursively (image and DICOM suffixes, plus suffix-less files that start like a
DICOM); ZIP archives are read in memory and never extracted. Archives are checked before anything is
decompressed, against ``MAX_ZIP_MEMBERS`` files and ``MAX_ZIP_BYTES`` declared uncompressed bytes in all
(``MAX_MEMBER_BYTES`` per file), and every member is read with a cap at its declared size, so a ZIP bomb
costs nothing. Anything unusable becomes a ``BadFile`` with a message a user can act on
(``ImageDecodeError``'s for images); it never stops the batch.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from covidviz.data.imageio import DICOM_SUFFIXES, ImageDecodeError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- limits

MAX_ZIP_MEMBERS = 5_000                 # image files in one archive
MAX_ZIP_BYTES = 4 * 1024**3             # their declared uncompressed size in all (4 GiB)
MAX_MEMBER_BYTES = 256 * 1024**2        # one file inside an archive (256 MiB: a large DICOM is ~50 MiB)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}) | frozenset(DICOM_SUFFIXES)
ZIP_SUFFIXES = frozenset({".zip"})


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


def bad_table(bad: Iterable[BadFile]):
    """A pandas DataFrame ``file, message`` of the inputs that could not be scored."""
    import pandas as pd

    return pd.DataFrame([{"file": b.name, "message": b.message} for b in bad], columns=["file", "message"])
