#!/usr/bin/env python
"""Screenshots of every page of one experiment, as a user sees them, for docs/ (issue 25).

Serves ``app.py`` over a runs folder, opens each page in Debian's chromium (Playwright) at the given
window widths, on Diagnose uploads ``--film`` (a real X-ray), on Batch uploads ``--batch`` files (films
and, to show the refusal, a bad file), and saves two images per page and width:

- ``OUT/PREFIX-PAGE-WIDTH.png``: the first screen (what a user sees before scrolling);
- ``OUT/PREFIX-PAGE-WIDTH-full.png`` (with ``--full``): the whole page, its sections as they open.

    python tools/screenshots.py --exp covid3 --film ../shared/data/covid3/images/x.png \\
        --batch a.png b.png notes.txt --widths 1280 1920 --out docs --prefix page-covid3

Screenshots are taken on purpose by this script; tests never write into docs/ (they save theirs to a
temporary folder). Streamlit scrolls inside its own container, so the whole page is taken by growing
the window to the container's height.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HEIGHTS = {1280: 800, 1920: 1080}
PAGES = [("Overview", "Overview:"), ("Diagnose", "Diagnose:"), ("Batch", "Batch:"),
         ("Compare backbones", "Compare backbones:"), ("Latent space", "Latent space:"),
         ("Self-organizing map", "Self-organizing map:"), ("Glossary", "Glossary")]
# The script has finished and every chart has drawn (the browser tests wait the same way).
SETTLED = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  return [...document.querySelectorAll("[data-testid='stPlotlyChart']")].every(c => c.querySelector('.main-svg'));
}"""
MAIN_HEIGHT = "() => document.querySelector(\"[data-testid='stMain']\")?.scrollHeight || 0"


def serve(runs: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "COVIDVIZ_RUNS": str(runs), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none"], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"streamlit did not answer in 120 s; see {log}")


def settle(page, ms: int = 400) -> None:
    page.wait_for_function(SETTLED, timeout=300_000)
    page.wait_for_timeout(ms)  # a script may rerun itself right after finishing (Diagnose does)
    page.wait_for_function(SETTLED, timeout=300_000)


def upload(page, files: list[Path]) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files([str(f) for f in files])
    page.wait_for_timeout(1500)
    settle(page, 1500)


def shoot(page, path: Path, width: int, full: bool) -> None:
    page.set_viewport_size({"width": width, "height": HEIGHTS.get(width, 900)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    print("wrote", path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    if full:
        tall = min(int(page.evaluate(MAIN_HEIGHT)) + 60, 12_000)
        page.set_viewport_size({"width": width, "height": max(tall, HEIGHTS.get(width, 900))})
        page.wait_for_timeout(800)
        full_path = path.with_name(path.stem + "-full.png")
        page.screenshot(path=str(full_path))
        print("wrote", full_path.relative_to(REPO) if full_path.is_relative_to(REPO) else full_path)


def what_ifs(page, path: Path) -> None:
    """Open "Test this explanation", run it, and save that section (the chart and its summary line)."""
    section = page.get_by_test_id("stExpander").filter(has_text="Test this explanation")
    section.locator("summary").first.click()
    page.get_by_role("button", name="Run the what-ifs").click()
    section.get_by_test_id("stPlotlyChart").first.wait_for(timeout=600_000)
    settle(page, 1500)
    box = section.first.bounding_box()  # Streamlit scrolls inside its container: grow the window to hold it
    page.set_viewport_size({"width": page.viewport_size["width"], "height": int(box["y"] + box["height"]) + 200})
    page.wait_for_timeout(800)
    section.first.screenshot(path=str(path))
    print("wrote", path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=REPO / "runs")
    ap.add_argument("--exp", required=True, help="the experiment's folder name in --runs")
    ap.add_argument("--film", type=Path, help="the X-ray Diagnose is shown with")
    ap.add_argument("--batch", type=Path, nargs="*", default=[], help="files for the Batch page")
    ap.add_argument("--widths", type=int, nargs="+", default=[1280])
    ap.add_argument("--pages", nargs="*", help="navigation entries to take (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    ap.add_argument("--prefix", default="page")
    ap.add_argument("--full", action="store_true", help="also the whole page")
    ap.add_argument("--whatif", action="store_true",
                    help="on Diagnose, also run \"Test this explanation\" and save PREFIX-whatif-WIDTH.png")
    args = ap.parse_args(argv)
    if not (args.runs / args.exp / "manifest.json").exists():
        raise SystemExit(f"no experiment {args.exp!r} in {args.runs}")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    pages = [p for p in PAGES if not args.pages or p[0] in args.pages]
    proc, url = serve(args.runs, Path(tempfile.gettempdir()) / f"covidviz-screenshots-{os.getpid()}.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for width in args.widths:
                page = browser.new_page(viewport={"width": width, "height": HEIGHTS.get(width, 900)})
                page.goto(f"{url}/?exp={args.exp}", wait_until="domcontentloaded")
                settle(page)
                for nav, title in pages:
                    page.set_viewport_size({"width": width, "height": HEIGHTS.get(width, 900)})
                    page.locator("[data-testid='stSidebarNav'] a", has_text=nav).first.click()
                    page.get_by_role("heading", name=title).first.wait_for(timeout=300_000)
                    settle(page)
                    if nav == "Diagnose" and args.film:
                        upload(page, [args.film])
                    if nav == "Batch" and args.batch:
                        upload(page, args.batch)
                    slug = nav.split()[0].lower()
                    shoot(page, args.out / f"{args.prefix}-{slug}-{width}.png", width, args.full)
                    if nav == "Diagnose" and args.whatif:
                        what_ifs(page, args.out / f"{args.prefix}-whatif-{width}.png")
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
