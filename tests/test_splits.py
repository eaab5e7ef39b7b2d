"""Patient-disjoint stratified splits: disjointness, proportions, determinism, given splits, leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidviz.data.labels import LabelSpace
from covidviz.data.splits import LeakageError, check_no_leakage, make_split, split_counts
from covidviz.data.table import make_table

MC = LabelSpace(("COVID-19", "Normal", "Pneumonia"), "multiclass")


def table_of(patients: list[tuple[str, str, int]], given: dict[str, str] | None = None, source=None) -> pd.DataFrame:
    """(patient, label cell, number of images) -> a table; ``given`` maps patient -> given split."""
    rows = []
    for pid, label, n in patients:
        for k in range(n):
            rows.append({"image_id": f"t:{pid}/{k}", "path": f"/x/{pid}_{k}.png", "labels": label,
                         "patient_id": pid, "given_split": (given or {}).get(pid, ""),
                         "source": source(pid) if source else ""})
    return make_table(rows)


def random_multiclass(n_patients: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["COVID-19", "Normal", "Pneumonia"], n_patients, p=[0.2, 0.5, 0.3])
    sizes = rng.choice([1, 1, 1, 2, 3, 5], n_patients)
    return table_of([(f"p{i}", lab, int(k)) for i, (lab, k) in enumerate(zip(labels, sizes))])


def assert_disjoint(table, split):
    per = pd.DataFrame({"p": table["patient_id"], "s": split}).groupby("p")["s"].nunique()
    assert (per == 1).all()


def test_split_is_patient_disjoint_and_stratified():
    t = random_multiclass()
    split = make_split(t, MC, seed=0)
    assert split.index.equals(t.index) and set(split) == {"train", "val", "test"}
    assert_disjoint(t, split)
    check_no_leakage(t, split)
    # each class is divided 70/15/15 within 2.5 points, and so is the whole table
    for lab in MC.names:
        share = split[t["labels"] == lab].value_counts(normalize=True)
        assert share["train"] == pytest.approx(0.70, abs=0.025), lab
        assert share["val"] == pytest.approx(0.15, abs=0.025), lab
        assert share["test"] == pytest.approx(0.15, abs=0.025), lab
    share = split.value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.70, abs=0.02) and share["test"] == pytest.approx(0.15, abs=0.02)


def test_custom_fractions_and_bad_fractions():
    t = random_multiclass(400)
    share = make_split(t, MC, fractions=(0.5, 0.2, 0.3)).value_counts(normalize=True)
    assert share["val"] == pytest.approx(0.2, abs=0.03) and share["test"] == pytest.approx(0.3, abs=0.03)
    assert "test" not in set(make_split(t, MC, fractions=(0.8, 0.2, 0.0)))
    for bad in [(0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (0.5, 0.5), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError):
            make_split(t, MC, fractions=bad)


def test_split_is_deterministic_seeded_and_order_free():
    t = random_multiclass(300)
    a, b = make_split(t, MC, seed=7), make_split(t, MC, seed=7)
    assert a.equals(b)
    assert (a != make_split(t, MC, seed=8)).mean() > 0.1
    shuffled = t.sample(frac=1.0, random_state=1)
    assert make_split(shuffled, MC, seed=7).reindex(t.index).equals(a)  # row order does not matter


def test_tiny_dataset_gets_every_class_in_every_split():
    t = table_of([(f"{lab}{i}", lab, 1) for lab in MC.names for i in range(4)])  # 12 images
    split = make_split(t, MC, seed=0)
    for s in ("train", "val", "test"):
        assert set(t.loc[split == s, "labels"]) == set(MC.names), s
    assert (split == "train").sum() >= (split == "val").sum()


def test_rare_class_goes_to_train_then_test(caplog):
    t = table_of([(f"n{i}", "Normal", 1) for i in range(30)] + [(f"c{i}", "COVID-19", 1) for i in range(30)]
                 + [("r1", "Pneumonia", 1), ("r2", "Pneumonia", 1)])
    split = make_split(t, MC, seed=0)
    assert sorted(split[t["labels"] == "Pneumonia"]) == ["test", "train"]
    assert "val split has no image of Pneumonia" in caplog.text


def test_too_few_patients_is_a_clear_error():
    t = table_of([("a", "Normal", 3), ("b", "COVID-19", 2)])
    with pytest.raises(ValueError, match="would be empty"):
        make_split(t, MC)
    with pytest.raises(ValueError, match="empty table"):
        make_split(t.iloc[:0], MC)


def test_multilabel_spreads_rare_findings():
    space = LabelSpace(("Effusion", "Mass", "Hernia"), "multilabel")
    pats = [(f"e{i}", "Effusion", 1) for i in range(40)] + [(f"m{i}", "Mass|Effusion", 2) for i in range(20)]
    pats += [(f"h{i}", "Hernia", 1) for i in range(3)] + [(f"n{i}", "", 1) for i in range(40)]
    t = table_of(pats)
    split = make_split(t, space, seed=3)
    assert_disjoint(t, split)
    assert sorted(split[t["labels"] == "Hernia"]) == ["test", "train", "val"]
    counts = split_counts(t, split, space)
    assert counts.loc["(no finding)"].min() >= 4 and counts.loc["Mass"].min() >= 4
    assert counts.loc["images", "train"] == (split == "train").sum()


def test_sources_are_spread_too():
    # 'B' holds 10 % of patients; each split should still get some of it for per-source results.
    t = table_of([(f"p{i}", ["Normal", "COVID-19"][i % 2], 1) for i in range(100)],
                 source=lambda pid: "B" if int(pid[1:]) < 10 else "A")
    split = make_split(t, MC, seed=0)
    assert set(split[t["source"] == "B"]) == {"train", "val", "test"}


def test_given_test_stays_and_val_is_carved_from_given_train():
    t = random_multiclass(300)
    pids = sorted(set(t["patient_id"]))
    given = {p: ("test" if i % 5 == 0 else "train") for i, p in enumerate(pids)}  # NIH-style lists
    t["given_split"] = t["patient_id"].map(given)
    split = make_split(t, MC, seed=0)
    assert (split[t["given_split"] == "test"] == "test").all()
    assert (split[t["given_split"] == "train"] != "test").all()
    carved = split[t["given_split"] == "train"].value_counts(normalize=True)
    assert carved["val"] == pytest.approx(0.15 / 0.85, abs=0.03)
    assert_disjoint(t, split)


def test_full_given_split_is_kept_and_patients_follow_their_given_rows():
    t = table_of([(f"p{i}", MC.names[i % 3], 2) for i in range(30)],
                 given={f"p{i}": ["train", "val", "test"][i // 10] for i in range(30)})
    t.loc[t.index[1], "given_split"] = ""  # one image of p0 unmarked: it follows the patient's split
    split = make_split(t, MC, seed=0)
    expected = t["patient_id"].str[1:].astype(int).floordiv(10).map({0: "train", 1: "val", 2: "test"})
    assert split.tolist() == expected.tolist()


def test_unmarked_patients_fill_around_a_given_test_set():
    t = random_multiclass(200)
    pids = sorted(set(t["patient_id"]))
    t["given_split"] = t["patient_id"].map({p: "test" for p in pids[:20]}).fillna("")
    split = make_split(t, MC, seed=0)
    assert (split[t["given_split"] == "test"] == "test").all()
    assert set(split[t["given_split"] == ""]) == {"train", "val", "test"}


def test_leaking_given_split_raises_with_patient_names():
    t = table_of([("alice", "Normal", 2), ("bob", "COVID-19", 2), ("carol", "Pneumonia", 1)])
    t["given_split"] = ["train", "test", "train", "train", "val"]
    with pytest.raises(LeakageError, match="alice") as err:
        make_split(t, MC)
    assert isinstance(err.value, ValueError)
    assert err.value.patients == {"alice": ["train", "test"]}
    assert "bob" not in str(err.value)


def test_check_no_leakage_names_patients():
    t = table_of([("alice", "Normal", 2), ("bob", "COVID-19", 3), ("carol", "Pneumonia", 1)])
    good = pd.Series(["train", "train", "val", "val", "val", "test"], index=t.index)
    check_no_leakage(t, good)
    bad = pd.Series(["train", "test", "val", "val", "train", "test"], index=t.index)
    with pytest.raises(LeakageError) as err:
        check_no_leakage(t, bad)
    assert set(err.value.patients) == {"alice", "bob"}
    assert "alice (train/test)" in str(err.value) and "bob (train/val)" in str(err.value)
    with pytest.raises(ValueError, match="aligned"):
        check_no_leakage(t, good.iloc[:3])
    with pytest.raises(ValueError, match="expected"):
        check_no_leakage(t, good.replace("val", "dev"))


@pytest.mark.needs_data
def test_real_covid3_split(shared_data):
    from covidviz.data.adapters import load_datasets

    table, space, _ = load_datasets([f"csv:{shared_data / 'covid3'}"])
    split = make_split(table, space, seed=0)
    check_no_leakage(table, split)
    counts = split_counts(table, split, space)
    assert counts.loc["patients"].sum() == 466 and counts.loc["images"].sum() == 612
    for lab in space.names:
        assert counts.loc[lab, "test"] / counts.loc[lab].sum() == pytest.approx(0.15, abs=0.03)
    for src in ("hannover", "kermany", "nih", "ieee8023"):
        assert set(split[table["source"] == src]) == {"train", "val", "test"}


@pytest.mark.needs_data
def test_real_merged_split_keeps_shared_nih_patients_together(shared_data):
    from covidviz.data.adapters import load_datasets

    table, space, _ = load_datasets([f"csv:{shared_data / 'covid3'}", f"nih:{shared_data / 'nih14'}"])
    split = make_split(table, space, seed=0)
    check_no_leakage(table, split)
    counts = split_counts(table, split, space)
    assert (counts.drop(["images", "patients"]) > 0).all().all()  # every finding, even Hernia, everywhere
