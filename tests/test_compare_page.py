"""The "Compare backbones" page (``app_pages/compare.py``) through AppTest, and its data shaping
(``covidviz/views/compare*.py``; more in ``test_views_compare.py``).

Experiments: the trained ``tiny_experiment`` (tinycnn + DenseNet121 on phantoms, real weights and
images, so heatmaps work) and ``make_analysed`` below: experiments with known labels and probabilities,
analysed by the real ``analyse_predictions`` (14-finding multi-label, one backbone, a source-confounded
class) in about a second, without training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from covidviz import runs, ui
from covidviz.analysis.report import analyse_predictions
from covidviz.data.labels import MULTICLASS, MULTILABEL, NIH_FINDINGS
from covidviz.data.synthetic import FINDINGS_MULTILABEL, render_phantom
from covidviz.data.table import make_table
from covidviz.views import compare, compare_gallery, compare_operating
from covidviz.views.style import analyse_command

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "app_pages" / "compare.py")
APP = str(REPO / "app.py")
TIMEOUT = 60
SPLIT_CYCLE = ["train", "train", "val", "train", "test", "train", "train", "val", "test", "test"]


# ---------------------------------------------------------------- fixtures

def make_analysed(root: Path, name: str, names: list[str], task: str, archs: list[str], n: int = 240,
                  analyse: bool = True, images_dir: Path | None = None, seed: int = 0) -> Path:
    """Publish an experiment with informative probabilities and (optionally) its analysis.json.

    The first class comes mostly from 'hospital-B' (a confounded source). With ``images_dir``, real
    PNGs are written and the backbones get real (random) weights, so heatmaps can be computed.
    """
    import torch
    from PIL import Image

    from covidviz.models import Classifier

    rng = np.random.default_rng(seed)
    n_pat = n // 2
    if task == MULTICLASS:
        pat_labels = [[names[k]] for k in rng.integers(0, len(names), n_pat)]
    else:
        pat_labels = [[c for c in names if rng.random() < 0.3] for _ in range(n_pat)]
    rows, thumbs = [], rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8)
    for i in range(n):
        p = i // 2
        first = names[0] in pat_labels[p]
        path = f"/nonexistent/{name}/{i:04d}.png"
        if images_dir is not None:
            images_dir.mkdir(parents=True, exist_ok=True)
            known = [c for c in pat_labels[p] if c in FINDINGS_MULTILABEL]
            img = render_phantom(p, known, size=64, variant=i % 2)[0]
            path = str(images_dir / f"{name}-{i:04d}.png")
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
            thumbs[i] = np.clip(img, 0, 255).astype(np.uint8)  # already 64x64: the thumbnail is the image
        rows.append({"image_id": f"{name}:{i:04d}", "path": path, "labels": "|".join(pat_labels[p]),
                     "patient_id": f"{name}:p{p}", "dataset": "synthetic",
                     "source": ("hospital-B" if rng.random() < 0.9 else "hospital-A") if first else
                     ("hospital-A" if rng.random() < 0.9 else "hospital-B"),
                     "view": "PA" if i % 3 else "AP", "sex": "MF"[p % 2], "age": 20 + (7 * p) % 70})
    table = make_table(rows)
    table["split"] = [SPLIT_CYCLE[(i // 2) % len(SPLIT_CYCLE)] for i in range(n)]
    onehot = np.array([[c in cell.split("|") for c in names] for cell in table["labels"]], float)

    manifest = {"status": "running", "created": "2026-11-25T18:00:00", "covidviz_version": "0.1.0",
                "dataset": {"specs": ["synthetic:fake"], "n_images": n},
                "labels": {"names": names, "task": task},
                "split": {"seed": 0, "fractions": [0.5, 0.2, 0.3]},
                "preprocessing": {"image_size": 32, "channels": 3, "mean": [0.485, 0.456, 0.406],
                                  "std": [0.229, 0.224, 0.225], "resize": "bilinear, whole image to a square"},
                "config": {"archs": archs},
                "backbones": {a: {"init": {"weights": "none", "source": "random"}, "best_epoch": 2,
                                  "feature_dim": 8, "cam_layer": "features"} for a in archs}}
    writer = runs.ExperimentWriter(root, name)
    writer.write_manifest(manifest)
    writer.write_images(table)
    writer.write_thumbnails(thumbs)
    probs = {}
    for k, arch in enumerate(archs):
        z = (2.5, 0.5, 1.2)[k % 3] * onehot + rng.normal(size=onehot.shape)
        if task == MULTICLASS:
            e = np.exp(z)
            p = e / e.sum(1, keepdims=True)
        else:
            p = 1 / (1 + np.exp(-(z - 1.0)))
        probs[arch] = p
        preds = pd.DataFrame({"image_id": table["image_id"], **{runs.PROB_PREFIX + c: p[:, j] for j, c in enumerate(names)}})
        if images_dir is not None:  # real (random) weights; a positive head so the CAMs are not flat
            state = Classifier(arch, len(names)).state_dict()
            state["head.weight"] = state["head.weight"].abs()
        else:
            state = {"head.weight": torch.zeros(len(names), 8)}
        history = [{"epoch": e, "train_loss": 1.0 / e + 0.1 * k, "val_loss": 1.2 / e + 0.1 * k,
                    "val_auc": 0.6 + 0.08 * e - 0.03 * k} for e in (1, 2, 3)]
        writer.write_backbone(arch, state, preds, rng.normal(size=(n, 8)), history)
    folder = writer.commit()
    if analyse:
        exp = runs.read_experiment(folder)
        exp.save_json(runs.ANALYSIS, analyse_predictions(exp.images(), exp.labels, probs, n_boot=60))
    return folder


@pytest.fixture
def tiny_root(tiny_experiment, tmp_path, monkeypatch) -> Path:
    """The shared tiny experiment, alone in a runs folder of its own (the page picks the newest)."""
    root = tmp_path / "runs"
    root.mkdir()
    (root / tiny_experiment.name).symlink_to(tiny_experiment, target_is_directory=True)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    return root


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    ok(at)
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by their widget key (cmp_roc, cmp_pr, ...)."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        key = next((k for k in ("cmp_roc", "cmp_pr", "cmp_reliability", "cmp_subgroups", "cmp_training")
                    if k in el.proto.id), el.proto.id)
        out[key] = spec
    return out


def widget(at: AppTest, kind: str, name: str):
    """The page's widget of ``kind`` ("selectbox", "slider", ...) whose key is ``ui.scoped(exp, name)`` for
    the experiment shown (or ``name::<class>``, as the prevalence slider is keyed per class too)."""
    found = [w for w in getattr(at.main, kind) if w.key and "::" in w.key
             and (w.key.split("::", 1)[1] == name or w.key.split("::", 1)[1].startswith(name + "::"))]
    assert len(found) == 1, (kind, name, [w.key for w in getattr(at.main, kind)])
    return found[0]


def tables(at: AppTest) -> list[pd.DataFrame]:
    """Every table on the page (``st.table``, and any ``st.dataframe``), as frames."""
    return [t.value for t in at.table] + [df.value for df in at.dataframe]


def heat_buttons(at: AppTest) -> list:
    return [bt for bt in at.button if bt.key and "::cmp_heat_" in bt.key]


def heat_row(button) -> int:
    return int(button.key.rsplit("cmp_heat_", 1)[1])


def frame_with(at: AppTest, *labels: str) -> pd.DataFrame:
    """The first table whose index or columns contain all ``labels``."""
    for v in tables(at):
        names = set(map(str, v.index)) | set(map(str, v.columns))
        if all(lab in names for lab in labels):
            return v
    raise AssertionError(f"no dataframe with {labels}")


def confusions(at: AppTest, cls: str) -> list[pd.DataFrame]:
    return [v for v in tables(at) if f"Called {cls}" in v.columns]


def counts(df: pd.DataFrame) -> tuple[int, int, int, int]:
    """(tp, fn, fp, tn) of a confusion frame."""
    return tuple(int(v) for v in df.to_numpy().ravel())


def hand_counts(y, s, t) -> tuple[int, int, int, int]:
    y, call = np.asarray(y) > 0, np.asarray(s) >= t
    return (int((call & y).sum()), int((~call & y).sum()), int((call & ~y).sum()), int((~call & ~y).sum()))


def arrays_of(folder: Path, arch: str, cls: str):
    exp = runs.read_experiment(folder)
    im = exp.images()
    test = (im["split"] == "test").to_numpy()
    j = list(exp.labels.names).index(cls)
    y = np.array([cls in c.split("|") for c in im["labels"]])[test]
    s = pd.read_parquet(folder / runs.BACKBONES / arch / runs.PREDICTIONS)[runs.PROB_PREFIX + cls].to_numpy()[test]
    return y, s.astype(np.float64), j


# ---------------------------------------------------------------- page: states

def test_not_analysed_experiment_names_the_command(runs_root):
    folder = make_analysed(runs_root, "raw", ["COVID-19", "Normal"], MULTICLASS, ["densenet121", "resnet50"],
                           n=40, analyse=False)
    at = run_page()
    assert any("not been analysed" in w.value for w in at.warning)
    assert [c.value for c in at.code] == [f"python train.py analyze {folder.resolve()}"]
    assert analyse_command(REPO / "runs" / "x", REPO) == "python train.py analyze runs/x"


def test_broken_or_stale_analysis(runs_root):
    folder = make_analysed(runs_root, "stale", ["COVID-19", "Normal"], MULTICLASS, ["densenet121", "resnet50"], n=60)
    analysis = json.loads((folder / runs.ANALYSIS).read_text())
    del analysis["backbones"]["resnet50"]  # as if resnet50 had been trained after the analysis
    analysis["comparisons"] = []
    (folder / runs.ANALYSIS).write_text(json.dumps(analysis))
    at = run_page()
    assert any("ResNet50 trained after the last analysis" in w.value and "train.py analyze" in w.value
               for w in at.warning)
    assert any("comparison needs two" in i.value for i in at.info)
    (folder / runs.ANALYSIS).write_text("{broken")
    ui._compare_analysis.clear()
    at = run_page()
    assert any("cannot be read" in w.value for w in at.warning)
    assert [c.value for c in at.code] == [f"python train.py analyze {folder.resolve()}"]


def test_one_backbone_says_comparison_needs_two(runs_root):
    make_analysed(runs_root, "solo", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS, ["densenet121"], n=80)
    at = run_page()
    assert any("comparison needs two" in i.value for i in at.info)
    table = frame_with(at, "DenseNet121 AUC (95% CI)")
    assert "Difference (95% CI)" not in table.columns and "Winner" not in table.columns
    assert any("needs two backbones" in i.value for i in at.info)
    assert "cmp_roc" in charts(at) and "cmp_training" in charts(at)


def test_old_audit_without_lung_conditions_and_no_lung_analysis(runs_root):
    """An audit written before the lung conditions (version 1) renders as it was; an experiment analysed
    before the lung weights says how to get them."""
    from covidviz.analysis.shortcuts import CONDITION_LABELS, LUNG_CONDITIONS
    from covidviz.views import shortcuts as shortcut_view

    folder = make_analysed(runs_root, "oldaudit", ["COVID-19", "Normal"], MULTICLASS, ["densenet121", "resnet50"], n=80)
    conds = [c for c in CONDITION_LABELS if c not in LUNG_CONDITIONS]
    cell = {"auc": 0.9, "ci_low": 0.8, "ci_high": 0.95, "diff": -0.1, "diff_ci_low": -0.2, "diff_ci_high": -0.01}
    per_class = {cls: {"n_pos": 10, **{c: cell for c in conds}} for cls in ("COVID-19", "Normal")}
    audit = {"version": 1, "split": "test", "n_images": 24, "n_patients": 12, "n_boot": 100, "fraction": 0.1,
             "border": 0.15, "centre": 0.65, "names": ["COVID-19", "Normal"], "conditions": conds,
             "condition_labels": {c: CONDITION_LABELS[c] for c in conds},
             "backbones": {a: {"per_class": per_class, "macro": per_class["Normal"], "verdicts": ["old sentence."]}
                           for a in ("densenet121", "resnet50")}, "verdicts": ["old sentence."]}
    (folder / runs.SHORTCUTS).write_text(json.dumps(audit))
    at = run_page()
    subheads = [h.value for h in at.subheader]
    assert shortcut_view.LUNGS_TITLE in subheads and shortcut_view.TITLE in subheads
    assert any("No lung-weight analysis" in c.value for c in at.caption)
    table = frame_with(at, "Borders hidden", "Centre hidden")
    assert "Lungs hidden" not in table.columns and len(table) == 3
    assert any(m.value == "- old sentence." for m in at.markdown)


def test_no_experiment_shows_help(runs_root):
    at = run_page()
    assert any(h.value == "No experiment yet" for h in at.header)


# ---------------------------------------------------------------- page: the trained tiny experiment

@pytest.fixture
def tiny(tiny_root, tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    return exp, exp.load_json(runs.ANALYSIS)


def test_roc_legend_class_selector_and_macro(tiny):
    exp, analysis = tiny
    at = run_page()
    names = list(exp.labels.names)
    assert widget(at, "selectbox", "cmp_class").options == names + [compare.MACRO]
    for cls in (names[1], compare.MACRO):
        widget(at, "selectbox", "cmp_class").set_value(cls).run()
        ok(at)
        roc = charts(at)["cmp_roc"]
        legend = [t["name"] for t in roc["data"] if t.get("mode") == "lines"]
        for arch in exp.backbones:
            d = analysis["backbones"][arch]["test"]
            d = d["macro"] if cls == compare.MACRO else d["per_class"][cls]
            want = (f"{ui.arch_label(arch)}: AUC {d['auc']:.3f} (95% CI {d['ci_low']:.3f}–{d['ci_high']:.3f})"
                    + compare.chance_mark(d["auc"]))  # "— worse than chance" below 0.5
            assert want in legend, (want, legend)
        assert roc["layout"]["xaxis"]["title"]["text"].startswith("1 − specificity")
    # Macro: no PR curve (per class only); a class: PR curve with AP in its legend.
    assert "cmp_pr" not in charts(at)
    assert any("Precision–recall curves are per class" in i.value for i in at.info)
    widget(at, "selectbox", "cmp_class").set_value(names[0]).run()
    pr = charts(ok(at))["cmp_pr"]
    ap = analysis["backbones"][exp.backbones[0]]["test"]["per_class"][names[0]]["ap"]
    assert f"{ui.arch_label(exp.backbones[0])}: AP {ap:.3f}" in [t["name"] for t in pr["data"]]


def test_class_table_matches_analysis(tiny):
    exp, analysis = tiny
    at = run_page()
    names = list(exp.labels.names)
    a, b = exp.backbones
    table = frame_with(at, "Difference (95% CI)", "Macro average")
    if any(compare.WORSE_THAN_CHANCE in str(v) for v in table.to_numpy().ravel()):
        assert compare.BELOW_CHANCE_CAPTION in [c.value for c in at.caption]
    cmp = analysis["comparisons"][0]
    assert (cmp["a"], cmp["b"]) == (a, b)
    for cls in names:
        c = cmp["per_class"][cls]
        d = analysis["backbones"][a]["test"]["per_class"][cls]
        assert table.loc[cls, f"{ui.arch_label(a)} AUC (95% CI)"] == (f"{d['auc']:.3f} ({d['ci_low']:.3f}–{d['ci_high']:.3f})"
                                                                    + compare.chance_mark(d["auc"]))
        assert table.loc[cls, "Difference (95% CI)"] == f"{c['diff']:+.3f} ({c['ci_low']:+.3f}, {c['ci_high']:+.3f})"
        p = "<0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}"
        h = "<0.001" if c["p_holm"] < 0.001 else f"{c['p_holm']:.3f}"
        assert table.loc[cls, "p (Holm)"] == f"{p} ({h})"
        winner = table.loc[cls, "Winner"]
        if c["p_holm"] is not None and c["p_holm"] < 0.05:
            assert winner == ui.arch_label(a if c["diff"] > 0 else b)
        else:
            assert winner == "—"
    assert at.get("download_button")  # the CSV itself is checked in test_class_table_csv_numbers
    # Multi-class: the argmax confusion matrix of each backbone, as analysed.
    shown = [v for v in tables(at) if f"Predicted {names[0]}" in v.columns]
    assert [df.to_numpy().tolist() for df in shown] == [
        analysis["backbones"][arch]["thresholds"]["confusion"]["matrix"] for arch in (a, b)]


def test_operating_point_presets_slider_and_prevalence(tiny, tiny_experiment):
    exp, analysis = tiny
    names = list(exp.labels.names)
    cls = names[0]
    at = run_page()
    assert widget(at, "radio", "cmp_preset").value == "youden"
    assert widget(at, "slider", "cmp_threshold").disabled
    arrays = {arch: arrays_of(tiny_experiment, arch, cls) for arch in exp.backbones}
    for preset in ("youden", "high_sensitivity", "high_specificity"):
        widget(at, "radio", "cmp_preset").set_value(preset).run()
        ok(at)
        shown = confusions(at, cls)
        for arch, df in zip(exp.backbones, shown):
            t = analysis["backbones"][arch]["thresholds"]["per_class"][cls]["points"][preset]["threshold"]
            y, s, _ = arrays[arch]
            assert counts(df) == hand_counts(y, s, t), (preset, arch)
            stored = analysis["backbones"][arch]["thresholds"]["per_class"][cls]["points"][preset]["test"]
            assert counts(df) == (stored["tp"], stored["fn"], stored["fp"], stored["tn"])

    widget(at, "radio", "cmp_preset").set_value("custom").run()
    assert not widget(at, "slider", "cmp_threshold").disabled
    seen = set()
    # Thresholds inside the last backbone's test scores (the tiny models' scores span a narrow range).
    last = arrays[exp.backbones[-1]][1]
    levels = sorted({round(float(np.quantile(last, q)), 3) for q in (0.2, 0.5, 0.8)})
    for t in levels:
        widget(at, "slider", "cmp_threshold").set_value(t).run()
        ok(at)
        roc = charts(at)["cmp_roc"]
        markers = [tr for tr in roc["data"] if tr.get("mode") == "markers"]
        for arch, df, mk in zip(exp.backbones, confusions(at, cls), markers):
            y, s, _ = arrays[arch]
            tp, fn, fp, tn = hand_counts(y, s, t)
            assert counts(df) == (tp, fn, fp, tn)
            # The ROC marker sits at (1 - specificity, sensitivity) of those counts.
            assert mk["x"][0] == pytest.approx(fp / (fp + tn)) and mk["y"][0] == pytest.approx(tp / (tp + fn))
            assert f"threshold {t:.3f}" in mk["name"]
            seen.add(counts(df))
        rates = frame_with(at, "Sensitivity", "PPV")
        y, s, _ = arrays[exp.backbones[0]]
        tp, fn, fp, tn = hand_counts(y, s, t)
        assert rates.loc["Sensitivity", ui.arch_label(exp.backbones[0])].startswith(f"{tp / (tp + fn):.1%} ({tp}/{tp + fn})")
    assert len(seen) >= len(levels) > 1  # the slider really moved the counts

    # Prevalence: PPV/NPV by Bayes' rule from the test sensitivity and specificity.
    widget(at, "slider", "cmp_prevalence").set_value(5.0).run()
    rates = ok(at) and frame_with(at, "PPV at 5.0% prevalence")
    y, s, _ = arrays[exp.backbones[0]]
    tp, fn, fp, tn = hand_counts(y, s, levels[-1])
    se, sp, p = tp / (tp + fn), tn / (tn + fp), 0.05
    ppv = se * p / (se * p + (1 - sp) * (1 - p)) if se * p + (1 - sp) * (1 - p) > 0 else None
    npv = sp * (1 - p) / (sp * (1 - p) + (1 - se) * p)
    col = ui.arch_label(exp.backbones[0])
    assert rates.loc["PPV at 5.0% prevalence", col] == ("n/a" if ppv is None else f"{ppv:.1%}")
    assert rates.loc["NPV at 5.0% prevalence", col] == f"{npv:.1%}"

    widget(at, "selectbox", "cmp_class").set_value(compare.MACRO).run()
    assert any("Thresholds are per class" in i.value for i in ok(at).info)


def test_evidence_on_the_lungs(tiny, tiny_experiment):
    """The analysis stored lungs.json per backbone; the page shows one row per backbone x class, with the
    stored numbers, the reading and the glossary link."""
    from covidviz.runs.lungs import read_lungs
    from covidviz.views import shortcuts as shortcut_view
    from covidviz.views.style import arch_label

    exp, _ = tiny
    stored = {a: read_lungs(exp, a) for a in exp.backbones}
    assert all(rec is not None and rec.n_images > 0 for rec in stored.values())
    at = run_page()
    assert shortcut_view.LUNGS_TITLE in [h.value for h in at.subheader]
    table = frame_with(at, "Weight on the lungs", "Chance", "Peak on the lungs")
    assert len(table) == len(exp.backbones) * len(exp.labels.names)
    arch, cls = exp.backbones[-1], exp.labels.names[0]
    cell = stored[arch].cell(cls)
    row = table.loc[(arch_label(arch), cls)]
    assert row["Chance"] == f"{100 * cell.chance:.0f} %"
    assert row["Weight on the lungs"] == "—" if cell.share is None else row["Weight on the lungs"].startswith(
        f"{100 * cell.share:.0f} %")
    caption = next(c.value for c in at.caption if c.value.startswith("Share of each class's heat map"))
    assert "covidviz segmenter" in caption and "glossary#evidence-on-the-lungs" in caption
    assert any(m.value == shortcut_view.lungs_reading(stored, list(exp.labels.names)) for m in at.markdown)


def test_calibration_and_training_curves(tiny):
    exp, analysis = tiny
    at = run_page()
    table = frame_with(at, "ECE before", "Brier after")
    for arch in exp.backbones:
        cal = analysis["backbones"][arch]["calibration"]
        col = ui.arch_label(arch)
        assert table.loc["ECE before", col] == f"{cal['before']['ece']:.3f}"
        assert table.loc["ECE after", col] == f"{cal['after']['ece']:.3f}"
        assert table.loc["Brier after", col] == f"{cal['after']['brier']:.3f}"
        assert table.loc["Temperature", col] == f"{cal['temperature']:.2f}"
    fig = charts(at)["cmp_reliability"]
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["Before (as trained)", "After temperature scaling"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "Mean predicted probability"
    training = charts(at)["cmp_training"]
    names = {t["name"] for t in training["data"] if t.get("name")}
    for arch in exp.backbones:
        assert f"{ui.arch_label(arch)}, validation AUC" in names
        assert f"{ui.arch_label(arch)}, training loss" in names


def test_gallery_controls_and_heatmaps(tiny, tiny_experiment):
    exp, analysis = tiny
    a, b = exp.backbones
    at = run_page()
    im = exp.images()
    test = (im["split"] == "test").to_numpy()
    pa, pb = exp.probabilities(a)[test], exp.probabilities(b)[test]
    truth = exp.labels.onehot(im["labels"].to_numpy())[test].argmax(1)
    disagree = int((pa.argmax(1) != pb.argmax(1)).sum())
    assert any(c.value.startswith(f"{disagree} of {int(test.sum())} test images") for c in at.caption)

    widget(at, "radio", "cmp_gallery_kind").set_value("confident").run()
    for level in (0.5, 0.7):
        widget(at, "slider", "cmp_confident").set_value(level).run()
        ok(at)
        wrong = ((pa.argmax(1) != truth) & (pa.max(1) >= level)) | ((pb.argmax(1) != truth) & (pb.max(1) >= level))
        assert any(c.value.startswith(f"{int(wrong.sum())} of {int(test.sum())} test images") for c in at.caption), level

    # One Heatmaps button per gallery image (however many confident mistakes the tiny models make).
    widget(at, "slider", "cmp_confident").set_value(0.5).run()
    wrong = ((pa.argmax(1) != truth) & (pa.max(1) >= 0.5)) | ((pb.argmax(1) != truth) & (pb.max(1) >= 0.5))
    buttons = heat_buttons(ok(at))
    assert len(buttons) == min(int(wrong.sum()), 24)
    if not wrong.any():
        assert any(s.value == "No such test images." for s in at.success)


def test_gallery_heatmaps_explain_each_backbones_call(runs_root, tmp_path):
    """Real images and (random) weights, probabilities that disagree by construction: the Heatmaps
    button under a thumbnail shows both backbones' maps, each for the class that backbone predicted."""
    folder = make_analysed(runs_root, "heat", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS,
                           ["densenet121", "resnet50"], n=80, images_dir=tmp_path / "images")
    exp = runs.read_experiment(folder)
    a, b = exp.backbones
    at = run_page()
    buttons = heat_buttons(at)
    assert buttons, "the fixture's backbones should disagree on some test images"
    row = heat_row(buttons[0])
    buttons[0].click().run()
    ok(at)
    assert widget(at, "selectbox", "cmp_pick").value == row
    captions = [c for el in at.get("image") for c in _image_captions(el)]
    heat = [c for c in captions if "class activation map" in c]
    assert len(heat) == 2 and heat[0].startswith(ui.arch_label(a)) and heat[1].startswith(ui.arch_label(b))
    # Each explains the class it predicted (as stored in predictions.parquet).
    for arch, cap in zip((a, b), heat):
        top = exp.labels.names[int(exp.probabilities(arch)[row].argmax())]
        assert f"class activation map for '{top}' (its prediction)" in cap


