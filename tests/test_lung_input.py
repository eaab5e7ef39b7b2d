"""``train.py --input full | lung-crop | lung-mask``: the lung inputs' contract (data.preprocess,
anatomy.inputs, the pixel cache, the manifest), the round trip Diagnose = Batch = ``evaluate``, and the
phantom demo of issue 23: a lung-mask model does not read the hospital marker, a full-film one does."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from covidviz.anatomy import segment_lungs
from covidviz.anatomy.inputs import cache_input, fallback_region, model_input, model_pixels
from covidviz.data.background import keep_only
from covidviz.data.cache import build_cache
from covidviz.data.preprocess import LUNG_MARGIN, Preprocessing, lung_box, resize_square
from covidviz.data.synthetic import render_phantom
from covidviz.runs.manifest import DatasetCard, ManifestInfo

CLASSES = ("COVID-19", "Normal", "Pneumonia")


def phantom(i: int, size: int = 256, difficulty: float = 0.7, marker: bool | None = None):
    """Film ``i`` of a confounded set: class ``CLASSES[i % 3]``, the hospital marker on COVID-19 films
    only (``marker`` overrides it: the same film with the marker added or removed)."""
    cls = CLASSES[i % 3]
    marker = (cls == "COVID-19") if marker is None else marker
    return render_phantom(1000 + i, (cls,), size=size, difficulty=difficulty, marker=marker)[0], cls


def write_phantoms(root: Path, n: int, size: int = 256, difficulty: float = 0.7, pad: int = 0) -> Path:
    """A csv dataset of ``n`` confounded phantoms (``phantom``), one patient each; ``pad``: a dark border
    that wide around each film (the phantoms' lungs nearly fill them; real films have more around)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, cls = phantom(i, size, difficulty)
        img = np.pad(img, pad, constant_values=8)
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        rows.append({"path": f"images/{i:04d}.png", "label": cls, "patient_id": f"p{i}",
                     "source": "hospital-A" if cls == "COVID-19" else "hospital-B"})
    with open(root / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


# ------------------------------------------------------------------------------------------------
# the contract in the data layer
# ------------------------------------------------------------------------------------------------

def test_old_manifests_load_as_full_and_the_input_round_trips():
    old = Preprocessing(64).to_json()
    assert "input" not in old  # the default is not written: older manifests write back unchanged
    assert Preprocessing.from_json(old).input == "full" and not Preprocessing.from_json(old).needs_lungs
    for name in ("lung-crop", "lung-mask"):
        prep = Preprocessing(64, input=name)
        assert Preprocessing.from_json(prep.to_json()) == prep and prep.needs_lungs
    with pytest.raises(ValueError, match="unknown input"):
        Preprocessing(64, input="lungs")
    card = DatasetCard(n_images=3, lung_input={"n": 3, "fell_back": 1, "examples": ["a.png"]})
    assert DatasetCard.from_json(card.to_json()).lung_input == card.lung_input
    assert DatasetCard.from_json(DatasetCard().to_json()).lung_input == {}
    assert ManifestInfo.from_json({"preprocessing": old}).preprocessing.input == "full"


def test_a_lung_input_refuses_a_film_without_its_lung_fields():
    film = np.full((80, 100), 120, np.uint8)
    with pytest.raises(ValueError, match="covidviz.anatomy.inputs.model_pixels"):
        Preprocessing(32, input="lung-mask").to_model_pixels(film)
    with pytest.raises(ValueError, match="does not match"):
        Preprocessing(32, input="lung-crop").to_model_pixels(film, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="empty lung mask"):
        Preprocessing(32, input="lung-crop").to_model_pixels(film, np.zeros((80, 100), bool))


def test_lung_box_has_its_margin_and_is_squared_inside_the_film():
    lungs = np.zeros((400, 300), bool)
    lungs[100:200, 60:240] = True  # 100 tall, 180 wide
    top, bottom, left, right = lung_box(lungs)
    assert (left, right) == (42, 258)  # 10 % of the width on each side
    assert bottom - top == right - left == 216 and (top + bottom) / 2 == pytest.approx(150, abs=1)  # squared, centred
    # against the film's edge: shifted inside, never padded
    lungs = np.zeros((400, 300), bool)
    lungs[5:60, 100:290] = True
    top, bottom, left, right = lung_box(lungs)
    assert top == 0 and right == 300 and bottom - top == right - left
    # a film too narrow for the square gives all it has (the resize squashes the rest)
    lungs = np.zeros((100, 400), bool)
    lungs[40:60, 10:390] = True
    assert lung_box(lungs) == (0, 100, 0, 400)
    assert LUNG_MARGIN == pytest.approx(0.10)


def test_lung_crop_pixels_and_masks_share_one_geometry():
    film, _ = phantom(1, size=192)
    lungs = segment_lungs(film).mask
    prep = Preprocessing(48, input="lung-crop")
    top, bottom, left, right = prep.crop_box(film.shape, lungs)
    np.testing.assert_array_equal(prep.to_model_pixels(film, lungs), resize_square(film[top:bottom, left:right], 48))
    # a mask drawn like the film lands on the same model pixels as the film's own content
    painted = np.zeros_like(film)
    painted[lungs] = 255
    np.testing.assert_array_equal(prep.to_model_mask(lungs, lungs), prep.to_model_pixels(painted, lungs) > 127)
    inp = model_input(prep, film)
    assert inp.box == (top, bottom, left, right) and inp.seen(film).shape == (bottom - top, right - left)
    assert 0.25 < inp.mask(prep, lungs).mean() < 0.8  # the lungs fill much of a lung crop


def test_lung_mask_input_depends_on_the_lungs_only_unlike_the_what_if_fill():
    """Everything outside the lungs may change (a marker, a label): the lung-mask input does not move,
    because its fill is made from the lungs; the what-ifs' ``keep_only`` fill (made from the rest) would
    carry a bright corner marker in as a smudge."""
    film, _ = phantom(0, size=128, marker=False)
    lungs = segment_lungs(film).mask
    marked = film.copy()
    marked[4:24, 4:20] = 255  # a bright label in a corner, outside the lungs
    assert not lungs[4:24, 4:20].any()
    prep = Preprocessing(64, input="lung-mask")
    np.testing.assert_array_equal(prep.to_model_pixels(film, lungs), prep.to_model_pixels(marked, lungs))
    inside = ndimage.binary_erosion(prep.to_model_mask(lungs, lungs), iterations=2)  # off the blended rim
    np.testing.assert_array_equal(prep.to_model_pixels(film, lungs)[inside], resize_square(film, 64)[inside])  # kept
    leak = np.abs(resize_square(keep_only(marked, lungs), 64).astype(int) - resize_square(keep_only(film, lungs), 64))
    assert leak.max() > 5  # why the input does not use keep_only's source


def test_the_rendered_marker_never_reaches_a_lung_mask_input():
    """The phantoms' hospital marker (drawn or not on the same film): the full-film input changes, the
    lung-mask input barely (only where the lung outline moves by a pixel)."""
    full, lung = Preprocessing(64), Preprocessing(64, input="lung-mask")
    for i in range(2):
        with_marker, _ = phantom(3 * i, size=128, marker=True)
        without, _ = phantom(3 * i, size=128, marker=False)
        d_full = np.abs(model_pixels(full, with_marker).astype(int) - model_pixels(full, without))
        d_lung = np.abs(model_pixels(lung, with_marker).astype(int) - model_pixels(lung, without))
        assert d_full.max() > 100
        assert d_lung.mean() < 0.5 and d_lung.max() < 20


def test_unusable_segmentation_falls_back_to_the_fixed_lung_boxes():
    prep = Preprocessing(32, input="lung-mask")
    blank = np.random.default_rng(0).integers(0, 256, (120, 100), dtype=np.uint8)  # noise: no lungs
    inp = model_input(prep, blank)
    assert inp.fell_back and inp.lungs is not None and not inp.lungs.ok
    np.testing.assert_array_equal(inp.region, fallback_region(blank.shape))
    assert 0.3 < inp.region.mean() < 0.6  # two boxes, about where lungs lie
    tiny = model_input(Preprocessing(16, input="lung-crop"), np.full((20, 20), 90, np.uint8))  # under 32 px
    assert tiny.fell_back and tiny.lungs is None and tiny.pixels.shape == (16, 16)
    film, _ = phantom(2, size=128)
    good = model_input(prep, film)
    assert not good.fell_back and good.lungs.ok
    np.testing.assert_array_equal(good.region, good.lungs.mask)
    assert not model_input(Preprocessing(32), film).fell_back and model_input(Preprocessing(32), film).region is None


def test_diagnose_says_what_the_model_saw():
    from covidviz.views import diagnose as view

    film, _ = phantom(1, size=128)
    pixels = np.zeros((32, 32), np.uint8)
    assert "whole film" in view.model_input_caption(pixels, Preprocessing(32))
    masked = Preprocessing(32, input="lung-mask")
    assert "lung fields only" in view.model_input_caption(pixels, masked, model_input(masked, film))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    fell = view.model_input_caption(pixels, masked, model_input(masked, noise))
    assert "could not be found reliably" in fell and "fixed boxes" in fell
    crop = Preprocessing(32, input="lung-crop")
    inp = model_input(crop, np.pad(film, 30))
    top, bottom, left, right = inp.box
    assert view.as_model_sees(np.pad(film, 30), crop, inp).shape == (bottom - top, right - left) != (188, 188)
    assert view.as_model_sees(film, Preprocessing(32)).shape == film.shape


@pytest.mark.parametrize("name", ["lung-crop", "lung-mask"])
def test_cache_holds_exactly_what_model_pixels_makes_and_segments_once(tmp_path, name):
    paths = []
    for i in range(4):
        img, _ = phantom(i, size=96)
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    noise = np.random.default_rng(1).integers(0, 256, (96, 96), dtype=np.uint8)
    paths.append(str(tmp_path / "noise.png"))
    Image.fromarray(noise).save(paths[-1])
    prep = Preprocessing(32, input=name)
    calls = []

    def counting(p, gray):
        calls.append(1)
        return cache_input(p, gray)

    with pytest.raises(ValueError, match="make_input"):
        build_cache(paths, 32, tmp_path / "c", workers=0, progress=False, input=name)
    cold = build_cache(paths, 32, tmp_path / "c", workers=0, progress=False, input=name, make_input=counting)
    assert not cold.hit and len(calls) == len(paths)
    from covidviz.data.imageio import read_image

    for i, p in enumerate(paths):
        np.testing.assert_array_equal(cold.pixels[i], model_pixels(prep, read_image(p)))
    assert list(cold.lungs.fell_back) == [False] * 4 + [True]
    assert cold.lungs.summary(paths=paths) == {"n": 5, "fell_back": 1, "examples": [paths[-1]]}
    warm = build_cache(paths, 32, tmp_path / "c", workers=0, progress=False, input=name, make_input=counting)
    assert warm.hit and len(calls) == len(paths)  # not segmented again
    np.testing.assert_array_equal(warm.pixels, cold.pixels)
    np.testing.assert_array_equal(warm.lungs.quality, cold.lungs.quality)
    full = build_cache(paths, 32, tmp_path / "c", workers=0, progress=False)  # the whole-film cache is separate
    assert full.lungs is None and not np.array_equal(full.pixels, cold.pixels)


# ------------------------------------------------------------------------------------------------
# trained experiments
# ------------------------------------------------------------------------------------------------

def train(data: Path, out: Path, name: str, input_: str, epochs: int, size: int = 64, extra=()) -> Path:
    import train as cli

    argv = ["--data", f"csv:{data}", "--arch", "tinycnn", "--epochs", str(epochs), "--image-size", str(size),
            "--batch-size", "16", "--weights", "none", "--out", str(out), "--name", name, "--seed", "0",
            "--workers", "0", "--quiet", "--input", input_, *extra]
    assert cli.main(argv) == 0
    return out / name


def test_lung_crop_experiment_scores_a_film_alike_in_diagnose_batch_and_evaluate(tmp_path):
    """The contract round trip: the manifest's lung input reaches Diagnose's Predictor, the batch scorer
    and ``train.py evaluate``, which all give the same probabilities for the same film."""
    import train as cli
    from covidviz import runs
    from covidviz.batch import BatchPredictor
    from covidviz.data.imageio import decode_upload
    from covidviz.inference import Predictor
    from covidviz.runs.external import list_external

    data = write_phantoms(tmp_path / "data", 45, size=96, pad=24)
    exp_path = train(data, tmp_path / "runs", "crop", "lung-crop", epochs=1, size=32, extra=["--no-analysis"])
    exp = runs.read_experiment(exp_path)
    assert exp.preprocessing.input == "lung-crop"
    assert exp.info.dataset.lung_input["n"] == 45 and exp.info.dataset.lung_input["fell_back"] == 0

    site = write_phantoms(tmp_path / "site", 6, size=96, pad=24)
    assert cli.main(["evaluate", str(exp_path), "--data", f"csv:{site}", "--name", "site", "--n-boot", "20",
                     "--quiet"]) == 0
    ext = list_external(exp_path)[0][0]
    stored = ext.predictions("tinycnn")
    assert ext.metrics["lung_input"]["n"] == 6
    names = [runs.PROB_PREFIX + c for c in exp.labels.names]

    predictor = Predictor(exp)
    batch = BatchPredictor(predictor, batch_size=4)
    images = ext.images()
    films = [decode_upload((site / "images" / Path(p).name).read_bytes(), Path(p).name).gray for p in images["path"]]
    scored = batch.score([(f"{i}", g) for i, g in enumerate(films)])
    for i, gray in enumerate(films):
        diag = predictor.predict(gray)
        want = stored.loc[i, names].to_numpy(float)
        np.testing.assert_allclose(diag.backbones["tinycnn"].raw_probs, want, atol=1e-5)
        np.testing.assert_allclose(scored[i].backbones["tinycnn"].raw_probs, want, atol=1e-5)
        np.testing.assert_array_equal(diag.pixels, scored[i].pixels)
        top, bottom, left, right = diag.input.box  # the film was cropped to its lungs
        assert bottom - top == right - left < 0.9 * gray.shape[1] and not diag.input.fell_back
        np.testing.assert_array_equal(diag.pixels, model_pixels(exp.preprocessing, gray))


@pytest.mark.slow
def test_lung_mask_model_ignores_the_hospital_marker_that_the_full_film_model_reads(tmp_path):
    """Issue 23's phantom demo (about 30 s on 2 busy cores): the hospital marker sits in a top corner on
    every COVID-19 film and no other. A full-film tinycnn learns it (swap the marker between films and
    its COVID-19 AUC collapses); the same tinycnn on ``--input lung-mask`` gives the same score with
    and without the marker, while still telling the classes apart."""
    from sklearn.metrics import roc_auc_score

    from covidviz import runs
    from covidviz.inference import Predictor

    data = write_phantoms(tmp_path / "data", 120)
    result = {}
    for input_ in ("full", "lung-mask"):
        exp = runs.read_experiment(train(data, tmp_path / "runs", input_, input_, epochs=8, extra=["--no-analysis"]))
        predictor = Predictor(exp)
        test = exp.images()
        test = test[test["split"] == "test"]
        rows = []
        for path in test["path"]:
            i = int(Path(path).stem)
            orig, cls = phantom(i)
            swapped, _ = phantom(i, marker=cls != "COVID-19")  # the marker taken off COVID-19, put on the rest
            p = [predictor.predict(g).backbones["tinycnn"].raw_probs[0] for g in (orig, swapped)]
            rows.append((cls == "COVID-19", *p))
        y, p_orig, p_swap = (np.array(c) for c in zip(*rows))
        result[input_] = {"change": np.abs(p_orig - p_swap), "auc": roc_auc_score(y, p_orig),
                          "auc_swapped": roc_auc_score(y, p_swap), "spread": float(np.std(p_orig))}
    full, lung = result["full"], result["lung-mask"]
    assert full["change"].mean() > 0.05 and full["auc"] - full["auc_swapped"] > 0.3, full
    assert lung["change"].max() < 0.02 and abs(lung["auc"] - lung["auc_swapped"]) < 0.02, lung
    assert lung["auc"] > 0.55 and lung["spread"] > 10 * lung["change"].mean(), lung  # not a constant model
