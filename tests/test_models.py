"""Backbone registry, heads and weight initialisation (no downloads: ImageNet must fail clearly)."""

from __future__ import annotations

import pytest
import torch

from covidviz import models
from covidviz.models import Classifier, WeightsUnavailable, build_model, cam_layer, get_spec


@pytest.mark.parametrize("arch,dim", [("densenet121", 1024), ("resnet50", 2048), ("tinycnn", 128)])
def test_registry_shapes_and_cam_layer(arch, dim):
    model, init = build_model(arch, 5, "none")
    assert init["source"] == "random"
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    logits, feats = model.forward_all(x)
    assert logits.shape == (2, 5) and feats.shape == (2, dim)
    assert get_spec(arch).feature_dim == dim
    # The CAM layer's output is the rectified map the pooled features average.
    acts = {}
    h = cam_layer(model).register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    model(x)
    h.remove()
    assert acts["a"].shape[1] == dim
    assert torch.allclose(acts["a"].mean((2, 3)), feats, atol=1e-5)
    assert acts["a"].min() >= 0


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match="densenet121"):
        get_spec("vgg99")


def test_imagenet_offline_gives_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailable, match="Offline fix") as err:
        build_model("resnet50", 3, "imagenet")
    assert "--weights none" in str(err.value)
    model, init = build_model("resnet50", 3, "auto")  # auto falls back loudly, and says so
    assert init["source"] == "random" and "RANDOM" in init["warning"]
    assert isinstance(model, Classifier)


def test_weights_from_file_copies_trunk_not_head(tmp_path):
    src, _ = build_model("tinycnn", 4, "none")
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst, init = build_model("tinycnn", 2, str(tmp_path / "w.pt"))
    assert init["source"].startswith("file:")
    for k, v in src.features.state_dict().items():
        assert torch.equal(v, dst.features.state_dict()[k])
    assert dst.head.out_features == 2


def test_weights_mismatch_and_missing_path(tmp_path):
    src, _ = build_model("tinycnn", 4, "none")
    torch.save(src.state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="do not fit"):
        build_model("resnet50", 2, str(tmp_path / "tiny.pt"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_model("tinycnn", 2, str(tmp_path / "nope.pt"))


def test_pick_device_cpu_and_bad_cuda(monkeypatch):
    assert models.pick_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA"):
        models.pick_device("cuda")


def test_weights_from_plain_torchvision_state_dict(tmp_path):
    from torchvision.models import resnet50

    tv = resnet50()
    torch.save(tv.state_dict(), tmp_path / "resnet50-tv.pth")
    model, init = build_model("resnet50", 3, str(tmp_path / "resnet50-tv.pth"))
    assert torch.equal(model.features[0].weight, tv.conv1.weight)
    assert torch.equal(model.features[7][2].conv3.weight, tv.layer4[2].conv3.weight)


@pytest.mark.slow  # builds both real backbones at every stride (~40 s)
@pytest.mark.parametrize("arch", ["densenet121", "resnet50"])
def test_output_stride_grids_and_one_state_dict_for_every_stride(arch, tmp_path):
    """Strides and dilations only: the same keys and shapes at every stride, so any state dict (ours, a
    file, torchvision's) loads strictly into any stride, and the trunk's map is 2/4/8 cells at 64 px."""
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    src, _ = build_model(arch, 3, "none", output_stride=32)
    state = src.state_dict()
    torch.save(state, tmp_path / "os32.pt")
    for stride, cells in ((32, 2), (16, 4), (8, 8)):
        model, _ = build_model(arch, 3, "none", output_stride=stride)
        assert model.output_stride == stride
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
        model.load_state_dict(state)  # strict
        model.eval()
        with torch.no_grad():
            assert model.features(x).shape[-2:] == (cells, cells)
        assert models.cam_grid(model, 64) == (cells, cells)
        assert models.cam_grid(model, 64, "block2") == (8, 8)  # block2 is stride 8 at every output stride
        from_file, init = build_model(arch, 3, str(tmp_path / "os32.pt"), output_stride=stride)
        assert init["source"].startswith("file:") and from_file.output_stride == stride
        assert all(torch.equal(v, state["features." + k]) for k, v in from_file.features.state_dict().items())


def test_output_stride_defaults_and_bad_values():
    assert Classifier("densenet121", 2).output_stride == get_spec("densenet121").default_output_stride
    assert Classifier("tinycnn", 2).output_stride == 8
    with pytest.raises(ValueError, match="supports output stride 8"):
        build_model("tinycnn", 2, "none", output_stride=16)
    with pytest.raises(ValueError, match="32, 16, 8"):
        build_model("resnet50", 2, "none", output_stride=4)
    assert models.layer_names("resnet50") == ("block4", "block3", "block2")
    with pytest.raises(ValueError, match="unknown CAM layer"):
        cam_layer(Classifier("tinycnn", 2), "block7")


def test_torchvision_state_dict_loads_into_a_dilated_resnet(tmp_path):
    from torchvision.models import resnet50

    tv = resnet50()
    torch.save(tv.state_dict(), tmp_path / "resnet50-tv.pth")
    model, _ = build_model("resnet50", 3, str(tmp_path / "resnet50-tv.pth"), output_stride=8)
    assert torch.equal(model.features[7][2].conv3.weight, tv.layer4[2].conv3.weight)
    assert model.features[7][0].conv2.dilation == (2, 2) and model.features[7][1].conv2.dilation == (4, 4)


def test_experiment_rebuilds_its_output_stride_and_old_ones_load_at_32(tmp_path):
    import json

    import train
    from covidviz import runs

    out = tmp_path / "runs"
    assert train.main(["--data", "synthetic:45", "--arch", "densenet121", "--epochs", "1", "--image-size", "32",
                       "--output-stride", "densenet121=8", "--weights", "none", "--out", str(out), "--name", "os8",
                       "--quiet", "--workers", "0", "--no-analysis"]) == 0
    exp = runs.read_experiment(out / "os8")
    rec = exp.record("densenet121")
    assert rec.output_stride == 8 and rec.cam_grid == (4, 4)
    assert exp.manifest["config"]["output_stride"] == {"densenet121": 8}
    model = exp.load_model("densenet121")
    assert model.output_stride == 8
    # An experiment written before the option: no record -> rebuilt at torchvision's stride 32.
    m = json.loads((out / "os8" / runs.MANIFEST).read_text())
    del m["backbones"]["densenet121"]["output_stride"], m["backbones"]["densenet121"]["cam_grid"]
    (out / "os8" / runs.MANIFEST).write_text(json.dumps(m))
    old = runs.read_experiment(out / "os8")
    assert old.record("densenet121").output_stride == 32 and old.record("densenet121").cam_grid is None
    assert old.load_model("densenet121").output_stride == 32


def test_cli_output_stride_parsing():
    import train

    assert train.parse_output_stride(None) is None
    assert train.parse_output_stride(["16"]) == 16
    assert train.parse_output_stride(["densenet121=8", "resnet50=16"]) == {"densenet121": 8, "resnet50": 16}
    with pytest.raises(SystemExit, match="ARCH=STRIDE"):
        train.parse_output_stride(["8", "resnet50"])
