"""DICOM as hospitals send it: compressed pixel data decodes (pydicom's own bundled test files, offline),
and Diagnose shows pixel spacing, view, body part and a burned-in-annotation warning, never a patient
identifier."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import HTJ2KLossless, JPEGExtended12Bit

from covidviz.data.dicom import SPACING_CALIBRATED, SPACING_DETECTOR, SPACING_UNSTATED, acquisition_facts, pixel_array
from covidviz.data.imageio import DICOM_PATIENT_FIELDS, ImageDecodeError, decode_upload
from covidviz.views import diagnose as view
from tests.dicom_factory import make_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's notes on odd bundled files


def bundled(name: str) -> Path:
    """A test file shipped inside the pydicom wheel; skip when this pydicom lacks it (never download)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with pydicom {pydicom.__version__}")
    return Path(path)


def decode(name: str):
    return decode_upload(bundled(name).read_bytes(), name)


def stored(name: str) -> np.ndarray:
    """The stored pixel values as covidviz decodes them (before any LUT)."""
    return pixel_array(pydicom.dcmread(bundled(name)))


# (file, transfer syntax): every compressed single-frame image pydicom 3 bundles that is big enough to be
# a film, plus two JPEG Lossless files only some pydicom versions ship (skipped where absent).
COMPRESSED = [
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),         # JPEG Extended, 12-bit
    ("JPEG-lossy.dcm", "1.2.840.10008.1.2.4.51"),          # ... with an invalid scan-stop value
    ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70"),    # JPEG Lossless SV1
    ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "1.2.840.10008.1.2.4.70"),
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
    ("SC_rgb_jls_lossy_line.dcm", "1.2.840.10008.1.2.4.81"),
    ("SC_rgb_jls_lossy_sample.dcm", "1.2.840.10008.1.2.4.81"),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
    ("GDCMJ2K_TextGBR.dcm", "1.2.840.10008.1.2.4.90"),
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
    ("693_J2KI.dcm", "1.2.840.10008.1.2.4.91"),
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50"),
]


@pytest.mark.parametrize("name,syntax", COMPRESSED, ids=[c[0] for c in COMPRESSED])
def test_bundled_compressed_dicom_decodes_to_a_sane_film(name, syntax):
    d = decode(name)
    assert d.info["transfer_syntax"] == syntax
    ds = pydicom.dcmread(bundled(name), stop_before_pixels=True)
    assert d.gray.dtype == np.uint8 and d.gray.shape == (ds.Rows, ds.Columns)
    assert d.gray.std() > 5  # an image, not a blank or a constant left by a failed decode


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_mr_equals_the_uncompressed_original(name):
    original, compressed = decode("MR_small.dcm"), decode(name)
    assert np.array_equal(compressed.raw, original.raw)
    assert np.array_equal(compressed.gray, original.gray)


def test_rgb_lossless_jpeg_equals_and_near_lossless_jpeg_ls_stays_within_its_bound():
    reference = decode("SC_rgb_rle.dcm").gray.astype(int)  # RLE: lossless, decoded by pydicom itself
    assert np.array_equal(decode("SC_rgb_jpeg_gdcm.dcm").gray, reference)
    for name in ("SC_rgb_jls_lossy_line.dcm", "SC_rgb_jls_lossy_sample.dcm"):
        diff = np.abs(decode(name).gray.astype(int) - reference)
        assert 0 < diff.max() <= 3, name  # lossy, but near-lossless (NEAR=2 per sample before the gray mean)


def test_12bit_jpeg_extended_matches_pydicoms_reference_pixels():
    # pydicom's own reference values for this file (tests/pixels/pixels_reference.py, JPGE_16_12_1_0_1F_M2)
    arr = stored("JPGExtended.dcm")
    assert arr.dtype == np.uint16 and arr.shape == (1024, 256)
    assert arr[420, 140] == 244 and arr[230, 120] == 95
    assert arr.max() < 4096  # 12 bits
    assert np.array_equal(stored("JPEG-lossy.dcm"), arr)  # the broken original decodes to the same pixels


