"""How long the SOM page takes to show its maps in headless chromium, for a 10,000-image experiment.

    python -m bench.som_page [--n 10000] [--big-grid 50 50]

Builds (in a temp folder) a fake experiment with two backbones through ``runs.ExperimentWriter`` and
the analysis step's SOM writer on clustered random features: once with the default grid (about
5 * sqrt(N_train) nodes) and once with the largest grid the analysis makes (2500 nodes). For each it
serves ``app_pages/som.py`` and prints, measured in one run: cold load (server imports + reading the SOM),
reload (cached), prototypes on (mosaic + redraw), selecting the dominant-class layer, and the ratio
of the 2500-node map's reload to the default one's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from covidviz import runs
from tests.browser_support import chromium_page, streamlit_server
from tests.test_browser_som import choose, make_big_experiment, open_page

REPO = Path(__file__).resolve().parents[1]


def measure(root: Path, log_dir: Path) -> dict:
    with streamlit_server(root, log_dir, script="app_pages/som.py") as url, chromium_page(height=2400) as page:
        out = {"cold": open_page(page, url, 2), "reload": open_page(page, url, 2)}
        t0 = time.perf_counter()
        page.get_by_text("Prototype pictures").click()
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .layer-above image').length >= 2",
                               timeout=120_000)
        out["prototypes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        choose(page, "Layer", "Dominant class and purity")
        page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot .legendtext')]"
                               ".some(e => e.textContent === 'Lung Opacity')", timeout=120_000)
        out["dominant_layer"] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--big-grid", type=int, nargs=2, default=(50, 50))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for label, grid, iters in (("default grid", None, None), (f"{args.big_grid[0]}x{args.big_grid[1]} grid",
                                                                   tuple(args.big_grid), 10_000)):
            root = tmp / label.replace(" ", "_")
            t0 = time.perf_counter()
            folder = make_big_experiment(root, n=args.n, grid=grid, iterations=iters)
            g = runs.read_experiment(folder).som_info("densenet121").grid
            print(f"[{label}] built {args.n} images, SOM {g[0]}x{g[1]} = {g[0] * g[1]} nodes "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
            results[label] = measure(root, tmp)
            print(f"[{label}] " + ", ".join(f"{k} {v:.2f} s" for k, v in results[label].items()), flush=True)
        a, b = results.values()
        print(f"ratio (largest grid / default grid): reload {b['reload'] / a['reload']:.2f}x, "
              f"prototypes {b['prototypes'] / a['prototypes']:.2f}x")


if __name__ == "__main__":
    main()
