"""Procedural frontal (PA/AP) chest radiograph phantoms with pixel lesion masks.

Why phantoms: the demo, the tests and the CAM localisation checks need chest X-rays that exist on
every machine (no download, no licence), that come with *ground-truth lesion masks* (real datasets
have at best boxes), and whose difficulty and confounding can be dialled. The phantoms are not
realistic enough to learn radiology from, but they have the structure a CNN has to cope with on
real films: a dark lung field crossed by bright ribs, a bright mediastinum, spine and heart,
diaphragm domes, patient-to-patient anatomical variation, positioning, exposure and noise, and
findings that live in the places radiologists expect them.

How an image is made (all vectorised numpy on one ``size x size`` grid, ~10 ms per 256² image):

1. A per-patient *anatomy* (lung size and shape, heart size, rib spacing, body habitus, ...) is
   drawn from ``seed``; a per-film *positioning/exposure* (shift, rotation, magnification, window,
   gamma, noise) is drawn from ``(seed, variant)``; each finding draws its own lesion parameters
   from ``(seed, finding)``. Keeping the random streams separate means the same seed rendered with
   and without a finding gives the *same* film plus the lesion, which is what makes "the lesion
   region is brighter than in the normal twin" a meaningful test, and lets ``variant`` give a
   patient's follow-up films with the same anatomy and disease.
2. Anatomy is evaluated in *anatomical coordinates* ``(u, v)`` (``u`` to the image right = the
   patient's left, ``v`` downwards, both roughly in [-1, 1]) obtained by an affine transform of the
   pixel grid, so pose variation costs nothing extra.
3. Structures add (bone, soft tissue, fluid) or remove (air in lungs, trachea, gastric bubble) an
   X-ray *density*; density is mapped to brightness like a film (air black, bone white) by an
   exposure window and gamma; quantum-like noise is added and a detector blur applied.
4. Findings add density inside the lungs and report a boolean mask:

   - ``COVID-19``: bilateral, peripheral, lower-zone ground-glass opacities (hazy, patchy).
   - ``Pneumonia``: a lobar consolidation in one lobe of one lung (dense, confluent, sharp at the
     fissure, with air bronchograms).
   - ``Cardiomegaly``: an enlarged heart (mask = heart silhouette).
   - ``Effusion``: fluid at one lung base with a meniscus, blunting the costophrenic angle.
   - ``Nodule``: a small round dense spot in a lung.

``difficulty`` in [0, 1] scales lesion conspicuity down and noise / anatomical variation up: at 0
lesions are obvious, at the default 0.5 a linear model on 32x32 pixels is well above chance but far
from perfect (a CNN does better), at 1 they are faint. ``confounder`` makes a lead "R"/"L" hospital
marker co-occur with COVID-19 so the app can demonstrate shortcut learning.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

FINDINGS_MULTICLASS = ("COVID-19", "Normal", "Pneumonia")
FINDINGS_MULTILABEL = ("COVID-19", "Pneumonia", "Cardiomegaly", "Effusion", "Nodule")

NIH_NO_FINDING = "No Finding"  # the NIH label file's token for an image without findings
# Names that mean "no lesion" when passed to render_phantom.
_NORMAL_NAMES = {"Normal", NIH_NO_FINDING, ""}
# Stable small integers per finding: each finding's lesion parameters come from its own random
# stream (seed, 2, index) so adding a finding never changes the anatomy or another lesion.
_FINDING_INDEX = {name: i for i, name in enumerate(FINDINGS_MULTILABEL)}

# Bump when the rendering changes: stored in params.json so an old dataset is re-rendered.
# v2: lobar pneumonia fills its lobe (mean mask 3.9 % of the film at 64 px, was 2.5 %).
GENERATOR_VERSION = 2

# Multi-label mode: probability of an image (patient) without any finding, then the independent
# probability of each finding for the others (at least one is forced).
_P_NO_FINDING = 0.35
_P_FINDING = {"COVID-19": 0.35, "Pneumonia": 0.30, "Cardiomegaly": 0.25, "Effusion": 0.25, "Nodule": 0.20}
# Base rate of the hospital marker when there is no confounding.
_P_MARKER_BASE = 0.1

F32 = np.float32


# --------------------------------------------------------------------------------------------
# small vectorised helpers
# --------------------------------------------------------------------------------------------

def _ramp(z):
    """Soft step 0 -> 1 over z in [-0.5, 0.5]: anti-aliased edges at a chosen width, cheaper than a
    sigmoid and exactly 0/1 away from the edge (so masks thresholded at 0.5 are crisp)."""
    return np.clip(z + F32(0.5), F32(0.0), F32(1.0))


@lru_cache(maxsize=8)
def _grid(size: int):
    """Pixel-centre coordinates in [-1, 1] (x to the right, y down), shared and read-only."""
    c = ((np.arange(size, dtype=F32) + F32(0.5)) / F32(size)) * F32(2) - F32(1)
    x, y = np.meshgrid(c, c)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@lru_cache(maxsize=32)
def _basis(size: int, cells: int):
    """(size, cells) Gaussian interpolation matrix B (and B.T, contiguous): smooth noise =
    B @ Z @ B.T for a (cells, cells) white-noise Z. Two tiny products instead of a full-image blur."""
    pos = (np.arange(size, dtype=np.float64) + 0.5) / size
    centres = (np.arange(cells, dtype=np.float64) + 0.5) / cells
    w = 1.0 / cells
    b = np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / w) ** 2)
    b /= b.sum(axis=1, keepdims=True)
    b = b.astype(F32)
    bt = np.ascontiguousarray(b.T)
    b.flags.writeable = False
    bt.flags.writeable = False
    return b, bt


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, window=None) -> np.ndarray:
    """Band-limited Gaussian random field with about ``cells`` blobs across a ``size`` image,
    ~unit std; ``window`` (a (rows, cols) pair of slices) evaluates only that part of it."""
    b, bt = _basis(size, cells)
    if window is not None:
        b, bt = b[window[0]], bt[:, window[1]]
    z = rng.standard_normal((cells, cells)).astype(F32)
    # einsum, not BLAS: these products are tiny, and a threaded BLAS both spins up threads that
    # compete with the caller's (e.g. a DataLoader's) and may round differently from run to run.
    f = np.einsum("ij,jk->ik", np.einsum("ij,jk->ik", b, z), bt)
    s = float(f.std())
    return f / F32(s if s > 0 else 1.0)


def _periodic_noise_1d(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Smooth periodic 1-D noise of length n (for angular vessel patterns), ~unit std."""
    k = np.fft.rfftfreq(n, 1.0 / n)
    spec = (rng.standard_normal(k.size) + 1j * rng.standard_normal(k.size)) * np.exp(-0.5 * (k / cells) ** 2)
    spec[0] = 0
    f = np.fft.irfft(spec, n)
    return (f / (f.std() or 1.0)).astype(F32)


