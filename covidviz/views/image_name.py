"""How the Diagnose page's image is named on every page: a file the user uploaded is "your upload", a test
image picked from the experiment is "the test image ID", an external set's image "the image ID of SITE".

The Diagnose page records which it was (``source`` in the session record, ``ui.state.UPLOAD_KEY``) and
names it with ``record_name``; the latent-space and SOM pages label it with ``short_label`` and
``phrase``, so a picked test image is never called an upload.
"""

from __future__ import annotations

UPLOAD, TEST, EXTERNAL = "upload", "test", "external"  # the record's ``source``


def record_name(source: str, image_id: str = "", site: str = "", file_name: str = "") -> str:
    """The record's ``name``: the file name of an upload, "test image ID", "SITE image ID"."""
    if source == TEST:
        return f"test image {image_id}"
    if source == EXTERNAL:
        return f"{site} image {image_id}"
    return file_name


def source_of(record: dict | None) -> str:
    """``UPLOAD``, ``TEST`` or ``EXTERNAL``; a record written before ``source`` existed read from its name."""
    rec = record or {}
    source = rec.get("source")
    if source in (UPLOAD, TEST, EXTERNAL):
        return source
    return TEST if str(rec.get("name") or "").startswith("test image ") else UPLOAD


def short_label(record: dict | None) -> str:
    """A legend's or a marker's label: "your upload", or the picked image's name ("test image ID")."""
    return "your upload" if source_of(record) == UPLOAD else str((record or {}).get("name") or "the picked image")


def kind_label(record: dict | None) -> str:
    """The image by its kind only, for a button or a legend where an image id would not fit: "your upload",
    "the test image", "the external image"."""
    return {UPLOAD: "your upload", TEST: "the test image", EXTERNAL: "the external image"}[source_of(record)]


def phrase(record: dict | None, start: bool = False) -> str:
    """The image in a sentence (markdown): an upload by its file name ("**x.png**"), "the test image **ID**",
    "the image **ID** of the external set SITE"; ``start``: capitalised, to open a sentence."""
    rec = record or {}
    name = str(rec.get("name") or "")
    source = source_of(rec)
    if source == TEST:
        text = f"the test image **{name.removeprefix('test image ')}**"
    elif source == EXTERNAL and " image " in name:
        site, image_id = name.split(" image ", 1)
        text = f"the image **{image_id}** of the external set {site}"
    else:
        text = f"**{name or 'your upload'}**"
    return text[:1].upper() + text[1:] if start else text
