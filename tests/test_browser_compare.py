"""The Compare backbones page in a real browser: ``streamlit run app_pages/compare.py`` + Debian chromium.

Checks what AppTest cannot: every plotly chart is drawn (with axis titles), no exception box, and the
Heatmaps button under a gallery thumbnail shows both backbones' CAM overlays. Saves
``screenshots/compare*.png`` (one per section) for a human to look at.
"""

from __future__ import annotations

from covidviz.data.labels import MULTICLASS, MULTILABEL, NIH_FINDINGS
from tests.browser_support import CHROMIUM_MARKS, SCREENSHOTS, chromium_page, streamlit_server
from tests.test_compare_page import make_analysed

pytestmark = CHROMIUM_MARKS

SECTIONS = [("Compare backbones: covid3-demo", "compare.png"),
            ("ROC and precision–recall", "compare-roc.png"),
            ("Operating point", "compare-operating-point.png"),
            ("Per-class AUC and paired tests", "compare-table.png"),
            ("Calibration", "compare-calibration.png"),
            ("Where the backbones disagree", "compare-gallery.png"),
            ("Subgroups", "compare-subgroups.png"),
            ("Training curves", "compare-training.png")]


def _wait_charts(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {n}", timeout=60_000)
    page.wait_for_timeout(1500)  # let the last chart finish its layout


def _shot(page, heading: str, name: str) -> None:
    page.get_by_role("heading", name=heading).first.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(600)
    page.screenshot(path=str(SCREENSHOTS / name))


def test_compare_page_renders_charts_and_heatmaps(tmp_path):
    from playwright.sync_api import expect

    root = tmp_path / "runs"
    # Two experiments: 14 findings (multi-label) and a 3-class one with real images and weights (for the
    # heatmaps), opened by its address (the app never picks the newest for the user).
    make_analysed(root, "nih14", list(NIH_FINDINGS), MULTILABEL, ["densenet121", "resnet50"], n=300)
    make_analysed(root, "covid3-demo", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS,
                  ["densenet121", "tinycnn"], n=160, images_dir=tmp_path / "images")
    expect.set_options(timeout=60_000)
    SCREENSHOTS.mkdir(exist_ok=True)
    with streamlit_server(root, tmp_path, script="app_pages/compare.py") as url, chromium_page(height=1100) as page:
        page.goto(url + "/?exp=covid3-demo", wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name="Compare backbones: covid3-demo")).to_be_visible()
        expect(page.get_by_text("For research and education only")).to_have_count(1)
        # ROC, PR, reliability, subgroups, training curves.
        _wait_charts(page, 5)
        assert page.locator(".js-plotly-plot .xtitle").count() >= 5
        assert page.locator(".js-plotly-plot .ytitle").count() >= 4  # subgroup rows are labelled, no y title
        legend = page.locator(".js-plotly-plot").first.locator(".legendtext").all_text_contents()
        assert any("95% CI" in t for t in legend), legend
        expect(page.get_by_text("Confounding.", exact=False).first).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0

        page.get_by_role("button", name="Heatmaps").first.click()
        expect(page.get_by_text("class activation map").first).to_be_visible()
        expect(page.get_by_text("class activation map")).to_have_count(2)
        _wait_charts(page, 5)
        assert page.locator("[data-testid='stException']").count() == 0
        for heading, name in SECTIONS:
            _shot(page, heading, name)

        # The sidebar picker: the 14-finding experiment renders too.
        page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").click()
        page.get_by_role("option", name="nih14", exact=False).click()
        expect(page.get_by_role("heading", name="Compare backbones: nih14")).to_be_visible()
        _wait_charts(page, 5)
        assert page.locator("[data-testid='stException']").count() == 0
        _shot(page, "Per-class AUC and paired tests", "compare-nih14-table.png")
