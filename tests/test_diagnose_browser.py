"""The diagnose page in a real browser: ``streamlit run app_pages/diagnose.py`` over the tiny experiment,
driven by Debian chromium through Playwright. Uploads a PNG, then a DICOM (MONOCHROME1, 12-bit), then
a bad file; saves $COVIDVIZ_SHOTS/diagnose-*.png for a human to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidviz import runs
from covidviz.data.imageio import read_image
from covidviz.views import diagnose as diagnose_view
from tests.browser_support import CHROMIUM_MARKS, SCREENSHOTS, chromium_page, streamlit_server
from tests.dicom_factory import make_dicom

pytestmark = CHROMIUM_MARKS


def _open_sections(page) -> None:
    """Open every closed section under the reading (the page keeps them closed; each click reruns nothing)."""
    for label in diagnose_view.SECTIONS.values():
        section = page.get_by_test_id("stExpander").filter(has_text=label)
        if not section.evaluate("e => (e.tagName === 'DETAILS' ? e : e.querySelector('details')).open"):
            section.locator("summary").click()


def _wait_results(page, expect, caption: str):
    expect(page.get_by_text("Film", exact=True)).to_be_visible()  # the reading at the top
    expect(page.get_by_text(caption).first).to_be_attached()  # this upload's results (in a closed section)
    page.wait_for_timeout(1000)
    _open_sections(page)
    expect(page.get_by_text(caption).first).to_be_visible()
    # both heat maps (one per backbone), the calls tables and both placements are drawn
    expect(page.get_by_text("CAM (class activation map) for")).to_have_count(2)
    page.wait_for_function("document.querySelectorAll('[data-testid=\"stTable\"]').length >= 2", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
    expect(page.get_by_text("Download case report (PNG)")).to_be_visible()
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.slow  # four uploads (~1 min); test_browser_diagnose stays default
def test_diagnose_uploads_in_chromium(tiny_experiment, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)
    exp = runs.read_experiment(tiny_experiment)
    images = exp.images()
    row = int(np.flatnonzero((images["split"] == "test").to_numpy())[0])
    png = Path(images["path"].iloc[row]).read_bytes()
    film = read_image(images["path"].iloc[row]).astype(np.float64)
    dicom = make_dicom(4000 - film * 12, photometric="MONOCHROME1", bits=12, window=(2500, 3000),
                       patient_name="Doe^Jane")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(tiny_experiment.parent, tmp_path, script="app_pages/diagnose.py") as url, \
            chromium_page(height=3600) as page:
        page.goto(url, wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name=f"Diagnose: {exp.name}")).to_be_visible()
        expect(page.get_by_text("For research and education only")).to_have_count(1)
        upload = page.locator("[data-testid='stFileUploaderDropzoneInput']")

        upload.set_input_files(files=[{"name": "chest.png", "mimeType": "image/png", "buffer": png}])
        _wait_results(page, expect, "PNG (L)")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "diagnose-png.png"))

        upload.set_input_files(files=[{"name": "chest.dcm", "mimeType": "application/dicom", "buffer": dicom}])
        _wait_results(page, expect, "DICOM (MONOCHROME1)")
        expect(page.get_by_text("identifying field(s)")).to_be_visible()
        assert page.get_by_text("Doe^Jane").count() == 0
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "diagnose-dicom.png"))

        upload.set_input_files(files=[{"name": "notes.png", "mimeType": "image/png",
                                       "buffer": b"not an x-ray at all\n" * 10}])
        expect(page.get_by_text("This file cannot be used.")).to_be_visible()
        expect(page.get_by_text("notes.png is not a readable image")).to_be_visible()
        expect(page.get_by_text("Film", exact=True)).to_have_count(0)
        assert page.locator("[data-testid='stException']").count() == 0
        page.screenshot(path=str(SCREENSHOTS / "diagnose-bad.png"), full_page=False)

        # the next upload works again; a colour photo gets one out-of-distribution verdict, its calls withheld
        upload.set_input_files(files=[{"name": "photo.png", "mimeType": "image/png", "buffer": _photo()}])
        expect(page.get_by_text("unlike the images the models were trained on")).to_have_count(1)
        expect(page.get_by_text("Heat map and call withheld").first).to_be_visible()
        page.get_by_test_id("stCheckbox").get_by_text("Show the predictions anyway").click()
        _wait_results(page, expect, "PNG (RGB)")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "diagnose-ood.png"))


def _photo() -> bytes:
    import io

    from PIL import Image

    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 400)[None, :].astype(np.uint8)
    rgb[..., 1] = 180
    rgb[..., 2] = np.linspace(255, 0, 300)[:, None].astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
