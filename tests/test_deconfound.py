"""Source deconfounding (``train.py --deconfound source``): gradient reversal and the confusion objective,
the per-class adversary, its plan from the training table, the manifest record, and short trainings on
phantoms with several sources and with one source per class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import train
from covidviz import runs
from covidviz.deconfound import (
    MIN_FILMS,
    SourceAdversary,
    WithAdversary,
    dann_lambda,
    plan_source_adversary,
    ramped_up,
    reverse_gradient,
    strata_of,
)
from covidviz.runs.manifest import Deconfounding, ManifestInfo


@pytest.mark.parametrize("lambd", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_flips_and_scales_the_gradient(lambd):
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(4, 6)
    y = reverse_gradient(x, lambd)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -lambd * w)


def test_the_adversary_pushes_the_features_against_its_own_gradient():
    """Through WithAdversary the backbone receives minus lambda times the gradient the adversary's loss
    would give it without the reversal; the adversary's own parameters get the plain gradient."""
    torch.manual_seed(0)
    from covidviz.models import Classifier

    model = Classifier("tinycnn", 3).eval()
    allowed = np.array([[True, True], [True, False], [True, True]])
    adv = SourceAdversary(128, allowed)
    x, stratum, source = torch.randn(5, 3, 16, 16), torch.tensor([0, 2, 2, 0, 1]), torch.tensor([1, 0, 1, 0, 0])
    weight = torch.ones(5)

    def grads(lambd: float | None):
        model.zero_grad()
        adv.zero_grad()
        if lambd is None:  # no reversal: the adversary's loss straight into the backbone
            logits = adv(model.forward_features(x), stratum)
        else:
            adv.lambd = lambd
            logits = WithAdversary(model, adv, "reverse")(x, stratum)[1]
        SourceAdversary.loss(logits, source, weight)[0].backward()
        return model.features[0].weight.grad.clone(), adv.net[0].weight.grad.clone()

    plain_trunk, plain_adv = grads(None)
    rev_trunk, rev_adv = grads(0.4)
    assert plain_trunk.abs().sum() > 0
    assert torch.allclose(rev_trunk, -0.4 * plain_trunk, atol=1e-6)
    assert torch.allclose(rev_adv, plain_adv, atol=1e-6)


def test_confusion_loss_is_least_when_the_adversary_cannot_tell_the_allowed_sources_apart():
    allowed = np.array([[True, True, False], [True, True, True]])
    k = torch.tensor([0, 1])
    w = torch.ones(2)
    mask = torch.as_tensor(allowed)[k]

    def masked(raw):
        return raw.masked_fill(~mask, -1e4)

    uniform = SourceAdversary.confusion(masked(torch.zeros(2, 3)), w)
    assert float(uniform) == pytest.approx((np.log(2) + np.log(3)) / 2, abs=1e-5)  # the masked source not counted
    sure = SourceAdversary.confusion(masked(torch.tensor([[8.0, -8.0, 0.0], [0.0, 9.0, -9.0]])), w)
    assert float(sure) > float(uniform) + 3  # a confident adversary (right or wrong) costs the backbone
    # the weights choose whose confusion counts
    assert float(SourceAdversary.confusion(masked(torch.tensor([[8.0, -8.0, 0.0], [0.0, 0.0, 0.0]])),
                                           torch.tensor([0.0, 1.0]))) == pytest.approx(np.log(3), abs=1e-5)


