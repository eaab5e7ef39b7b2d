#!/usr/bin/env python
"""Out-of-distribution detection: AUROC and false alarms of each detector on three shifts.

Trains two small experiments into a temporary folder (``train.main``: 64 px, 2 epochs, random init,
PCA maps only), each analysed by ``analyse_experiment`` (which fits and stores the OOD detector: the
cut-off is chosen on the experiment's VALIDATION images for a 5 % false-alarm rate), then scores:

(a) phantom-demo test images (in distribution) vs real chest X-rays from ../shared/data (covid3 and
    nih14): a model trained on phantoms meets real films;
(b) real covid3 test images vs generated non-radiographs (``covidviz.ood.samples``: colour photos,
    screenshots of text, scanned documents, CT-like slices; plus grayscale photos, reported apart:
    the hardest kind, no colour and no text);
(c) covid3 test images vs nih14 images (another hospital, adults; covid3's own "nih" rows are the
    same files and are left out), reported as it is: a shift in population, not in kind.

(d) the frontal-chest check of the input gate (``covidviz.anatomy.view``, no model trained): the share
    flagged per kind (lateral films and CT slices of ../shared/data/views, axial and coronal apart;
    generated non-radiographs per kind, textures and gradients included; every real frontal film of
    ../shared/data per source; the phantoms) and the share named as the right kind; targets: lateral
    >= 90 %, CT >= 95 %, non-radiographs >= 95 %, false alarms <= 2 % on all frontal films and per
    source. It runs first and alone with ``--views-only`` (a few minutes on 2 cores, no training).

Per detector: AUROC (in distribution = negative), the false-alarm rate on the in-distribution TEST
images at the stored cut-off (target <= 5 %) and the share of out-of-distribution images flagged.
Detectors: the input gate alone (pass/fail), the three feature scores combined over the backbones
(mahalanobis, knn, energy), and the verdict (the chosen feature score, with gate failures ranked
above every score), which is what the app shows. Targets: AUROC >= 0.95 on (a) and (b).

    python -m bench.ood [--arch densenet121 resnet50] [--phantoms 400] [--per-kind 40] [--real 300]
                        [--keep DIR]      # DIR: train once; later runs reuse it and refit only the detector
    python -m bench.ood --views-only      # (d) alone

``--arch tinycnn`` runs in a minute or two; the default (both paper backbones) takes several minutes
per experiment on 2 shared cores. Numbers move a little with the seed and the training length.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

import train
from covidviz import runs
from covidviz.analysis.experiment import analyse_experiment
from covidviz.anatomy.view import CT, FRONTAL, LATERAL, NOT_CHEST
from covidviz.data.imageio import decode_upload
from covidviz.data.synthetic import render_phantom
from covidviz.ood import samples
from covidviz.ood.detector import DETECTORS, OodDetector, analyse_ood
from covidviz.ood.features import extract_features
from covidviz.ood.gate import check_image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TARGET_AUROC = 0.95
NON_RADIOGRAPHS = ("photo", "screenshot", "document", "ct")


# ---------------------------------------------------------------- (d) the frontal-chest check

VIEW_TARGETS = {"lateral": 0.90, "ct": 0.95, "non-radiograph": 0.95, "false alarms": 0.02}


def _smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    z = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(z, "F").resize((w, h), Image.BICUBIC))


def _to_u8(x: np.ndarray) -> np.ndarray:
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def gradient(seed: int) -> np.ndarray:
    """A grayscale gradient (H, W) uint8: a linear ramp at any angle, a radial vignette or a smooth
    two-axis blend, with a little noise (what a 'blank' or a background picture looks like)."""
    rng = np.random.default_rng([seed, 21])
    h, w = (int(v) for v in rng.choice([256, 320, 512, 640], 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = seed % 3
    if kind == 0:
        a = rng.uniform(0, np.pi)
        x = np.cos(a) * xx / w + np.sin(a) * yy / h
    elif kind == 1:
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        x = -np.hypot((xx - cx) / w, (yy - cy) / h)
    else:
        x = _smooth(rng, h, w, 3)
    x = _to_u8(x).astype(np.float32) * rng.uniform(0.5, 1.0) + rng.uniform(0, 60)
    x = x + rng.normal(0, rng.uniform(0.5, 3), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def texture(seed: int) -> np.ndarray:
    """A grayscale texture (H, W) uint8: fractal clouds / stone, wood grain, a weave, marble veins or
    gravel, slightly blurred, with noise."""
    rng = np.random.default_rng([seed, 22])
    h, w = (int(v) for v in rng.choice([256, 384, 512], 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = seed % 5
    if kind == 0:
        x = sum(_smooth(rng, h, w, c) / (i + 1) for i, c in enumerate((4, 8, 16, 32, 64)))
    elif kind == 1:
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
        x = np.sin(np.hypot(xx - cx, yy - cy) / rng.uniform(6, 20) + 3 * _smooth(rng, h, w, 6))
    elif kind == 2:
        p = rng.uniform(4, 14)
        x = np.sin(xx / p) * np.sin(yy / p * rng.uniform(0.8, 1.2)) + 0.3 * _smooth(rng, h, w, 32)
    elif kind == 3:
        x = np.abs(np.sin(xx / rng.uniform(15, 40) + 5 * _smooth(rng, h, w, 5) + 2 * _smooth(rng, h, w, 12))) ** 0.4
    else:
        x = _smooth(rng, h, w, int(rng.integers(24, 64)))
        x = np.where(x > 0.3, x, 0.3 * x)
    x = _to_u8(x).astype(np.float32) + rng.normal(0, 2, (h, w))
    img = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return np.asarray(img)


def view_cases(per_kind: int, seed: int = 0):
    """(group, family, expected view, name, image) for every image of (d): a ``DecodedImage`` for
    files and generated uploads, a gray array for textures, gradients and phantoms."""
    views = pd.read_csv(DATA / "views" / "metadata.csv")
    for r in views.itertuples():
        group = "lateral" if r.kind == "lateral" else f"CT {str(r.view).lower()}"
        yield group, ("lateral" if r.kind == "lateral" else "ct"), (LATERAL if r.kind == "lateral" else CT), \
            r.path, decode_upload((DATA / "views" / r.path).read_bytes(), Path(r.path).name)
    for kind in samples.KINDS:
        expected = CT if kind == "ct" else NOT_CHEST
        for i in range(per_kind):
            yield (f"generated {kind.replace('_', ' ')}", "non-radiograph", expected, f"{kind}-{i}",
                   decode_upload(samples.upload_bytes(kind, 20_000 + seed + i), f"{kind}-{i}.{samples.FORMATS[kind].lower()}"))
    for name, make in (("texture", texture), ("gradient", gradient)):
        for i in range(per_kind):
            yield f"generated {name}", "non-radiograph", NOT_CHEST, f"{name}-{i}", make(seed + i)
    covid3 = pd.read_csv(DATA / "covid3" / "metadata.csv")
    for r in covid3.itertuples():
        yield (f"frontal covid3/{r.source}", "frontal", FRONTAL, r.path,
               decode_upload((DATA / "covid3" / r.path).read_bytes(), Path(r.path).name))
    for p in sorted((DATA / "nih14" / "images").glob("*.png")):
        yield "frontal nih14", "frontal", FRONTAL, p.name, decode_upload(p.read_bytes(), p.name)
    for i in range(per_kind):
        film, _ = render_phantom(seed + i, ("COVID-19",) if i % 2 else (), size=256, difficulty=(i % 8) / 7, marker=i % 3 == 0)
        yield "phantoms (demo data)", "phantom", FRONTAL, f"phantom-{i}", film


def view_rows(per_kind: int, seed: int = 0) -> pd.DataFrame:
    """One row per image: group, family, expected, the gate's view and pass, and the time the view
    check added (the gate with it minus the gate without it, ms)."""
    rows = []
    for group, family, expected, name, image in view_cases(per_kind, seed):
        t0 = time.perf_counter()
        cheap = check_image(image, view=False)
        t1 = time.perf_counter()
        full = check_image(image)
        t2 = time.perf_counter()
        rows.append({"group": group, "family": family, "expected": expected, "name": name,
                     "flagged": not full.passed, "view": full.view, "cheap_failed": not cheap.passed,
                     "lung_quality": full.lung_quality, "added_ms": 1000 * max((t2 - t1) - (t1 - t0), 0.0),
                     "reason": full.summary})
    return pd.DataFrame(rows)


def print_view_table(df: pd.DataFrame) -> bool:
    """The table of (d) and whether every target is met."""
    print(f"\n(d) the frontal-chest check (input gate): share flagged per kind\n"
          f"{'kind':<34} {'n':>5} {'flagged':>9} {'right kind':>11}   named as")
    order = list(dict.fromkeys(df["group"]))
    for g in order:
        d = df[df["group"] == g]
        right = (d["view"] == d["expected"]).mean() if d["expected"].iloc[0] != FRONTAL else (~d["flagged"]).mean()
        named = d.loc[d["flagged"], "view"].value_counts()
        print(f"{g:<34} {len(d):>5} {100 * d['flagged'].mean():>8.1f}% {100 * right:>10.1f}%   "
              + ", ".join(f"{v} {n}" for v, n in named.items()))
    fam = {f: df[df["family"] == f] for f in ("lateral", "ct", "non-radiograph", "frontal")}
    rates = {f: fam[f]["flagged"].mean() for f in ("lateral", "ct", "non-radiograph")}
    rates["false alarms"] = fam["frontal"]["flagged"].mean()
    per_source = fam["frontal"].groupby("group")["flagged"].agg(["mean", "sum", "size"])
    # covid3's nih rows are nih14 files (same names): counted in both sources, once in "distinct"
    distinct = fam["frontal"].assign(file=fam["frontal"]["name"].map(lambda n: Path(n).name)).drop_duplicates("file")

    def count(f: str) -> str:
        return f"{100 * rates[f]:.1f} % ({int(fam[f]['flagged'].sum())}/{len(fam[f])})"

    print(f"\nlateral films flagged {count('lateral')}; CT slices {count('ct')}; non-radiographs {count('non-radiograph')}")
    print(f"false alarms on real frontal films: {100 * rates['false alarms']:.2f} % ({int(fam['frontal']['flagged'].sum())}/"
          f"{len(fam['frontal'])}; {int(distinct['flagged'].sum())}/{len(distinct)} distinct files); worst source "
          f"{per_source['mean'].idxmax()} {100 * per_source['mean'].max():.1f} %")
    front = df[df["family"].isin(["frontal", "phantom"])]["added_ms"]
    print(f"time the view check adds per would-be film (gate with it minus without): median {front.median():.0f} ms, "
          f"95th percentile {front.quantile(0.95):.0f} ms (1 torch thread; load {'/'.join(f'{v:.1f}' for v in os.getloadavg())})")
    ok = (rates["lateral"] >= VIEW_TARGETS["lateral"] and rates["ct"] >= VIEW_TARGETS["ct"]
          and rates["non-radiograph"] >= VIEW_TARGETS["non-radiograph"]
          and rates["false alarms"] <= VIEW_TARGETS["false alarms"]
          and (per_source["mean"] <= VIEW_TARGETS["false alarms"]).all()
          and not df.loc[df["family"] == "phantom", "flagged"].any())
    print("targets (lateral >= 90 %, CT >= 95 %, non-radiographs >= 95 %, false alarms <= 2 % overall and per "
          "source, no phantom flagged): " + ("met" if ok else "NOT met"))
    return ok


def train_experiment(root: Path, name: str, data: str, archs, image_size: int, epochs: int, seed: int) -> runs.Experiment:
    if (root / name).exists():  # --keep: reuse the trained experiment, refit only the detector (current code)
        analyse_ood(runs.read_experiment(root / name), seed=seed)
        return runs.read_experiment(root / name)
    argv = ["--data", data, "--arch", *archs, "--epochs", str(epochs), "--image-size", str(image_size),
            "--weights", "none", "--out", str(root), "--name", name, "--seed", str(seed), "--quiet",
            "--no-analysis", "--cache-dir", str(root / ".cache")]
    if train.main(argv) != 0:
        raise SystemExit(f"training {name} failed")
    analyse_experiment(root / name, seed=seed, n_boot=50, projections=("pca",), localisation=False,
                       say=lambda s: None)
    return runs.read_experiment(root / name)


def read_uploads(paths) -> list:
    return [decode_upload(Path(p).read_bytes(), str(p)) for p in paths]


class Side:
    """One set of images: decoded uploads (for the gate) and their features (for the detectors)."""

    def __init__(self, decoded, features: dict[str, np.ndarray], groups=None):
        self.decoded = decoded
        self.features = features
        self.gate_fail = np.array([not check_image(d).passed for d in decoded], bool)
        self.groups = np.asarray(groups if groups is not None else ["all"] * len(decoded))

    def subset(self, mask) -> Side:
        s = object.__new__(Side)
        s.decoded = [d for d, m in zip(self.decoded, mask) if m]
        s.features = {a: f[mask] for a, f in self.features.items()}
        s.gate_fail, s.groups = self.gate_fail[mask], self.groups[mask]
        return s


def score(det: OodDetector, side: Side) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """detector -> (score, flagged) per image; the gate's score is 0/1, the verdict's the chosen
    detector's score with gate failures set above everything."""
    out = {"gate": (side.gate_fail.astype(float), side.gate_fail)}
    for d in DETECTORS:
        s = det.combined(side.features, d)
        out[d] = (s, s > det.cutoff(d))
    s = det.combined(side.features, det.detector)
    out["verdict"] = (np.where(side.gate_fail, np.inf, s), side.gate_fail | (s > det.cutoff(det.detector)))
    return out


