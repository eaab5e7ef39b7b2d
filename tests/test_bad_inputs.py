"""The bad-input corpus of the diagnose page: every file gives a clear message, never a traceback,
and the next upload works. Files are made here, in memory (no fixtures on disk)."""

from __future__ import annotations

import builtins
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from covidviz.data.imageio import ImageDecodeError, decode_upload
from tests.dicom_factory import make_dicom
from tests.test_diagnose import key

pytestmark = pytest.mark.usefixtures("app_like_server")


def _png(arr, mode=None, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=fmt, **kw)
    return buf.getvalue()


def film(h=64, w=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    return np.clip(120 + 80 * np.sin(x / 7.0) * np.cos(y / 9.0) + rng.normal(0, 8, (h, w)), 0, 255).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side=30000) -> bytes:
    """A ~100-byte PNG whose header claims side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(film(seed=i)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def multiframe_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((3 * 32, 32), np.uint16))), force=True)
    ds.Rows, ds.NumberOfFrames = 32, 3
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def huge_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((32, 32), np.uint16))), force=True)
    ds.Rows = ds.Columns = 30000
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def jpeg2000_dicom() -> bytes:
    """A DICOM declaring JPEG 2000 (no decoder plugin here; and the frame is garbage anyway)."""
    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(make_dicom(film(32, 32))), force=True)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(film()).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


def float_nan_tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), np.nan, np.float32), mode="F").save(buf, format="TIFF")
    return buf.getvalue()


GOOD_PNG = _png(film())
GOOD_JPG = _png(film(), fmt="JPEG")

# (name, bytes, words the message must contain). All raise ImageDecodeError.
CORPUS = [
    ("empty.png", b"", "empty"),
    ("truncated.png", GOOD_PNG[: len(GOOD_PNG) // 2], "not a readable image"),
    ("truncated.jpg", GOOD_JPG[: len(GOOD_JPG) // 3], "not a readable image"),
    ("jpeg-header-only.jpg", b"\xff\xd8\xff\xe0", "not a readable image"),
    ("text.png", b"patient notes: nothing to see here\n" * 20, "not a readable image"),
    ("page.jpg", b"<!doctype html><html><body>404</body></html>", "not a readable image"),
    ("report.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF", "not a readable image"),
    ("archive.png", b"PK\x03\x04" + b"\0" * 200, "not a readable image"),
    ("random.bin", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a readable image"),
    ("one-pixel.png", _png(np.zeros((1, 1), np.uint8)), "1x1 pixels"),
    ("tiny.png", _png(np.zeros((15, 15), np.uint8)), "15x15 pixels"),
    ("sliver.png", _png(np.zeros((2, 4000), np.uint8)), "4000x2 pixels"),
    ("bomb.png", bomb_png(), "decompression bomb"),
    ("animated.gif", animated("GIF"), "animated"),
    ("animated.png", animated("PNG"), "animated"),
    ("pages.tiff", animated("TIFF"), "multi-frame"),
    ("nan.tiff", float_nan_tiff(), "no finite pixel values"),
    ("no-pixels.dcm", make_dicom(None), "without pixel data"),
    ("jpeg2000.dcm", jpeg2000_dicom(), "transfer syntax"),
    ("truncated.dcm", make_dicom(film(64, 64))[:-3000], "cannot decode DICOM pixel data"),
    ("garbage.dcm", b"\0" * 128 + b"DICM" + b"\xff" * 64, "DICOM"),
    ("multiframe.dcm", multiframe_dicom(), "multi-frame"),
    ("huge.dcm", huge_dicom(), "decompression bomb"),
]


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 20 and len({n for n, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("name,data,words", CORPUS, ids=[c[0] for c in CORPUS])
def test_decoder_rejects_with_a_clear_message(name, data, words):
    with pytest.raises(ImageDecodeError) as err:
        decode_upload(data, name)
    msg = str(err.value)
    assert words.lower() in msg.lower(), msg
    assert name in msg and "Traceback" not in msg and "object at 0x" not in msg


def test_cmyk_jpeg_is_read_with_a_colour_note():
    decoded = decode_upload(cmyk_jpeg(), "cmyk.jpg")
    assert decoded.gray.shape == (64, 64) and decoded.info["mode"] == "CMYK"


@pytest.fixture
def page(tiny_experiment, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from tests.test_diagnose import PAGE

    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    return at


def _upload(at, name, data):
    at.file_uploader(key=key("diagnose_upload")).set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _reading_shown(at) -> bool:
    """The reading at the top of Diagnose (film + heat-map tiles) is on the page."""
    return any(m.value == "**Film**" for m in at.markdown)


def _works(at) -> None:
    assert not at.error, [e.value for e in at.error]
    assert _reading_shown(at)
    assert len(at.session_state["upload"]["backbones"]) == 2


def test_page_survives_the_whole_corpus(page, monkeypatch):
    writes = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+") and "diagnose" not in str(file):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    _works(_upload(page, "good.png", GOOD_PNG))
    monkeypatch.setattr(builtins, "open", watching_open)
    for i, (name, data, words) in enumerate(CORPUS):
        _upload(page, name, data)
        errors = [e.value for e in page.error]
        assert len(errors) == 1 and "cannot be used" in errors[0] and words.lower() in errors[0].lower(), (name, errors)
        assert not _reading_shown(page)
        if i % 6 == 5:  # the next upload works, whatever came before
            _works(_upload(page, f"good-{i}.png", _png(film(seed=i))))
    _upload(page, "cmyk.jpg", cmyk_jpeg())
    assert any("CMYK" in w.value for w in page.warning)
    _works(page)
    monkeypatch.setattr(builtins, "open", real_open)
    assert writes == [], f"uploads must stay in memory; files opened for writing: {writes}"
