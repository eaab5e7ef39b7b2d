"""The Batch page in a real browser: ``streamlit run app.py`` over the tiny experiment, opened at /batch,
driven by Debian chromium through Playwright. Uploads two PNG phantoms, a corrupt file and a ZIP of two
more in one go, then finds every row, the bad file's message, the downloads and the contact sheet; saves
``$COVIDVIZ_SHOTS/batch-page.png`` (1280 px wide) for a human to look at."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from covidviz import runs
from covidviz.views import batch as view
from tests.browser_support import CHROMIUM_MARKS, SCREENSHOTS, chromium_page, streamlit_server

pytestmark = CHROMIUM_MARKS



def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _grid_text(page) -> str:
    """What the table's grid holds (its accessible cells), all rows."""
    return " ".join(page.locator("[data-testid='stDataFrame']").first.locator("[role='gridcell']").all_text_contents())


def test_batch_page_in_chromium(tiny_experiment, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)
    exp = runs.read_experiment(tiny_experiment)
    images = exp.images()
    paths = images.loc[images["split"] == "test", "path"].tolist()[:4]
    films = [Path(p).read_bytes() for p in paths]
    files = [{"name": "phantom-1.png", "mimeType": "image/png", "buffer": films[0]},
             {"name": "phantom-2.png", "mimeType": "image/png", "buffer": films[1]},
             {"name": "corrupt.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\0garbage" * 20},
             {"name": "more.zip", "mimeType": "application/zip",
              "buffer": _zip({"ward/phantom-3.png": films[2], "ward/phantom-4.png": films[3], "ward/readme.txt": b"hi"})}]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(tiny_experiment.parent, tmp_path) as url, chromium_page(width=1280, height=2600) as page:
        page.goto(url + f"/batch?exp={exp.path.name}", wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name=f"Batch: {exp.name}")).to_be_visible()
        expect(page.get_by_text(f"at most {view.MAX_IMAGES} images per batch")).to_be_visible()
        page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(files=files)

        expect(page.get_by_role("heading", name="Predictions")).to_be_visible()
        expect(page.get_by_text("file(s) scored with")).to_be_visible()
        assert "4" in page.get_by_text("file(s) scored with").inner_text()
        expect(page.get_by_role("heading", name="Files that could not be used")).to_be_visible()
        expect(page.get_by_text("1 file(s) could not be used")).to_be_visible()
        page.wait_for_function("document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 2", timeout=60_000)
        page.wait_for_timeout(1500)
        grid = _grid_text(page)
        for name in ("phantom-1.png", "phantom-2.png", "more.zip:ward/phantom-3.png", "more.zip:ward/phantom-4.png"):
            assert name in grid, grid[:2000]
        assert "corrupt.png" not in grid
        bad = " ".join(page.locator("[data-testid='stDataFrame']").nth(1).locator("[role='gridcell']").all_text_contents())
        assert "corrupt.png" in bad and "not a readable image" in bad, bad

        expect(page.get_by_role("button", name="Download the table (CSV)")).to_be_visible()
        expect(page.get_by_role("button", name="Download the contact sheet (PNG)")).to_be_visible()
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(1)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator("[data-testid='stProgress']").count() == 0
        page.screenshot(path=str(SCREENSHOTS / "batch-page.png"), full_page=True)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download the table (CSV)").click()
        csv = Path(download.value.path()).read_text()
        assert csv.splitlines()[0].startswith("file,") and len(csv.splitlines()) == 5
        page.wait_for_timeout(500)
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(1)  # no rerun, no second sheet
