"""Synthetic chest X-ray phantoms: anatomy, lesions and masks, knobs, and the on-disk dataset."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from covidviz.data.synthetic import (
    FINDINGS_MULTICLASS,
    FINDINGS_MULTILABEL,
    make_synthetic_dataset,
    render_phantom,
)

SEEDS = range(8)


def _rows(csv_path):
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def _load(path, mode=False):
    """Pixels of a PNG (and its PIL mode when asked), closing the file."""
    with Image.open(path) as im:
        return (np.asarray(im), im.mode) if mode else np.asarray(im)


def _contrast(seed, finding, difficulty, size=128):
    """Mean brightness gain inside the lesion mask over the same-seed normal film."""
    img, mask = render_phantom(seed, (finding,), size=size, difficulty=difficulty)
    normal, _ = render_phantom(seed, (), size=size, difficulty=difficulty)
    m = mask.astype(bool)
    return float(img[m].mean()) - float(normal[m].mean())


# --------------------------------------------------------------------------------------------
# render_phantom
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("findings", [(), ("COVID-19",), ("Pneumonia", "Effusion", "Nodule", "Cardiomegaly")])
def test_shapes_dtypes_and_ranges(size, findings):
    img, mask = render_phantom(3, findings, size=size)
    assert img.shape == mask.shape == (size, size)
    assert img.dtype == np.uint8 and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    # a film: black air outside the body, near-white bone, everything in between used
    assert img.min() < 25 and img.max() > 200
    assert img[:, : size // 40 + 1].mean() < 40  # the far left edge is air
    assert 60 < img.mean() < 200


def test_deterministic_per_seed_and_different_across_seeds():
    a_img, a_mask = render_phantom(7, ("COVID-19",), size=128)
    b_img, b_mask = render_phantom(7, ["COVID-19"], size=128)
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    c_img, c_mask = render_phantom(8, ("COVID-19",), size=128)
    assert np.abs(a_img.astype(int) - c_img.astype(int)).mean() > 2
    assert not np.array_equal(a_mask, c_mask)


def test_variant_is_the_same_patient_on_another_film():
    base, m0 = render_phantom(5, ("Pneumonia",), size=128)
    other, m1 = render_phantom(5, ("Pneumonia",), size=128, variant=1)
    stranger, _ = render_phantom(6, ("Pneumonia",), size=128)
    assert not np.array_equal(base, other)
    same = np.corrcoef(base.ravel(), other.ravel())[0, 1]
    diff = np.corrcoef(base.ravel(), stranger.ravel())[0, 1]
    assert same > 0.9 and same > diff
    # the same lesion, only repositioned a little
    inter = np.logical_and(m0, m1).sum()
    union = np.logical_or(m0, m1).sum()
    assert inter / union > 0.3


@pytest.mark.parametrize("normal", [(), ("Normal",), ["No Finding"]])
def test_normal_has_empty_mask_and_equals_no_findings(normal):
    img, mask = render_phantom(2, normal, size=96)
    assert mask.sum() == 0
    assert np.array_equal(img, render_phantom(2, (), size=96)[0])


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown finding"):
        render_phantom(0, ("Broken leg",))
    with pytest.raises(ValueError, match="difficulty"):
        render_phantom(0, (), difficulty=1.5)
    with pytest.raises(ValueError, match="confounder"):
        make_synthetic_dataset(tmp_path, 3, confounder=-0.1)
    assert not (tmp_path / "metadata.csv").exists()


@pytest.mark.parametrize("finding", FINDINGS_MULTILABEL)
def test_every_finding_has_a_mask_in_every_seed(finding):
    for seed in SEEDS:
        _, mask = render_phantom(seed, (finding,), size=96)
        assert mask.sum() >= 3, (finding, seed)


def test_covid_is_bilateral_and_mostly_lower_zone():
    size = 128
    lower = []
    for seed in SEEDS:
        _, mask = render_phantom(seed, ("COVID-19",), size=size)
        rows, cols = np.nonzero(mask)
        # both lungs: a real share of the lesion on each side of the midline
        assert (cols < size // 2).mean() > 0.05 and (cols >= size // 2).mean() > 0.05, seed
        lower.append((rows >= size // 2).mean())
        assert lower[-1] > 0.5, seed
    assert np.mean(lower) > 0.75


def test_pneumonia_is_unilateral():
    size = 128
    sides = set()
    for seed in range(16):
        _, mask = render_phantom(seed, ("Pneumonia",), size=size)
        cols = np.nonzero(mask)[1]
        left = (cols < size // 2).mean()
        assert left > 0.97 or left < 0.03, seed
        sides.add(left > 0.5)
    assert sides == {True, False}  # and both lungs get their turn


@pytest.mark.parametrize("finding", FINDINGS_MULTILABEL)
def test_lesion_is_brighter_than_the_normal_twin(finding):
    gains = [_contrast(seed, finding, 0.5) for seed in SEEDS]
    assert min(gains) > 3, gains


def test_lungs_are_darker_than_mediastinum_and_spine():
    size = 128
    for seed in SEEDS:
        img = render_phantom(seed, (), size=size)[0]
        r0, r1 = int(size * 0.38), int(size * 0.52)  # mid-zone rows, above the heart
        spine = img[r0:r1, size // 2 - 3: size // 2 + 3].mean()
        lung_l = img[r0:r1, int(size * 0.2): int(size * 0.3)].mean()
        lung_r = img[r0:r1, int(size * 0.7): int(size * 0.8)].mean()
        assert lung_l + 40 < spine and lung_r + 40 < spine, (seed, lung_l, lung_r, spine)


def test_heart_is_on_the_image_right_and_cardiomegaly_enlarges_it():
    size = 128
    ratios = []
    for seed in SEEDS:
        _, heart = render_phantom(seed, ("Cardiomegaly",), size=size)
        cols = np.nonzero(heart)[1]
        assert cols.mean() > size / 2  # patient's left = image right
        # cardiothoracic ratio: heart width / inner thoracic width (~0.8 of the film here)
        ratios.append((cols.max() - cols.min()) / (0.8 * size))
    # > 0.5 is the radiologist's rule of thumb for cardiomegaly
    assert np.mean(ratios) > 0.55 and min(ratios) > 0.45, ratios
    # and it is bigger than the same patient's heart when the finding is made fainter
    small = render_phantom(0, ("Cardiomegaly",), size=size, difficulty=1.0)[1].sum()
    big = render_phantom(0, ("Cardiomegaly",), size=size, difficulty=0.0)[1].sum()
    assert big > 1.2 * small


@pytest.mark.parametrize("finding", FINDINGS_MULTILABEL)
def test_higher_difficulty_means_fainter_lesions(finding):
    easy = np.mean([_contrast(seed, finding, 0.1) for seed in SEEDS])
    hard = np.mean([_contrast(seed, finding, 0.9) for seed in SEEDS])
    assert hard < easy * 0.8, (easy, hard)


def test_higher_difficulty_means_more_noise():
    def roughness(d):  # mean absolute Laplacian in the (flat) abdomen
        img = render_phantom(1, (), size=128, difficulty=d)[0].astype(float)
        patch = img[105:125, 30:50]
        return np.abs(patch[1:-1, 1:-1] * 4 - patch[:-2, 1:-1] - patch[2:, 1:-1] - patch[1:-1, :-2] - patch[1:-1, 2:]).mean()
    assert roughness(0.9) > 1.5 * roughness(0.1)


def test_marker_is_a_bright_corner_letter_and_nothing_else():
    size = 128
    for seed in range(4):
        plain, m0 = render_phantom(seed, (), size=size)
        marked, m1 = render_phantom(seed, (), size=size, marker=True)
        changed = np.argwhere(plain != marked)
        assert len(changed) > 20
        # only the top corners change, and they get brighter (a lead letter)
        assert changed[:, 0].max() < size * 0.3
        assert (changed[:, 1].max() < size * 0.3) or (changed[:, 1].min() > size * 0.7)
        assert marked.max() >= 240
        assert np.array_equal(m0, m1)  # the marker is not a lesion


# --------------------------------------------------------------------------------------------
# make_synthetic_dataset
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def multiclass_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_mc")
    return root, make_synthetic_dataset(root, 60, seed=1, size=64)


def test_dataset_rows_files_and_columns(multiclass_ds):
    root, csv_path = multiclass_ds
    assert csv_path == root / "metadata.csv"
    rows = _rows(csv_path)
    assert len(rows) == 60
    assert list(rows[0]) == ["path", "label", "patient_id", "source", "view", "sex", "age", "mask"]
    for r in rows:
        img, img_mode = _load(root / r["path"], mode=True)
        mask, mask_mode = _load(root / r["mask"], mode=True)
        assert img.shape == mask.shape == (64, 64) and img.dtype == np.uint8
        assert img_mode == mask_mode == "L"
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask.max() == 0) == (r["label"] == "Normal")
        assert r["label"] in FINDINGS_MULTICLASS
        assert r["patient_id"].startswith("synth:") and len(r["patient_id"]) == len("synth:000000")
        assert r["source"] in ("hospital-A", "hospital-B")
        assert r["view"] in ("PA", "AP") and r["sex"] in ("M", "F") and 20 <= int(r["age"]) <= 90
    assert len({r["path"] for r in rows}) == 60


def test_dataset_labels_are_balanced_and_shuffled(multiclass_ds):
    rows = _rows(multiclass_ds[1])
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(FINDINGS_MULTICLASS)
    assert all(19 <= c <= 21 for c in counts.values()), counts
    first = [r["label"] for r in rows[:15]]
    assert len(set(first)) > 1  # not written class by class


def test_dataset_patients_share_labels_and_anatomy(multiclass_ds):
    root, csv_path = multiclass_ds
    rows = _rows(csv_path)
    by_patient = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r)
    assert 1.2 <= len(rows) / len(by_patient) <= 1.9  # ~1.5 films per patient
    multi = [films for films in by_patient.values() if len(films) > 1]
    assert multi
    for films in by_patient.values():
        assert len({(f["label"], f["sex"], f["age"], f["source"]) for f in films}) == 1
    # films of one patient look alike (same anatomy), more than films of two patients
    a, b = (_load(root / f["path"]).astype(float).ravel() for f in multi[0][:2])
    stranger = next(films[0] for films in by_patient.values() if films is not multi[0])
    c = _load(root / stranger["path"]).astype(float).ravel()
    assert np.corrcoef(a, b)[0, 1] > np.corrcoef(a, c)[0, 1]


def test_dataset_is_reused_when_parameters_match(multiclass_ds):
    root, csv_path = multiclass_ds
    stamp = {p: os.stat(p).st_mtime_ns for p in (csv_path, root / "images" / "000000.png")}
    again = make_synthetic_dataset(root, 60, seed=1, size=64)
    assert again == csv_path
    assert {p: os.stat(p).st_mtime_ns for p in stamp} == stamp
    assert json.loads((root / "params.json").read_text())["n"] == 60


def test_dataset_is_rebuilt_when_parameters_change_or_it_is_half_written(tmp_path):
    csv_path = make_synthetic_dataset(tmp_path, 12, seed=0, size=64)
    first = _rows(csv_path)
    csv_path2 = make_synthetic_dataset(tmp_path, 15, seed=0, size=64)
    assert len(_rows(csv_path2)) == 15
    make_synthetic_dataset(tmp_path, 10, seed=0, size=64)  # smaller: no stale films left behind
    assert len(list((tmp_path / "images").glob("*.png"))) == len(list((tmp_path / "masks").glob("*.png"))) == 10
    make_synthetic_dataset(tmp_path, 15, seed=0, size=64)
    # an interrupted run leaves no metadata.csv: the next call must render again
    csv_path2.unlink()
    img0 = tmp_path / "images" / "000000.png"
    before = os.stat(img0).st_mtime_ns
    os.utime(img0, ns=(before - 10**9, before - 10**9))
    make_synthetic_dataset(tmp_path, 15, seed=0, size=64)
    assert os.stat(img0).st_mtime_ns != before - 10**9
    # another seed is another dataset
    other = _rows(make_synthetic_dataset(tmp_path, 12, seed=5, size=64))
    assert [r["label"] for r in other] != [r["label"] for r in first]
    assert json.loads((tmp_path / "params.json").read_text())["seed"] == 5


def test_dataset_is_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", 9, seed=3, size=64)
    b = make_synthetic_dataset(tmp_path / "b", 9, seed=3, size=64)
    assert a.read_text() == b.read_text()
    for r in _rows(a):
        assert (tmp_path / "a" / r["path"]).read_bytes() == (tmp_path / "b" / r["path"]).read_bytes()


def test_confounder_ties_marker_and_source_to_covid(tmp_path):
    root = tmp_path / "conf"
    rows = _rows(make_synthetic_dataset(root, 45, seed=2, size=64, confounder=1.0))
    for r in rows:
        assert (r["source"] == "hospital-A") == (r["label"] == "COVID-19")
        img = _load(root / r["path"])
        corners = max(img[:16, :16].max(), img[:16, -16:].max())
        if r["source"] == "hospital-A":
            assert corners >= 240  # the lead letter is on the film
    # without confounding, the marker is rare and label-independent
    rows = _rows(make_synthetic_dataset(tmp_path / "free", 60, seed=2, size=64, confounder=0.0))
    share = Counter(r["source"] for r in rows)["hospital-A"] / len(rows)
    assert share < 0.3


def test_multilabel_dataset(tmp_path):
    root = tmp_path / "ml"
    rows = _rows(make_synthetic_dataset(root, 90, seed=4, size=64, multilabel=True))
    assert len(rows) == 90
    none = [r for r in rows if r["label"] == "No Finding"]
    assert 0.15 < len(none) / len(rows) < 0.55
    seen = Counter()
    for r in rows:
        assert r["label"]  # never empty
        labels = [] if r["label"] == "No Finding" else r["label"].split("|")
        assert set(labels) <= set(FINDINGS_MULTILABEL) and len(labels) == len(set(labels))
        seen.update(labels)
        mask = _load(root / r["mask"])
        assert (mask.max() > 0) == bool(labels)
    assert set(seen) == set(FINDINGS_MULTILABEL)
    assert any("|" in r["label"] for r in rows)  # co-occurring findings exist


# --------------------------------------------------------------------------------------------
# learnability: the default difficulty is learnable but not trivial
# --------------------------------------------------------------------------------------------

def test_a_linear_model_beats_chance_but_not_perfectly_at_default_difficulty():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = [], []
    for i in range(300):
        cls = i % 3
        img, _ = render_phantom(10_000 + i, (FINDINGS_MULTICLASS[cls],), size=128)
        X.append(img.reshape(32, 4, 32, 4).mean(axis=(1, 3)).ravel() / 255.0)  # 32x32 pixels
        y.append(cls)
    X, y = np.array(X), np.array(y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    clf.fit(X[:210], y[:210])
    acc = clf.score(X[210:], y[210:])
    assert 0.45 < acc < 0.95, acc