def rows_for(scenario: str, det: OodDetector, ind: Side, ood: Side) -> list[dict]:
    si, so = score(det, ind), score(det, ood)
    rows = []
    for name in si:
        y = np.r_[np.zeros(len(ind.groups)), np.ones(len(ood.groups))]
        s = np.r_[si[name][0], so[name][0]]
        finite = s[np.isfinite(s)]
        s = np.where(np.isinf(s), finite.max() + 1.0 if finite.size else 1.0, s)  # gate failures rank first
        rows.append({"scenario": scenario, "detector": name, "auroc": float(roc_auc_score(y, s)),
                     "false_alarm": float(si[name][1].mean()), "detected": float(so[name][1].mean()),
                     "n_in": len(ind.groups), "n_out": len(ood.groups)})
    return rows


def per_group_detection(det: OodDetector, ood: Side) -> dict[str, float]:
    flagged = score(det, ood)["verdict"][1]
    return {g: float(flagged[ood.groups == g].mean()) for g in dict.fromkeys(ood.groups)}


def per_backbone_auroc(det: OodDetector, ind: Side, ood: Side) -> dict[str, float]:
    out = {}
    y = np.r_[np.zeros(len(ind.groups)), np.ones(len(ood.groups))]
    for arch in det.archs:
        s = np.r_[det.combined({arch: ind.features[arch]}), det.combined({arch: ood.features[arch]})]
        out[arch] = float(roc_auc_score(y, s))
    return out