def test_jpeg_lossless_and_jpeg_ls_match_pydicoms_reference_pixels():
    jls = stored("MR_small_jpeg_ls_lossless.dcm")
    assert tuple(jls[0, 31:34]) == (422, 319, 361) and tuple(jls[-1, -3:]) == (1369, 1129, 862)
    assert tuple(stored("SC_rgb_jpeg_gdcm.dcm")[45, 50]) == (0, 0, 255)


def test_jpeg_lossless_16bit_matches_pydicoms_reference_pixels():
    arr = stored("JPEG-LL.dcm")  # only in pydicom versions that bundle it
    assert tuple(arr[400, 124:132]) == (60, 58, 61, 68, 59, 65, 64, 67)


def _encapsulated(syntax, frame: bytes, bits: int = 12) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((32, 32), np.uint16), bits=bits)))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.mark.parametrize("syntax,frame", [
    (JPEGExtended12Bit, b"\xff\xd8\xff\xc1" + b"\0" * 100),  # a 12-bit JPEG that breaks off: our GDCM path
    (HTJ2KLossless, b"\xff\x4f\xff\x51" + b"\0" * 60),       # High-Throughput JPEG 2000: no decoder here
], ids=["broken-12bit-jpeg", "htj2k"])
def test_undecodable_compressed_dicom_names_the_file_and_transfer_syntax(syntax, frame):
    with pytest.raises(ImageDecodeError) as err:
        decode_upload(_encapsulated(syntax, frame), "film.dcm")
    msg = str(err.value)
    assert "film.dcm" in msg and "cannot decode DICOM pixel data" in msg and str(syntax) in msg


def test_gdcm_round_trip_of_a_12bit_monochrome1_film_in_hospital_compressions(tmp_path):
    """A 12-bit MONOCHROME1 film (as CR readers export), compressed by GDCM itself into the lossless
    syntaxes CR/DX exports use and into 12-bit lossy JPEG: lossless decodes exactly, lossy closely, and
    the inversion and windowing are the uncompressed file's."""
    gdcm = pytest.importorskip("gdcm")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:80]
    film = (2000 + 1500 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 40, xx.shape)).clip(0, 4095).astype(np.uint16)
    source = tmp_path / "film.dcm"
    source.write_bytes(make_dicom(film, photometric="MONOCHROME1", bits=12, window=(2000, 3000)))
    original = decode_upload(source.read_bytes(), "film.dcm")
    syntaxes = {"1.2.840.10008.1.2.4.57": gdcm.TransferSyntax.JPEGLosslessProcess14,
                "1.2.840.10008.1.2.4.70": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
                "1.2.840.10008.1.2.4.80": gdcm.TransferSyntax.JPEGLSLossless,
                "1.2.840.10008.1.2.4.90": gdcm.TransferSyntax.JPEG2000Lossless,
                "1.2.840.10008.1.2.4.51": gdcm.TransferSyntax.JPEGExtendedProcess2_4}
    for uid, ts in syntaxes.items():
        reader = gdcm.ImageReader()
        reader.SetFileName(str(source))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(ts))
        change.SetInput(reader.GetImage())
        if uid == JPEGExtended12Bit:
            codec = gdcm.JPEGCodec()
            codec.SetLossless(False)
            codec.SetQuality(90)
            change.SetUserCodec(codec)
        assert change.Change(), uid
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(tmp_path / f"{uid}.dcm"))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write(), uid
        d = decode_upload((tmp_path / f"{uid}.dcm").read_bytes(), f"{uid}.dcm")
        assert d.info["transfer_syntax"] == uid
        error = np.abs(d.gray.astype(int) - original.gray.astype(int))
        if uid == JPEGExtended12Bit:
            assert 0 < np.abs(d.raw - original.raw).max() < 100 and error.mean() < 2, uid
        else:
            assert np.array_equal(d.raw, original.raw) and error.max() == 0, uid


# ---------------------------------------------------------------- acquisition facts and what Diagnose shows

