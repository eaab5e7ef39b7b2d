"""DICOM as hospitals send it: pixel data in the compressions CR/DX exports use, and the non-identifying
acquisition facts Diagnose shows (pixel spacing, view, body part, burned-in annotation).

Pixels are decoded by pydicom's own plugins; which library decodes what (licences as each wheel's
metadata states them; none is GPL):

============================================  ===========================  ==========================
transfer syntax                               UID 1.2.840.10008.1.2...     decoder
============================================  ===========================  ==========================
uncompressed, deflated, big endian            (none), .1, .1.99, .2         pydicom (MIT)
RLE Lossless                                  .5                            pydicom
JPEG Baseline 8-bit                           .4.50                         python-gdcm, else Pillow
JPEG Extended 12-bit                          .4.51                         python-gdcm (see below)
JPEG Lossless (Process 14, and SV1)           .4.57, .4.70                  python-gdcm
JPEG-LS lossless / near-lossless              .4.80, .4.81                  python-gdcm (CharLS)
JPEG 2000 lossless / lossy                    .4.90, .4.91                  python-gdcm (OpenJPEG), else Pillow
============================================  ===========================  ==========================

Refused with ``ImageDecodeError`` (the upload is named, the transfer syntax said): High-Throughput
JPEG 2000 (.4.201-.4.203, would need pylibjpeg-openjpeg), JPEG XL (.4.110-.4.112), video (MPEG-2/4,
HEVC: .4.100-.4.108), JPIP references (.4.94/.95), JPEG-LS with 6- or 7-bit samples (a GDCM bug pydicom
guards against) and corrupt codestreams.

Licences: python-gdcm's wheel is Apache-2.0 (``License-Expression`` in its metadata); GDCM itself is
BSD-3-Clause and bundles IJG libjpeg 6b built for 8, 12 and 16 bits (IJG licence), CharLS (BSD-3-Clause),
OpenJPEG (BSD-2-Clause) and OpenSSL 1.1.1 (OpenSSL/SSLeay). Pillow is MIT-CMU, pydicom MIT.
pylibjpeg-libjpeg, pydicom's other route to 12-bit JPEG and to JPEG Lossless, is GPL-3.0 and not used.

12-bit JPEG Extended: pydicom 3's GDCM plugin refuses it outright, yet GDCM decodes it (pydicom's
own reference pixels of ``JPGExtended.dcm`` come out exact; ``tests/test_dicom.py``), so for that one
case the frame goes to GDCM directly. GDCM then prints "Unsupported JPEG data precision 12" on stderr:
its 8-bit decoder is tried first and the 12-bit one takes over; noise, not a failure.
"""

from __future__ import annotations

import numpy as np

JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"

# Projection-radiography spacing: ImagerPixelSpacing is measured at the detector's front plane; a
# PixelSpacing that differs from it, or that carries a PixelSpacingCalibrationType, was corrected to
# the patient (e.g. for magnification). A PixelSpacing alone may be either (DICOM PS3.3 10.7.1.3).
SPACING_CALIBRATED, SPACING_DETECTOR, SPACING_UNSTATED = "calibrated", "at the detector", "calibration not stated"


def pixel_array(ds) -> np.ndarray:
    """``ds.pixel_array``, or for 12-bit JPEG Extended (which pydicom 3's GDCM plugin refuses) GDCM's own
    decode of the frame. Any failure propagates (the caller turns it into a message)."""
    try:
        return ds.pixel_array
    except Exception as exc:
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
        if ts != JPEG_EXTENDED_12BIT or int(ds.get("BitsStored", 8) or 8) <= 8:
            raise
        try:
            return _gdcm_jpeg_extended(ds)
        except Exception as gdcm_exc:
            raise ValueError(f"{exc}; GDCM direct: {gdcm_exc}") from gdcm_exc


def _gdcm_jpeg_extended(ds) -> np.ndarray:
    """One grayscale 12-bit JPEG Extended frame decoded by GDCM, as pydicom's plugin would without its
    12-bit guard; (rows, cols) in the stored integer type."""
    import gdcm
    from pydicom.encaps import get_frame  # pydicom >= 3 (pydicom 2's GDCM handler decodes 12-bit itself)

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if int(ds.get("SamplesPerPixel", 1)) != 1 or frames != 1:
        raise ValueError(f"only single-frame grayscale 12-bit JPEG is decoded ({frames} frame(s), "
                         f"{ds.get('SamplesPerPixel')} samples per pixel)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    allocated, stored, signed = int(ds.BitsAllocated), int(ds.BitsStored), int(ds.get("PixelRepresentation", 0))

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(get_frame(ds.PixelData, 0, number_of_frames=1))
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((cols, rows, 1))
    image.SetDataElement(element)
    pi = gdcm.PhotometricInterpretation.GetPIType(str(ds.get("PhotometricInterpretation", "MONOCHROME2")))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(pi))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(JPEG_EXTENDED_12BIT)))
    image.SetPixelFormat(gdcm.PixelFormat(1, allocated, stored, stored - 1, signed))
    buffer = image.GetBuffer()  # str (char*), None when the codestream cannot be decoded
    if not buffer:
        raise ValueError("GDCM could not decode the JPEG codestream")
    raw = np.frombuffer(buffer.encode("utf-8", "surrogateescape"), dtype=f"<u{allocated // 8}")
    if raw.size < rows * cols:
        raise ValueError(f"GDCM returned {raw.size} pixels, expected {rows}x{cols}")
    # Keep the stored bits only, then sign-extend: right whether or not GDCM extended the sign itself.
    values = raw[: rows * cols].reshape(rows, cols).astype(np.int64) & ((1 << stored) - 1)
    if signed:
        values = np.where(values >= 1 << (stored - 1), values - (1 << stored), values)
    return values.astype(f"{'i' if signed else 'u'}{allocated // 8}")


def _spacing(ds, keyword: str) -> tuple[float, float] | None:
    """(row, column) spacing in mm from a 2-valued DS tag, or None (absent, malformed or not positive)."""
    try:
        value = ds.get(keyword)
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        return None
    return row, col


def acquisition_facts(ds) -> dict:
    """The spacing facts for ``DecodedImage.info`` (empty when the file states no usable spacing):
    ``pixel_spacing_mm`` [row, column] in mm per pixel, ``pixel_spacing_tag`` the tag it came from and
    ``pixel_spacing_kind`` one of ``SPACING_CALIBRATED``, ``SPACING_DETECTOR``, ``SPACING_UNSTATED``."""
    calibrated, detector = _spacing(ds, "PixelSpacing"), _spacing(ds, "ImagerPixelSpacing")
    calibration = str(ds.get("PixelSpacingCalibrationType", "") or "").strip()
    if calibrated is not None:
        if calibration or (detector is not None and not np.allclose(calibrated, detector, rtol=1e-4)):
            kind = SPACING_CALIBRATED
        elif detector is not None:
            kind = SPACING_DETECTOR  # PixelSpacing copied from ImagerPixelSpacing: not corrected
        else:
            kind = SPACING_UNSTATED
        facts = {"pixel_spacing_mm": list(calibrated), "pixel_spacing_tag": "PixelSpacing", "pixel_spacing_kind": kind}
        if calibration:
            facts["pixel_spacing_calibration"] = calibration
        return facts
    if detector is not None:
        return {"pixel_spacing_mm": list(detector), "pixel_spacing_tag": "ImagerPixelSpacing",
                "pixel_spacing_kind": SPACING_DETECTOR}
    return {}
