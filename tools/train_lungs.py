"""Reproduce the lung-field network shipped in covidviz/anatomy/ (``make lungs-model``).

    .venv/bin/python tools/train_lungs.py                  # train, evaluate, write weights + provenance
    .venv/bin/python tools/train_lungs.py --eval-only      # evaluate the shipped weights, draw contact sheets
    .venv/bin/python tools/train_lungs.py --dev            # development run: hold back 7 more training films (4 patients)

Data (nothing is downloaded):
- masks: ``semantic_masks_v7labs_lungs.zip`` inside the installed torchxrayvision wheel (V7 Labs,
  CC BY 4.0; 255 = lung, 127 = ignore), matched by file stem to the development films in
  ``../shared/data/covid3`` (68 films: 64 hannover, 4 ieee8023). Only those 68 mask/film pairs are
  used; the images of the other masks are not ours and are not touched.
- phantoms: covidviz.data.synthetic renders films that know their own lung masks.
The 20 films of ``HELD_OUT_PATIENTS`` (patient-disjoint, stratified by source) are never trained on;
they give the Dice reported in covidviz/anatomy/lungs_unet.json and docs/lungs.md, beside the
two-fixed-boxes floor whose boxes are fitted on the training films only.

Deterministic: one seed for numpy and torch, a fixed number of steps, one intra-op thread, torch's
deterministic algorithms; the same machine and library versions give the same weights.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import pathlib
import platform
import time
import zipfile
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage

from covidviz.anatomy import lungs as lungs_mod
from covidviz.anatomy.net import CHANNELS, INPUT_SIZE, LungUNet, equalise, resize_gray
from covidviz.data.synthetic import FINDINGS_MULTILABEL, render_phantom
from covidviz.io import atomic_torch_save, atomic_write_json

REPO = pathlib.Path(__file__).resolve().parents[1]

DATA = (REPO / ".." / "shared" / "data").resolve()
SEED = 22
STORE = 176          # training films are kept squashed to STORE x STORE, then warped to INPUT_SIZE
N_PHANTOMS = 240
STEPS = 1200
BATCH = 12           # of which PHANTOMS_PER_BATCH phantoms
PHANTOMS_PER_BATCH = 3
LR = 3e-3
THREADS = 1

# Patient-disjoint held-out films (20 of the 68 masked ones): 9 hannover patients (18 films, drawn
# once with numpy seed 22 among patients with <= 3 masked films) and two ieee8023 patients (papers).
HELD_OUT_PATIENTS = (
    "hannover:14d9761b", "hannover:189daebe", "hannover:57f37ffa", "hannover:850bf237", "hannover:8d6990f2",
    "hannover:b184707c", "hannover:c62c878a", "hannover:d039b079", "hannover:f31da5d4",
    "ieee8023:331a", "ieee8023:334",
)
# --dev only: training patients also held back, to make design choices without the held-out films.
DEV_PATIENTS = ("hannover:042f06a9", "hannover:327d82ca", "hannover:6ac9bfff", "hannover:969dd2e0")


def mask_zip() -> pathlib.Path:
    import torchxrayvision

    return pathlib.Path(torchxrayvision.__file__).parent / "data" / "semantic_masks_v7labs_lungs.zip"


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------

def load_masked_films(data: pathlib.Path = DATA) -> list[dict]:
    """The dev films that have a V7 Labs lung mask: image (uint8, film size), lung and ignore masks
    (bool, film size; the 2000x2000 mask is resampled onto the film, which it lines up with)."""
    root = data / "covid3"
    zf = zipfile.ZipFile(mask_zip())
    by_stem = {pathlib.PurePosixPath(n).stem: n for n in zf.namelist() if not n.endswith("/")}
    out = []
    with open(root / "metadata.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            stem = pathlib.PurePosixPath(r["path"]).stem
            if stem not in by_stem:
                continue
            img = np.asarray(Image.open(root / r["path"]).convert("L"))
            m = np.asarray(Image.open(io.BytesIO(zf.read(by_stem[stem]))).convert("L"))
            h, w = img.shape
            # area-resample each class separately, then threshold: no aliasing on the outline
            lung = np.asarray(Image.fromarray((m >= 192).astype(np.float32)).resize((w, h), Image.BOX)) > 0.5
            ignore = np.asarray(Image.fromarray(((m > 64) & (m < 192)).astype(np.float32)).resize((w, h), Image.BOX)) > 0.5
            out.append({"path": r["path"], "stem": stem, "patient": r["patient_id"], "source": r["source"],
                        "view": r["view"], "image": img, "lung": lung, "ignore": ignore})
    return out


def squash(img: np.ndarray, size: int) -> np.ndarray:
    return resize_gray(img, size)


def squash_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BOX)).astype(np.float32)


def between_lungs(lung: np.ndarray) -> np.ndarray:
    """Soft mask of what lies inside the convex hull of both lung fields but is not lung: the
    mediastinum and the heart (and the gap between the domes). float32, 0..1."""
    from scipy.spatial import ConvexHull

    pts = np.argwhere(lung > 0.5)
    if len(pts) < 3:
        return np.zeros(lung.shape, np.float32)
    hull = pts[ConvexHull(pts).vertices]
    im = Image.new("L", lung.shape[::-1], 0)
    ImageDraw.Draw(im).polygon([(float(c), float(r)) for r, c in hull], fill=255)
    inside = (np.asarray(im) > 127) & (lung <= 0.5)
    return ndimage.gaussian_filter(inside.astype(np.float32), 1.5)


def stored(img: np.ndarray, lung: np.ndarray, ignore: np.ndarray) -> dict:
    """A training film as kept in memory: STORE px image, lung, ignore and between-lungs masks."""
    lung_s = squash_mask(lung, STORE) if lung.shape != (STORE, STORE) else lung.astype(np.float32)
    ign_s = squash_mask(ignore, STORE) if ignore.shape != (STORE, STORE) else ignore.astype(np.float32)
    return {"image": squash(img, STORE), "lung": lung_s, "ignore": ign_s, "between": between_lungs(lung_s)}


def make_phantoms(n: int, seed: int, size: int = STORE) -> list[dict]:
    rng = np.random.default_rng([seed, 1])
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 3))
        findings = tuple(rng.choice(FINDINGS_MULTILABEL, size=k, replace=False)) if k else ()
        img, _, lung = render_phantom(int(rng.integers(1 << 30)), findings, size=size,
                                      difficulty=float(rng.uniform(0.1, 1.0)), marker=bool(rng.random() < 0.3),
                                      variant=int(rng.integers(0, 3)), lungs=True)
        out.append(stored(img, lung.astype(np.float32), np.zeros_like(lung, np.float32)))
    return out


# ------------------------------------------------------------------------------------------------
# augmentation: geometry (zoom in/out, aspect, rotation, shear, shift, elastic), then look (blur,
# sharpening, noise, uneven exposure, bright lines and labels, opacities in the lungs); the network
# input equalises the histogram, so monotone grey-level changes need no augmenting.
# ------------------------------------------------------------------------------------------------

def _smooth_field(rng, size: int, cells: int) -> np.ndarray:
    z = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(z).resize((size, size), Image.BICUBIC))


def augment(rng: np.random.Generator, film: dict, out: int = INPUT_SIZE):
    """One augmented (input, target, weight) triple at ``out`` px from a stored STORE-px film."""
    img, lung, ignore = film["image"], film["lung"], film["ignore"]
    s_in = img.shape[0]
    zoom = math.exp(rng.uniform(math.log(0.62), math.log(1.3)))     # < 1: lungs look smaller (children's films)
    aspect = rng.uniform(-0.18, 0.18)           # log of the width:height stretch
    rot = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.08, 0.08)
    sx, sy = zoom * math.exp(aspect / 2), zoom / math.exp(aspect / 2)
    c, s = math.cos(rot), math.sin(rot)
    a = np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]]) @ np.diag([sy, sx])  # output -> content
    m = np.linalg.inv(a) * (s_in / out)   # output pixel (r, c) -> input pixel
    shift = rng.uniform(-0.09, 0.09, size=2) * s_in
    centre_out = np.array([out / 2 - 0.5, out / 2 - 0.5])
    offset = np.array([s_in / 2 - 0.5, s_in / 2 - 0.5]) + shift - m @ centre_out
    rows, cols = np.mgrid[0:out, 0:out].astype(np.float32)
    coords = np.stack([m[0, 0] * rows + m[0, 1] * cols + offset[0], m[1, 0] * rows + m[1, 1] * cols + offset[1]])
    if rng.random() < 0.5:  # elastic: smooth displacements of a few input pixels
        amp = rng.uniform(1.0, 4.0) * s_in / out
        coords[0] += amp * _smooth_field(rng, out, 5)
        coords[1] += amp * _smooth_field(rng, out, 5)
    pad_const = rng.random() < 0.5
    cval = float(rng.choice([0.0, rng.uniform(0, 255)]))
    mode = "constant" if pad_const else "nearest"
    f = img.astype(np.float32)
    if zoom < 0.9:  # shrinking: pre-blur against aliasing
        f = ndimage.gaussian_filter(f, 0.5 * s_in / out / zoom)
    x = ndimage.map_coordinates(f, coords, order=1, mode=mode, cval=cval)
    y = ndimage.map_coordinates(lung.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
    ign = ndimage.map_coordinates(ignore.astype(np.float32), coords, order=1, mode="constant", cval=0.0)

    x = x / 255.0
    if rng.random() < 0.25 and (y > 0.5).any():
        # a heart and mediastinum nearly as dark as the lungs (as on the children's films, where the
        # lungs' edges, not their darkness, tell where they stop): still not lung
        btw = ndimage.map_coordinates(film["between"], coords, order=1, mode="constant", cval=0.0)
        dark = float(np.median(x[y > 0.5]))
        x = x - rng.uniform(0.3, 0.85) * (x - dark) * btw
    if rng.random() < 0.25:  # opacity in the lungs (consolidation, effusion): the lung is still lung
        blob = np.clip(_smooth_field(rng, out, int(rng.integers(3, 7))), 0, None) * (y > 0.5)
        x = x + rng.uniform(0.1, 0.35) * ndimage.gaussian_filter(blob, 2)
    if rng.random() < 0.4:  # uneven exposure / grid / heel effect
        x = x + rng.uniform(0.05, 0.3) * _smooth_field(rng, out, 2)
    if rng.random() < 0.35:  # tubes, wires and lead labels
        im = Image.fromarray(np.zeros((out, out), np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 5))):
            pts = [tuple(rng.uniform(0, out, 2)) for _ in range(int(rng.integers(2, 4)))]
            if rng.random() < 0.6:
                d.line(pts, fill=255, width=int(rng.integers(1, 3)))
            else:
                x0, y0 = rng.uniform(0, out - 12, 2)
                d.rectangle([x0, y0, x0 + rng.uniform(3, 12), y0 + rng.uniform(3, 12)], fill=255)
        x = np.maximum(x, np.asarray(im, np.float32) / 255.0 * rng.uniform(0.6, 1.0))
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, rng.uniform(0.4, 1.3))
    elif rng.random() < 0.3:  # edge enhancement, as on processed (and the children's) films
        x = x + rng.uniform(0.3, 1.5) * (x - ndimage.gaussian_filter(x, rng.uniform(1.0, 3.0)))
    if rng.random() < 0.4:
        x = x + rng.normal(0, rng.uniform(0.01, 0.06), x.shape)
    if rng.random() < 0.5:  # gamma before quantising: changes how many grey levels tie
        x = np.clip(x, 0, 1) ** math.exp(rng.uniform(-0.6, 0.6))
    q = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    return equalise(q), (y > 0.5).astype(np.float32), (ign < 0.5).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------

def train(films: list[dict], phantoms: list[dict], steps: int, seed: int, log=print) -> LungUNet:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng([seed, 2])
    model = LungUNet(CHANNELS)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    n_real = BATCH - (PHANTOMS_PER_BATCH if phantoms else 0)
    t0 = time.time()
    model.train()
    run = 0.0
    for step in range(steps):
        batch = [films[i] for i in rng.integers(0, len(films), n_real)]
        if phantoms:
            batch += [phantoms[i] for i in rng.integers(0, len(phantoms), BATCH - n_real)]
        trip = [augment(rng, b) for b in batch]
        x = torch.from_numpy(np.stack([t[0] for t in trip]))[:, None]
        y = torch.from_numpy(np.stack([t[1] for t in trip]))[:, None]
        w = torch.from_numpy(np.stack([t[2] for t in trip]))[:, None]
        logit = model(x)
        bce = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum() / w.sum()
        p = torch.sigmoid(logit) * w
        inter = (p * y).sum(dim=(1, 2, 3))
        soft_dice = 1 - ((2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + (y * w).sum(dim=(1, 2, 3)) + 1)).mean()
        loss = bce + soft_dice
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run = 0.98 * run + 0.02 * float(loss) if step else float(loss)
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}/{steps}  loss {run:.4f}  {time.time() - t0:6.0f} s")
    model.eval()
    model.input_size = INPUT_SIZE
    return model


# ------------------------------------------------------------------------------------------------
# evaluation: Dice at the film's own size, per source; the two-fixed-boxes floor
# ------------------------------------------------------------------------------------------------

def fit_boxes(films: list[dict], grid: int = 64) -> list[tuple[float, float, float, float]]:
    """Two boxes (x0, x1, y0, y1 as fractions of the film), one per image half, maximising the mean
    Dice of the pair over ``films`` (coordinate ascent on a 1/64 grid from a 10-90 % start)."""
    masks = [squash_mask(f["lung"], grid) > 0.5 for f in films]
    ignores = [squash_mask(f["ignore"], grid) > 0.5 for f in films]

    def score(bx):
        pred = np.zeros((grid, grid), bool)
        for x0, x1, y0, y1 in bx:
            pred[y0:y1, x0:x1] = True
        return np.mean([lungs_mod.dice(pred & ~ig, m & ~ig) for m, ig in zip(masks, ignores)])

    boxes = [[6, 30, 8, 54], [34, 58, 8, 54]]
    best = score(boxes)
    improved = True
    while improved:
        improved = False
        for b in range(2):
            for k in range(4):
                for d in (-1, 1):
                    trial = [list(x) for x in boxes]
                    trial[b][k] += d
                    x0, x1, y0, y1 = trial[b]
                    if not (0 <= x0 < x1 <= grid and 0 <= y0 < y1 <= grid):
                        continue
                    s = score(trial)
                    if s > best + 1e-9:
                        best, boxes, improved = s, trial, True
    return [tuple(v / grid for v in bx) for bx in boxes]


def box_mask(shape, boxes) -> np.ndarray:
    h, w = shape
    m = np.zeros(shape, bool)
    for x0, x1, y0, y1 in boxes:
        m[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = True
    return m


def evaluate(films: list[dict], model=None, boxes=None) -> dict:
    rows = []
    for f in films:
        t = time.perf_counter()
        res = lungs_mod.segment_lungs(f["image"], model=model)
        seconds = time.perf_counter() - t
        keep = ~f["ignore"]
        row = {"path": f["path"], "patient": f["patient"], "source": f["source"], "view": f["view"],
               "dice": round(lungs_mod.dice(res.mask & keep, f["lung"] & keep), 4), "quality": res.quality,
               "seconds": round(seconds, 4)}
        if boxes is not None:
            row["box_dice"] = round(lungs_mod.dice(box_mask(f["lung"].shape, boxes) & keep, f["lung"] & keep), 4)
        rows.append(row)
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    out = {"films": rows, "per_source": {}}
    groups = {"all": rows}
    for r in rows:
        groups.setdefault(r["source"], []).append(r)
    for name, rs in groups.items():
        d = [r["dice"] for r in rs]
        entry = {"n": len(rs), "dice_mean": round(float(np.mean(d)), 4), "dice_min": round(float(np.min(d)), 4),
                 "quality_min": round(float(min(r["quality"] for r in rs)), 4),
                 "seconds_per_film_median": round(float(np.median([r["seconds"] for r in rs])), 4)}
        if "box_dice" in rs[0]:
            b = [r["box_dice"] for r in rs]
            entry.update(box_dice_mean=round(float(np.mean(b)), 4), box_dice_min=round(float(np.min(b)), 4))
        out["per_source"][name] = entry
    return out


# ------------------------------------------------------------------------------------------------
# contact sheets
# ------------------------------------------------------------------------------------------------

def outline_tile(img: np.ndarray, res, tile: int = 220, caption: str = "") -> Image.Image:
    rgb = np.stack([img] * 3, -1).copy()
    for mask, colour in ((res.right, (0, 220, 255)), (res.left, (255, 200, 0))):
        edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, round(max(img.shape) / 200)))
        rgb[edge] = colour
    im = Image.fromarray(rgb)
    im.thumbnail((tile, tile))
    canvas = Image.new("RGB", (tile, tile + 14), (0, 0, 0))
    canvas.paste(im, ((tile - im.width) // 2, 0))
    d = ImageDraw.Draw(canvas)
    col = (120, 255, 120) if res.ok else (255, 90, 90)
    d.text((3, tile), f"q={res.quality:.2f} {caption}"[:40], fill=col)
    return canvas


def contact_sheet(items, path, cols: int = 6, tile: int = 220, model=None) -> pathlib.Path:
    """items: (uint8 image, caption) pairs -> a PNG with each film's lung outlines (cyan = patient's
    right lung, amber = patient's left) and its quality (green if ok, red if not)."""
    tiles = [outline_tile(img, lungs_mod.segment_lungs(img, model=model), tile, cap) for img, cap in items]
    rows_n = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows_n * (tile + 14)), (0, 0, 0))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tile, (i // cols) * (tile + 14)))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def covid3_sample(source: str, n: int, seed: int, data: pathlib.Path = DATA) -> list[tuple[np.ndarray, str]]:
    root = data / "covid3"
    with open(root / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == source]
    pick = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    return [(np.asarray(Image.open(root / rows[i]["path"]).convert("L")), f"{rows[i]['view']} {rows[i]['label'][:9]}")
            for i in sorted(pick)]


def draw_sheets(held_out: list[dict], out_dir: pathlib.Path, model=None) -> list[pathlib.Path]:
    adults = [(f["image"], f"{f['view']} held-out") for f in held_out if f["source"] == "hannover"][:12]
    adults += covid3_sample("nih", 12, SEED)
    children = covid3_sample("kermany", 36, SEED)
    return [contact_sheet(adults, out_dir / "lungs-adults.png", model=model),
            contact_sheet(children, out_dir / "lungs-children.png", model=model)]


# ------------------------------------------------------------------------------------------------

def weights_blob(model: LungUNet) -> dict:
    """What the weights file holds (plain tensors, ints and lists: loadable with weights_only)."""
    return {"channels": list(CHANNELS), "input_size": INPUT_SIZE,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=pathlib.Path, default=lungs_mod.WEIGHTS, help="weights file to write")
    ap.add_argument("--sheets", type=pathlib.Path, default=pathlib.Path("/tmp/lungs"), help="contact sheet folder")
    ap.add_argument("--dev", action="store_true",
                    help="also hold back DEV_PATIENTS and report on them only; weights go to SHEETS/dev.pt")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the weights in --out; train nothing")
    args = ap.parse_args(argv)
    torch.set_num_threads(THREADS)

    if not (DATA / "covid3" / "metadata.csv").exists():
        ap.error(f"the development data is not at {DATA}")
    films = load_masked_films()
    held = [f for f in films if f["patient"] in HELD_OUT_PATIENTS]
    dev = [f for f in films if args.dev and f["patient"] in DEV_PATIENTS]
    train_films = [f for f in films if f["patient"] not in HELD_OUT_PATIENTS and f not in dev]
    assert not {f["patient"] for f in held} & {f["patient"] for f in train_films}, "patient leakage"
    print(f"{len(films)} masked films: {len(train_films)} train, {len(dev)} dev, {len(held)} held out "
          f"({dict(Counter(f['source'] for f in held))})")
    boxes = fit_boxes(train_films)

    if args.eval_only:
        model = lungs_mod.load_model(args.out)
    else:
        store = [stored(f["image"], f["lung"], f["ignore"]) for f in train_films]
        t = time.time()
        phantoms = make_phantoms(N_PHANTOMS, args.seed)
        print(f"{len(phantoms)} phantoms in {time.time() - t:.0f} s")
        t = time.time()
        model = train(store, phantoms, args.steps, args.seed)
        train_s = time.time() - t

    if args.dev:  # design choices are made on the dev films; the held-out ones are not looked at
        atomic_torch_save(args.sheets / "dev.pt", weights_blob(model))
        report = {"dev": evaluate(dev, model, boxes)}
    else:
        report = {"held_out": evaluate(held, model, boxes)}
    for name, rep in report.items():
        for src, e in rep["per_source"].items():
            print(f"{name:8s} {src:9s} n={e['n']:2d}  Dice mean {e['dice_mean']:.3f} min {e['dice_min']:.3f}   "
                  f"boxes mean {e['box_dice_mean']:.3f} min {e['box_dice_min']:.3f}  quality min {e['quality_min']:.2f}")
    sheets = draw_sheets(dev if args.dev else held, args.sheets, model)
    print("contact sheets:", *sheets)
    if args.dev or args.eval_only:
        return 0

    n_params = sum(p.numel() for p in model.parameters())
    atomic_torch_save(args.out, weights_blob(model))
    prov = {
        "what": "lung-field U-Net for covidviz.anatomy.segment_lungs",
        "weights": args.out.name, "bytes": args.out.stat().st_size, "parameters": n_params,
        "dtype": "float32", "input": f"{INPUT_SIZE}x{INPUT_SIZE}, squashed, histogram-equalised",
        "reproduce": "make lungs-model  (tools/train_lungs.py)",
        "data": {
            "masks": "V7 Labs lung annotations, semantic_masks_v7labs_lungs.zip in the torchxrayvision wheel "
                     "(CC BY 4.0, https://github.com/mlmed/torchxrayvision), matched by file stem to "
                     "../shared/data/covid3 development films",
            "films_with_masks": len(films),
            "train_films": dict(Counter(f["source"] for f in train_films)),
            "train_patients": len({f["patient"] for f in train_films}),
            "held_out_patients": list(HELD_OUT_PATIENTS),
            "held_out_films": [f["path"] for f in held],
            "phantoms": f"{N_PHANTOMS} covidviz.data.synthetic phantoms (render_phantom(..., lungs=True)), {STORE} px",
        },
        "training": {"seed": args.seed, "steps": args.steps, "batch": BATCH, "phantoms_per_batch": PHANTOMS_PER_BATCH,
                     "lr": LR, "optimizer": "AdamW wd 1e-4, one-cycle", "loss": "BCE + soft Dice",
                     "store_px": STORE, "threads": THREADS, "seconds": round(train_s),
                     "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "evaluation": {"held_out": report["held_out"]["per_source"],
                       "held_out_films": report["held_out"]["films"],
                       "fixed_boxes": [list(map(lambda v: round(v, 4), b)) for b in boxes],
                       "fixed_boxes_note": "two boxes (x0, x1, y0, y1 as fractions of the film), fitted on the "
                                           "training films only; Dice at each film's own size"},
        "licence": ("weights derived from V7 Labs lung masks (CC BY 4.0, attribution: V7 Labs) on hannover (CC BY 3.0, "
                    "Hannover Medical School) and ieee8023 (CC BY 4.0) films, and the project's phantoms; see docs/lungs.md"),
    }
    atomic_write_json(lungs_mod.PROVENANCE if args.out == lungs_mod.WEIGHTS else args.out.with_suffix(".json"), prov)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {n_params} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