def _image_captions(el) -> list[str]:
    return [img.caption for img in el.proto.imgs]


def test_subgroup_forest_plot(tiny):
    exp, analysis = tiny
    at = run_page()
    cls = exp.labels.names[0]
    fig = charts(at)["cmp_subgroups"]
    rows = [r for r in analysis["backbones"][exp.backbones[0]]["subgroups"]["rows"] if r["class"] == cls]
    trace = next(t for t in fig["data"] if t["name"] == ui.arch_label(exp.backbones[0]))
    assert len(trace["y"]) == len(rows)
    want = [np.nan if r["auc"] is None else r["auc"] for r in rows]
    got = [np.nan if v is None else v for v in trace["x"]]
    np.testing.assert_allclose(got, want)
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("Test AUC")


# ---------------------------------------------------------------- page: 14 findings, multi-label

def test_multilabel_14_findings_confounding_and_gallery(runs_root):
    names = list(NIH_FINDINGS)
    folder = make_analysed(runs_root, "nih14", names, MULTILABEL, ["densenet121", "resnet50"], n=300)
    analysis = json.loads((folder / runs.ANALYSIS).read_text())
    at = run_page()
    assert len(widget(at, "selectbox", "cmp_class").options) == 15
    assert analysis["confounding"], "the fixture's first class should be flagged"
    warned = [w.value for w in at.warning if "Confounding." in w.value]
    assert any(names[0] in w and "Source predicts" in w for w in warned)
    assert len(frame_with(at, "Macro average").index) == 15
    cls = names[2]
    widget(at, "selectbox", "cmp_class").set_value(cls).run()
    ok(at)
    # Multi-label gallery: disagreement on this finding at each backbone's Youden threshold.
    t = [compare_operating.presets(runs.Analysis(analysis), arch, cls)["youden"] for arch in ("densenet121", "resnet50")]
    ya, sa, _ = arrays_of(folder, "densenet121", cls)
    _, sb, _ = arrays_of(folder, "resnet50", cls)
    disagree = int(((sa >= t[0]) != (sb >= t[1])).sum())
    assert any(c.value.startswith(f"{disagree} of {len(ya)} test images") for c in at.caption)
    # Per-class reliability for this finding and its ECE.
    table = frame_with(at, "ECE before")
    ece = analysis["backbones"]["densenet121"]["calibration"]["before"]["ece_per_class"][cls]
    assert table.loc["ECE before", "DenseNet121"] == f"{ece:.3f}"
    buttons = heat_buttons(at)
    if buttons:  # the originals do not exist: a clear warning, the thumbnail, no exception
        buttons[0].click().run()
        assert any("cannot be read" in w.value for w in ok(at).warning)
    widget(at, "selectbox", "cmp_class").set_value(compare.MACRO).run()
    assert any("choose a class above" in i.value for i in ok(at).info)