def test_side(exp: runs.Experiment) -> Side:
    images = exp.images()
    rows = np.flatnonzero((images["split"] == "test").to_numpy())
    feats = {a: np.asarray(exp.features(a), np.float32)[rows] for a in exp.backbones}
    return Side(read_uploads(images["path"].iloc[rows]), feats)


def new_side(exp: runs.Experiment, decoded, groups=None) -> Side:
    return Side(decoded, extract_features(exp, [d.gray for d in decoded]), groups)


def real_xrays(n: int, seed: int, exclude=()) -> tuple[list[Path], list[str]]:
    rng = np.random.default_rng(seed)
    c3 = sorted((DATA / "covid3" / "images").rglob("*.png"))
    nih = sorted(p for p in (DATA / "nih14" / "images").glob("*.png") if p.name not in exclude)
    half = n // 2
    pick = [c3[i] for i in rng.choice(len(c3), min(half, len(c3)), replace=False)]
    pick += [nih[i] for i in rng.choice(len(nih), min(n - len(pick), len(nih)), replace=False)]
    return pick, ["covid3" if "covid3" in str(p) else "nih14" for p in pick]


def print_table(rows: list[dict], chosen: str) -> None:
    print(f"\n{'scenario':<58} {'detector':<12} {'AUROC':>6} {'false alarms':>13} {'detected':>9}")
    last = None
    for r in rows:
        if r["scenario"] != last:
            print(f"{r['scenario']} (in {r['n_in']}, out {r['n_out']})")
            last = r["scenario"]
        mark = " <- verdict (" + chosen + " + gate)" if r["detector"] == "verdict" else ""
        print(f"{'':<58} {r['detector']:<12} {r['auroc']:>6.3f} {100 * r['false_alarm']:>12.1f}% "
              f"{100 * r['detected']:>8.1f}%{mark}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["densenet121", "resnet50"])
    ap.add_argument("--phantoms", type=int, default=400, help="phantom images in the demo-like experiment")
    ap.add_argument("--per-kind", type=int, default=40, help="generated images per kind of non-radiograph")
    ap.add_argument("--real", type=int, default=300, help="real X-rays for (a)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="train into this folder and keep it (default: a temporary folder)")
    ap.add_argument("--views-only", action="store_true", help="only (d), the frontal-chest check (no training)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (DATA / "covid3" / "metadata.csv").exists() or not (DATA / "views" / "metadata.csv").exists():
        print(f"bench.ood needs the real X-rays in {DATA.resolve()}")
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the lung network is tiny: one thread is fastest, and honest on a shared CPU
    try:
        print_view_table(view_rows(args.per_kind, args.seed))
    finally:
        torch.set_num_threads(threads)
    if args.views_only:
        return 0
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-ood-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        phantom = train_experiment(root, "phantom", f"synthetic:{args.phantoms}", args.arch, args.image_size,
                                   args.epochs, args.seed)
        covid3 = train_experiment(root, "covid3", f"csv:{DATA / 'covid3'}", args.arch, args.image_size,
                                  args.epochs, args.seed)
        t_train = time.time() - t0
        det_p, det_c = OodDetector.from_experiment(phantom), OodDetector.from_experiment(covid3)

        covid3_names = {Path(p).name for p in covid3.images()["path"]}
        paths, groups = real_xrays(args.real, args.seed)
        real = new_side(phantom, read_uploads(paths), groups)
        kinds = NON_RADIOGRAPHS + ("gray_photo",)
        gen = [decode_upload(samples.upload_bytes(k, 10_000 + i), f"{k}-{i}") for k in kinds for i in range(args.per_kind)]
        gen_groups = [k for k in kinds for _ in range(args.per_kind)]
        generated = new_side(covid3, gen, gen_groups)
        nih_paths = sorted(p for p in (DATA / "nih14" / "images").glob("*.png") if p.name not in covid3_names)
        nih = new_side(covid3, read_uploads(nih_paths))
        c3_test = test_side(covid3)
        p_test = test_side(phantom)

        hard = np.isin(generated.groups, NON_RADIOGRAPHS)
        rows = rows_for("(a) phantom-demo test vs real X-rays", det_p, p_test, real)
        rows += rows_for("(b) covid3 test vs photos/screenshots/documents/CT", det_c, c3_test, generated.subset(hard))
        rows += rows_for("(b') covid3 test vs grayscale photos (extra)", det_c, c3_test, generated.subset(~hard))
        rows += rows_for("(c) covid3 test vs nih14 (another hospital)", det_c, c3_test, nih)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    info_p, info_c = det_p.info, det_c.info
    print(f"bench.ood: backbones {' + '.join(args.arch)}, {args.image_size} px, {args.epochs} epochs, random init; "
          f"phantoms: synthetic:{args.phantoms} ({info_p.raw['n_train']} train / {info_p.n_val} val / "
          f"{info_p.raw['n_test']} test); covid3: {info_c.raw['n_train']} / {info_c.n_val} / {info_c.raw['n_test']}; "
          f"{args.per_kind} generated images per kind; load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}; "
          f"training + analysis (or reusing --keep) {t_train:.0f} s")
    print(f"cut-offs: chosen on validation for {100 * det_c.alpha:.0f} % false alarms; verdict detector: {det_c.detector}; "
          "false alarms are measured on the in-distribution TEST images, detected on the OOD ones")
    print_table(rows, det_c.detector)
    print("\nverdict per kind of non-radiograph (share flagged): "
          + ", ".join(f"{k} {100 * v:.0f} %" for k, v in per_group_detection(det_c, generated).items()))
    print("verdict on real X-rays under the phantom model: "
          + ", ".join(f"{k} {100 * v:.0f} %" for k, v in per_group_detection(det_p, real).items()))
    for label, det, ind, ood in (("(a)", det_p, p_test, real), ("(b)", det_c, c3_test, generated.subset(hard)),
                                 ("(c)", det_c, c3_test, nih)):
        print(f"{label} {det.detector} AUROC per backbone alone: "
              + ", ".join(f"{a} {v:.3f}" for a, v in per_backbone_auroc(det, ind, ood).items()))
    verdicts = {r["scenario"][:3]: r for r in rows if r["detector"] == "verdict"}
    ok = (verdicts["(a)"]["auroc"] >= TARGET_AUROC and verdicts["(b)"]["auroc"] >= TARGET_AUROC
          and all(r["false_alarm"] <= det_c.alpha for r in verdicts.values()))
    print(f"\ntargets (verdict AUROC >= {TARGET_AUROC} on (a) and (b), false alarms <= {100 * det_c.alpha:.0f} %): "
          + ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
