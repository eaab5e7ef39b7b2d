"""Evidence on the lungs (``covidviz.analysis.lungs``, ``covidviz.runs.lungs``): each class's heat-map
weight inside the lung fields, from annotator masks (the ``folder`` adapter's ``lung_mask``) or the
segmenter, mapped onto the model input through the experiment's own preprocessing.

Fast: hand-built maps and masks, phantom films written as a tiny Radiography-Database-like folder, and
an untrained tiny CNN (or a stub for the CAM when the expected numbers must be exact).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from covidviz.analysis import lungs as L
from covidviz.anatomy import QUALITY_OK
from covidviz.cam.lungshare import model_mask
from covidviz.data.adapters import load_dataset
from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.data.synthetic import render_phantom
from covidviz.models import Classifier
from covidviz.runs.lungs import ANNOTATOR, SEGMENTER, LungShares, external_lungs
from covidviz.stats.metrics import PatientBootstrap

SIZE = 32


def lungs_box(shape=(48, 48)) -> np.ndarray:
    """Two upright rectangles, like a pair of lung fields."""
    m = np.zeros(shape, bool)
    h, w = shape
    m[h // 6:5 * h // 6, w // 8:w // 2 - w // 10] = True
    m[h // 6:5 * h // 6, w // 2 + w // 10:7 * w // 8] = True
    return m


# ------------------------------------------------------------------------------------------------
# one map against one mask; the summary over films
# ------------------------------------------------------------------------------------------------

def test_map_on_lungs_share_and_peak():
    mask = lungs_box()
    inside = np.where(mask, 1.0, 0.0) * np.linspace(0.5, 1.0, 48)[None, :]
    assert L.map_on_lungs(inside, mask) == (1.0, 1.0)           # all the weight, and the peak, on the lungs
    even = np.ones(mask.shape) + 1e-6 * np.random.default_rng(0).random(mask.shape)
    share, _ = L.map_on_lungs(even, mask)
    assert share == pytest.approx(mask.mean(), abs=1e-3)        # a map spread evenly scores chance
    outside = np.where(mask, 0.0, 1.0)
    outside[0, 0] = 2.0
    assert L.map_on_lungs(outside, mask) == (0.0, 0.0)
    assert all(np.isnan(L.map_on_lungs(np.zeros(mask.shape), mask)))  # no positive weight: not measured
    low = np.zeros((6, 6))
    low[2:4, 1] = 1.0                                          # a coarse map is resized to the mask first
    assert L.map_on_lungs(low, mask)[1] == 1.0


def test_summarise_shares_ci_chance_and_flat_maps():
    rng = np.random.default_rng(0)
    n = 60
    share = np.stack([rng.uniform(0.8, 1.0, n), rng.uniform(0.0, 0.3, n)], 1)
    share[:5, 1] = np.nan                                     # five flat maps for the second class
    hit = np.where(np.isfinite(share), (share > 0.5).astype(float), np.nan)
    area = rng.uniform(0.25, 0.35, n)
    onehot = np.zeros((n, 2))
    onehot[: n // 3, 0] = 1
    onehot[n // 3:, 1] = 1
    boot = PatientBootstrap(np.repeat(np.arange(n // 2), 2), 300, 0)
    out = L.summarise(share, hit, area, onehot, ["A", "B"], boot)
    a, b = out["A"]["all"], out["B"]["all"]
    assert a["n"] == n and a["n_flat"] == 0 and b["n"] == n - 5 and b["n_flat"] == 5
    assert a["share"] == pytest.approx(share[:, 0].mean()) and b["share"] == pytest.approx(np.nanmean(share[:, 1]))
    for c in (a, b):
        assert c["ci_low"] < c["share"] < c["ci_high"]       # the CI brackets the mean
        assert c["pointing_ci_low"] <= c["pointing"] <= c["pointing_ci_high"]
    assert a["pointing"] == 1.0 and b["pointing"] == 0.0
    assert a["chance"] == pytest.approx(area.mean()) and b["chance"] == pytest.approx(area[5:].mean())
    assert a["pointing_chance"] == a["chance"]
    pos = out["A"]["positives"]
    assert pos["n"] == n // 3 and pos["share"] == pytest.approx(share[: n // 3, 0].mean())
    assert out["B"]["positives"]["n_flat"] == 0 and out["B"]["positives"]["n"] == n - n // 3  # the flat maps: A's films
    json.dumps(out, allow_nan=False)


# ------------------------------------------------------------------------------------------------
# a film's lung fields: annotator mask or segmenter, through the crop
# ------------------------------------------------------------------------------------------------

def _wide_phantom(seed: int = 3):
    """A phantom padded to a wide film (so a centre crop cuts it), with its true lung fields."""
    img, _, lung = render_phantom(seed, ("Pneumonia",), size=128, lungs=True)
    pad = ((0, 0), (24, 40))
    return np.pad(img, pad, constant_values=int(img[0, 0])), np.pad(lung > 0, pad)


def test_film_lungs_from_an_annotator_mask_and_from_the_segmenter(tmp_path):
    film, truth = _wide_phantom()
    prep = Preprocessing(image_size=SIZE, crop="center")
    expected = model_mask(truth, prep)
    small = tmp_path / "mask.png"  # the annotator's mask at another size than the film
    Image.fromarray(truth.astype(np.uint8) * 255).resize((96, 64), Image.NEAREST).save(small)
    given = L.film_lungs(film, prep, str(small))
    assert given.ok and given.source == ANNOTATOR and given.quality == 1.0 and given.mask.shape == (SIZE, SIZE)
    assert 2 * (given.mask & expected).sum() / (given.mask.sum() + expected.sum()) > 0.9
    found = L.film_lungs(film, prep)
    assert found.ok and found.source == SEGMENTER and found.quality >= QUALITY_OK
    assert 2 * (found.mask & expected).sum() / (found.mask.sum() + expected.sum()) > 0.8
    missing = L.film_lungs(film, prep, str(tmp_path / "nope.png"))  # unreadable mask: the segmenter instead
    assert missing.ok and missing.source == SEGMENTER
    blank = L.film_lungs(np.full((96, 96), 128, np.uint8), prep)   # nothing to segment: left out, with why
    assert not blank.ok and blank.problem == L.LOW_QUALITY and blank.quality < QUALITY_OK
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(empty)
    assert L.film_lungs(film, prep, str(empty)).problem == L.NO_MASK


# ------------------------------------------------------------------------------------------------
# a folder dataset that ships lung masks, analysed end to end
# ------------------------------------------------------------------------------------------------

def write_radiography_folder(root: Path, n: int = 6, masks_for=("COVID",)) -> Path:
    """``CLASS/images/x.png`` phantoms, and ``CLASS/masks/x.png`` (a fixed pair of boxes, at 64 px) for
    the classes in ``masks_for``."""
    for cls, finding in (("COVID", ("COVID-19",)), ("Normal", ())):
        (root / cls / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = render_phantom(100 + i + (50 if cls == "Normal" else 0), finding, size=96)[0]
            Image.fromarray(img).save(root / cls / "images" / f"{cls}-{i}.png")
            if cls in masks_for:
                (root / cls / "masks").mkdir(exist_ok=True)
                Image.fromarray(lungs_box((64, 64)).astype(np.uint8) * 255).save(root / cls / "masks" / f"{cls}-{i}.png")
    return root


class HandExperiment:
    """What ``lung_analysis`` reads of an experiment: labels, preprocessing, images, models."""

    def __init__(self, table, names, models, prep=None):
        self.table = table.assign(split="test")
        self.labels = LabelSpace(tuple(names), MULTICLASS)
        self.preprocessing = prep or Preprocessing(image_size=SIZE)
        self.models = models
        self.backbones = list(models)

    def images(self):
        return self.table

    def load_model(self, arch):
        return self.models[arch]


def _tiny_model(n_classes: int) -> Classifier:
    torch.manual_seed(0)
    model = Classifier("tinycnn", n_classes)
    with torch.no_grad():
        model.head.weight.abs_()  # positive evidence somewhere: the maps are not flat
    return model.eval()


def test_folder_masks_are_used_instead_of_the_segmenter(tmp_path, monkeypatch):
    root = write_radiography_folder(tmp_path / "COVID-19_Radiography_Dataset", masks_for=("COVID", "Normal"))
    ds = load_dataset(f"folder:{root}")
    assert (ds.table["lung_mask"] != "").all() and ds.table["lung_mask"].str.contains("/masks/").all()
    exp = HandExperiment(ds.table, ["COVID-19", "Normal"], {"tinycnn": _tiny_model(2)})

    # every map exactly on the (annotated) lungs: share 1, peak on the lungs, chance = the lungs' area
    lungs = model_mask(L._annotator_mask(ds.table["lung_mask"][0], (96, 96)), exp.preprocessing)

    class Maps:
        def __init__(self, n):
            self.raw = np.repeat(np.where(lungs, 1.0, 0.0)[None].astype(np.float32), n, 0)

    monkeypatch.setattr(L, "compute_cams", lambda model, x, j, methods: {L.DEFAULT_METHOD: Maps(len(x))})
    res = L.lung_analysis(exp, n_boot=50)["tinycnn"]
    assert res["source"] == ANNOTATOR and res["sources"] == {ANNOTATOR: 12} and res["n_images"] == 12
    assert res["n_low_quality"] == 0 and res["n_candidates"] == 12
    for cls in ("COVID-19", "Normal"):
        cell = res["per_class"][cls]["all"]
        assert cell["share"] == pytest.approx(1.0) and cell["ci_low"] == pytest.approx(1.0) and cell["pointing"] == 1.0
        assert cell["chance"] == pytest.approx(lungs.mean()) and cell["n"] == 12
        assert res["per_class"][cls]["positives"]["n"] == 6


def test_lung_analysis_mixed_sources_record_and_text(tmp_path):
    root = write_radiography_folder(tmp_path / "radiography", n=4, masks_for=("COVID",))
    ds = load_dataset(f"folder:{root}")
    assert (ds.table["lung_mask"] != "").sum() == 4 and any("lung masks for 4" in note for note in ds.notes)
    exp = HandExperiment(ds.table, ["COVID-19", "Normal"], {"tinycnn": _tiny_model(2)})
    out = L.lung_analysis(exp, n_boot=50)
    res = out["tinycnn"]
    used = res["n_images"]
    assert res["sources"][ANNOTATOR] == 4 and res["sources"].get(SEGMENTER, 0) == used - 4
    assert res["source"] == (f"{ANNOTATOR} and {SEGMENTER}" if used > 4 else ANNOTATOR)
    assert used + res["n_low_quality"] + res["n_no_mask"] + res["n_unreadable"] == res["n_candidates"] == 8
    for cls in ("COVID-19", "Normal"):
        c = res["per_class"][cls]["all"]
        if c["share"] is not None:
            assert 0 <= c["ci_low"] <= c["share"] <= c["ci_high"] <= 1 and 0 < c["chance"] < 1
    rec = LungShares.from_json(json.loads(json.dumps(res, allow_nan=False)))
    assert rec.n_images == used and rec.source == res["source"] and rec.names == ["COVID-19", "Normal"]
    assert rec.cell("COVID-19").share == res["per_class"]["COVID-19"]["all"]["share"]
    assert rec.cell("nope").share is None and not rec.cell("nope").measured  # missing parts: empty cells
    text = L.format_lungs(out, exp.labels)
    assert "[tinycnn]" in text and "Evidence on the lungs" in text and "COVID-19" in text

    class Site:  # an external set's metrics.json carries the same object per backbone
        metrics = {"backbones": {"tinycnn": {"lungs": res}, "resnet50": {}}}

    assert external_lungs(Site, "tinycnn").n_images == used and external_lungs(Site, "resnet50") is None


def test_no_usable_film_gives_an_empty_result(tmp_path):
    root = tmp_path / "flat"
    for cls in ("COVID", "Normal"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.full((64, 64), 100, np.uint8)).save(root / cls / f"{cls}.png")
    ds = load_dataset(f"folder:{root}")
    exp = HandExperiment(ds.table, ["COVID-19", "Normal"], {"tinycnn": _tiny_model(2)})
    assert L.lung_analysis(exp, n_boot=10) == {}
    assert "no test film" in L.format_lungs({}, ["COVID-19", "Normal"])
