"""The Diagnose and Overview pages' view functions (``covidviz.views.diagnose``/``overview``), without
Streamlit, on small hand-built inputs with known answers; and the pages' shape (thin, one footer)."""

from __future__ import annotations

import ast
import dataclasses
import io
import re
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
from covidviz.inference import BackboneResult, Diagnosis, calibrated_threshold
from covidviz.runs.records import Analysis, ManifestBackbone, ManifestInfo, Rate
from covidviz.stats.calibration import apply_temperature
from covidviz.views import diagnose as dv
from covidviz.views import diagnose_calls as dc
from covidviz.views import glossary
from covidviz.views import overview as ov
from covidviz.views import reliability as rel
from covidviz.views import report as rv
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
        return ManifestBackbone.from_json(self.manifest["backbones"][arch], arch)

    def analysis(self):
        return self._analysis


def _rates(sens=None):
    return {"sensitivity": Rate(sens, 10, 0.5, 0.9) if sens is not None else Rate(None),
            "specificity": Rate(0.75, 20), "ppv": Rate(None), "npv": Rate(0.5, 8, 0.25, 0.75)}


def _result(arch="densenet121", top=0, positives=(True, False, None), **extra) -> BackboneResult:
    probs = np.array([0.7, 0.2, 0.1])
    calls = [{"class": n, "prob": float(probs[j]), "raw_prob": float(probs[j]) + 0.01,
              "threshold": None if positives[j] is None else 0.5, "raw_threshold": None if positives[j] is None else 0.45,
              "positive": positives[j], "test": _rates(0.8), "test_prevalence": 0.25 * (j + 1)}
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
    info = ManifestInfo.from_json(MANIFEST)
    assert (info.created, info.completed, info.version) == ("2026-11-25T18:00:00", "2026-11-25T19:00:00", "0.1.0")
    assert info.settings["epochs"] == 7 and info.settings["seed"] == 3 and "train" in info.config
    assert info.data_specs == ["synthetic:90", "nih:/n"]  # the dataset card wins over config.data
    assert ManifestInfo.from_json({"config": {"data": ["csv:/d"]}}).data_specs == ["csv:/d"]
    empty = ManifestInfo.from_json({})
    assert empty.created is None and empty.settings == {} and empty.sources == [] and empty.skipped == []


def test_identity_and_configuration_lines():
    exp = FakeExp({}, MANIFEST)
    assert ov.identity_caption(exp) == ("created 2026-11-25 18:00:00 · completed 2026-11-25 19:00:00 · covidviz 0.1.0"
                                        " · folder `/runs/exp`")
    text = ov.config_text(ManifestInfo.from_json(MANIFEST))
    assert text == ("Data: `synthetic:90`, `nih:/n` · Epochs (max): **7** · Learning rate: **0.001** · "
                    "Initial weights asked for: **auto** · Seed: **3**")


def test_sources_and_skipped_tables():
    info, empty = ManifestInfo.from_json(MANIFEST), ManifestInfo.from_json({})
    assert list(ov.skipped_table(info)["reason"]) == ["cannot decode image"]
    assert list(ov.skipped_table(empty).columns) == ["path", "reason"] and ov.skipped_table(empty).empty
    assert ov.sources_table(info).loc[0, "n_images"] == 90 and ov.sources_table(empty).empty


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


def test_auc_table_display_and_layout_fit_the_narrowest_window():
    exp = FakeExp(BACKBONES)
    shown = ov.auc_display(ov.auc_table(exp))
    assert shown.loc["COVID-19", "DenseNet121"] == "0.900" and shown.loc["Pneumonia", "DenseNet121"] == "—"
    assert ov.auc_display(pd.DataFrame({"A": [0.42]})).iloc[0, 0] == "0.420 — worse than chance"
    assert ov.auc_columns(shown) == [2, 3]  # three short classes, two backbones: beside the chart
    # 14 findings: "Pleural_Thickening" cannot wrap; two backbones need half the page, four more than that.
    wide = pd.DataFrame({a: ["0.812"] for a in ("DenseNet121", "ResNet50")}, index=pd.Index(["Pleural_Thickening"], name="Class"))
    assert ov.auc_columns(wide) == [1, 1]
    wide["Tiny CNN (test model)"] = "0.512"
    wide["EfficientNetB0"] = "0.5"
    assert ov.auc_columns(wide) is None and ov.auc_columns(wide, width=1460) == [2, 3]


def test_every_chart_gets_a_modebar_strip_on_top():
    import plotly.graph_objects as go

    from covidviz.views.style import MODEBAR_PX, PLOTLY_DEFAULT_HEIGHT, PLOTLY_DEFAULT_TOP, with_modebar_room

    fig = with_modebar_room(go.Figure(layout=dict(height=300, margin=dict(t=40), title="ROC")))
    assert fig.layout.margin.t == 40 + MODEBAR_PX and fig.layout.height == 300 + MODEBAR_PX  # plot area unchanged
    # The title stays centred on the old top margin, now below the strip (not in it).
    assert fig.layout.title.y * fig.layout.height == pytest.approx(fig.layout.height - MODEBAR_PX - 20)
    bare = with_modebar_room(go.Figure())
    assert bare.layout.margin.t == PLOTLY_DEFAULT_TOP + MODEBAR_PX and bare.layout.height == PLOTLY_DEFAULT_HEIGHT + MODEBAR_PX
    assert bare.layout.title.y is None
    # A figure dict (the latent maps' fast path, on a cached base) is copied, never changed.
    base = {"data": [], "layout": {"title": {"text": "PCA"}, "margin": {"t": 40, "l": 10}, "height": 300}}
    out = with_modebar_room(base)
    assert out["layout"]["margin"] == {"t": 40 + MODEBAR_PX, "l": 10} and out["layout"]["height"] == 300 + MODEBAR_PX
    assert out["layout"]["title"]["y"] == pytest.approx(fig.layout.title.y)
    assert base["layout"] == {"title": {"text": "PCA"}, "margin": {"t": 40, "l": 10}, "height": 300}


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

def _call(cls, prob, threshold, positive, sens=0.8, spec=0.75, prev=0.2):
    return {"class": cls, "prob": prob, "raw_prob": prob, "threshold": threshold, "raw_threshold": threshold,
            "positive": positive, "test_prevalence": prev,
            "test": {"sensitivity": Rate(sens, 10, 0.5, 0.9), "specificity": Rate(spec, 20, 0.6, 0.85),
                     "ppv": Rate(0.4, 5, 0.1, 0.8), "npv": Rate(0.9, 25, 0.8, 0.95)}}


def test_rate_text():
    assert dc.rate_text(Rate(0.8333, 12, 0.55, 0.95)) == "0.83 (0.55–0.95), n=12"
    assert dc.rate_text(Rate(0.5, 4)) == "0.50, n=4"
    assert dc.rate_text(Rate(None)) == "—" and dc.rate_text(None) == "—"


def test_calls_table_has_one_score_column_and_the_threshold_on_its_scale():
    b = _result()
    calls = dc.calls_table(b.calls)
    # one score column (no second "model score"), then what the model knows about each class
    # both score columns name their one scale (calibrated: the threshold was mapped onto the probability's)
    assert list(calls.columns) == ["Class", "Probability (calibrated)", "Threshold (calibrated)", "Call",
                                   "Test AUC [95 % CI]", "Sensitivity", "Specificity"]
    assert list(calls["Call"]) == ["Positive", "Negative", "—"]
    P, T = dc.prob_column(), dc.threshold_column()
    assert calls.loc[0, P] == pytest.approx(0.7) and calls.loc[0, T] == pytest.approx(0.5)
    assert np.isnan(calls.loc[2, T])
    raw = dc.calls_table([{**c, "scale": "raw"} for c in b.calls])  # an experiment without calibration
    assert list(raw.columns)[1:3] == ["Probability (raw score)", "Threshold (raw score)"]
    assert calls.loc[0, ["Test AUC [95 % CI]", "Sensitivity", "Specificity"]].tolist() == ["—", "0.80", "0.75"]


@pytest.mark.parametrize("task", [MULTICLASS, MULTILABEL])
def test_a_call_never_contradicts_the_probability_and_threshold_shown(task):
    """The call is the validated rule on the raw score; the page shows the calibrated probability and the
    threshold mapped onto that scale: Positive exactly when the number shown reaches the threshold shown,
    for every class, image and temperature (multi-class: at the image's own mix of the other classes)."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(400):
        c = int(rng.integers(2, 16))
        if task == MULTICLASS:
            raw, temp = rng.dirichlet(np.full(c, rng.uniform(0.1, 2.0))), float(np.exp(rng.uniform(-2, 2)))
        else:
            raw, temp = rng.uniform(0, 1, c), list(np.exp(rng.uniform(-2, 2, c)))
        probs = apply_temperature(raw, temp, task)
        calls = []
        for j in range(c):
            t = float(np.clip(raw[j] + rng.normal(0, 0.1), 0.001, 0.999))
            calls.append(_call(f"c{j}", float(probs[j]), calibrated_threshold(raw, j, t, temp, task), bool(raw[j] >= t)))
        table = dc.calls_table(calls)
        P, T = dc.prob_column(), dc.threshold_column()
        shown = table[P] >= table[T]
        near = (table[P] - table[T]).abs() < rel.BAND
        # Positive only above, Negative only below the threshold shown; within the band: indeterminate
        assert list(table["Call"] == "Positive") == list(shown & ~near)
        assert list(table["Call"] == "Negative") == list(~shown & ~near)
        assert list(table["Call"] == "indeterminate") == list(near)
        checked += int((table["Call"] == "Positive").sum()) * int((table["Call"] == "Negative").sum())
    assert checked > 100  # both outcomes occurred, often, so the check could fail


def test_printed_numbers_never_contradict_the_call():
    # 0.3301 < 0.3304: Negative, but both print as 0.330 with 3 decimals: the table and sentences use more
    close = [_call("A", 0.3301, 0.3304, False), _call("B", 0.5, 0.2, True), _call("C", 0.1, None, None)]
    assert dc.decimals(close) == 4 and dc.decimals(close[1:]) == 3
    assert dc.decimals([_call("A", 0.33333333, 0.33333334, False)]) == 6  # the most it goes to
    assert dc.decimals([_call("A", 0.3304, 0.3301, True)]) == 4  # "0.330 above its threshold 0.330" would read oddly
    assert dc.decimals([_call("A", 0.3301, 0.3301, True)]) == 3  # exactly at the threshold: equal is right
    calls = [_call("COVID-19", 0.3350, 0.3353, False), _call("Normal", 0.3346, 0.31, True),
             _call("Pneumonia", 0.3304, 0.3349, False)]
    text = dc.screening_sentence(calls, 0, MULTICLASS, "youden")
    assert text.startswith("COVID-19 is the most likely class (0.3350) but below its balanced threshold, "
                           "0.3353 (calibrated),")
    assert "Normal at 0.335, threshold 0.310 (calibrated), is above" in text
    rng = np.random.default_rng(11)
    for _ in range(500):  # as printed (decimals() digits, like the page's NumberColumn format), never contradicting
        p, t = rng.uniform(0.3, 0.31, 2).round(int(rng.integers(3, 8)))
        calls = [_call("A", float(p), float(t), bool(p >= t))]
        d = dc.decimals(calls)
        shown_p, shown_t = float(f"{p:.{d}f}"), float(f"{t:.{d}f}")
        assert (shown_p > shown_t if p > t else shown_p < shown_t if p < t else shown_p == shown_t) or d == 6


def test_calibrated_threshold_maps_through_the_calibration():
    raw = np.array([0.5, 0.3, 0.2])
    # no calibration: unchanged; no threshold: none
    assert calibrated_threshold(raw, 0, 0.4, None, MULTICLASS) == 0.4
    assert calibrated_threshold(raw, 0, None, 2.0, MULTICLASS) is None
    # multi-label: the per-class sigmoid map, the same for every image
    t = calibrated_threshold(raw, 1, 0.3, [1.0, 2.0, 0.5], MULTILABEL)
    assert t == pytest.approx(apply_temperature(np.array([0.3, 0.3, 0.3]), [1.0, 2.0, 0.5], MULTILABEL)[1])
    assert t == calibrated_threshold(np.array([0.9, 0.9, 0.9]), 1, 0.3, [1.0, 2.0, 0.5], MULTILABEL)
    # multi-class: a threshold equal to the class's raw probability maps to its calibrated probability
    for j in range(3):
        assert calibrated_threshold(raw, j, raw[j], 2.0, MULTICLASS) == pytest.approx(apply_temperature(raw, 2.0, MULTICLASS)[j])
    # ... and T = 1 changes nothing
    assert calibrated_threshold(raw, 0, 0.42, 1.0, MULTICLASS) == pytest.approx(0.42)


def test_headlines_for_both_tasks():
    calls = [_call("COVID-19", 0.43, 0.61, False), _call("Normal", 0.35, 0.30, True), _call("Pneumonia", 0.22, 0.5, False)]
    assert dc.headline(calls, 0, MULTICLASS) == "Most likely: **COVID-19** (probability 0.43)"
    assert dc.headline(calls, 0, MULTILABEL) == "Findings above their threshold: **Normal** (0.35)"
    none = [_call("A", 0.2, 0.5, False), _call("B", 0.3, 0.5, False)]
    assert dc.headline(none, 1, MULTILABEL) == "No finding above its threshold; the highest is **B** (0.30)"
    assert dc.headline([_call("A", 0.2, None, None)], 0, MULTILABEL) == "Highest probability: **A** (0.20)"


def test_the_issue_case_gets_a_sentence_saying_why():
    # "Most likely: COVID-19 (0.43)" beside COVID-19 Negative and Normal Positive
    calls = [_call("COVID-19", 0.43, 0.61, False), _call("Normal", 0.35, 0.30, True), _call("Pneumonia", 0.22, 0.5, False)]
    assert dc.contradicts(calls, 0, MULTICLASS)
    text = dc.screening_sentence(calls, 0, MULTICLASS, "high_specificity")
    assert text.startswith("COVID-19 is the most likely class (0.430) but below its rule-in threshold, "
                           "0.610 (calibrated),")
    assert "Normal at 0.350, threshold 0.300 (calibrated), is above its rule-in threshold although less likely" in text
    assert "screened on its own" in text and "set high" in text
    agree = [_call("COVID-19", 0.7, 0.5, True), _call("Normal", 0.2, 0.3, False), _call("Pneumonia", 0.1, 0.5, False)]
    assert not dc.contradicts(agree, 0, MULTICLASS)
    assert dc.screening_sentence(agree, 0, MULTICLASS, "youden") == (
        "COVID-19 is the most likely class (0.700) and the only one above its balanced threshold, 0.500 (calibrated).")
    nothing = [_call("COVID-19", 0.4, 0.5, False), _call("Normal", 0.35, 0.4, False), _call("Pneumonia", 0.25, 0.5, False)]
    assert dc.screening_sentence(nothing, 0, MULTICLASS, "youden").endswith("No class is flagged at this operating point.")
    assert dc.screening_sentence([_call("A", 0.5, None, None)], 0, MULTICLASS, "youden") is None
    assert dc.screening_sentence(calls, 0, MULTILABEL, "youden") == (
        "Each finding is screened on its own against its balanced threshold: 1 of 3 are above it.")


def test_every_contradiction_of_the_headline_is_explained():
    rng = np.random.default_rng(3)
    for _ in range(300):
        probs = rng.dirichlet(np.ones(4))
        calls = [_call(f"class{j}", float(p), float(t), bool(p >= t))
                 for j, (p, t) in enumerate(zip(probs, rng.uniform(0.05, 0.8, 4)))]
        top = int(np.argmax(probs))
        text = dc.screening_sentence(calls, top, MULTICLASS, str(rng.choice(dc.point_options())))
        assert text.startswith(f"class{top} is the most likely class")
        if dc.contradicts(calls, top, MULTICLASS):
            if not calls[top]["positive"]:
                assert "but below its" in text and "does not flag it" in text
            for j, c in enumerate(calls):
                if j != top and c["positive"]:
                    shown = re.search(rf"class{j} at (\d\.\d+), threshold (\d\.\d+) \(calibrated\)", text)
                    assert shown and float(shown[1]) > float(shown[2]), text  # printed so that it reads right
                    assert "although less likely" in text
        else:
            assert "the only one above" in text


def test_prevalence_defaults_and_choice():
    calls = {"densenet121": [_call("A", 0.5, 0.4, True, prev=None)], "resnet50": [_call("A", 0.5, 0.4, True, prev=0.1234)]}
    assert dc.prevalence_on_test(calls, "A") == 0.1234 and dc.prevalence_on_test(calls, "B") is None
    assert dc.default_prevalence_percent(0.1234) == 12.3 and dc.default_prevalence_percent(None) == 10.0
    assert dc.default_prevalence_percent(0.0) == 0.1 and dc.default_prevalence_percent(1.0) == 99.9
    assert dc.chosen_prevalence("A", 12.3, 12.3) == {} and dc.chosen_prevalence("A", 5.0, 12.3) == {"A": 0.05}


def test_rates_table_at_the_test_prevalence_and_at_yours():
    calls = [_call("COVID-19", 0.4, 0.5, False, prev=0.2), _call("Normal", 0.6, 0.5, True, prev=0.5)]
    table = dc.rates_table(calls)
    assert list(table.columns) == ["Class", "Prevalence", "Sensitivity", "Specificity", "PPV", "NPV"]
    assert table.loc[0].tolist() == ["COVID-19", "20.0% (test)", "0.80 (0.50–0.90), n=10",
                                     "0.75 (0.60–0.85), n=20", "0.40 (0.10–0.80), n=5", "0.90 (0.80–0.95), n=25"]
    yours = dc.rates_table(calls, {"COVID-19": 0.05})
    # Bayes: PPV = .8*.05 / (.8*.05 + .25*.95) = 0.144, NPV = .75*.95 / (.75*.95 + .2*.05) = 0.986
    assert yours.loc[0, ["Prevalence", "PPV", "NPV"]].tolist() == ["5.0% (yours)", "0.14", "0.99"]
    assert yours.loc[1, "Prevalence"] == "50.0% (test)"  # the other class keeps the test's
    assert dc.rates_heading("high_sensitivity") == "What the rule-out operating point meant on the test images"


def test_captions_link_their_statistics_to_the_glossary():
    for term in ("Calibration", "Temperature scaling", "Operating point", "Youden's J"):
        assert f"(/glossary#{glossary.slug(term)})" in dv.task_caption(MULTICLASS)
    for term in ("Sensitivity", "Specificity", "PPV", "NPV", "Prevalence"):
        assert f"(/glossary#{glossary.slug(term)})" in dc.RATES_NOTE
    assert "(/glossary#operating-point)" in dc.CALLS_NOTE and "(/glossary#cam)" in dv.HEAT_NOTE
    text = dv.similar_caption(_result(nn_distance=3.2, nn_pct=42.0, som_qe=1.5, som_qe_pct=97.0))
    for term in ("PCA-50 units", "Out-of-distribution", "QE"):
        assert f"(/glossary#{glossary.slug(term)})" in text
    # ... and the Overview's
    assert "[Area under the ROC curve](/glossary#auc)" in ov.auc_caption([80, 120])
    assert "(/glossary#macro-average)" in ov.auc_caption([80]) and "(n = 80)" in ov.auc_caption([80])
    assert f"(/glossary#{glossary.slug('Cramér' + chr(39) + 's V')})" in ov.NO_CONFOUNDING


def test_busy_and_error_texts():
    assert dv.busy_text(["densenet121", "resnet50"], "chest.png") == "Running DenseNet121 and ResNet50 on chest.png…"
    assert dv.busy_text(["a", "b", "c"], "") == "Running a, b and c on this image…"
    assert dv.process_error(ValueError("bad")) == "The models could not process this image (ValueError: bad)."
    assert "could not be loaded (OSError: gone)" in dv.load_error(FakeExp({}), OSError("gone"))


def test_task_caption_names_the_task():
    assert dv.task_caption(MULTICLASS).startswith("Multi-class: the probabilities of the classes add up to 1")
    assert dv.task_caption(MULTILABEL).startswith("Multi-label:")


# ------------------------------------------------------------------------------ diagnose: the case report

def test_wrap_px_keeps_every_word_and_fits_the_width():
    font = rv._font(16)
    text = ("This image is unlike the training X-rays (above the 99th percentile of the training images); its "
            "distance to the nearest training image is larger than for 100.0 % of the training images. ") * 3
    lines = rv.wrap_px(text, font, 400)
    assert len(lines) > 3 and " ".join(lines).split() == text.split()
    assert all(font.getlength(line) <= 400 for line in lines)
    long = "a" * 300 + " end"
    assert "".join(rv.wrap_px(long, font, 200)).replace("end", "") == "a" * 300  # a long name is broken, not cut
    assert all(font.getlength(line) <= 200 for line in rv.wrap_px(long, font, 200))


def _report_diag(ood: bool) -> Diagnosis:
    from covidviz.ood import OodVerdict

    b = _result(ood=ood)
    reasons = ["To the models it looks unlike the training images: in their feature space it lies farther from them "
               "than every validation image (the farthest 5 % are flagged), most of all for densenet121."]
    verdict = OodVerdict(is_ood=ood, reasons=reasons if ood else [], score=9.0 if ood else 0.1,
                         percentile=100.0 if ood else 40.0, gate=None, checked=True, cutoff=2.0, false_alarm_rate=0.05,
                         detector="mahalanobis", per_backbone={"densenet121": 9.0 if ood else 0.1})
    return Diagnosis("x.png", "exp", np.zeros((8, 8), np.uint8), {"densenet121": b}, verdict)


def test_case_report_text_uses_sentence_case_and_names_its_sections():
    diag = _report_diag(ood=True)
    calls = {"densenet121": [_call("COVID-19", 0.43, 0.61, False), _call("Normal", 0.35, 0.30, True),
                             _call("Pneumonia", 0.22, None, None)]}
    case = rv.CaseReport(diag, NAMES, MULTICLASS, {"densenet121": "DenseNet121"}, {"densenet121": "weights x"}, "cam",
                         calls=calls, point="high_specificity")
    withheld = rv.report_blocks(case)
    assert [p for k, p in withheld if k == "heading"] == list(dv.REPORT_SECTIONS)
    assert "table" not in [k for k, _ in withheld] and any("Calls withheld" in str(p) for _, p in withheld)
    withheld_text = " ".join(str(p) for _, p in withheld)
    assert not [n for n in NAMES if n in withheld_text]  # withheld: no class named anywhere
    assert 'the probabilities and calls (section "Probabilities and calls") are withheld' in withheld_text
    blocks = rv.report_blocks(dataclasses.replace(case, show_anyway=True))
    kinds = [k for k, _ in blocks]
    headings = [p for k, p in blocks if k == "heading"]
    assert headings == list(dv.REPORT_SECTIONS)
    text = " ".join(str(p) for k, p in blocks if k not in ("images", "table"))
    table = next(p for k, p in blocks if k == "table")
    assert table["title"] == "DenseNet121" and table["greyed"]  # shown at the user's request: grey
    cells = [cell for row in table["rows"] for cell in row]
    assert "POSITIVE" not in text + " ".join(cells) and "below" not in dv.ood_message(diag, None, dv.REPORT_RESULTS)
    assert "are withheld" not in text  # shown anyway: not "withheld" and then printed
    assert "shown only at the user's request, not as calls" in text and "Shown at the user's request" in text
    assert "Most likely: COVID-19 (probability 0.43)." in text and "**" not in text
    assert "but below its rule-in threshold, 0.610 (calibrated)," in text  # explained in the report too
    assert [name for name, _ in table["columns"]] == ["Class", "Probability (calibrated)", "Threshold (calibrated)",
                                                      "Call", "Test AUC [95 % CI]", "Sens.", "Spec."]
    assert table["rows"] == [["COVID-19", "0.430", "0.610", "Negative", "—", "0.80", "0.75"],
                             ["Normal", "0.350", "0.300", "Positive", "—", "0.80", "0.75"],
                             ["Pneumonia", "0.220", "—", "—", "—", "0.80", "0.75"]]
    assert kinds.index("warning") < kinds.index("table") and kinds[-1] == "notice"
    fine = rv.report_blocks(rv.CaseReport(_report_diag(False), NAMES))
    assert "Out-of-distribution check" in [p for k, p in fine if k == "heading"] and "table" in [k for k, _ in fine]
    assert any("looks like the training images" in str(p) for k, p in fine if k == "text")


def test_case_report_png_grows_to_fit_its_text():
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heats = {"densenet121": np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)}
    short = Image.open(io.BytesIO(rv.case_report_png(rv.CaseReport(_report_diag(False), NAMES), gray, heats)))
    tall = Image.open(io.BytesIO(rv.case_report_png(rv.CaseReport(_report_diag(True), NAMES, show_anyway=True), gray,
                                                    heats)))
    assert short.width == tall.width and tall.height > short.height  # the OOD section adds lines, nothing cut
    arr = np.asarray(tall)
    assert ((arr[..., 0] > 150) & (arr[..., 1] < 40) & (arr[..., 2] < 60)).sum() > 500  # red notice box and warning
    assert (arr[-15:] == 255).all()  # white bottom margin: the notice box ends inside the page


def test_case_report_says_the_evidence_on_the_lungs_and_outlines_them():
    from covidviz.anatomy import LungFields
    from covidviz.cam import lungshare

    mask = np.zeros((64, 64), bool)
    mask[12:50, 10:28] = mask[12:54, 36:54] = True
    diag = _report_diag(False)
    diag.lungs = LungFields(mask, mask, mask, 0.9)
    heat = np.zeros((64, 64), np.float32)
    heat[57:61, 12:52] = 1.0  # all of it under the lungs
    weight = lungshare.lung_weight(heat, mask)
    blocks = rv.report_blocks(rv.CaseReport(diag, NAMES, lung_weights={"densenet121": weight}))
    lines = [p for k, p in blocks if k == "text" and "Evidence on the lungs" in str(p)]
    assert lines == ["DenseNet121: " + dv.lung_text(weight, diag.lungs).replace("**", "")]  # display names
    assert "0 % of this map's weight lies inside the lung fields" in lines[0]
    assert "Most of it lies outside the lungs, the largest part below the diaphragm (the abdomen: 100 %" in lines[0]
    # no map drawn for a backbone: no line; unreliable fields: the reason instead of a share
    assert not [p for k, p in rv.report_blocks(rv.CaseReport(diag, NAMES, lung_weights={})) if "lungs:" in str(p)]
    diag.lungs = LungFields(mask, mask, mask, 0.1, ("the network is unsure where the lungs are",))
    text = " ".join(str(p) for _, p in rv.report_blocks(rv.CaseReport(diag, NAMES, lung_weights={"densenet121": None})))
    assert "could not be found reliably (the network is unsure where the lungs are" in text
    # the tiles carry the outline when a mask is given, and not otherwise
    gray = np.full((64, 64), 80, np.uint8)
    heats = {"densenet121": heat}
    with_outline = rv._tiles(rv.CaseReport(diag, NAMES), gray, heats, 0.5, mask)
    without = rv._tiles(rv.CaseReport(diag, NAMES), gray, heats, 0.5)
    line = lungshare.lung_outline(mask, (64, 64))
    for (_, a), (_, b) in zip(with_outline, without):
        a3 = a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)
        assert (a3[line] == lungshare.OUTLINE_COLOUR).all() and not (np.asarray(b)[line] == 255).all()


# ------------------------------------------------------------------------------ diagnose: heat maps

def test_explained_map_reuses_the_top_class_map_and_caches_the_others():
    b = _result(top=1)
    diag = Diagnosis("x", "exp", np.zeros((8, 8), np.uint8), {"densenet121": b})

    class Counting:
        calls = []

        def heatmaps(self, pixels, arch, cls, methods, layer=None):
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
    # as the SOM page draws and names it: node = column_index * rows + row_index, rows counted from the top
    assert dv.som_caption(7, (4, 5)).startswith(
        "SOM node 7, at column 2 of 4 (left to right), row 3 of 5 (top to bottom).")
    assert dv.som_caption(None, (4, 5)) is None and dv.som_caption(3, None) is None


def test_report_identity_and_prediction_key():
    exp = FakeExp(BACKBONES, MANIFEST)
    assert rv.report_identity(exp, ["densenet121", "resnet50"]) == {
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


def test_heat_caption_says_the_grid_and_no_evidence_is_named():
    assert dv.heat_caption("cam", "COVID-19", (8, 8), 64) == "CAM (class activation map) for COVID-19 · 8×8 cells, each 8 px"
    assert dv.heat_caption("eigencam", "Normal").endswith("(class-agnostic)")
    assert "No evidence for Pneumonia" in dv.no_evidence_text("Pneumonia")


def test_report_draws_the_plain_film_for_a_map_without_evidence():
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heat = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)

    def colourful(heats) -> int:
        png = rv.case_report_png(rv.CaseReport(_report_diag(False), NAMES), gray, heats)
        arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        arr = arr.astype(int)
        return int((np.abs(arr[..., 0] - arr[..., 2]) > 60).sum())

    # no colour map over the film (only the red notice box and text stay coloured)
    assert colourful({"densenet121": None}) + 50_000 < colourful({"densenet121": heat})


def test_overview_says_the_demo_is_phantoms_and_explains_a_winning_thumbnail():
    from types import SimpleNamespace

    def exp_of(kind, description, aucs):
        return SimpleNamespace(manifest={"dataset": {"sources": [{"kind": kind, "description": description}]}},
                               backbones=list(aucs),
                               record=lambda a: SimpleNamespace(macro_auc=lambda split="test": aucs[a]))

    phantoms = exp_of("synthetic", "synthetic phantoms (seed=0, confounder=0.0)", {"densenet121": 0.95, "resnet50": 0.8})
    note = ov.phantom_note(phantoms)
    assert "synthetic phantoms, not real X-rays" in note and "no shortcut" in note and "*Pneumonia*" in note
    assert "deliberate shortcut" in ov.phantom_note(exp_of("synthetic", "confounder=0.8", {"densenet121": 0.9}))
    assert ov.phantom_note(exp_of("csv", "covid3", {"densenet121": 0.9})) is None
    analysis = SimpleNamespace(baseline_auc=lambda cls: 0.9)
    text = ov.baseline_sentence(phantoms, analysis)
    assert "DenseNet121 0.95, ResNet50 0.80" in text and "scores 0.90" in text
    assert "The thumbnail beats ResNet50:" in text and "DenseNet121:" not in text
    assert "Both backbones beat it" in ov.baseline_sentence(exp_of("x", "", {"a": 0.95, "b": 0.93}), analysis)
    assert ov.baseline_sentence(phantoms, None) is None