# --------------------------------------------------------------------------------------------
# anatomy
# --------------------------------------------------------------------------------------------

@dataclass
class _Anatomy:
    """Per-patient anatomical parameters (anatomical coordinates, see module docstring)."""

    body_w: float        # half-width of the thorax (outer soft tissue)
    apex_v: float        # lung apex height
    cp_v: tuple          # costophrenic angle height (image-left lung, image-right lung)
    dome_h: tuple        # diaphragm dome height above the costophrenic angle
    lat_w: float         # lateral extent of the lungs at their base
    apex_u: float        # lateral position of the apex
    med_u: float         # medial lung border at the base (mediastinum half-width)
    heart_c: tuple       # heart centre (u, v)
    heart_r: tuple       # heart semi-axes
    heart_rot: float     # heart axis rotation (radians)
    rib_k1: float        # rib curve shape
    rib_k2: float
    rib_n: float         # number of posterior rib spaces between apex and diaphragm
    rib_phase: float
    spine_w: float
    lung_air: float      # how much air darkens the lungs
    hilum_phase: float
    clav_v: float
    gastric: float       # gastric air bubble under the left hemidiaphragm (0 = none)


def _draw_anatomy(rng: np.random.Generator, var: float) -> _Anatomy:
    """Draw one patient's anatomy. ``var`` scales the spread (difficulty -> more variation)."""
    n = lambda s: float(rng.standard_normal()) * s * var  # noqa: E731
    cp = 0.50 + n(0.03)
    return _Anatomy(
        body_w=0.90 + n(0.04),
        apex_v=-0.66 + n(0.03),
        # The right hemidiaphragm (image left) sits higher than the left: the liver lies under it.
        cp_v=(cp - 0.03 + n(0.015), cp + n(0.015)),
        dome_h=(0.16 + n(0.025), 0.14 + n(0.025)),
        lat_w=0.78 + n(0.03),
        apex_u=0.26 + n(0.02),
        med_u=0.09 + n(0.01),
        heart_c=(0.10 + n(0.025), 0.28 + n(0.02)),
        heart_r=(0.38 + n(0.025), 0.235 + n(0.015)),
        heart_rot=-0.35 + n(0.08),
        rib_k1=0.45 + n(0.04),
        rib_k2=1.00 + n(0.08),
        rib_n=9.0 + n(0.4),
        rib_phase=float(rng.uniform(-0.15, 0.15)),
        spine_w=0.062 + n(0.005),
        lung_air=0.31 + n(0.02),
        hilum_phase=float(rng.uniform(0, 2 * np.pi)),
        clav_v=-0.62 + n(0.025),
        gastric=float(rng.uniform(0.0, 0.09)) if rng.random() < 0.7 else 0.0,
    )


@dataclass
class _Lung:
    soft: np.ndarray   # 0..1 membership (anti-aliased)
    t: np.ndarray      # height within the lung: 0 apex .. 1 costophrenic angle (unclipped)
    p: np.ndarray      # position across the lung: 0 medial .. 1 lateral (clipped)
    side: int          # -1 image left (patient right), +1 image right (patient left)
    dia: np.ndarray    # diaphragm height at each column (anatomical v)