def test_three_backbones_pair_selector(runs_root):
    make_analysed(runs_root, "three", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS,
                  ["densenet121", "resnet50", "tinycnn"], n=120)
    at = run_page()
    pairs = widget(at, "selectbox", "cmp_pair").options
    assert len(pairs) == 3
    widget(at, "selectbox", "cmp_pair").set_value("resnet50|tinycnn").run()
    table = frame_with(ok(at), "Difference (95% CI)")
    assert table.loc["COVID-19", "Winner"] in ("—", "ResNet50", "Tiny CNN (test model)")
    assert any(c.value.startswith("Difference = ResNet50 − Tiny CNN") for c in at.caption)


# ---------------------------------------------------------------- covidviz.views.compare* (no streamlit)

def test_class_table_csv_numbers_and_flipped_pair(tmp_path):
    folder = make_analysed(tmp_path, "mc", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS,
                           ["densenet121", "resnet50"], n=160)
    analysis = json.loads((folder / runs.ANALYSIS).read_text())
    names = analysis["meta"]["names"]
    typed = runs.Analysis(analysis)
    fwd = compare.class_table(typed, ["densenet121", "resnet50"], names, str, ("densenet121", "resnet50"))
    rev = compare.class_table(typed, ["densenet121", "resnet50"], names, str, ("resnet50", "densenet121"))
    np.testing.assert_allclose(fwd["Difference"], -rev["Difference"])
    np.testing.assert_allclose(fwd["Difference CI low"], -rev["Difference CI high"])
    assert (fwd["Winner"] == rev["Winner"]).all()
    csv = pd.read_csv(pd.io.common.StringIO(fwd.to_csv()), index_col=0)
    c = analysis["comparisons"][0]["per_class"]["COVID-19"]
    assert csv.loc["COVID-19", "p-value (DeLong)"] == pytest.approx(c["p_value"])
    assert csv.loc["COVID-19", "densenet121 AUC"] == pytest.approx(c["auc_a"])
    # This fixture's densenet121 is much better: named winner where Holm p < 0.05.
    sig = [n for n in names if analysis["comparisons"][0]["per_class"][n]["p_holm"] < 0.05]
    assert sig and all(fwd.loc[n, "Winner"] == "densenet121" for n in sig)