def test_confusion_trains_the_adversary_on_detached_features_and_the_backbone_against_a_frozen_judge():
    """Objective ``confusion``: the adversary's own loss reaches only the adversary; the confusion loss reaches
    only the backbone (the adversary's parameters get no gradient and its running statistics do not move)."""
    torch.manual_seed(0)
    from covidviz.models import Classifier

    model = Classifier("tinycnn", 3).train()
    allowed = np.array([[True, True], [True, True]])
    adv = SourceAdversary(128, allowed).train()
    net = WithAdversary(model, adv, "confusion")
    x, stratum, weight = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 1, 0, 1, 0]), torch.ones(6)
    source = torch.tensor([1, 0, 1, 0, 0, 1])
    _, learn, judged = net(x, stratum)
    assert judged is not None and torch.allclose(learn, judged, atol=1e-4)  # the same judge, two gradient paths

    model.zero_grad()
    adv.zero_grad()
    SourceAdversary.loss(learn, source, weight)[0].backward()
    assert model.features[0].weight.grad is None or model.features[0].weight.grad.abs().sum() == 0
    assert adv.net[0].weight.grad.abs().sum() > 0

    model.zero_grad()
    adv.zero_grad()
    _, _, judged = net(x, stratum)
    SourceAdversary.confusion(judged, weight).backward()
    assert model.features[0].weight.grad.abs().sum() > 0
    assert adv.net[0].weight.grad is None or adv.net[0].weight.grad.abs().sum() == 0
    # the frozen pass leaves the running statistics alone (only the adversary's own pass updates them)
    running = adv.norm.running_mean.clone()
    adv(torch.randn(6, 128) + 5, stratum, frozen=True)
    assert torch.equal(adv.norm.running_mean, running)
    adv(torch.randn(6, 128) + 5, stratum)
    assert not torch.equal(adv.norm.running_mean, running)
    with pytest.raises(ValueError, match="confusion, reverse"):
        WithAdversary(model, adv, "flip")