def _lung(u, v, a: _Anatomy, side: int, edge: float) -> _Lung:
    """Teardrop lung field: narrow rounded apex, lateral border bulging out, near-vertical medial
    border by the mediastinum, lower boundary = diaphragm dome with a sharp lateral recess."""
    k = 0 if side < 0 else 1
    su = u * F32(side)  # mirror so both lungs are computed on the positive side
    cp = a.cp_v[k]
    t = (v - F32(a.apex_v)) / F32(cp - a.apex_v)
    tc = np.clip(t, 0.0, 1.0)
    lat = F32(a.apex_u) + F32(a.lat_w - a.apex_u) * np.sqrt(1 - (1 - tc) ** 2)
    med = F32(a.apex_u - 0.03) - F32(a.apex_u - 0.03 - a.med_u) * np.sqrt(tc)
    width = np.maximum(lat - med, F32(1e-3))
    inside_x = _ramp((lat - su) / F32(edge)) * _ramp((su - med) / F32(edge))
    # Diaphragm dome: highest a bit lateral of mid-lung, dropping steeply into the lateral
    # costophrenic recess and more gently to the cardiophrenic angle.
    dc = 0.45 * (a.med_u + a.lat_w)
    q = np.abs((su - F32(dc)) / F32(0.5 * (a.lat_w - a.med_u) + 0.02))
    dia = F32(cp) - F32(a.dome_h[k]) * np.clip(1 - q * q * np.sqrt(q), 0.0, 1.0)  # 1 - q^2.5
    soft = inside_x * _ramp((dia - v) / F32(edge)) * _ramp(t / F32(0.02))
    p = np.clip((su - med) / width, 0.0, 1.0)
    return _Lung(soft=soft, t=t, p=p, side=side, dia=dia)


def _heart(u, v, a: _Anatomy, scale: float, edge: float):
    """Heart silhouette (0..1) and its thickness profile; ``scale`` > 1 for cardiomegaly. The heart
    grows mostly to the patient's left and downwards, as a dilated heart does on a film."""
    cu, cv = a.heart_c
    ru, rv = a.heart_r
    cu = cu + (scale - 1) * ru * 0.55
    cv = cv + (scale - 1) * rv * 0.25
    ru, rv = ru * scale, rv * (1 + 0.6 * (scale - 1))
    c, s = np.cos(a.heart_rot), np.sin(a.heart_rot)
    du, dv = u - F32(cu), v - F32(cv)
    x = (du * F32(c) + dv * F32(s)) / F32(ru)
    y = (-du * F32(s) + dv * F32(c)) / F32(rv)
    r = np.sqrt(x * x + y * y)
    soft = _ramp((1 - r) / F32(edge / min(ru, rv)))
    thick = np.sqrt(np.clip(1 - r * r, 0.0, 1.0))
    return soft, thick


# --------------------------------------------------------------------------------------------
# the hospital marker ("R" / "L" lead letter)
# --------------------------------------------------------------------------------------------

_GLYPHS = {
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
}


