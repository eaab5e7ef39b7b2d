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