def test_the_adversary_chooses_only_among_the_sources_of_the_films_class():
    allowed = np.array([[True, True, False], [False, True, True]])
    adv = SourceAdversary(8, allowed)
    logits = adv(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
    assert logits.shape == (4, 3)
    assert (logits[:2, 2] < -1e3).all() and (logits[2:, 0] < -1e3).all()
    assert logits.softmax(1)[:2, :2].sum(1).allclose(torch.ones(2))


def test_dann_ramp_starts_at_zero_and_reaches_the_strength():
    vals = [dann_lambda(p, 0.3) for p in np.linspace(0, 1, 11)]
    assert vals[0] == 0.0 and all(b > a for a, b in zip(vals, vals[1:]))
    assert 0.29 < vals[-1] <= 0.3 and dann_lambda(2.0, 0.3) == vals[-1]


def test_plan_weights_each_classes_sources_equally_and_leaves_out_rare_ones():
    strata = ["A"] * 30 + ["B"] * 20 + ["C"] * 12
    sources = ["x"] * 24 + ["y"] * 6 + ["x"] * 17 + ["z"] * 3 + ["x"] * 12
    plan, reason = plan_source_adversary(strata, sources, min_films=5)
    assert reason == "" and plan.strata == ["A"] and plan.sources == ["x", "y"]
    assert plan.counts == {"A": {"x": 24, "y": 6}}
    used = plan.stratum >= 0
    assert used.sum() == 30 and not used[30:].any() and (plan.weight[~used] == 0).all()
    # each source of class A weighs half of A's films
    assert np.isclose(plan.weight[:24].sum(), 15) and np.isclose(plan.weight[24:30].sum(), 15)
    assert plan.allowed.tolist() == [[True, True]]


@pytest.mark.parametrize("sources,match", [
    (["x"] * 20, "one source (x)"),
    ([""] * 20, "no source column"),
    (["x"] * 10 + ["y"] * 10, "no class has two sources"),  # every class from its own hospital
])
def test_plan_says_why_it_cannot_run(sources, match):
    plan, reason = plan_source_adversary(["A"] * 10 + ["B"] * 10, sources, min_films=MIN_FILMS)
    assert plan is None and match in reason


def test_strata_are_classes_or_sets_of_findings():
    from covidviz.data.labels import MULTICLASS, MULTILABEL, LabelSpace

    mc = LabelSpace(["Normal", "COVID-19"], MULTICLASS)
    assert strata_of(["Normal", "COVID-19"], mc) == ["Normal", "COVID-19"]
    ml = LabelSpace(["Effusion", "Nodule"], MULTILABEL)
    assert strata_of(["Nodule|Effusion", "", "Nodule"], ml) == ["Effusion|Nodule", "no finding", "Nodule"]


def test_manifest_record_round_trips_and_old_manifests_have_none():
    rec = Deconfounding(method="source", strength=0.3, active=True, message="m",
                        per_class={"Normal": {"kermany": 120, "nih": 50}}, min_films=5, schedule="s")
    info = ManifestInfo(deconfound=rec)
    back = ManifestInfo.from_json(info.to_json())
    assert back.deconfound == rec
    assert ManifestInfo.from_json({"status": "complete"}).deconfound is None
    assert "deconfound" not in ManifestInfo().to_json()
    newer = Deconfounding.from_json({"method": "source", "active": True, "future": 1})
    assert newer.extra == {"future": 1} and newer.to_json()["future"] == 1
    # before the objective was a choice, every deconfounded run was trained by gradient reversal
    assert newer.objective == "reverse"
    assert Deconfounding.from_json(Deconfounding(method="source", objective="confusion").to_json()).objective == "confusion"


def _train(tmp_path, data: str, name: str, extra=()):
    out = tmp_path / "runs"
    code = train.main(["--data", data, "--arch", "tinycnn", "--epochs", "1", "--image-size", "32", "--batch-size", "32",
                       "--weights", "none", "--out", str(out), "--name", name, "--workers", "0", "--quiet",
                       "--no-analysis", "--deconfound", "source", *extra])
    assert code == 0
    return runs.read_experiment(out / name)


def test_deconfounded_training_on_phantoms_with_several_sources(tmp_path, capsys):
    """A short tinycnn training with --deconfound source: the adversary runs (its loss and accuracy in the
    history), the manifest records what it told apart, and the saved model is a plain Classifier."""
    exp = _train(tmp_path, "synthetic:150:size=48,confounder=0.5", "deconf", ["--deconfound-strength", "0.5"])
    out = capsys.readouterr().out
    assert "--deconfound source: source adversary" in out and "hospital-A" in out
    rec = exp.info.deconfound
    assert rec.active and rec.method == "source" and rec.strength == 0.5 and rec.min_films == MIN_FILMS
    assert rec.per_class and all(set(v) == {"hospital-A", "hospital-B"} for v in rec.per_class.values())
    assert all(n >= MIN_FILMS for v in rec.per_class.values() for n in v.values())
    assert exp.info.settings["deconfound"] == "source"
    hist = exp.history("tinycnn")[-1]
    assert 0.0 <= hist["adv_accuracy"] <= 1.0 and hist["adv_loss"] > 0 and 0 < hist["adv_lambda"] <= 0.5
    # the default objective: the backbone's confusion loss, never below log(2) with two sources a class
    assert rec.objective == "confusion" and "confuse it" in out
    assert hist["adv_confusion"] >= np.log(2) - 1e-4
    state = exp.load_state_dict("tinycnn")
    assert not any("adversary" in k for k in state)
    model = exp.load_model("tinycnn")  # loads strictly into the plain classifier: inference is unchanged
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_no_epoch_before_the_reversal_is_ramped_is_kept_as_the_best(tmp_path):
    """Over 4 epochs the reversal reaches 0.85 of its strength after epoch 1 and 0.96 after epoch 2: the
    weights kept are from epoch 2 or later even if epoch 1 scored the best validation AUC (the validation
    films share the confound, so they favour the model the adversary has not yet acted on)."""
    exp = _train(tmp_path, "synthetic:150:size=48,confounder=0.5", "ramp", ["--epochs", "4", "--patience", "1"])
    hist = exp.history("tinycnn")
    assert not ramped_up(hist[0]["adv_lambda"], 0.3) and ramped_up(hist[1]["adv_lambda"], 0.3)
    best = exp.backbone("tinycnn")["best_epoch"]
    assert best >= 2
    ramped = [h["val_auc"] for h in hist if ramped_up(h["adv_lambda"], 0.3)]
    assert exp.backbone("tinycnn")["best_val_auc"] == pytest.approx(max(ramped))


def test_one_source_per_class_is_ignored_with_a_message(tmp_path, capsys):
    """confounder=1: every COVID-19 phantom from hospital-A, every other from hospital-B, so no class has
    two sources; training goes on without an adversary and says why."""
    exp = _train(tmp_path, "synthetic:60:size=48,confounder=1", "onesource")
    out = capsys.readouterr().out
    assert "--deconfound source ignored: no class has two sources" in out
    rec = exp.info.deconfound
    assert rec.method == "source" and not rec.active and "ignored" in rec.message and not rec.per_class
    assert "adv_accuracy" not in exp.history("tinycnn")[-1]


def test_negative_strength_is_refused():
    with pytest.raises(SystemExit, match="deconfound-strength"):
        train.config_from_args(train.build_parser().parse_args(["--data", "synthetic:60",
                                                                "--deconfound-strength", "-1"]))