def _ds(**tags) -> Dataset:
    ds = Dataset()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize("tags,tag,kind", [
    ({"ImagerPixelSpacing": [0.139, 0.139]}, "ImagerPixelSpacing", SPACING_DETECTOR),
    ({"ImagerPixelSpacing": [0.139, 0.139], "PixelSpacing": [0.139, 0.139]}, "PixelSpacing", SPACING_DETECTOR),
    ({"ImagerPixelSpacing": [0.15, 0.15], "PixelSpacing": [0.136, 0.136]}, "PixelSpacing", SPACING_CALIBRATED),
    ({"PixelSpacing": [0.14, 0.14], "PixelSpacingCalibrationType": "GEOMETRY"}, "PixelSpacing", SPACING_CALIBRATED),
    ({"PixelSpacing": [0.2, 0.1]}, "PixelSpacing", SPACING_UNSTATED),
])
def test_pixel_spacing_says_where_it_was_measured(tags, tag, kind):
    facts = acquisition_facts(_ds(**tags))
    assert facts["pixel_spacing_tag"] == tag and facts["pixel_spacing_kind"] == kind
    assert facts["pixel_spacing_mm"] == [float(v) for v in tags[tag]]


@pytest.mark.parametrize("raw", [None, b"0\\0.1", b"0.1", b"abc\\0.1", b"-1\\-1", b""])
def test_missing_or_broken_spacing_gives_no_facts(raw):
    ds = _ds()
    if raw is not None:  # as a file would carry it: pydicom converts the bytes only when the tag is read
        ds[0x00280030] = RawDataElement(Tag(0x00280030), "DS", len(raw), raw, 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about invalid DS values; that is the point
        assert acquisition_facts(ds) == {}


def _film(**tags) -> bytes:
    """A small DX film (patient Doe^Jane, ID TEST123) with extra DICOM tags, in memory."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom((np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16), bits=12)))
    ds.PatientBirthDate, ds.AccessionNumber, ds.InstitutionName = "19700101", "ACC42", "St Elsewhere"
    for key, value in tags.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_diagnose_caption_shows_view_body_part_and_spacing():
    d = decode_upload(_film(ViewPosition="PA", BodyPartExamined="CHEST", ImagerPixelSpacing=[2.5, 2.5]), "pa.dcm")
    caption = view.file_caption(d)
    assert "View PA" in caption and "Body part CHEST" in caption and "Modality DX" in caption
    assert "2.5 mm per pixel" in caption and SPACING_DETECTOR in caption and "ImagerPixelSpacing" in caption
    assert "film 12.0 × 16.0 cm" in caption  # 48 × 64 pixels at 2.5 mm
    calibrated = decode_upload(_film(PixelSpacing=[0.1, 0.15], ImagerPixelSpacing=[0.2, 0.2]), "cal.dcm")
    line = view.dicom_facts(calibrated.info)[-1]
    assert "0.1 × 0.15 mm (row × column)" in line and SPACING_CALIBRATED in line and "from PixelSpacing" in line
    assert "View" not in view.file_caption(calibrated)  # nothing stated, nothing shown


def test_png_caption_has_no_dicom_facts():
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
    d = decode_upload(buf.getvalue(), "x.png")
    assert view.dicom_facts(d.info) == [] and view.burned_in_warning(d.info) is None


@pytest.mark.parametrize("value,warns", [("YES", True), ("yes ", True), ("NO", False), (None, False)])
def test_burned_in_annotation_warns_unless_no(value, warns):
    d = decode_upload(_film(**({"BurnedInAnnotation": value} if value else {})), "b.dcm")
    warning = view.burned_in_warning(d.info)
    assert (warning is not None) == warns
    if warns:
        assert "BurnedInAnnotation = YES" in warning


def test_no_patient_identifier_reaches_what_diagnose_displays():
    d = decode_upload(_film(ViewPosition="AP", BodyPartExamined="CHEST", PixelSpacing=[0.14, 0.14],
                            BurnedInAnnotation="YES"), "id.dcm")
    shown = " ".join([view.file_caption(d), *view.dicom_facts(d.info), view.burned_in_warning(d.info) or "",
                      repr(d.info)])
    for secret in ("Doe", "Jane", "TEST123", "19700101", "ACC42", "Elsewhere"):
        assert secret not in shown, secret
    assert not set(DICOM_PATIENT_FIELDS) & set(d.info)
    assert d.patient["PatientID"] == "TEST123"  # kept apart, behind the page's toggle