def test_disagreements_by_hand():
    names = ["A", "B"]
    onehot = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], float)
    pa = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    pb = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.95, 0.05]])
    d = compare_gallery.disagreements(onehot, pa, pb, MULTICLASS, names, kind="disagree")
    assert list(d["pos"]) == [3, 1] and d["total"].iloc[0] == 2  # gaps 0.65, 0.3
    d = compare_gallery.disagreements(onehot, pa, pb, MULTICLASS, names, confident=0.75, kind="confident")
    assert list(d["pos"]) == [3, 2]  # b 0.95 wrong, a 0.8 wrong
    d = compare_gallery.disagreements(onehot, pa, pb, MULTILABEL, names, cls="B", thresholds=(0.5, 0.65), kind="disagree")
    # p(B): a .1 .4 .8 .7 (>= .5: 2, 3), b .2 .7 .6 .05 (>= .65: 1) -> disagree on 1, 2, 3 by gap .3 .2 .65
    assert list(d["pos"]) == [3, 1, 2]


def test_operating_point_prevalence():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3, 0.2])
    c = compare_operating.operating_point(y, s, 0.5, prevalence=0.5)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (2, 1, 1, 4)
    assert c["tpr"] == pytest.approx(2 / 3) and c["fpr"] == pytest.approx(1 / 5)
    assert c["at_prevalence"]["ppv"] == pytest.approx((2 / 3) / (2 / 3 + 1 / 5))


