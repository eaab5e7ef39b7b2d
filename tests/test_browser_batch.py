"""The Batch page in a real browser: ``streamlit run app.py`` over the tiny experiment, opened at /batch,
driven by Debian chromium through Playwright, at 1280x800 and 1920x1080.

Uploads two PNG films, a colour photo, a corrupt file and a ZIP of two more films in one go, then checks
what a reader sees: the rows sorted by short name (ZIP members by their own name), the verdict's badge
right after the name, the photo's row greyed with its calls withheld, the bad file's message, the
downloads and the contact sheet; and, measured in the DOM, that no table cell or header is cut and no
table scrolls sideways (``st.table``: every cell's ``scrollWidth`` within its ``clientWidth``, the table
within its box, the box within the main column). The CSV download names the experiment and lists the
bad file with its error. Screenshots go to ``tmp_path`` (never into docs/)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from covidviz import runs
from covidviz.ood import samples
from covidviz.views import batch as view
from tests.browser_support import CHROMIUM_MARKS, chromium_page, streamlit_server

pytestmark = CHROMIUM_MARKS

SIZES = [(1280, 800), (1920, 1080)]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# Every table cell and header, and every table's scroll box, against its own box; each table against the
# main column. Returns the offences (empty: nothing is cut, nothing scrolls sideways).
CLIPPED_JS = """() => {
  const main = document.querySelector("[data-testid='stMain'] [data-testid='stMainBlockContainer']")
            || document.querySelector("[data-testid='stMain']");
  const limit = main.getBoundingClientRect().right + 1;
  const txt = e => (e.innerText || '').trim().replace(/\\s+/g, ' ').slice(0, 60);
  const out = [];
  for (const t of document.querySelectorAll("[data-testid='stTable']")) {
    for (const e of t.querySelectorAll('th, td, div'))
      if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
        out.push(`${e.tagName} '${txt(e)}': ${e.scrollWidth} px in ${e.clientWidth}`);
    const r = t.getBoundingClientRect();
    if (r.right > limit) out.push(`table right edge ${r.right} beyond the main column's ${limit}`);
  }
  for (const d of document.querySelectorAll("[data-testid='stDataFrame']")) {
    const s = d.querySelector('.dvn-scroller');
    if (s && s.scrollWidth > s.clientWidth + 1) out.push(`dataframe columns ${s.scrollWidth} px in ${s.clientWidth}`);
  }
  return out;
}"""

PAGE_HEIGHT = """() => { const m = document.querySelector('[data-testid="stMain"]');
                         return Math.max(m ? m.scrollHeight : 0, document.scrollingElement.scrollHeight); }"""

# The cells of the first table: rows of [text, computed colour] (header row first).
TABLE_JS = """() => [...document.querySelector("[data-testid='stTable'] table").rows].map(
  r => [...r.cells].map(c => [c.innerText.trim(), getComputedStyle(c).color]))"""


@pytest.fixture(scope="module")
def uploads(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    images = exp.images()
    paths = images.loc[images["split"] == "test", "path"].tolist()[:4]
    films = [Path(p).read_bytes() for p in paths]
    return [{"name": "phantom-2.png", "mimeType": "image/png", "buffer": films[1]},
            {"name": "phantom-1.png", "mimeType": "image/png", "buffer": films[0]},
            {"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": samples.upload_bytes("photo", 5)},
            {"name": "corrupt.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\0garbage" * 20},
            {"name": "more.zip", "mimeType": "application/zip",
             "buffer": _zip({"ward/phantom-3.png": films[2], "ward/phantom-4.png": films[3], "ward/readme.txt": b"hi"})}]


@pytest.mark.parametrize("width, height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_batch_page_in_chromium(tiny_experiment, uploads, tmp_path, width, height):
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)
    exp = runs.read_experiment(tiny_experiment)
    with streamlit_server(tiny_experiment.parent, tmp_path) as url, chromium_page(width=width, height=height) as page:
        page.goto(url + f"/batch?exp={exp.path.name}", wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name=f"Batch: {exp.name}")).to_be_visible()
        expect(page.get_by_text(f"at most {view.MAX_IMAGES} images per batch")).to_be_visible()
        page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(files=uploads)

        expect(page.get_by_role("heading", name="Predictions")).to_be_visible()
        expect(page.get_by_text("file(s) scored with")).to_be_visible()
        assert "5 file(s) scored with" in page.get_by_text("file(s) scored with").inner_text()
        expect(page.get_by_role("heading", name="Files that could not be used")).to_be_visible()
        expect(page.get_by_text("1 file(s) could not be used")).to_be_visible()
        page.wait_for_function("document.querySelectorAll(\"[data-testid='stTable']\").length >= 2", timeout=60_000)
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(1)
        page.wait_for_timeout(800)

        # what a reader sees: short names sorted, the badge right after, the photo greyed and withheld
        cells = page.evaluate(TABLE_JS)
        header, body = [c[0] for c in cells[0]], cells[1:]
        assert header[:2] == [view.FILE_COLUMN, view.VERDICT_COLUMN], header
        names = [r[0][0] for r in body]
        assert names == ["holiday.jpg", "phantom-1.png", "phantom-2.png", "phantom-3.png", "phantom-4.png"], names
        assert body[0][1][0] == view.BADGES["not a chest radiograph"], body[0]
        grey = "rgb(140, 140, 140)"  # view.GREY
        for r in body:  # a flagged row: greyed, no class named, no call; the others keep their colours
            if r[1][0].startswith("⚠"):
                assert all(c[1] == grey for c in r[2:]) and {c[0] for c in r[2:]} <= {view.WITHHELD, ""}, r
            else:
                assert all(c[1] != grey for c in r[2:] if c[0]), r
        bad = page.locator("[data-testid='stTable']").nth(1).inner_text()
        assert "corrupt.png" in bad and "not a readable image" in bad, bad

        # nothing cut, nothing scrolls sideways
        assert page.evaluate(CLIPPED_JS) == []
        assert page.locator("[data-testid='stDataFrame']").count() == 0
        box = page.locator("[data-testid='stTable']").first.bounding_box()
        assert box["x"] + box["width"] <= width

        expect(page.get_by_role("button", name="Download the table (CSV)")).to_be_visible()
        expect(page.get_by_role("button", name="Download the contact sheet (PNG)")).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator("[data-testid='stProgress']").count() == 0
        page.screenshot(path=str(tmp_path / f"batch-{width}-first-screen.png"))
        page.set_viewport_size({"width": width, "height": int(page.evaluate(PAGE_HEIGHT)) + 20})
        page.wait_for_timeout(500)
        assert page.evaluate(CLIPPED_JS) == []
        page.screenshot(path=str(tmp_path / f"batch-{width}.png"), full_page=True)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download the table (CSV)").click()
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0].startswith("experiment,trained,backbones,operating_point,file,error,")
        assert len(lines) == 7 and all(line.startswith(exp.name + ",") for line in lines[1:])
        assert "corrupt.png" in lines[-1] and "not a readable image" in lines[-1]
        assert any("more.zip:ward/phantom-3.png" in line for line in lines)
        page.wait_for_timeout(500)
        expect(page.locator("[data-testid='stImage'] img")).to_have_count(1)  # no rerun, no second sheet
