"""The running app in a real browser: ``streamlit run app.py`` driven by Debian chromium via Playwright.

Checks what AppTest cannot: the server starts with the repo's config, the page renders in a browser
(title, notice, plotly charts drawn), and the sidebar picker switches experiments. Saves
``$COVIDVIZ_SHOTS/overview.png`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import pytest

from tests.app_fixtures import make_fake_experiment
from tests.browser_support import CHROMIUM_MARKS, SCREENSHOTS, chromium_page, streamlit_server

pytestmark = CHROMIUM_MARKS


@pytest.fixture
def server(tmp_path):
    """A streamlit server on a free port over two fake experiments; killed however the test ends."""
    root = tmp_path / "runs"
    make_fake_experiment(root, "older-run", n=40, completed="2026-11-20T09:00:00")
    make_fake_experiment(root, "covid3-demo", n=60, completed="2026-11-25T19:00:00",
                         init_warning="ImageNet weights could not be downloaded (offline); trained from random init.")
    with streamlit_server(root, tmp_path) as url:
        yield url


@pytest.fixture
def page():
    with chromium_page() as p:
        yield p


def test_overview_renders_in_chromium(server, page):
    from playwright.sync_api import expect

    # Streamlit streams elements in as the script runs: wait (expect) rather than count at once.
    expect.set_options(timeout=60_000)
    # Two experiments and no demo: nothing is chosen for the user; the address names the experiment.
    page.goto(server, wait_until="domcontentloaded")
    expect(page.get_by_role("heading", name="Choose an experiment")).to_be_visible()
    page.goto(server + "/?exp=covid3-demo", wait_until="domcontentloaded")
    expect(page.get_by_role("heading", name="Overview: covid3-demo")).to_be_visible()
    expect(page.get_by_text("For research and education only")).to_have_count(1)
    expect(page.get_by_text("ImageNet weights could not be downloaded")).to_have_count(1)
    # Plotly draws asynchronously; wait for both charts (AUC bars, training curves).
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
    page.wait_for_timeout(1500)  # let the last chart finish its layout before the screenshot
    assert page.locator(".js-plotly-plot .xtitle").first.is_visible()
    assert page.locator("[data-testid='stException']").count() == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"))

    # The sidebar picker switches the whole page to the other experiment.
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").click()
    page.get_by_role("option", name="older-run", exact=True).click()
    expect(page.get_by_role("heading", name="Overview: older-run")).to_be_visible()
    images = page.locator("[data-testid='stMetric']", has_text="Images").locator("[data-testid='stMetricValue']")
    expect(images).to_have_text("40")
    assert page.locator("[data-testid='stException']").count() == 0
    assert "exp=older-run" in page.url  # the choice is in the address, so the link can be shared


def test_deep_link_on_a_fresh_server_uses_the_router(server, page):
    """Opening /diagnose first on a fresh server must not fall back to legacy pages/ mode."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    page.goto(server + "/diagnose", wait_until="domcontentloaded")
    nav = page.locator("[data-testid='stSidebarNav']")
    expect(nav).to_contain_text("Compare backbones")
    expect(nav).not_to_contain_text("overview")  # a legacy file-name entry
    expect(page.get_by_text("For research and education only")).to_have_count(1)