# ---------------------------------------------------------------- page: switching experiments (app.py)

def _main_keys(at: AppTest) -> list[str]:
    return [w.key for kind in ("selectbox", "radio", "slider", "button", "download_button")
            for w in at.main.get(kind) if getattr(w, "key", None)]


@pytest.mark.usefixtures("app_like_server")
def test_no_widget_value_survives_a_switch_of_experiment(runs_root):
    """Issue 13: Compare's prevalence showed nih14's 14.1 % labelled "COVID-19" after switching to the demo,
    and the PPV/NPV rows used it. Every widget is keyed per experiment (``ui.scoped``), so after a switch
    each one is at the new experiment's default, and the PPV/NPV rows use the new default prevalence."""
    names = list(NIH_FINDINGS)
    make_analysed(runs_root, "nih14", names, MULTILABEL, ["densenet121", "resnet50"], n=300)
    demo = make_analysed(runs_root, "demo", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS,
                         ["densenet121", "resnet50"], n=160)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.sidebar.selectbox[0].select("nih14").run()
    at.switch_page("app_pages/compare.py").run()
    assert ok(at).title[0].value == "Compare backbones: nih14"

    # Change every control on nih14.
    cls = names[3]
    widget(at, "selectbox", "cmp_class").set_value(cls).run()
    assert widget(ok(at), "slider", "cmp_prevalence").label.startswith(f"Prevalence of {cls}")
    widget(at, "slider", "cmp_prevalence").set_value(14.1).run()
    widget(at, "radio", "cmp_preset").set_value(compare_operating.CUSTOM).run()
    widget(at, "slider", "cmp_threshold").set_value(0.7).run()
    widget(at, "radio", "cmp_gallery_kind").set_value("confident").run()
    widget(at, "slider", "cmp_confident").set_value(0.6).run()
    assert "PPV at 14.1% prevalence" in frame_with(ok(at), "Sensitivity").index
    assert all(k.startswith("nih14::") for k in _main_keys(at)), _main_keys(at)

    # Switch to the demo in the sidebar: every control at the demo's defaults.
    at.sidebar.selectbox[0].select("demo").run()
    assert ok(at).title[0].value == "Compare backbones: demo"
    keys = _main_keys(at)
    assert keys and all(k.startswith("demo::") for k in keys), keys
    assert widget(at, "selectbox", "cmp_class").value == "COVID-19"
    assert widget(at, "radio", "cmp_preset").value == "youden"
    assert widget(at, "slider", "cmp_threshold").value == 0.5 and widget(at, "slider", "cmp_threshold").disabled
    assert widget(at, "radio", "cmp_gallery_kind").value == "disagree"
    assert widget(at, "slider", "cmp_confident").value == 0.8
    prevalence = widget(at, "slider", "cmp_prevalence")
    y, _, _ = arrays_of(demo, "densenet121", "COVID-19")
    default = compare_operating.default_prevalence_percent(y)
    assert default != 14.1 and prevalence.value == default
    assert prevalence.label.startswith("Prevalence of COVID-19")

    # The PPV/NPV rows: at the demo's default prevalence, by Bayes' rule from each backbone's own
    # (validation-chosen, balanced) threshold on the demo's test images.
    rates = frame_with(at, "Sensitivity")
    p = default / 100
    assert f"PPV at {p:.1%} prevalence" in rates.index and not any("14.1%" in str(r) for r in rates.index)
    analysis = runs.Analysis(json.loads((demo / runs.ANALYSIS).read_text()))
    for arch in ("densenet121", "resnet50"):
        y, s, _ = arrays_of(demo, arch, "COVID-19")
        tp, fn, fp, tn = hand_counts(y, s, analysis.backbone(arch).point("COVID-19", "youden").threshold)
        se, sp = tp / (tp + fn), tn / (tn + fp)
        ppv = se * p / (se * p + (1 - sp) * (1 - p))
        npv = sp * (1 - p) / (sp * (1 - p) + (1 - se) * p)
        assert rates.loc[f"PPV at {p:.1%} prevalence", ui.arch_label(arch)] == f"{ppv:.1%}"
        assert rates.loc[f"NPV at {p:.1%} prevalence", ui.arch_label(arch)] == f"{npv:.1%}"

    # And back: nih14 starts from its own defaults as well (nothing kept from the first visit).
    at.sidebar.selectbox[0].select("nih14").run()
    assert ok(at).title[0].value == "Compare backbones: nih14"
    assert widget(at, "selectbox", "cmp_class").value == names[0]
    assert widget(at, "radio", "cmp_preset").value == "youden"


