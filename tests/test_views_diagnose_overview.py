"""The Diagnose and Overview pages' view functions (``covidviz.views.diagnose``/``overview``), without
Streamlit, on small hand-built inputs with known answers; and the pages' shape (thin, one footer)."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covidviz.cam import DEFAULT_COLORMAP, OVERLAY_ALPHA, CamResult
from covidviz.data.labels import MULTICLASS, MULTILABEL, LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.inference import BackboneResult, Diagnosis
from covidviz.runs.records import Analysis, ManifestBackbone, ManifestInfo, Rate
from covidviz.views import diagnose as dv
from covidviz.views import overview as ov
from covidviz.views.style import NO_FINDING, NO_FINDING_COLOUR, backbone_colours, class_colours

REPO = Path(__file__).resolve().parents[1]
NAMES = ["COVID-19", "Normal", "Pneumonia"]


# ------------------------------------------------------------------------------ stand-ins

class FakeExp:
    """The little of ``runs.Experiment`` the views read."""

    def __init__(self, backbones: dict, manifest: dict | None = None, analysis: Analysis | None = None,
                 labels=LabelSpace(tuple(NAMES), MULTICLASS)):
        self.name, self.path = "exp", Path("/runs/exp")
        self.labels, self.preprocessing = labels, Preprocessing(64)
        self.manifest = {**(manifest or {}), "backbones": backbones}
        self.backbones = list(backbones)
        self._analysis = analysis

    def record(self, arch):
        return ManifestBackbone(arch, self.manifest["backbones"][arch])

    def analysis(self):
        return self._analysis


def _rates(sens=None):
    return {"sensitivity": Rate(sens, 10, 0.5, 0.9) if sens is not None else Rate(None),
            "specificity": Rate(0.75, 20), "ppv": Rate(None), "npv": Rate(0.5, 8, 0.25, 0.75)}


def _result(arch="densenet121", top=0, positives=(True, False, None), **extra) -> BackboneResult:
    probs = np.array([0.7, 0.2, 0.1])
    calls = [{"class": n, "prob": float(probs[j]), "raw_prob": float(probs[j]) + 0.01,
              "threshold": None if positives[j] is None else 0.5, "positive": positives[j], "test": _rates(0.8)}
             for j, n in enumerate(NAMES)]
    cam = CamResult("cam", np.array([top]), np.ones((1, 8, 8), np.float32), np.ones((1, 8, 8), np.float32),
                    np.ones((1, 2, 2), np.float32), np.zeros((1, 3), np.float32))
    return BackboneResult(arch=arch, logits=np.zeros(3), raw_probs=probs, probs=probs, features=np.zeros(4), top=top,
                          calls=calls, cams={"cam": cam}, **extra)


def _images() -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(6)],
                         "split": ["train", "train", "train", "test", "test", "test"],
                         "labels": ["COVID-19", "Normal", "", "Normal", "Pneumonia|Normal", "COVID-19"],
                         "path": [f"/x/{k}.png" for k in range(6)]})


# ------------------------------------------------------------------------------ overview: confounding

CONFOUNDED = pd.DataFrame({"covid-hospital": [10, 0, 0], "hospital-A": [0, 12, 14]},
                          index=pd.Index(NAMES, name="Class"))


def test_confounding_shows_the_analysis_sentences_when_analysed():
    sentence = "Image source predicts COVID-19 (Cramér's V 0.91): 100% of the 10 COVID-19 images come from ..."
    notes = ov.confounding_warnings(Analysis({"confounding": [sentence]}), CONFOUNDED)
    assert notes == [f"**Confounding.** {sentence}"]  # the analysis's words, not the share rule's


def test_analysed_without_confounding_says_nothing_even_if_the_share_rule_would():
    # Overview and Compare must not disagree: the analysis decided, the quick check is not shown.
    assert ov.source_confounding(CONFOUNDED)  # the quick rule would flag it
    assert ov.confounding_warnings(Analysis({"confounding": []}), CONFOUNDED) == []


def test_not_analysed_falls_back_to_the_labelled_quick_check():
    notes = ov.confounding_warnings(None, CONFOUNDED)
    assert len(notes) == 1
    assert notes[0].startswith("**Possible source confounding.** Not analysed yet: a quick check of the class x "
                               "source table says 100% of the COVID-19 images come from source 'covid-hospital'")
    spread = pd.DataFrame({"A": [5, 5, 5], "B": [5, 6, 4]}, index=NAMES)
    assert ov.confounding_warnings(None, spread) == []


def test_single_source_text():
    assert ov.single_source_text(CONFOUNDED) is None
    one = ov.single_source_text(pd.DataFrame({"nih": [3, 4]}, index=["A", "B"]))
    assert "one source (nih)" in one and "cannot show source confounding" in one


# ------------------------------------------------------------------------------ overview: identity and cards

MANIFEST = {"created": "2026-11-25T18:00:00", "completed": "2026-11-25T19:00:00", "covidviz_version": "0.1.0",
            "config": {"data": ["csv:/d"], "seed": 3, "weights": "auto", "train": {"epochs": 7, "lr": 0.001}},
            "dataset": {"specs": ["synthetic:90", "nih:/n"], "sources": [{"kind": "synthetic", "n_images": 90}],
                        "skipped": [{"path": "/a.png", "reason": "cannot decode image"}]}}


def test_manifest_info_reads_the_experiment_part():
    info = ManifestInfo(MANIFEST)
    assert (info.created, info.completed, info.version) == ("2026-11-25T18:00:00", "2026-11-25T19:00:00", "0.1.0")
    assert info.settings["epochs"] == 7 and info.settings["seed"] == 3 and "train" in info.config
    assert info.data_specs == ["synthetic:90", "nih:/n"]  # the dataset card wins over config.data
    assert ManifestInfo({"config": {"data": ["csv:/d"]}}).data_specs == ["csv:/d"]
    empty = ManifestInfo({})
    assert empty.created is None and empty.settings == {} and empty.sources == [] and empty.skipped == []


def test_identity_and_configuration_lines():
    exp = FakeExp({}, MANIFEST)
    assert ov.identity_caption(exp) == ("created 2026-11-25 18:00:00 · completed 2026-11-25 19:00:00 · covidviz 0.1.0"
                                        " · folder `/runs/exp`")
    text = ov.config_text(ManifestInfo(MANIFEST))
    assert text == ("Data: `synthetic:90`, `nih:/n` · Epochs (max): **7** · Learning rate: **0.001** · "
                    "Initial weights asked for: **auto** · Seed: **3**")


def test_sources_and_skipped_tables():
    info = ManifestInfo(MANIFEST)
    assert list(ov.skipped_table(info)["reason"]) == ["cannot decode image"]
    assert list(ov.skipped_table(ManifestInfo({})).columns) == ["path", "reason"] and ov.skipped_table(ManifestInfo({})).empty
    assert ov.sources_table(info).loc[0, "n_images"] == 90 and ov.sources_table(ManifestInfo({})).empty


BACKBONES = {
    "densenet121": {"init": {"weights": "auto", "source": "random", "warning": "No ImageNet: random init"},
                    "epochs_trained": 3, "best_epoch": 2, "best_val_auc": 0.81234, "train_seconds": 83.0,
                    "device": "cpu", "feature_dim": 1024, "stopped_early": False,
                    "metrics": {"test": {"n": 80, "auc": {"COVID-19": 0.9, "Normal": 0.8}, "macro_auc": 0.85}}},
    "resnet50": {"init": {"weights": "imagenet", "source": "imagenet"}, "epochs_trained": 5, "best_epoch": 5,
                 "train_seconds": 4000, "stopped_early": True,
                 "metrics": {"test": {"n": 120, "auc": {"COVID-19": 0.7}, "macro_auc": None}}},
}


def test_training_record_reads_like_a_model_card():
    record = ov.training_record(FakeExp(BACKBONES))
    assert list(record.columns) == ["DenseNet121", "ResNet50"]
    assert record.loc["Initial weights", "DenseNet121"] == "Random (no pretraining); asked for 'auto'"
    assert record.loc["Initial weights", "ResNet50"] == "ImageNet (pretrained)"
    assert list(record.loc["Best validation AUC (macro)"]) == ["0.812", "—"]
    assert list(record.loc["Training time"]) == ["1 min 23 s", "1 h 6 min"]
    assert list(record.loc["Stopped early"]) == ["no", "yes"]
    assert list(record.loc["Device"]) == ["cpu", "—"] and list(record.loc["Embedding size"]) == ["1024", "—"]


@pytest.mark.parametrize("init, text", [
    ({"weights": "none", "source": "random"}, "Random (no pretraining)"),
    ({"weights": "auto", "source": "random"}, "Random (no pretraining); asked for 'auto'"),
    ({"weights": "imagenet", "source": "imagenet"}, "ImageNet (pretrained)"),
    ({"source": "experiment:runs/nih"}, "Earlier experiment runs/nih"),
    ({"source": "file:/w/dn.pt"}, "File /w/dn.pt"),
    ({"weights": "x.pt"}, "x.pt"),
    ({}, "—"),
])
def test_init_text_says_where_the_weights_came_from(init, text):
    assert ov.init_text(init) == text


def test_init_warnings_name_the_backbone():
    assert ov.init_warnings(FakeExp(BACKBONES)) == ["**DenseNet121:** No ImageNet: random init"]


def test_test_set_size_texts():
    exp = FakeExp(BACKBONES)
    assert ov.n_test_images(exp) == [80, 120]
    assert ov.n_text([80, 120, 80]) == "n = 80 / 120" and ov.n_text([50, None]) == "n = 50" and ov.n_text([None]) == "n unknown"
    assert "Only 80 test images" in ov.small_test_warning([80, 120])
    assert ov.small_test_warning([100, 120]) is None and ov.small_test_warning([None]) is None


def test_auc_table_and_chart():
    exp = FakeExp(BACKBONES)
    aucs = ov.auc_table(exp)
    assert aucs.loc["COVID-19", "DenseNet121"] == 0.9 and np.isnan(aucs.loc["Pneumonia", "DenseNet121"])
    assert np.isnan(aucs.loc["Macro average", "ResNet50"])
    fig = ov.auc_chart(aucs, exp.backbones)
    colours = backbone_colours(exp.backbones)
    assert [b.name for b in fig.data] == ["DenseNet121", "ResNet50"]
    assert [b.marker.color for b in fig.data] == [colours["DenseNet121"], colours["ResNet50"]]
    assert list(fig.data[0].text) == ["0.90", "0.80", "n/a", "0.85"]  # undefined AUC is "n/a", not 0
    assert fig.layout.shapes[0].x0 == 0.5  # the chance line


# ------------------------------------------------------------------------------ diagnose: input

def test_picker_choices_filter_test_images_by_label_and_prediction():
    images = _images()
    predicted = np.array(["COVID-19", "Normal", "Normal", "Normal", "Pneumonia", "Normal"])
    assert list(dv.picker_choices(images, predicted)) == [3, 4, 5]  # test rows only
    assert list(dv.picker_choices(images, predicted, ["Normal"])) == [3, 4]  # multi-label row 4 carries Normal
    assert list(dv.picker_choices(images, predicted, ["Normal"], "Pneumonia")) == [4]
    assert dv.picker_choices(images, predicted, ["COVID-19"], "Pneumonia") == {}
    assert dv.picker_choices(images, predicted)[5] == "i5 · label COVID-19 · predicted Normal"


def test_predicted_classes_are_the_argmax_of_the_stored_probabilities():
    preds = pd.DataFrame({"p::COVID-19": [0.1, 0.8], "p::Normal": [0.6, 0.1], "p::Pneumonia": [0.3, 0.1]})
    assert list(dv.predicted_classes(preds, NAMES)) == ["Normal", "COVID-19"]


def test_window_controls_start_at_the_files_window_and_survive_a_flat_image():
    raw = np.linspace(0, 4000, 100).reshape(10, 10)
    w = dv.window_controls(raw, (2000, 3000))
    assert (w.vmin, w.vmax, w.level, w.width) == (0.0, 4000.0, 2500.0, 1000.0)
    assert (w.width_min, w.width_max) == (20.0, 8000.0)
    flat = dv.window_controls(np.full((4, 4), 1234.0), (1234, 1234))
    assert flat.vmax == flat.vmin + 1 and flat.width_min <= flat.width <= flat.width_max and flat.width > 0
    assert dv.window_from(2500, 1000) == (2000, 3000)
    assert dv.window_caption(None, (0, 255)) == "File's default window 0…255"
    assert dv.window_caption((10.4, 99.6), (0, 255)) == "Custom window 10…100"


def test_colour_warning_only_for_colour_files():
    assert "Colour image (RGB)" in dv.colour_warning({"mode": "RGB"})
    assert dv.colour_warning({"mode": "L"}) is None and dv.colour_warning({}) is None


# ------------------------------------------------------------------------------ diagnose: predictions

def test_rate_text():
    assert dv.rate_text(Rate(0.8333, 12, 0.55, 0.95)) == "0.83 (0.55–0.95), n=12"
    assert dv.rate_text(Rate(0.5, 4)) == "0.50, n=4"
    assert dv.rate_text(Rate(None)) == "—" and dv.rate_text(None) == "—"


def test_calls_and_threshold_tables():
    b = _result()
    calls = dv.calls_table(b)
    assert list(calls["Call"]) == ["Positive", "Negative", "—"]
    assert list(calls.columns) == ["Class", "Probability", "Call", "Model score", "Threshold"]
    assert calls.loc[0, "Model score"] == pytest.approx(0.71)
    rates = dv.threshold_rates_table(b)
    assert list(rates.columns) == ["Class", "Sensitivity", "Specificity", "PPV", "NPV"]
    assert rates.loc[0].tolist() == ["COVID-19", "0.80 (0.50–0.90), n=10", "0.75, n=20", "—", "0.50 (0.25–0.75), n=8"]


def test_task_caption_names_the_task():
    assert dv.task_caption(MULTICLASS).startswith("Multi-class: the probabilities of the classes add up to 1.")
    assert dv.task_caption(MULTILABEL).startswith("Multi-label:")


# ------------------------------------------------------------------------------ diagnose: heat maps

def test_explained_map_reuses_the_top_class_map_and_caches_the_others():
    b = _result(top=1)
    diag = Diagnosis("x", "exp", np.zeros((8, 8), np.uint8), {"densenet121": b})

    class Counting:
        calls = []

        def heatmaps(self, pixels, arch, cls, methods):
            self.calls.append((arch, cls, methods))
            return {m: f"map {cls}" for m in methods}

    p, cache = Counting(), {}
    assert dv.explained_map(p, diag, "densenet121", "cam", None, cache) is b.cams["cam"]
    assert dv.explained_map(p, diag, "densenet121", "cam", 1, cache) is b.cams["cam"]  # 1 is the top class
    assert p.calls == []
    assert dv.explained_map(p, diag, "densenet121", "cam", 2, cache) == "map 2"
    assert dv.explained_map(p, diag, "densenet121", "cam", 2, cache) == "map 2"
    assert p.calls == [("densenet121", 2, ("cam",))]  # computed once
    assert dv.target_class(dv.TOP_CLASS, NAMES) is None and dv.target_class("Pneumonia", NAMES) == 2


def test_heat_caption():
    assert dv.heat_caption("gradcam", "Normal") == "Grad-CAM for Normal"
    assert dv.heat_caption("eigencam", "Normal").endswith("(class-agnostic)")


def test_overlays_default_to_the_apps_opacity_and_colour_map():
    gray = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    heat = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    default = dv.overlay_png(gray, heat)
    assert default == dv.overlay_png(gray, heat, OVERLAY_ALPHA, DEFAULT_COLORMAP)
    assert default != dv.overlay_png(gray, heat, 0.4, DEFAULT_COLORMAP)
    assert Image.open(io.BytesIO(default)).size == (32, 32)


# ------------------------------------------------------------------------------ diagnose: similar images, maps

def test_similar_images_keep_rows_and_captions_aligned():
    images = _images()
    b = _result(neighbors=list(range(12)), distances=[0.5 * k for k in range(12)])
    images = pd.concat([images, images]).reset_index(drop=True)
    rows, captions = dv.similar_images(images, b)
    assert rows == list(range(8)) and len(captions) == 8  # K_SIMILAR
    assert captions[:3] == ["COVID-19 · d=0.0", "Normal · d=0.5", f"{NO_FINDING} · d=1.0"]
    rows, captions = dv.similar_images(images, _result(neighbors=[2, 1], distances=[1.25]))
    assert rows == [2] and captions == [f"{NO_FINDING} · d=1.2"]


def test_similar_caption_reports_both_checks():
    text = dv.similar_caption(_result(nn_distance=3.21, nn_pct=42.0, som_qe=1.5, som_qe_pct=97.0))
    assert "nearest training image is at d = 3.2, farther than 42 %" in text
    assert "SOM quantisation error (1.5) is above 97 %" in text


def test_map_method_prefers_umap_then_tsne_then_pca():
    assert dv.map_method(_result(coords={"pca": [0, 0], "tsne": [1, 1]})) == "tsne"
    assert dv.map_method(_result(coords={"pca": [0, 0], "umap": [1, 1]})) == "umap"
    assert dv.map_method(_result()) is None


def test_placement_figure_draws_training_images_by_label_and_the_image_as_a_star():
    images = _images()
    coords = np.arange(12, dtype=float).reshape(6, 2)
    b = _result(coords={"tsne": [9.0, 8.0]}, ood=True)
    fig = dv.placement_figure(images, coords, NAMES, b, "tsne")
    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == ["COVID-19", "Normal", NO_FINDING, "This image (approximate)"]  # no test image, no empty class
    assert list(by_name["Normal"].x) == [2.0] and list(by_name["COVID-19"].y) == [1.0]
    colours = class_colours(NAMES + [NO_FINDING])
    assert by_name["Normal"].marker.color == colours["Normal"] and by_name[NO_FINDING].marker.color == NO_FINDING_COLOUR
    star = by_name["This image (approximate)"]
    assert star.marker.symbol == "star" and (star.x[0], star.y[0]) == (9.0, 8.0)
    assert fig.layout.title.text == "DenseNet121: t-SNE of the training images"
    assert "only indicative" in dv.placement_caption(True) and "only indicative" not in dv.placement_caption(False)


def test_som_caption():
    assert dv.som_caption(7, (4, 5)).startswith("SOM node 7 (row 1, column 2 of 4×5).")
    assert dv.som_caption(None, (4, 5)) is None and dv.som_caption(3, None) is None


def test_report_identity_and_prediction_key():
    exp = FakeExp(BACKBONES, MANIFEST)
    assert dv.report_identity(exp, ["densenet121", "resnet50"]) == {
        "densenet121": "initial weights random, best epoch 2, 64 px",
        "resnet50": "initial weights imagenet, best epoch 5, 64 px"}
    key = dv.prediction_key(exp, "abc", None)
    assert key == (str(exp.path), "2026-11-25T19:00:00", "abc", None) and key != dv.prediction_key(exp, "abc", (0, 1))


# ------------------------------------------------------------------------------ structure

def test_views_and_inference_do_not_import_streamlit():
    code = ("import sys, covidviz.views.diagnose, covidviz.views.overview, covidviz.inference, covidviz.runs.records; "
            "sys.exit('streamlit' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.parametrize("page, title", [("diagnose", "Diagnose"), ("overview", "Overview")])
def test_pages_are_thin(page, title):
    source = (REPO / "app_pages" / f"{page}.py").read_text()
    tree = ast.parse(source)
    assert len(source.splitlines()) <= 250
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert used & {"st", "ui"}, f"{page}.{getattr(node, 'name', 'lambda')} does not call Streamlit"
    assert source.rstrip().splitlines()[-1] == f'ui.run_page("{title}", render)'
    assert "sys.path" not in source