def _draw_marker(img: np.ndarray, letter: str, corner: int, size: int) -> None:
    """Burn a bright lead letter in a framed square into the top-left (0) or top-right (1) corner."""
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]])
    cell = max(1, size // 80)
    pad = cell
    h, w = glyph.shape[0] * cell + 2 * pad, glyph.shape[1] * cell + 2 * pad
    margin = max(2, size // 25)
    r0 = margin
    c0 = margin if corner == 0 else size - margin - w
    box = img[r0:r0 + h, c0:c0 + w]
    box[...] = np.maximum(box * 0.5 + 0.3, 0.35)  # the marker's plastic frame
    letter_px = np.kron(glyph, np.ones((cell, cell), dtype=bool))
    box[pad:pad + letter_px.shape[0], pad:pad + letter_px.shape[1]][letter_px] = 1.0


# --------------------------------------------------------------------------------------------
# lesions: each returns (added density, bool mask)
# --------------------------------------------------------------------------------------------

@dataclass
class _Scene:
    """What a lesion needs to know about the rendered anatomy."""

    u: np.ndarray
    v: np.ndarray
    lungs: list
    blocker: np.ndarray  # heart + aortic knob silhouette: lung hidden behind it
    a: _Anatomy
    size: int
    window: tuple        # where these arrays sit in the full image (slices)


def _pick(rng: np.random.Generator, scene: _Scene, *conditions) -> tuple[float, float]:
    """Anatomical (u, v) of a random pixel satisfying the first non-empty condition. Lesion centres
    are drawn from the *rendered* lung, not from formulas, so they always land in visible lung
    (never below a dome or behind the heart) and every finding has pixels to show for it."""
    for cond in conditions:
        idx = np.flatnonzero(cond)
        if idx.size:
            k = int(idx[int(rng.integers(idx.size))])
            return float(scene.u.flat[k]), float(scene.v.flat[k])
    raise ValueError("phantom too small to place a lesion")  # unreachable for size >= 32


def _covid(rng, sc: _Scene, amp: float):
    """Bilateral peripheral lower-zone ground-glass opacities: a few hazy blobs per lung centred in
    the outer part of the lower zone, broken up by smooth noise so they look patchy."""
    field = np.zeros_like(sc.u)
    for lung in sc.lungs:
        open_lung = (lung.soft > 0.95) & (sc.blocker < 0.05)
        zone = open_lung & (lung.t > 0.6) & (lung.t < 0.95) & (lung.p > 0.6)
        for _ in range(int(rng.integers(2, 4))):
            cu, cv = _pick(rng, sc, zone & (lung.p < 0.92), zone, open_lung & (lung.t > 0.5), lung.soft > 0.5)
            r = float(rng.uniform(0.09, 0.15))
            d2 = ((sc.u - F32(cu)) ** 2 + (sc.v - F32(cv)) ** 2) / F32(r * r)
            field = np.maximum(field, np.exp(F32(-0.5) * d2) * lung.soft)
    # >= 0.35 everywhere, so each blob centre (field 1) stays above the mask threshold
    patch = np.clip(F32(0.75) + F32(0.35) * _smooth_noise(rng, sc.size, 18, sc.window), 0.35, 1.0)
    dens = field * patch
    mask = dens > 0.3
    # Ground glass: hazy, lung markings still visible -> modest density, soft edges.
    return F32(amp) * np.clip(dens * F32(1.4), 0.0, 1.0), mask


def _pneumonia(rng, sc: _Scene, amp: float):
    """Lobar consolidation: one dense confluent opacity filling much of one lobe of one lung.
    The fissure side is sharp (the lobe stops there), the other borders are irregular."""
    lung = sc.lungs[int(rng.integers(0, 2))]
    lobes = ["upper", "lower"] + (["middle"] if lung.side < 0 else [])  # middle lobe: right lung only
    lobe = lobes[int(rng.integers(0, len(lobes)))]
    t, p = lung.t, lung.p
    if lobe == "upper":
        fiss = float(rng.uniform(0.42, 0.5))
        zone = _ramp((F32(fiss) - t) / F32(0.01))
        deep = t < F32(fiss - 0.12)  # prefer centres well inside the lobe, so it fills
    elif lobe == "lower":
        fiss = float(rng.uniform(0.5, 0.58))
        zone = _ramp((t - F32(fiss)) / F32(0.01))
        deep = t > F32(fiss + 0.15)
    else:
        zone = _ramp((t - F32(0.48)) / F32(0.01)) * _ramp((F32(0.9) - t) / F32(0.05)) * _ramp((F32(0.6) - p) / F32(0.1))
        deep = t > F32(0.58)
    open_lung = (lung.soft > 0.95) & (sc.blocker < 0.05)
    core = open_lung & (zone > 0.99)
    cu, cv = _pick(rng, sc, core & deep & (p > 0.25) & (p < 0.75), core & deep, core, open_lung)
    if not core.any():  # degenerate lobe at a tiny size: let the opacity ignore the lobe
        zone = np.ones_like(zone)
    # Big enough to fill most of the lobe (the fissure and the pleura cut it): generator v1 drew a blob
    # half this size, a 2.5 %-of-film spot near the hilum that looked like a mass, not a lobar pneumonia.
    ru, rv = float(rng.uniform(0.3, 0.42)), float(rng.uniform(0.24, 0.34))
    r2 = ((sc.u - F32(cu)) / F32(ru)) ** 2 + ((sc.v - F32(cv)) / F32(rv)) ** 2
    edge = np.clip(_smooth_noise(rng, sc.size, 9, sc.window), -1.0, 1.0)  # irregular, but the centre stays in
    blob = _ramp((1 - r2 + F32(0.5) * edge) / F32(0.4))
    dens = blob * zone * lung.soft
    mask = dens > 0.4
    # Air bronchograms: thin dark branching tubes (air-filled bronchi) visible through the
    # opacity, radiating from the hilum.
    hu, hv = sc.a.med_u * lung.side, sc.a.apex_v + 0.5 * (sc.a.cp_v[0] - sc.a.apex_v)
    ang = np.arctan2(sc.v - F32(hv), sc.u - F32(hu))
    rad = np.sqrt((sc.u - F32(hu)) ** 2 + (sc.v - F32(hv)) ** 2)
    wobble = F32(1.5) * _smooth_noise(rng, sc.size, 6, sc.window)
    tubes = np.cos(ang * F32(rng.uniform(16, 24)) + F32(4.0) * rad + wobble) > F32(0.95)
    tubes &= _smooth_noise(rng, sc.size, 8, sc.window) > F32(0.2)  # bronchi come and go: break the lines up
    tex = F32(0.85) + F32(0.15) * _smooth_noise(rng, sc.size, 24, sc.window)
    return F32(amp) * dens * tex * (1 - F32(0.35) * tubes), mask


def _effusion(rng, sc: _Scene, amp: float):
    """Pleural effusion at one base: fluid replaces aerated lung below a meniscus that climbs
    laterally (the classic concave-up curve), blunting the costophrenic angle."""
    lung = sc.lungs[int(rng.integers(0, 2))]
    k = 0 if lung.side < 0 else 1
    h = float(rng.uniform(0.15, 0.32))
    level = sc.a.cp_v[k] - sc.a.dome_h[k] * 0.35 - h * 0.3  # medial fluid height
    men = F32(level) - F32(h) * lung.p ** 2  # higher laterally
    fluid = _ramp((sc.v - men) / F32(0.03)) * lung.soft
    mask = fluid > 0.5
    if not mask.any():  # tiny lung at a coarse size: fall back to the costophrenic recess
        mask = (lung.t > 0.85) & (lung.p > 0.6) & (lung.soft > 0.5)
        fluid = np.maximum(fluid, mask.astype(F32))
    # Fluid is water density: it fills the air the lung had there.
    return F32(amp) * fluid, mask


def _nodule(rng, sc: _Scene, amp: float):
    """Solitary pulmonary nodule: a small round dense spot in open lung (not behind the heart)."""
    lung = sc.lungs[int(rng.integers(0, 2))]
    open_lung = (lung.soft > 0.99) & (sc.blocker < 0.01)
    cu, cv = _pick(rng, sc, open_lung & (lung.t > 0.12) & (lung.t < 0.8) & (lung.p > 0.2) & (lung.p < 0.85),
                   open_lung, lung.soft > 0.5)
    r = max(float(rng.uniform(0.035, 0.06)), 2.5 * 2 / sc.size)  # at least a few pixels
    rr = np.sqrt((sc.u - F32(cu)) ** 2 + (sc.v - F32(cv)) ** 2) / F32(r)
    dens = np.sqrt(np.sqrt(np.clip(1 - rr * rr, 0.0, 1.0)))
    return F32(amp) * dens, rr < 0.9


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

def _stream(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator for one purpose (anatomy, film, a finding) of one seed."""
    return np.random.default_rng([int(seed) % (1 << 64), *keys])


def _normalise_findings(findings) -> tuple[str, ...]:
    if isinstance(findings, str):
        findings = [f for f in findings.split("|")]
    out = []
    for f in findings:
        f = str(f).strip()
        if f in _NORMAL_NAMES:
            continue
        if f not in _FINDING_INDEX:
            raise ValueError(f"unknown finding {f!r}; known: {FINDINGS_MULTILABEL} or 'Normal'")
        if f not in out:
            out.append(f)
    return tuple(out)


def render_phantom(seed: int, findings: tuple[str, ...] | list[str], size: int = 256,
                   difficulty: float = 0.5, marker: bool = False, *,
                   variant: int = 0, lungs: bool = False):
    """Render one frontal chest film phantom.

    Returns ``(image, mask)``: ``image`` uint8 (size, size), bright = dense; ``mask`` uint8
    (size, size), 1 inside any lesion, else 0. ``findings=()`` or ``("Normal",)`` is a normal film.
    ``seed`` fixes the patient (anatomy and lesion placement); ``variant`` gives another film of the
    same patient (slightly different positioning, exposure and noise). Deterministic.
    ``lungs=True`` returns ``(image, mask, lung_mask)`` instead: ``lung_mask`` uint8, 1 in the
    visible lung fields (both lungs, less what the heart and aortic knob hide, as lung
    annotations of real films draw them); the image is the same either way.
    """
    if size < 32:
        raise ValueError("size must be at least 32 pixels")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    d = float(difficulty)
    found = _normalise_findings(findings)
    var = 0.5 + 0.8 * d                    # anatomical / positioning spread
    conspicuity = 2.0 - 1.5 * d            # lesion density multiplier: 2.0 at d=0, 0.5 at d=1
    noise_sd = 0.010 + 0.050 * d           # quantum noise, in display units
    edge = 2.0 * 2.0 / size                # ~2 px anti-aliased edges

    rng_a = _stream(seed, 0)               # anatomy (patient)
    rng_i = _stream(seed, 1, int(variant))  # positioning, exposure, noise (film)
    a = _draw_anatomy(rng_a, var)

    # Pose: magnification, aspect, rotation and shift. Most of it is the patient's (habitus, how
    # this patient stands), drawn from the anatomy stream; a little is film-to-film jitter, so a
    # patient's follow-up films look alike, as they do in real archives.
    a_n = rng_a.standard_normal(5) * var
    i_n = rng_i.standard_normal(4) * var
    scale = 1.0 + a_n[0] * 0.04 + i_n[0] * 0.01
    aspect = 1.0 + a_n[1] * 0.035
    rot = np.deg2rad(a_n[2] * 2.0 + i_n[1] * 0.8)
    du = a_n[3] * 0.035 + i_n[2] * 0.012
    dv = a_n[4] * 0.035 + i_n[3] * 0.012
    gx, gy = _grid(size)
    c, s = F32(np.cos(rot)), F32(np.sin(rot))
    xs, ys = gx - F32(du), gy - F32(dv)
    u = (xs * c + ys * s) / F32(scale * aspect)
    v = (-xs * s + ys * c) / F32(scale)
    au = np.abs(u)

    # --- body: neck, sloping shoulders and thorax; thicker (denser) in the middle -------------------
    neck = _ramp((F32(0.2) - au) / F32(edge * 2))
    shoulder = F32(-0.84) + F32(0.30) * (np.clip((au - F32(0.2)) / F32(0.7), 0.0, None) ** 1.6)
    torso = _ramp((F32(a.body_w) - au) / F32(edge * 2)) * _ramp((v - shoulder) / F32(edge * 3))
    body = np.maximum(neck, torso)
    thick = np.sqrt(np.clip(1 - (u / F32(a.body_w + 0.04)) ** 2, 0.0, 1.0))
    dens = body * (F32(0.10) + F32(0.42) * thick)

    # --- heart (and a slightly bigger one for cardiomegaly) --------------------------------------
    cardio = "Cardiomegaly" in found
    rng_c = _stream(seed, 2, _FINDING_INDEX["Cardiomegaly"])
    # enlargement: ~1.4x at the default difficulty (cardiothoracic ratio > 0.5), less when harder
    hscale = 1.0 + (rng_c.uniform(0.36, 0.48) * (0.35 + 0.5 * conspicuity) / 0.975 if cardio else 0.0)
    heart, heart_thick = _heart(u, v, a, hscale, edge)
    # Aortic knob: the arch bulging into the upper left lung (image right).
    ak = _ramp((F32(1) - np.sqrt(((u - F32(0.12)) / F32(0.07)) ** 2 + ((v + F32(0.28)) / F32(0.055)) ** 2)) / F32(0.3))
    blocker = np.maximum(heart, ak)

    dens += F32(0.05) * heart * heart_thick

    # --- lungs: air removes density; thicker lung (mid-field) is darker ---------------------------
    # Everything about the lungs (and the lesions in them) is computed in the thorax's bounding
    # box only (about half the film): the same result, for half the work.
    box = (au < F32(a.lat_w + 0.08)) & (v > F32(a.apex_v - 0.08)) & (v < F32(max(a.cp_v) + 0.08))
    rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
    win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    uw, vw, hidden = u[win], v[win], blocker[win]
    seen = 1 - hidden
    fields = [_lung(uw, vw, a, -1, edge), _lung(uw, vw, a, +1, edge)]
    air = np.zeros_like(uw)
    for lung in fields:
        depth = np.sqrt(np.sqrt(F32(4) * lung.p * (F32(1) - lung.p) + F32(0.15)))
        air += lung.soft * depth * np.sqrt(np.clip(F32(0.55) + F32(0.6) * lung.t, 0.0, 1.0))
    lung_any = np.zeros_like(u)
    lung_any[win] = np.clip(fields[0].soft + fields[1].soft, 0.0, 1.0) * seen
    dens[win] -= F32(a.lung_air) * air * seen

    # Vascular markings: branching-looking streaks radiating from each hilum, thinning and fading
    # towards the periphery (the outer third of a normal lung is nearly free of visible vessels),
    # plus the hilar shadow itself (pulmonary arteries and veins at the root of the lung).
    vess = np.zeros_like(uw)
    for lung in fields:
        hu = lung.side * (a.med_u - 0.01)
        hv = a.apex_v + 0.5 * (a.cp_v[0] - a.apex_v)
        ang = np.arctan2(vw - F32(hv), (uw - F32(hu)) * F32(lung.side))
        rad = np.sqrt((uw - F32(hu)) ** 2 + (vw - F32(hv)) ** 2)
        prof = _periodic_noise_1d(rng_a, 512, 16)
        idx = ((ang + F32(0.2) * np.sin(F32(7) * rad + F32(a.hilum_phase))) * F32(512 / (2 * np.pi))).astype(np.int32)
        streak = np.clip(np.take(prof, idx, mode="wrap") - F32(1.8) * rad, 0.0, 1.0)
        vess += (streak * np.exp(-rad / F32(0.3)) + F32(1.0) * np.exp(-0.5 * (rad / F32(0.12)) ** 2)) * lung.soft
    dens[win] += F32(0.11) * vess * seen

    # --- trachea (air column in the upper mediastinum) and gastric bubble -------------------------
    carina = F32(a.apex_v + 0.3)
    trach = _ramp((F32(0.032) - np.abs(u + F32(0.01))) / F32(edge)) * _ramp((carina - v) / F32(0.04))
    dens -= F32(0.09) * trach * body
    gb = _ramp((F32(1) - ((u - F32(0.42)) / F32(0.10)) ** 2 - ((v - F32(a.cp_v[1] + 0.08)) / F32(0.05)) ** 2) / F32(0.6))
    dens -= F32(a.gastric) * gb

    # --- bones ----------------------------------------------------------------------------------
    # Spine: a vertical column of vertebral bodies (dim disc spaces), seen through the mediastinum.
    spine = np.sqrt(np.clip(1 - (u / F32(a.spine_w)) ** 2, 0.0, 1.0))
    discs = F32(1) - F32(0.35) * (np.cos((v - F32(a.rib_phase)) * F32(2 * np.pi / 0.11)) > F32(0.75))
    dens += F32(0.12) * spine * discs * body
    # Posterior ribs: one family of curves shifted down the chest. w is the "rib coordinate": each
    # rib is a band of w; the curve rises from the spine then sweeps down laterally, more so lower.
    tl = np.clip((v - F32(a.apex_v)) / F32(a.cp_v[1] - a.apex_v), -0.3, 1.3)
    curve = (-F32(a.rib_k1) * au + F32(a.rib_k2) * au * au) * (F32(0.7) + F32(0.5) * tl)
    w = v - curve
    spacing = (a.cp_v[1] - a.apex_v + 0.15) / a.rib_n
    q = (w - F32(a.apex_v - 0.12 + a.rib_phase * spacing)) / F32(spacing)
    frac = q - np.floor(q)
    tf = F32(0.42)
    b = np.clip(frac / tf, 0.0, 1.0)
    # flat-topped band profile, plus the inferior cortex (the crispest line on a real rib)
    rib = (frac < tf) * (np.sqrt(np.sqrt(F32(4) * b * (F32(1) - b))) + F32(0.35) * np.exp(-((b - F32(0.85)) / F32(0.1)) ** 2))
    rib *= _ramp((q + F32(0.4)) / F32(0.3)) * _ramp((F32(a.rib_n + 1.5) - q) / F32(0.3))
    rib *= _ramp((au - F32(a.spine_w)) / F32(0.03)) * _ramp((F32(a.lat_w + 0.07) - au) / F32(0.05)) * body
    # Ribs read mostly against aerated lung; over the dense abdomen and soft tissue they fade.
    dens += F32(0.065) * rib * (F32(0.3) + F32(0.7) * lung_any)
    # Anterior ribs: fainter bands sloping down towards the sternum.
    wa = v + F32(0.45) * (F32(0.85) - au)
    qa = (wa - F32(a.apex_v)) / F32(spacing * 1.25)
    fa = qa - np.floor(qa)
    arib = (fa < F32(0.3)) * np.sin(np.minimum(fa, F32(0.3)) / F32(0.3) * F32(np.pi))
    arib *= _ramp((au - F32(0.28)) / F32(0.1)) * _ramp((F32(a.lat_w) - au) / F32(0.05)) * lung_any
    arib *= _ramp((F32(4.5) - qa) / F32(0.5)) * _ramp(qa / F32(0.3))
    dens += F32(0.035) * arib
    # Clavicles: S-shaped bars from the sternal notch out to the shoulders.
    cl = au - F32(0.06)
    vcl = F32(a.clav_v) - F32(0.30) * cl + F32(0.20) * cl * cl
    clav = _ramp((F32(0.03) - np.abs(v - vcl)) / F32(edge)) * _ramp(cl / F32(0.03)) * _ramp((F32(0.78) - au) / F32(0.05))
    dens += F32(0.16) * clav * body

    # --- findings -------------------------------------------------------------------------------
    scene = _Scene(u=uw, v=vw, lungs=fields, blocker=hidden, a=a, size=size, window=win)
    mask = np.zeros((size, size), dtype=bool)
    for f in found:
        rng_f = _stream(seed, 2, _FINDING_INDEX[f])
        if f == "Cardiomegaly":  # already rendered as a bigger heart
            mask |= heart > 0.5
            continue
        if f == "COVID-19":
            add, m = _covid(rng_f, scene, 0.11 * conspicuity)
        elif f == "Pneumonia":
            add, m = _pneumonia(rng_f, scene, 0.16 * conspicuity)
        elif f == "Effusion":
            add, m = _effusion(rng_f, scene, min(0.4, 0.30 * (0.6 + 0.4 * conspicuity)))
        else:
            add, m = _nodule(rng_f, scene, 0.13 * conspicuity)
        # Lesions sit in the lung; what lies behind the heart is (mostly) hidden on a PA film.
        dens[win] += add * seen
        mask[win] |= m & (hidden < 0.5)

    # --- film: exposure window + gamma, quantum noise, detector blur -------------------------------
    lo = 0.02 + float(rng_i.normal(0, 0.02)) * var
    hi = 0.72 + float(rng_i.normal(0, 0.04)) * var
    gamma = float(np.exp(rng_i.normal(0, 0.12) * var))
    img = np.clip((dens - F32(lo)) / F32(hi - lo), 0.0, 1.0) ** F32(gamma)
    letter = "R" if rng_i.random() < 0.5 else "L"  # drawn either way: the marker changes nothing else
    if marker:
        _draw_marker(img, letter, 0 if letter == "R" else 1, size)
    # Quantum noise: Poisson-like, larger where more photons reach the detector (dark film).
    noise = rng_i.standard_normal((size, size), dtype=F32)
    img = img + noise * F32(noise_sd) * (F32(1.2) - F32(0.6) * img)
    img = ndimage.gaussian_filter(img, sigma=0.6 * size / 256, truncate=3.0)
    out = np.clip(img * F32(255) + F32(0.5), 0, 255).astype(np.uint8)
    if lungs:
        return out, mask.astype(np.uint8), (lung_any > 0.5).astype(np.uint8)
    return out, mask.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------

def _dataset_params(n, seed, size, difficulty, multilabel, confounder) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n": int(n), "seed": int(seed), "size": int(size),
            "difficulty": float(difficulty), "multilabel": bool(multilabel), "confounder": float(confounder)}


def _plan(n: int, seed: int, multilabel: bool, confounder: float) -> list[dict]:
    """Decide every image's patient, findings and metadata (cheap; no rendering)."""
    rng = np.random.default_rng([int(seed), 99])
    counts_p = np.array([0.6, 0.3, 0.1])  # images per patient 1/2/3 -> 1.5 on average

    patients: list[tuple[tuple[str, ...], int]] = []  # (findings, number of images)
    if multilabel:
        total = 0
        while total < n:
            if rng.random() < _P_NO_FINDING:
                fs: tuple[str, ...] = ()
            else:
                fs = tuple(f for f in FINDINGS_MULTILABEL if rng.random() < _P_FINDING[f])
                if not fs:
                    fs = (FINDINGS_MULTILABEL[int(rng.integers(len(FINDINGS_MULTILABEL)))],)
            k = min(int(rng.choice([1, 2, 3], p=counts_p)), n - total)
            patients.append((fs, k))
            total += k
    else:
        # Balanced classes: equal thirds (the remainder goes round-robin), grouped into patients
        # within each class so a patient's films all share the label.
        per = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
        order = rng.permutation(3)  # which class gets the remainder depends on the seed
        for ci, cls in enumerate(FINDINGS_MULTICLASS):
            left = per[int(order[ci])]
            while left > 0:
                k = min(int(rng.choice([1, 2, 3], p=counts_p)), left)
                patients.append(((cls,), k))
                left -= k

    patients = [patients[i] for i in rng.permutation(len(patients))]
    p_cov = _P_MARKER_BASE + (1 - _P_MARKER_BASE) * confounder
    p_other = _P_MARKER_BASE * (1 - confounder)
    rows = []
    for pid, (fs, k) in enumerate(patients):
        covid = "COVID-19" in fs
        marker = bool(rng.random() < (p_cov if covid else p_other))
        sex = "M" if rng.random() < 0.5 else "F"
        age = int(rng.integers(20, 91))
        anat_seed = int(np.random.SeedSequence([int(seed), 7, pid]).generate_state(1)[0])
        for j in range(k):
            view = "AP" if rng.random() < (0.6 if covid else 0.35) else "PA"
            rows.append({"findings": fs, "patient": pid, "anat_seed": anat_seed, "variant": j,
                         "marker": marker, "sex": sex, "age": age, "view": view})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _label_cell(findings: tuple[str, ...], multilabel: bool) -> str:
    if multilabel:
        return "|".join(findings) if findings else NIH_NO_FINDING
    return findings[0] if findings else "Normal"


def make_synthetic_dataset(root, n: int, seed: int = 0, size: int = 256, difficulty: float = 0.5,
                           multilabel: bool = False, confounder: float = 0.0) -> pathlib.Path:
    """Write ``n`` phantoms as PNGs under ``root/images/``, masks under ``root/masks/`` and
    ``root/metadata.csv``; return the csv path.

    Columns: ``path,label,patient_id,source,view,sex,age,mask`` (paths relative to ``root``).
    Multi-class: ``label`` is one of ``FINDINGS_MULTICLASS`` in about equal thirds. Multi-label:
    ``|``-joined findings of ``FINDINGS_MULTILABEL``, ``No Finding`` for none (~35 %). Patients
    have ~1.5 films each, all with the same label(s). ``source`` is ``hospital-A`` on films with
    the corner marker, else ``hospital-B``; ``confounder`` = 1 puts the marker on every COVID-19
    film and on no other, 0 on 10 % of films regardless of label.

    Idempotent: when ``metadata.csv`` exists and ``params.json`` records the same parameters the
    dataset is reused as is. ``metadata.csv`` is removed first and written last (via a temporary
    file and a rename), so an interrupted run is never mistaken for a finished one.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if not 0.0 <= confounder <= 1.0:
        raise ValueError(f"confounder must be in [0, 1], got {confounder}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    root = pathlib.Path(root)
    csv_path = root / "metadata.csv"
    params_path = root / "params.json"
    params = _dataset_params(n, seed, size, difficulty, multilabel, confounder)
    if csv_path.exists() and params_path.exists():
        try:
            if json.loads(params_path.read_text()) == params:
                return csv_path
        except (OSError, ValueError):
            pass  # unreadable params: rebuild
    root.mkdir(parents=True, exist_ok=True)
    csv_path.unlink(missing_ok=True)
    params_path.unlink(missing_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)

    plan = _plan(n, seed, multilabel, confounder)

    def write(i: int) -> dict:
        r = plan[i]
        img, mask = render_phantom(r["anat_seed"], r["findings"], size=size, difficulty=difficulty,
                                   marker=r["marker"], variant=r["variant"])
        img_rel, mask_rel = f"images/{i:06d}.png", f"masks/{i:06d}.png"
        # compress_level=1: ~2x faster than the default on noisy films, files ~15 % bigger.
        Image.fromarray(img).save(root / img_rel, compress_level=1)  # 2-D uint8 -> 8-bit grey "L"
        Image.fromarray(mask * np.uint8(255)).save(root / mask_rel, compress_level=1)
        return {
            "path": img_rel, "label": _label_cell(r["findings"], multilabel),
            "patient_id": f"synth:{r['patient']:06d}",
            "source": "hospital-A" if r["marker"] else "hospital-B",
            "view": r["view"], "sex": r["sex"], "age": r["age"], "mask": mask_rel,
        }

    # Each film is independent and numpy / zlib release the GIL on whole-image work, so a few
    # threads use the cores without the start-up and pickling costs of processes. Output does not
    # depend on the scheduling: every film has its own seeds and its own file.
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    workers = max(1, min(4, cpus))
    if workers == 1 or n < 8:
        records = [write(i) for i in range(n)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            records = list(pool.map(write, range(n)))
    # Films left over from an earlier, bigger dataset in the same folder would confuse anyone
    # reading the folder instead of the csv.
    for sub in ("images", "masks"):
        for old in (root / sub).glob("*.png"):
            if old.stem.isdigit() and int(old.stem) >= n:
                old.unlink()

    params_path.write_text(json.dumps(params, indent=1))
    tmp = root / "metadata.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id", "source", "view", "sex", "age", "mask"])
        wr.writeheader()
        wr.writerows(records)
    os.replace(tmp, csv_path)
    return csv_path
