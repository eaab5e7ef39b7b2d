"""The Compare backbones page in a real browser: ``streamlit run app_pages/compare.py`` (or ``app.py``)
+ Debian chromium.

Checks what AppTest cannot: every plotly chart is drawn (with axis titles), no exception box, the
Heatmaps button under a gallery thumbnail shows both backbones' CAM overlays, and at 1280 and 1920 px
every table shows all its columns and cells. Saves ``$COVIDVIZ_SHOTS/compare*.png`` (one per section) and
``$COVIDVIZ_SHOTS/compare-{1280,1920}*.png`` for a human to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from covidviz.data.labels import MULTICLASS, MULTILABEL, NIH_FINDINGS
from covidviz.views.style import arch_label
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
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {n}", timeout=180_000)
    page.wait_for_timeout(1500)  # let the last chart finish its layout


def _shot(page, heading: str, name: str) -> None:
    page.get_by_role("heading", name=heading).first.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(600)
    page.screenshot(path=str(SCREENSHOTS / name))


def test_compare_page_renders_charts_and_heatmaps(tmp_path):
    from playwright.sync_api import expect

    root = tmp_path / "runs"
    # A 3-class experiment with real images and weights (for the heatmaps), which the address names (the
    # app never picks the newest by itself). The 14-finding one is walked by the slow test below.
    make_analysed(root, "covid3-demo", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS,
                  ["densenet121", "tinycnn"], n=160, images_dir=tmp_path / "images")
    expect.set_options(timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
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
        # One caption per backbone under the image (the gallery's intro also names class activation maps).
        captions = page.get_by_text(": class activation map for '")
        expect(captions.first).to_be_visible()
        expect(captions).to_have_count(2)
        _wait_charts(page, 5)
        assert page.locator("[data-testid='stException']").count() == 0
        for heading, name in SECTIONS:
            _shot(page, heading, name)


# ---------------------------------------------------------------- no clipped tables at two widths

WIDTHS = (1280, 1920)
ARCHS = {"nih14": ["densenet121", "resnet50"], "demo": ["densenet121", "resnet50", "tinycnn"]}

# Per table on the page: its box, the scroll box's overflow, and every header/cell box outside the table.
TABLE_BOXES = """() => [...document.querySelectorAll("[data-testid='stTable']")].filter(t => t.offsetParent !== null)
  .map(t => {
    const box = t.getBoundingClientRect(), scroll = t.firstElementChild.tagName === 'STYLE' ? t.children[1] : t.firstElementChild;
    const out = [...t.querySelectorAll('th, td')].filter(c => {
      const r = c.getBoundingClientRect();
      return r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1;
    }).map(c => c.innerText);
    const main = document.querySelector("[data-testid='stMainBlockContainer']").getBoundingClientRect();
    const cut = [...t.querySelectorAll('th, td')].filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.innerText);
    return {headers: [...t.querySelectorAll('thead th')].map(h => h.innerText.trim()), outside: out, cut: cut,
            text: t.innerText,
            overflow: scroll.scrollWidth - scroll.clientWidth, left: box.left, right: box.right,
            mainLeft: main.left, mainRight: main.right};
  })"""


def _tables(page) -> list[dict]:
    return page.evaluate(TABLE_BOXES)


def _assert_nothing_clipped(tables: list[dict], width: int) -> None:
    for t in tables:
        where = f"{width} px, table with headers {t['headers']}"
        assert t["overflow"] <= 1, f"{where}: scrolls sideways by {t['overflow']} px (columns hidden)"
        assert not t["outside"], f"{where}: cells outside the table's box: {t['outside']}"
        assert not t["cut"], f"{where}: cells whose text is cut: {t['cut']}"
        assert t["mainLeft"] - 1 <= t["left"] and t["right"] <= t["mainRight"] + 1, f"{where}: wider than the page"


def _open_expanders(page) -> None:
    for summary in page.locator("[data-testid='stExpander'] summary").all():
        summary.click()
    page.wait_for_timeout(800)


def _full_page_shot(page, path: Path) -> None:
    """Streamlit scrolls inside its main container: grow the viewport to the page, then shoot."""
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(height + 40, 12000)})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))


def _rendered_tables(page, url: str, exp: str) -> list[dict]:
    """Open the Compare page on ``exp``, wait until the script has drawn every section, open the
    expanders, and measure every table."""
    from playwright.sync_api import expect

    page.goto(f"{url}/compare?exp={exp}", wait_until="domcontentloaded")
    expect(page.get_by_role("heading", name=f"Compare backbones: {exp}")).to_be_visible(timeout=240_000)
    # The last section drawn (the script ran to the end), and the tables outside expanders: rates,
    # one confusion matrix per backbone, per-class AUCs, calibration.
    expect(page.get_by_role("heading", name="Training curves")).to_be_visible(timeout=240_000)
    n = 3 + len(ARCHS[exp])
    page.wait_for_function(f"document.querySelectorAll(\"[data-testid='stTable']\").length >= {n}", timeout=120_000)
    expect(page.locator("[data-testid='stTable']").filter(has_text="PPV at")).to_be_visible(timeout=120_000)
    page.wait_for_timeout(1500)
    _open_expanders(page)
    assert page.locator("[data-testid='stException']").count() == 0
    return _tables(page)


@pytest.mark.slow  # two widths of the whole page (~1 min); test_compare_page_renders_charts_and_heatmaps stays default
def test_compare_tables_show_every_column_at_1280_and_1920(tmp_path):
    """Every table of the page (threshold rates, confusion matrices, per-class AUCs, calibration,
    subgroups; expanders opened) fits its box at both widths: no sideways scroll, no header or cell
    outside it or cut. 14 findings with two backbones; 3 classes with three (the widest tables)."""
    root = tmp_path / "runs"
    make_analysed(root, "nih14", list(NIH_FINDINGS), MULTILABEL, ARCHS["nih14"], n=300)
    make_analysed(root, "demo", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS, ARCHS["demo"], n=160)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(root, tmp_path) as url:
        for width in WIDTHS:
            for exp in ("demo", "nih14"):
                with chromium_page(width=width, height=1000) as page:
                    tables = _rendered_tables(page, url, exp)
                    # The threshold table: backbones as columns, a row per rate (PPV and NPV included).
                    threshold = next((t for t in tables if "PPV at" in t["text"]), None)
                    assert threshold, (exp, width, [t["headers"] for t in tables])
                    assert threshold["headers"][1:] == [arch_label(a) for a in ARCHS[exp]], threshold["headers"]
                    assert all(r in threshold["text"] for r in ("Sensitivity", "Specificity", "PPV", "NPV"))
                    # rates, confusion matrices (+ argmax ones for multi-class), per-class, calibration, subgroups
                    want = 4 + len(ARCHS[exp]) * (2 if exp == "demo" else 1)
                    assert len(tables) == want, (exp, width, [t["headers"] for t in tables])
                    _assert_nothing_clipped(tables, width)
                    # Captions link their statistics to the glossary.
                    assert page.locator("a[href='/glossary#youdens-j']").count() >= 1
                    if exp == "demo":
                        _full_page_shot(page, SCREENSHOTS / f"compare-{width}.png")
                        page.locator("[data-testid='stTable']").filter(has_text="PPV at").screenshot(
                            path=str(SCREENSHOTS / f"compare-{width}-threshold.png"))
                        page.locator("[data-testid='stTable']").filter(has_text="Macro average").screenshot(
                            path=str(SCREENSHOTS / f"compare-{width}-per-class.png"))