def test_prevalence_is_kept_per_class(runs_root):
    """The prevalence slider is keyed per class too: it starts at each class's own test prevalence."""
    folder = make_analysed(runs_root, "mc", ["COVID-19", "Normal", "Pneumonia"], MULTICLASS, ["densenet121", "resnet50"],
                           n=160)
    at = run_page()
    widget(at, "slider", "cmp_prevalence").set_value(3.0).run()
    assert "PPV at 3.0% prevalence" in frame_with(ok(at), "Sensitivity").index
    widget(at, "selectbox", "cmp_class").set_value("Normal").run()
    y, _, _ = arrays_of(folder, "densenet121", "Normal")
    default = compare_operating.default_prevalence_percent(y)
    assert widget(ok(at), "slider", "cmp_prevalence").value == default != 3.0
    assert f"PPV at {default / 100:.1%} prevalence" in frame_with(at, "Sensitivity").index


# ---------------------------------------------------------------- an external test set

def test_external_test_set_switches_curves_table_and_counts(tiny_experiment, tmp_path_factory, monkeypatch):
    from covidviz.runs.external import list_external
    from tests.external_fixtures import SITE, tiny_with_external

    folder = tiny_with_external(tiny_experiment, tmp_path_factory)
    monkeypatch.setenv(ui.RUNS_ENV, str(folder.parent))
    exp, ext = runs.read_experiment(folder), list_external(folder)[0][0]
    names, arch = list(exp.labels.names), exp.backbones[0]
    at = run_page()
    select = widget(at, "selectbox", "cmp_test_set")
    assert select.options == ["Internal test split", f"External: {SITE}"]
    select.set_value(SITE).run()
    ok(at)
    legend = [t["name"] for t in charts(at)["cmp_roc"]["data"] if t.get("mode") == "lines"]
    m = ext.auc(arch, names[0])
    assert (f"{ui.arch_label(arch)}: AUC {m.auc:.3f} (95% CI {m.ci_low:.3f}–{m.ci_high:.3f})"
            + compare.chance_mark(m.auc)) in legend
    drops = frame_with(at, "Internal test AUC (95% CI)", f"{SITE} AUC (95% CI)")
    d = ext.drop(arch, names[0])
    assert drops.loc[(ui.arch_label(arch), names[0]), "Drop (95% CI)"].startswith(f"{d['drop']:+.3f}")
    # The operating point's counts are the carried-over validation threshold on the external images.
    tp, fn, fp, tn = counts(confusions(at, names[0])[0])
    stored = ext.point(arch, names[0], "youden").counts()
    assert (tp, fn, fp, tn) == (stored["tp"], stored["fn"], stored["fp"], stored["tn"])
    assert tp + fn + fp + tn == ext.n_images
    # Evidence on the lungs follows the chosen site (train.py evaluate measured it there).
    from covidviz.runs.lungs import external_lungs

    site_lungs = external_lungs(ext, arch)
    assert site_lungs is not None and site_lungs.split == "external" and site_lungs.n_candidates == ext.n_images
    assert any(c.value.startswith("Share of each class's heat map") and f"films of {SITE}" in c.value for c in at.caption)


