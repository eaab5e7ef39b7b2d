"""Decoding: PNG/JPEG/16-bit/RGBA/palette/EXIF/DICOM to one 8-bit gray array; bad files say why."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from covidviz.data.imageio import ImageDecodeError, decode_bytes, read_image
from covidviz.data.preprocess import Preprocessing, resize_square
from tests.dicom_factory import make_dicom


def _png(arr, mode=None, **save):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def gradient(h=40, w=60, hi=255, dtype=np.uint8):
    return (np.linspace(0, hi, w)[None, :].repeat(h, 0)).astype(dtype)


def test_png_8bit_roundtrip():
    arr = gradient()
    out = decode_bytes(_png(arr), "x.png")
    assert out.dtype == np.uint8 and out.shape == (40, 60)
    assert np.array_equal(out, arr)


def test_png_16bit_is_windowed_to_full_range():
    arr = gradient(hi=4000, dtype=np.uint16)
    out = decode_bytes(_png(arr), "x16.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # monotone ramp preserved


def test_rgba_composites_on_black_and_palette_reads():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:16, ..., 3] = 255  # top half opaque, bottom transparent
    out = decode_bytes(_png(rgba, mode="RGBA"), "a.png")
    assert out[:16].mean() > 190 and out[16:].max() == 0
    pal = Image.fromarray(gradient(32, 32)).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert decode_bytes(buf.getvalue(), "p.png").shape == (32, 32)


def test_exif_orientation_is_applied():
    img = Image.fromarray(gradient(40, 60))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_bytes(buf.getvalue(), "r.jpg").shape == (60, 40)


def test_dicom_monochrome1_is_inverted_and_rescaled():
    raw = gradient(40, 60, hi=1000, dtype=np.uint16)
    m2 = decode_bytes(make_dicom(raw, "MONOCHROME2"), "a.dcm")
    m1 = decode_bytes(make_dicom(raw, "MONOCHROME1"), "b.dcm")
    assert m2[:, 0].mean() < 20 and m2[:, -1].mean() > 235
    assert m1[:, 0].mean() > 235 and m1[:, -1].mean() < 20
    # rescale slope/intercept applied before windowing: a negative slope flips the ramp
    flipped = decode_bytes(make_dicom(raw, slope=-1.0, intercept=1000), "c.dcm")
    assert flipped[:, 0].mean() > 235


def test_dicom_window_centre_width_is_used():
    raw = gradient(40, 100, hi=1000, dtype=np.uint16)
    out = decode_bytes(make_dicom(raw, window=(250, 100)), "w.dcm")
    # pixels above centre+width/2 (=300) saturate: most of the ramp is white
    assert (out[0] == 255).mean() > 0.6


@pytest.mark.parametrize("data,name,match", [
    (b"", "empty.png", "empty"),
    (b"this is not an image", "text.png", "not a readable image"),
    (None, "truncated.png", "not a readable image"),
    (None, "tiny.png", "at least"),
    (None, "bomb.png", "limit"),
    (None, "anim.gif", "animated"),
    (None, "nopix.dcm", "without pixel data"),
])
def test_bad_files_raise_clear_errors(data, name, match):
    if name == "truncated.png":
        data = _png(gradient())[:60]
    elif name == "tiny.png":
        data = _png(np.zeros((1, 1), np.uint8))
    elif name == "bomb.png":
        data = _bomb_png(30000, 30000)
    elif name == "anim.gif":
        frames = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (0, 255)]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
        data = buf.getvalue()
    elif name == "nopix.dcm":
        data = make_dicom(None)
    with pytest.raises(ImageDecodeError, match=match):
        decode_bytes(data, name)


def _bomb_png(w, h):
    """A valid PNG header claiming w x h pixels with almost no data (a decompression bomb)."""
    import struct
    import zlib

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_read_missing_file_names_it(tmp_path):
    with pytest.raises(ImageDecodeError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_preprocessing_contract():
    prep = Preprocessing(image_size=32)
    pix = prep.to_model_pixels(gradient(300, 500))
    assert pix.shape == (32, 32) and pix.dtype == np.uint8
    t = prep.to_tensor(np.stack([pix, pix]))
    assert tuple(t.shape) == (2, 3, 32, 32)
    # the three channels are the same gray, normalised per ImageNet channel statistics
    back = t[:, 0] * prep.std[0] + prep.mean[0]
    assert np.allclose(back.numpy() * 255, pix, atol=0.01)
    assert Preprocessing.from_json(prep.to_json()) == prep
    with pytest.raises(ValueError):
        Preprocessing(image_size=4)
    assert resize_square(gradient(2000, 2000), 64).shape == (64, 64)


def test_decode_upload_keeps_colour_statistics_and_the_same_gray():
    from covidviz.data.imageio import decode_upload

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 220  # red half, gray half
    rgb[:, 30:] = 90
    d = decode_upload(_png(rgb, mode="RGB"), "half-red.png")
    assert d.info["colour_fraction"] == pytest.approx(0.5, abs=0.05) and d.info["colour_saturation"] > 0.3
    assert np.array_equal(d.gray, decode_bytes(_png(rgb, mode="RGB"), "half-red.png"))  # gray unchanged
    # A gray film saved as RGB JPEG (a little chroma noise) and true gray files read as colourless.
    gray_rgb = np.repeat(gradient()[..., None], 3, axis=2)
    jpeg = decode_upload(_png(gray_rgb, mode="RGB", format="JPEG", quality=85), "film.jpg")
    assert jpeg.info["colour_fraction"] < 0.01
    for data, name in ((_png(gradient()), "g.png"), (_png(gradient(hi=4000, dtype=np.uint16)), "g16.png"),
                       (make_dicom(gradient(hi=1000, dtype=np.uint16)), "g.dcm")):
        info = decode_upload(data, name).info
        assert info["colour_fraction"] == 0.0 and info["colour_saturation"] == 0.0
