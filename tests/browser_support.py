"""Shared pieces of the browser tests: a real ``streamlit run app.py`` server and a Debian chromium page.

Use from a test module::

    from tests.browser_support import CHROMIUM_MARKS, SCREENSHOTS, chromium_page, streamlit_server
    pytestmark = CHROMIUM_MARKS

    def test_x(tmp_path):
        with streamlit_server(runs_root, tmp_path) as url, chromium_page() as page:
            page.goto(url + "/diagnose") ...
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Screenshots for a human to look at go to a temporary folder ($COVIDVIZ_SHOTS, default
# <tmp>/covidviz-shots), never into the repository: docs/ images are taken on purpose, not by tests.
SCREENSHOTS = Path(os.environ.get("COVIDVIZ_SHOTS", Path(tempfile.gettempdir()) / "covidviz-shots"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

CHROMIUM_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Debian chromium not installed at {CHROMIUM} "
                       "(apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
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


@contextlib.contextmanager
def streamlit_server(runs_root: Path, log_dir: Path, script: str = "app.py"):
    """Serve ``script`` over the experiments in ``runs_root`` on a free port; yields the base URL."""
    port = free_port()
    log = Path(log_dir) / f"streamlit-{port}.log"
    env = {**os.environ, "COVIDVIZ_RUNS": str(runs_root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 4200):
    """A Playwright page in Debian chromium (tall viewport: Streamlit scrolls inside its container)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
