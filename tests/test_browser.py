"""The running app in a real browser: ``streamlit run app.py`` driven by Debian chromium via Playwright.

Checks what AppTest cannot: the server starts with the repo's config, the page renders in a browser
(title, notice, plotly charts drawn), and the sidebar picker switches experiments. Saves
``screenshots/overview.png`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app_fixtures import make_fake_experiment

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian chromium not installed at {CHROMIUM} "
                       "(apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"streamlit not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path):
    """A streamlit server on a free port over two fake experiments; killed however the test ends."""
    root = tmp_path / "runs"
    make_fake_experiment(root, "older-run", n=40, completed="2026-11-20T09:00:00")
    make_fake_experiment(root, "covid3-demo", n=60, completed="2026-11-25T19:00:00",
                         init_warning="ImageNet weights could not be downloaded (offline); trained from random init.")
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "COVIDVIZ_RUNS": str(root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            # Tall viewport: Streamlit scrolls inside its own container, so a full-page screenshot
            # would only show the first screen.
            yield browser.new_page(viewport={"width": 1400, "height": 4200})
        finally:
            browser.close()


def test_overview_renders_in_chromium(server, page):
    from playwright.sync_api import expect

    # Streamlit streams elements in as the script runs: wait (expect) rather than count at once.
    expect.set_options(timeout=60_000)
    page.goto(server, wait_until="domcontentloaded")
    expect(page.get_by_role("heading", name="Overview: covid3-demo")).to_be_visible()
    expect(page.get_by_text("For research and education only")).to_have_count(1)
    expect(page.get_by_text("ImageNet weights could not be downloaded")).to_have_count(1)
    # Plotly draws asynchronously; wait for all three charts (AUC bars, loss, validation AUC).
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000)
    page.wait_for_timeout(1500)  # let the last chart finish its layout before the screenshot
    assert page.locator(".js-plotly-plot .xtitle").first.is_visible()
    assert page.locator("[data-testid='stException']").count() == 0
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"))

    # The sidebar picker switches the whole page to the other experiment.
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").click()
    page.get_by_role("option", name="older-run · 2026-11-20 09:00").click()
    expect(page.get_by_role("heading", name="Overview: older-run")).to_be_visible()
    images = page.locator("[data-testid='stMetric']", has_text="Images").locator("[data-testid='stMetricValue']")
    expect(images).to_have_text("40")
    assert page.locator("[data-testid='stException']").count() == 0