def test_external_test_set_every_section_says_which_test_set_it_reads(tiny_experiment, tmp_path_factory, monkeypatch):
    from covidviz.runs.external import list_external
    from tests.external_fixtures import SITE, tiny_with_external

    folder = tiny_with_external(tiny_experiment, tmp_path_factory)
    monkeypatch.setenv(ui.RUNS_ENV, str(folder.parent))
    exp, ext = runs.read_experiment(folder), list_external(folder)[0][0]
    analysis, arch = exp.analysis(), exp.backbones[0]
    at = run_page()
    assert any(c.value.startswith("Test split: ") for c in at.caption)  # the internal split, as before
    widget(at, "selectbox", "cmp_test_set").set_value(SITE).run()
    ok(at)
    captions, headers = [c.value for c in at.caption], [h.value for h in at.header]
    # The page's header names the external set, not the internal split's counts.
    assert not any(c.startswith("Test split: ") for c in captions)
    assert any(c.startswith(f"Test set: external site **{SITE}**, {ext.n_images} images") for c in captions)
    # Sections that switch say so in their header ...
    for title in ("ROC and precision–recall", "Per-class AUC", "Operating point", "Calibration",
                  "Where the backbones disagree", "Subgroups"):
        assert f"{title} on {SITE}" in headers, (title, headers)
    cal = frame_with(at, "ECE before")
    stored = ext.metrics["backbones"][arch]["calibration"]["before"]["ece"]
    assert cal.loc["ECE before", ui.arch_label(arch)] == f"{stored:.3f}"  # the site's calibration, not the test split's
    assert any(f"of {ext.n_images} {SITE} images" in c for c in captions)  # the gallery reads the site's images
    # ... the others carry the internal split's caption.
    internal = compare.internal_split_text(analysis)
    assert f"The shortcut audit is on {internal}: {SITE} is not measured here." in captions
    # The site's images come from the training hospitals: no evidence of transfer, and it says so.
    shared = sorted(set(compare.image_sources(exp.images(), "train")) & set(compare.image_sources(ext.images())))
    assert shared, "the fixture's site is drawn from the training hospitals"
    warning = next(w.value for w in at.warning if "shares the hospital" in w.value)
    assert all(h in warning for h in shared) and "a small drop is not evidence of transfer" in warning


