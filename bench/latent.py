"""Latent-space page at scale: a synthetic 100k-image experiment in headless Debian chromium.

Builds (without training or decoding any image) an experiment with N images and two backbones
through ``runs.ExperimentWriter`` — manifest, images table, thumbnails, fake features/predictions —
plus the analysis files the page reads (``projections.npz/.json`` with clustered t-SNE/UMAP/PCA
coordinates and quality numbers). Then serves ``app_pages/latent.py`` and measures, in chromium:

1. render: from navigation to both WebGL maps drawn (every point; nothing is downsampled);
2. select: a mouse box drawn over about 1,000 points on the left map; from mouse-up to the count and
   class mix shown, to the first gallery page's thumbnails loaded, and to the selection shown on both
   maps (the left map keeps plotly's own selection; the right one is redrawn with the selection ringed,
   in a follow-up run after the gallery, see ``views.latent_selection.next_drawing``).

    python -m bench.latent [--n 100000] [--select 1000] [--keep DIR [--reuse]]

Prints the figures (seconds) and the sizes involved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz import runs

REPO = Path(__file__).resolve().parents[1]

NAMES = ["COVID-19", "Normal", "Pneumonia"]
ARCHS = ("densenet121", "resnet50")
SPLITS = ("train", "train", "train", "val", "test")


def _coords(rng, labels: np.ndarray, clusters_per_class: int = 4, spread: float = 1.0) -> np.ndarray:
    """Gaussian blobs: a few clusters per class on a ring, like a t-SNE of a decent model."""
    n = len(labels)
    cluster = labels * clusters_per_class + rng.integers(0, clusters_per_class, n)
    k = len(NAMES) * clusters_per_class
    angle = 2 * np.pi * np.arange(k) / k
    centres = np.column_stack([30 * np.cos(angle), 30 * np.sin(angle)])
    return (centres[cluster] + rng.normal(scale=3.0 * spread, size=(n, 2))).astype(np.float32)


def build_experiment(root: Path, n: int = 100_000, name: str = "bench-latent", seed: int = 0) -> Path:
    """Publish a synthetic analysed experiment ``root/name`` with ``n`` images; return its folder."""
    import torch

    rng = np.random.default_rng(seed)
    labels = rng.choice(len(NAMES), size=n, p=[0.2, 0.45, 0.35])
    table = pd.DataFrame({
        "image_id": [f"bench:{i:06d}" for i in range(n)],
        "path": [f"/nonexistent/bench/{i:06d}.png" for i in range(n)],
        "labels": np.asarray(NAMES, dtype=object)[labels],
        "patient_id": [f"bench:p{i // 2}" for i in range(n)],
        "dataset": "synthetic", "source": np.where(rng.random(n) < 0.7, "hospital-A", "hospital-B"),
        "view": "PA", "sex": np.where(rng.random(n) < 0.5, "M", "F"),
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.integers(18, 90, n)).astype(np.float64),
        "given_split": "", "bbox": "", "mask": "",
    })
    table["split"] = np.asarray(SPLITS, dtype=object)[(np.arange(n) // 2) % len(SPLITS)]
    writer = runs.ExperimentWriter(root, name, overwrite=True)
    backbones = {a: {"init": {"weights": "none", "source": "random"}, "feature_dim": 8, "cam_layer": "features"}
                 for a in ARCHS}
    writer.write_manifest({
        "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dataset": {"specs": ["bench:synthetic"], "n_images": n},
        "labels": {"names": NAMES, "task": "multiclass"},
        "split": {"seed": seed},
        "preprocessing": {"image_size": 64, "channels": 3, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]},
        "config": {"bench": True}, "backbones": backbones})
    writer.write_images(table)
    # Thumbnails: 64 gradient/noise patterns, one per image by index (no decoding; ~4 kB per image).
    yy, xx = np.mgrid[0:64, 0:64]
    patterns = np.stack([((xx * (1 + k % 4) + yy * (1 + k // 16) + 17 * k) % 256) for k in range(64)]).astype(np.uint8)
    writer.write_thumbnails(patterns[np.arange(n) % 64])
    for k, arch in enumerate(ARCHS):
        logits = rng.normal(size=(n, len(NAMES))) + 2.0 * np.eye(len(NAMES))[labels] * (1 - 0.2 * k)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        preds = pd.DataFrame({"image_id": table["image_id"],
                              **{runs.PROB_PREFIX + c: probs[:, j].astype(np.float32) for j, c in enumerate(NAMES)}})
        writer.write_backbone(arch, {"head.weight": torch.zeros(len(NAMES), 8)}, preds,
                              rng.normal(size=(n, 8)).astype(np.float16), [{"epoch": 1, "train_loss": 1.0}])
    folder = writer.commit()
    exp = runs.read_experiment(folder)
    for k, arch in enumerate(ARCHS):
        arrays = {"coords_tsne": _coords(rng, labels, spread=1 + 0.3 * k),
                  "coords_umap": _coords(rng, labels, clusters_per_class=2, spread=0.7),
                  "coords_pca": rng.normal(size=(n, 2)).astype(np.float32) + labels[:, None].astype(np.float32)}
        exp.save_arrays(runs.PROJECTIONS, arrays, arch)
        quality = {"sample_size": 2000, "k": 10, "trustworthiness_k": 10, "features_knn_agreement": 0.81,
                   **{m: {"trustworthiness": 0.9 - 0.1 * j, "knn_agreement": 0.78 - 0.1 * j}
                      for j, m in enumerate(("tsne", "umap", "pca"))}}
        exp.save_json(runs.PROJECTIONS_INFO, {"methods": ["pca", "tsne", "umap"], "params": {"synthetic": True},
                                              "quality": quality, "fit_seconds": {}}, arch)
    return folder


def box_around(coords: np.ndarray, target: int) -> tuple[float, float, float, float, int]:
    """A square (x0, x1, y0, y1) centred on the densest cluster holding about ``target`` points."""
    centre = np.median(coords[coords[:, 0] > np.percentile(coords[:, 0], 90)], axis=0)
    lo, hi = 0.0, float(np.ptp(coords))
    for _ in range(40):
        half = (lo + hi) / 2
        inside = int((np.abs(coords - centre) <= half).all(1).sum())
        lo, hi = (half, hi) if inside < target else (lo, half)
    half = (lo + hi) / 2
    inside = int((np.abs(coords - centre) <= half).all(1).sum())
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half, inside


DRAWN_JS = """(n) => { const gds = [...document.querySelectorAll('.js-plotly-plot')];
  return gds.length >= n && gds.every(g => g._fullLayout && g._fullData && g._fullData.length > 0
      && g.querySelector('canvas') && !g.querySelector('.gl-container:empty')); }"""
TO_PIXELS_JS = """([i, x0, x1, y0, y1]) => { const g = document.querySelectorAll('.js-plotly-plot')[i];
  const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
  return [r.left + xa._offset + xa.d2p(x0), r.left + xa._offset + xa.d2p(x1),
          r.top + ya._offset + ya.d2p(y1), r.top + ya._offset + ya.d2p(y0)]; }"""


def drag_box(page, chart: int, box) -> None:
    """Draw a selection box on the ``chart``-th plotly map with the mouse (dragmode is 'select')."""
    left, right, top, bottom = page.evaluate(TO_PIXELS_JS, [int(chart), *map(float, box[:4])])
    page.mouse.move(left, top)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(left + (right - left) * k / 8, top + (bottom - top) * k / 8)
    page.mouse.up()


GALLERY_JS = """() => document.body.innerText.includes(' images selected') &&
  [...document.querySelectorAll('img.latent-thumb')].some(i => i.complete && i.naturalWidth > 0)"""
# The selection is shown on a map either by its rings (a trace named "selected (N)") or, on the map it
# was drawn on, by plotly's own selection (the box or lasso stays, the other points are dimmed).
RINGED_JS = """() => { const gds = [...document.querySelectorAll('.js-plotly-plot')];
  return gds.length >= 2 && gds.every(g => g._fullData.some(t => (t.name || '').startsWith('selected'))
                                           || (g._fullLayout.selections || []).length > 0); }"""
SELECTED_COUNT_JS = """() => { const m = document.body.innerText.match(/([0-9,]+) images selected/);
  return m ? parseInt(m[1].replace(/,/g, '')) : null; }"""


def measure(folder: Path, target: int, log_dir: Path, method: str = "tsne") -> dict:
    from tests.browser_support import chromium_page, streamlit_server

    coords = np.load(folder / runs.BACKBONES / ARCHS[0] / runs.PROJECTIONS)[f"coords_{method}"]
    box = box_around(coords, target)
    out = {"n": len(coords), "selected": box[4]}
    with streamlit_server(folder.parent, log_dir, script="app_pages/latent.py") as url, \
            chromium_page(height=2400) as page:
        # Warm-up visit: imports and the cached figure are built once per server, not per user.
        t0 = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function(DRAWN_JS, arg=2, timeout=300_000)
        out["first_render_cold_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.reload(wait_until="domcontentloaded")
        page.wait_for_function(DRAWN_JS, arg=2, timeout=120_000)
        out["render_s"] = time.perf_counter() - t0
        page.wait_for_timeout(1000)
        t0 = time.perf_counter()
        drag_box(page, 0, box)
        out["drag_s"] = time.perf_counter() - t0  # plotly selecting over the map while the mouse moves
        t0 = time.perf_counter()
        page.wait_for_function("() => document.body.innerText.includes(' images selected')", timeout=120_000,
                               polling=20)
        out["select_to_count_s"] = time.perf_counter() - t0
        page.wait_for_function(GALLERY_JS, timeout=120_000, polling=20)
        out["select_to_gallery_s"] = time.perf_counter() - t0
        page.wait_for_function(RINGED_JS, timeout=120_000, polling=20)
        out["select_to_maps_redrawn_s"] = time.perf_counter() - t0
        out["selected_on_page"] = page.evaluate(SELECTED_COUNT_JS)
        page.wait_for_timeout(500)
        shots = REPO / "screenshots"
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / "latent-bench-100k.png"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--select", type=int, default=1000)
    p.add_argument("--keep", type=Path, help="build the experiment here (and keep it) instead of a temp folder")
    p.add_argument("--reuse", action="store_true", help="with --keep: reuse the experiment already built there")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "runs"
        folder = root / "bench-latent"
        if args.reuse and args.keep and (folder / runs.MANIFEST).exists() \
                and len(runs.read_experiment(folder).images()) == args.n:
            print(f"reusing the {args.n:,}-image experiment in {folder}", flush=True)
        else:
            t0 = time.perf_counter()
            folder = build_experiment(root, args.n)
            print(f"built {args.n:,}-image experiment in {time.perf_counter() - t0:.1f} s ({folder})", flush=True)
        r = measure(folder, args.select, Path(tmp))
    print(f"map render, both backbones side by side, {r['n']:,} points each (WebGL, none sampled):")
    print(f"  first visit (server cold: imports + figure build): {r['first_render_cold_s']:.2f} s")
    print(f"  reload (figure cached):                           {r['render_s']:.2f} s")
    print(f"box selection of {r['selected_on_page']:,} points ({r['selected']:,} inside the box in data units):")
    print(f"  drag (8 mouse moves; plotly selects on each, in the browser): {r['drag_s']:.2f} s")
    print(f"  mouse-up -> selection count and class mix shown:   {r['select_to_count_s']:.2f} s")
    print(f"  mouse-up -> first gallery page's thumbnails loaded: {r['select_to_gallery_s']:.2f} s")
    print(f"  mouse-up -> the selection shown on both maps (the other one redrawn with rings): "
          f"{r['select_to_maps_redrawn_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
