"""The latent-space page in Debian chromium: draw a box selection with the mouse and see the gallery.

Serves ``app_pages/latent.py`` on its own (app.py's page list is the lead's) over a small synthetic
analysed experiment built by ``bench/latent.py`` (no training), so the test knows where the points
are. Saves ``screenshots/latent.png`` (maps + gallery) and ``screenshots/latent-open.png``.
"""

from __future__ import annotations

import numpy as np

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


def test_box_selection_shows_gallery_and_opens_an_image(tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    folder = build_experiment(tmp_path / "runs", n=2000, name="latent-browser")
    coords = np.load(folder / runs.BACKBONES / ARCHS[0] / runs.PROJECTIONS)["coords_tsne"]
    box = box_around(coords, 60)
    with streamlit_server(folder.parent, tmp_path, script="app_pages/latent.py") as url, \
            chromium_page(height=2400) as page:
        page.goto(url, wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name="Latent space: latent-browser")).to_be_visible()
        page.wait_for_function(DRAWN_JS, arg=2, timeout=60_000)
        page.wait_for_timeout(1000)  # let plotly finish its layout before we read axis pixels
        assert page.get_by_text("Map quality").count() == 2  # quality next to each map
        drag_box(page, 0, box)
        page.wait_for_function(GALLERY_JS, timeout=60_000)
        page.wait_for_function(RINGED_JS, timeout=60_000)  # the selection is ringed on BOTH maps
        selected = page.evaluate(SELECTED_COUNT_JS)
        ringed = [set(int(c[0]) for c in page.evaluate(
            f"() => document.querySelectorAll('.js-plotly-plot')[{i}]._fullData"
            ".find(t => t.name.startsWith('selected')).customdata")) for i in (0, 1)]
        assert ringed[0] == ringed[1] and len(ringed[0]) == selected  # same images on the other backbone's map
        x0, x1, y0, y1 = box[:4]
        rows_inside = set(np.flatnonzero((coords[:, 0] >= x0) & (coords[:, 0] <= x1)
                                         & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)).tolist())
        # The mouse works in whole pixels, the box was computed in data units: only edge points may differ.
        assert len(ringed[0] ^ rows_inside) <= 8, (selected, len(rows_inside))
        images = page.locator("img.latent-thumb")
        expect(images.first).to_be_visible()
        assert images.count() == min(selected, 24)
        expect(page.get_by_text("Class mix")).to_be_visible()
        expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0
        page.wait_for_timeout(800)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "latent.png"))
        # Open the first gallery image: its detail header appears (no original on disk -> thumbnail).
        page.locator("[data-testid='stButton'] button").filter(has_text="Open").first.click()
        expect(page.get_by_role("heading", name="Image bench:")).to_be_visible()
        expect(page.get_by_text("The original image cannot be read")).to_have_count(2)
        expect(page.get_by_text(f"{selected} images selected")).to_be_visible()  # opening keeps the selection
        assert page.locator("[data-testid='stException']").count() == 0
        page.wait_for_timeout(800)
        page.screenshot(path=str(SCREENSHOTS / "latent-open.png"))
