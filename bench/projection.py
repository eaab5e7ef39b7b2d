#!/usr/bin/env python
"""Latent-space analysis cost: PCA, t-SNE, UMAP, map quality and the SOM for N = 1k, 10k, 100k images.

Generates N random 1024-d float32 "pooled features" with 15 Gaussian clusters (the size of a
DenseNet121 feature vector and of the 15-class COVID + ChestX-ray14 problem), runs exactly what
``train.py`` runs after training (``fit_projections`` + ``fit_som`` with a 70 % training split) and
prints one row per N: seconds per step, the total, map quality, and the latency of placing one new
image (``MapPlacer.place`` and ``som_place``). Only one run's numbers are comparable with each other:
these 2-core machines are shared and their load (printed) changes timings by 2-3x.

The budget: the whole analysis of 100k images in at most 15 minutes on 2 cores. Why these choices:

- PCA to 50-D first (randomized SVD, seconds at 100k x 1024): every later step's neighbour search
  and SOM update costs O(D), so they all get ~20x cheaper; the quality metrics still use the full
  standardised features.
- t-SNE: openTSNE with FFT-interpolated repulsion (O(N) per iteration; scikit-learn's Barnes-Hut
  would take most of an hour at 100k), Annoy neighbours, learning_rate = N / 12 so it converges in
  fewer iterations, and the optimisation phase trimmed from 500 to 350 iterations above 50k points.
- UMAP: umap-learn with random_state (reproducible, hence single-threaded), low_memory NN-descent,
  its own epoch count (200 above 10k points). numba's JIT compilation is paid once per process and
  reported separately (``umap JIT``); it is included in the total.
- SOM: MiniSom on the 50-D PCA features, ~5 sqrt(N_train) nodes, iterations max(50 x nodes,
  N_train) capped at 120k (~35 s measured at 100k: MiniSom updates one sample at a time in numpy).
- Quality: trustworthiness and kNN agreement on a 2000-point sample (neighbours searched among all
  N points), so it stays in seconds at any N.

    python -m bench.projection [--sizes 1000 10000 100000] [--tsne-jobs 2] [--skip-umap]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from covidviz.stats.projection import MapPlacer, fit_projections
from covidviz.stats.som import fit_som, som_place

BUDGET_S = 15 * 60


def clustered_features(n: int, dim: int = 1024, clusters: int = 15, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    labels = rng.integers(0, clusters, n)
    X = np.empty((n, dim), np.float32)
    for a in range(0, n, 10_000):  # chunked: no float64 temporaries of the whole matrix
        b = min(n, a + 10_000)
        X[a:b] = centres[labels[a:b]] + 1.5 * rng.standard_normal((b - a, dim), dtype=np.float32)
    return X, labels


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def best_of(fn, repeats=7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def umap_jit_seconds() -> float:
    """Import umap and fit a tiny map: the numba compilation a process pays before its first real fit."""
    t = time.perf_counter()
    X, y = clustered_features(200, 32, 3, seed=1)
    fit_projections(X, y, methods=("umap",))
    return time.perf_counter() - t


def run(n: int, args, jit_s: float) -> dict:
    X, y = clustered_features(n, args.dim, args.clusters, args.seed)
    methods = ("pca", "tsne") if args.skip_umap else ("pca", "tsne", "umap")
    load_before = load()
    proj = fit_projections(X, y, seed=args.seed, methods=methods, n_jobs=args.tsne_jobs)
    train = np.random.default_rng(args.seed).random(n) < 0.7
    onehot = np.eye(args.clusters, dtype=np.float32)[y]
    som = fit_som(X, onehot, onehot * 0.9 + 0.1 / args.clusters, train, seed=args.seed)
    placer = MapPlacer.from_projection(proj, mask=train)
    x1 = X[:1] + 0.1
    row = {
        "n": n, **{m: proj["fit_seconds"].get(m, float("nan")) for m in ("pca", "tsne", "umap")},
        "qual": proj["fit_seconds"]["quality"],
        "som": som["fit_seconds"], "jit": 0.0 if args.skip_umap else jit_s,
        "place_ms": 1000 * best_of(lambda: placer.place(x1)),
        "som_place_ms": 1000 * best_of(lambda: som_place(som, x1[0])),
        "quality": proj["quality"], "grid": som["grid"], "som_iter": som["params"]["iterations"],
        "qe": som["quantization_error"], "te": som["topographic_error"],
        "load": f"{load_before} -> {load()}",
    }
    row["total"] = row["pca"] + row["tsne"] + (0 if args.skip_umap else row["umap"] + row["jit"]) \
        + row["qual"] + row["som"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--clusters", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tsne-jobs", type=int, default=2, help="openTSNE threads (default 2)")
    ap.add_argument("--skip-umap", action="store_true")
    args = ap.parse_args(argv)

    print(f"cpus={os.cpu_count()} load(1/5/15 min)={load()} dim={args.dim} clusters={args.clusters} "
          f"tsne n_jobs={args.tsne_jobs}", flush=True)
    jit_s = 0.0 if args.skip_umap else umap_jit_seconds()
    if not args.skip_umap:
        print(f"umap JIT warm-up (import + first tiny fit, once per process): {jit_s:.1f} s", flush=True)
    head = (f"{'N':>7} {'pca':>6} {'tsne':>7} {'umap':>7} {'qual':>6} {'som':>6} {'total':>7} | "
            f"{'tw tsne':>7} {'tw umap':>7} {'knn f/p/t/u':>19} | {'grid':>7} {'som it':>6} {'QE':>6} {'TE':>5} | "
            f"{'place':>7} {'somplc':>7} | load before -> after")
    print(head + "\n" + "-" * len(head), flush=True)
    rows = []
    for n in args.sizes:
        r = run(n, args, jit_s)
        rows.append(r)
        q = r["quality"]
        knn = "/".join(f"{v:.2f}" if v is not None else "-" for v in (
            q["features_knn_agreement"], q["pca"]["knn_agreement"], q["tsne"]["knn_agreement"],
            q.get("umap", {}).get("knn_agreement")))
        tw = [q.get(m, {}).get("trustworthiness") for m in ("tsne", "umap")]
        tw = [f"{v:7.3f}" if v is not None else f"{'-':>7}" for v in tw]
        print(f"{n:>7} {r['pca']:6.1f} {r['tsne']:7.1f} {r['umap']:7.1f} {r['qual']:6.1f} {r['som']:6.1f} "
              f"{r['total']:7.1f} | {tw[0]} {tw[1]} {knn:>19} | {r['grid'][0]:>3}x{r['grid'][1]:<3} "
              f"{r['som_iter']:>6} {r['qe']:6.2f} {r['te']:5.3f} | {r['place_ms']:5.2f}ms {r['som_place_ms']:5.2f}ms | "
              f"{r['load']}", flush=True)
    print("seconds; total = pca + tsne + umap + umap JIT + quality + som; place = MapPlacer.place of one "
          "image (refs = train rows), somplc = som_place; knn f/p/t/u = 10-NN label agreement in "
          "features / pca / tsne / umap")
    for r in rows:
        if r["n"] >= 100_000:
            verdict = "within" if r["total"] <= BUDGET_S else "OVER"
            print(f"N={r['n']}: total {r['total'] / 60:.1f} min, {verdict} the {BUDGET_S // 60}-minute budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
