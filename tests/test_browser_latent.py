"""The latent-space page in Debian chromium: draw a box selection with the mouse and see the gallery;
at 1280 and 1920 px the class mix and the gallery's captions fit (nothing clipped).

Serves ``app_pages/latent.py`` on its own (app.py's page list is the lead's) over a small synthetic
analysed experiment built by ``bench/latent.py`` (no training), so the test knows where the points
are. Screenshots: ``$COVIDVIZ_SHOTS/latent.png`` (maps + gallery), ``$COVIDVIZ_SHOTS/latent-open.png``, and
``$COVIDVIZ_SHOTS/latent-1280.png`` and ``latent-1920.png`` (a temporary folder by default).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench.latent import (
    ARCHS,
    DRAWN_JS,
    GALLERY_JS,
    RINGED_JS,
    SELECTED_COUNT_JS,
    box_around,
    build_experiment,
    drag_box,
)
from covidviz import runs
from tests.browser_support import CHROMIUM_MARKS, SCREENSHOTS, chromium_page, streamlit_server

pytestmark = CHROMIUM_MARKS

# Rows plotly itself shows selected on each map (the map the box was drawn on keeps its own selection).
NATIVE_ROWS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(g => g._fullData.flatMap(t =>
    (t.selectedpoints || []).map(i => Math.round(t.customdata[i][0]))))"""
RING_ROWS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(g => {
    const t = g._fullData.find(t => (t.name || '').startsWith('selected'));
    return t ? [...t.customdata].map(c => Math.round(c[0])) : null; })"""

# Where the class mix's headers and the gallery's captions are, against the boxes that hold them.
LAYOUT_JS = """() => {
  const mix = document.querySelector('table.latent-mix');
  const column = mix.closest("[data-testid='stElementContainer']").getBoundingClientRect();
  const box = mix.getBoundingClientRect();
  const gallery = document.querySelector('.latent-gallery').getBoundingClientRect();
  return {
    column: [column.left, column.right], table: [box.left, box.right],
    headers: [...mix.querySelectorAll('th')].map(h => { const r = h.getBoundingClientRect();
                                                        return [h.innerText, r.left, r.right]; }),
    gallery: [gallery.left, gallery.right],
    captions: [...document.querySelectorAll('figcaption.latent-caption')].map(c => {
      const r = c.getBoundingClientRect(), f = c.closest('figure').getBoundingClientRect();
      return {text: c.innerText, full: c.textContent, scroll: c.scrollWidth, client: c.clientWidth,
              inside: r.left >= f.left - 0.5 && r.right <= f.right + 0.5 && f.left >= gallery.left - 0.5
                      && f.right <= gallery.right + 0.5}; }),
  };
}"""


@pytest.fixture(scope="module")
def latent_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("latent-browser")
    folder = build_experiment(tmp / "runs", n=2000, name="latent-browser")
    coords = np.load(folder / runs.BACKBONES / ARCHS[0] / runs.PROJECTIONS)["coords_tsne"]
    with streamlit_server(folder.parent, tmp, script="app_pages/latent.py") as url:
        yield url, folder, coords


def select_box(page, url: str, coords: np.ndarray, target: int = 60):
    """Open the page, draw a box around ~``target`` points on the left map, wait for the gallery."""
    box = box_around(coords, target)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(DRAWN_JS, arg=2, timeout=60_000)
    page.wait_for_timeout(1000)  # let plotly finish its layout before we read axis pixels
    drag_box(page, 0, box)
    page.wait_for_function(GALLERY_JS, timeout=60_000)
    return box


def test_box_selection_shows_gallery_and_opens_an_image(latent_server):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    url, folder, coords = latent_server
    with chromium_page(height=2400) as page:
        box = select_box(page, url, coords)
        expect(page.get_by_role("heading", name="Latent space: latent-browser")).to_be_visible()
        assert page.get_by_text("Map quality").count() == 2  # quality next to each map
        page.wait_for_function(RINGED_JS, timeout=60_000)  # the selection shows on BOTH maps
        selected = page.evaluate(SELECTED_COUNT_JS)
        native, rings = page.evaluate(NATIVE_ROWS_JS), page.evaluate(RING_ROWS_JS)
        # The left map keeps plotly's own selection (it is not redrawn); the right one rings the same images.
        assert rings[0] is None and set(native[0]) == set(rings[1]) and len(rings[1]) == selected
        x0, x1, y0, y1 = box[:4]
        rows_inside = set(np.flatnonzero((coords[:, 0] >= x0) & (coords[:, 0] <= x1)
                                         & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)).tolist())
        # The mouse works in whole pixels, the box was computed in data units: only edge points may differ.
        assert len(set(rings[1]) ^ rows_inside) <= 8, (selected, len(rows_inside))
        images = page.locator("img.latent-thumb")
        expect(images.first).to_be_visible()
        assert images.count() == min(selected, 24)
        expect(page.get_by_text("Class mix")).to_be_visible()
        expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0
        page.wait_for_timeout(800)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "latent.png"))
        # Open the first gallery image from the picker: its detail header appears (no original on disk ->
        # thumbnail), the selection stays, and the maps are redrawn with its cross.
        page.locator("[data-testid='stSelectbox']").filter(has_text="Open an image").click()
        page.get_by_role("option").first.click()
        expect(page.get_by_role("heading", name="Image bench:")).to_be_visible()
        expect(page.get_by_text("The original image cannot be read")).to_have_count(2)
        expect(page.get_by_text(f"{selected} images selected")).to_be_visible()  # opening keeps the selection
        page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].every(g => "
                               "g._fullData.some(t => t.name === 'opened image'))", timeout=60_000)
        assert page.locator("[data-testid='stException']").count() == 0
        page.wait_for_timeout(800)
        page.screenshot(path=str(SCREENSHOTS / "latent-open.png"))


@pytest.mark.slow  # two widths (~20 s); the box-selection test stays default
@pytest.mark.parametrize("width", [1280, 1920])
def test_class_mix_and_gallery_captions_are_not_clipped(latent_server, width):
    url, folder, coords = latent_server
    with chromium_page(width=width, height=2400) as page:
        select_box(page, url, coords, target=60)
        page.wait_for_timeout(1500)
        lay = page.evaluate(LAYOUT_JS)
        left, right = lay["column"]
        assert lay["table"][0] >= left - 0.5 and lay["table"][1] <= right + 0.5, lay  # the table fits the page
        assert [h[0] for h in lay["headers"]] == ["Class", "Labelled", "Share", "DenseNet121", "ResNet50"]
        for name, h_left, h_right in lay["headers"]:  # every header cell inside the table's box
            assert lay["table"][0] - 0.5 <= h_left and h_right <= lay["table"][1] + 0.5, (name, lay)
        captions = lay["captions"]
        assert len(captions) == min(page.evaluate(SELECTED_COUNT_JS), 24)
        for k, c in enumerate(captions):
            assert c["inside"] and c["scroll"] <= c["client"] + 1, c  # wraps inside its cell, nothing cut
            assert c["text"].replace("\n", " ").strip() == c["full"].strip(), c
            # "number. file name · true: … · pred: …" (the bench's ids are "bench:000123": the name is 000123)
            assert re.fullmatch(rf"{k + 1}\. \d{{6}}", c["full"].split(" · ")[0]) and " · true: " in c["full"], c
        assert page.locator("[data-testid='stException']").count() == 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"latent-{width}.png"))