def test_shared_sources_and_below_chance_texts():
    images = pd.DataFrame({"source": ["hospital-A", "hospital-B", "", "x"], "dataset": ["d", "d", "nih", "d"],
                           "split": ["train", "train", "train", "test"]})
    assert compare.image_sources(images, "train") == ["hospital-A", "hospital-B", "nih"]  # empty source: the dataset
    text = compare.shared_sources_text(["hospital-A", "hospital-B"], ["hospital-B", "site-c"])
    assert text.startswith("This external set shares the hospital hospital-B with the training data (besides site-c)")
    assert "a small drop is not evidence of transfer" in text
    assert compare.shared_sources_text(["hospital-A"], ["site-c"]) is None
    assert "carry no source" in compare.no_source_text("site-c")
    # AUCs below 0.5 are marked wherever an AUC cell or legend is written.
    assert compare.auc_ci_text(0.45, 0.38, 0.52) == "0.450 (0.380–0.520) — worse than chance"
    assert compare.auc_ci_text(0.8, 0.7, 0.9) == "0.800 (0.700–0.900)" and compare.auc_ci_text(np.nan, 0, 1) == "n/a"
    table = pd.DataFrame({"A AUC": [0.45, 0.9], "A CI low": [0.4, 0.8], "A CI high": [0.5, 1.0],
                          "Test positives": [3.0, 4.0]}, index=pd.Index(["x", "y"], name="Class"))
    shown = compare.display_table(table, ["A"], label=str)
    assert shown.loc["x", "A AUC (95% CI)"].endswith("worse than chance")
    assert not shown.loc["y", "A AUC (95% CI)"].endswith("worse than chance")
    assert compare.below_chance_note(shown) == compare.BELOW_CHANCE_CAPTION
    assert compare.below_chance_note(shown.loc[["y"]]) is None
    from covidviz.runs.records import ClassMetrics

    assert compare.auc_text(ClassMetrics.of({"auc": 0.4, "ci_low": 0.3, "ci_high": 0.5})).endswith("worse than chance")
