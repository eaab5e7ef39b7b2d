"""torchxrayvision checkpoints mapped onto our DenseNet121 (covidviz.pretrained); nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from covidviz import pretrained
from covidviz.data.preprocess import Preprocessing, center_square
from covidviz.models import Classifier, PretrainedState, build_model

xrv = pytest.importorskip("torchxrayvision")


@pytest.fixture(scope="module")
def txv_model():
    """torchxrayvision's DenseNet (weights=None: random init, no download), with every BatchNorm's
    parameters and running statistics randomised so that a mapping that dropped any tensor would show."""
    torch.manual_seed(0)
    m = xrv.models.DenseNet(weights=None)
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data = torch.rand(mod.weight.shape, generator=g) + 0.5
            mod.bias.data = 0.1 * torch.randn(mod.bias.shape, generator=g)
            mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def txv_file(txv_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("txv") / "txv-densenet.pt"
    torch.save(txv_model.state_dict(), path)
    return path


def txv_input(gray: np.ndarray) -> torch.Tensor:
    """torchxrayvision's own preprocessing of an 8-bit film: [-1024, 1024], centre crop (1 channel)."""
    img = xrv.utils.normalize(gray, 255)[None]
    img = xrv.datasets.XRayCenterCrop()(img)
    return torch.from_numpy(np.ascontiguousarray(img))[None]


@pytest.mark.parametrize("spec", ["txv:{}", "{}"])  # named by prefix, or recognised from its keys
def test_mapped_features_equal_torchxrayvision(txv_model, txv_file, spec):
    weights = pretrained.resolve_weights(spec.format(txv_file), "densenet121")
    assert isinstance(weights, pretrained.TxvWeights) and isinstance(weights, PretrainedState)
    assert weights.head_outputs == 18 and weights.source == f"torchxrayvision:{txv_file}"
    model, init = build_model("densenet121", 3, weights, output_stride=32)  # models.build_model takes it as is
    assert init["source"] == weights.source
    model.eval()
    prep = weights.preprocessing
    assert (prep.image_size, prep.crop, prep.channels) == (224, "center", 3)
    # A non-square 8-bit film the models' size on its short side: the crop is exercised, no resize is.
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (224, 300), dtype=np.uint8)
    gray[:, :40] = 0  # the part the centre crop removes must not matter
    ours = prep.to_tensor(prep.to_model_pixels(gray))
    theirs = txv_input(gray)
    assert ours.shape == (1, 3, 224, 224) and theirs.shape == (1, 1, 224, 224)
    torch.testing.assert_close(ours[:, :1], theirs, rtol=0, atol=1e-3)  # same intensities, [-1024, 1024]
    with torch.no_grad():
        a = model.forward_features(ours)
        b = txv_model.features2(theirs.clone())
    assert a.shape == b.shape == (1, 1024)
    scale = float(b.abs().max())
    assert scale > 1.0
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale), float((a - b).abs().max())
    # the head is ours, fresh for our 3 classes
    assert model.head.out_features == 3


def test_mapping_loads_at_every_stride(txv_file):
    weights = pretrained.load_txv(txv_file)
    fine, _ = build_model("densenet121", 2, weights, output_stride=16)
    coarse, _ = build_model("densenet121", 2, weights, output_stride=32)
    for k, v in coarse.features.state_dict().items():
        assert torch.equal(v, fine.features.state_dict()[k])
    conv0 = fine.features[0].conv0.weight
    assert conv0.shape == (64, 3, 7, 7) and torch.allclose(conv0.sum(1, keepdim=True), torch.load(
        txv_file, weights_only=True)["features.conv0.weight"], atol=1e-6)


def test_txv_preprocessing_is_its_scaling():
    prep = pretrained.txv_preprocessing()
    x = prep.to_tensor(np.array([[0, 255], [128, 51]], np.uint8).repeat(8, 0).repeat(8, 1)[:16, :16])
    assert float(x.min()) == pytest.approx(-1024.0) and float(x.max()) == pytest.approx(1024.0)
    assert Preprocessing.from_json(prep.to_json()) == prep


def test_preprocessing_backward_compatible():
    old = {"image_size": 64, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
           "resize": "bilinear, whole image to a square"}  # a manifest from before `crop`
    prep = Preprocessing.from_json(old)
    assert prep.crop == "none" and prep == Preprocessing(64)
    gray = np.arange(40 * 100, dtype=np.uint32).reshape(40, 100).astype(np.uint8)
    assert prep.to_model_pixels(gray).shape == (64, 64)
    np.testing.assert_array_equal(Preprocessing(64).to_model_pixels(gray), prep.to_model_pixels(gray))
    assert center_square(gray).shape == (40, 40) and np.array_equal(center_square(gray), gray[:, 30:70])
    with pytest.raises(ValueError, match="crop"):
        Preprocessing(64, crop="left")


def test_our_and_torchvision_files_pass_through(tmp_path):
    import torchvision

    ours = Classifier("densenet121", 3, output_stride=32)
    torch.save(ours.state_dict(), tmp_path / "ours.pt")
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "tv.pt")
    w = pretrained.resolve_weights(str(tmp_path / "ours.pt"), "densenet121")
    assert type(w) is PretrainedState and w.source == f"file:{tmp_path / 'ours.pt'}"
    assert pretrained.checkpoint_kind(w.state, "densenet121") == "covidviz"
    tv = pretrained.resolve_weights(str(tmp_path / "tv.pt"), "resnet50")
    assert pretrained.checkpoint_kind(tv.state, "resnet50") == "torchvision"
    build_model("resnet50", 2, tv)  # loads through models' torchvision path
    for keyword in ("none", "imagenet", "auto"):
        assert pretrained.resolve_weights(keyword, "densenet121") == keyword
    assert pretrained.preprocessing_for({"a": "none", "b": w}, 96) == Preprocessing(96)


def test_clear_errors(tmp_path, txv_file):
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither a covidviz, a torchvision nor a torchxrayvision densenet121"):
        pretrained.resolve_weights(str(tmp_path / "other.pt"), "densenet121")
    with pytest.raises(ValueError, match="not a torchxrayvision DenseNet121"):
        pretrained.resolve_weights(f"txv:{tmp_path / 'other.pt'}", "densenet121")
    with pytest.raises(ValueError, match="DenseNet121s; resnet50 cannot"):
        pretrained.resolve_weights(f"txv:{txv_file}", "resnet50")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read it as a PyTorch file"):
        pretrained.resolve_weights(str(tmp_path / "junk.pt"), "densenet121")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a whole pickled module, like txv's releases
    with pytest.raises(ValueError, match="weights_only=True"):
        pretrained.resolve_weights(f"txv:{tmp_path / 'pickled.pt'}", "densenet121")
    with pytest.raises(FileNotFoundError):
        pretrained.resolve_weights(f"txv:{tmp_path / 'absent.pt'}", "densenet121")
    # a truncated txv state (a tensor missing) is refused, not half loaded
    state = torch.load(txv_file, weights_only=True)
    del state["features.denseblock3.denselayer5.conv1.weight"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="1 trunk tensors missing"):
        pretrained.load_txv(tmp_path / "cut.pt")


# ---------------------------------------------------------------- wired into training (train.py --weights txv:PATH)

def test_cache_applies_the_centre_crop(tmp_path):
    from PIL import Image

    from covidviz.data.cache import build_cache

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (60, 100), dtype=np.uint8)
    gray[:, :20] = 0  # cut away by the centre crop, squashed in otherwise
    Image.fromarray(gray).save(tmp_path / "wide.png")
    paths = [str(tmp_path / "wide.png")]
    txv = pretrained.txv_preprocessing(32)
    cropped = build_cache(paths, 32, tmp_path / "cache", workers=0, progress=False, crop=txv.crop)
    whole = build_cache(paths, 32, tmp_path / "cache", workers=0, progress=False)
    np.testing.assert_array_equal(cropped.pixels[0], txv.to_model_pixels(gray))  # what the app feeds an upload
    np.testing.assert_array_equal(whole.pixels[0], Preprocessing(32).to_model_pixels(gray))
    assert not np.array_equal(cropped.pixels[0], whole.pixels[0])
    np.testing.assert_array_equal(cropped.thumbs[0], whole.thumbs[0])  # thumbnails: always the whole film
    assert len(list((tmp_path / "cache").glob("pixels-32-*.npy"))) == 2  # one file per crop, never mixed up
    assert build_cache(paths, 32, tmp_path / "cache", workers=0, progress=False, crop="center").hit
    with pytest.raises(ValueError, match="crop"):
        build_cache(paths, 32, tmp_path / "cache", crop="left")


@pytest.mark.slow
def test_train_with_txv_weights_end_to_end(txv_model, txv_file, tmp_path):
    """``train.py --weights txv:FILE --arch densenet121``: the model starts from the mapped checkpoint
    (features equal torchxrayvision's before training), the manifest records txv's preprocessing (so the
    app and inference feed the model what it was trained on) and the cache cuts its centre square."""
    import train
    from covidviz import runs
    from covidviz.pipeline import starting_weights

    size = 64
    argv = ["--data", "synthetic:40", "--arch", "densenet121", "--epochs", "1", "--image-size", str(size),
            "--batch-size", "8", "--weights", f"txv:{txv_file}", "--output-stride", "32", "--out",
            str(tmp_path / "runs"), "--name", "txv", "--seed", "0", "--workers", "0", "--quiet", "--no-analysis",
            "--cache-dir", str(tmp_path / "cache")]

    # Before training: what the pipeline builds has torchxrayvision's features on a film.
    cfg = train.config_from_args(train.build_parser().parse_args(argv))
    weights = starting_weights(cfg)["densenet121"]
    assert isinstance(weights, pretrained.TxvWeights)
    start, init = build_model("densenet121", 3, weights, output_stride=32)
    assert init["source"] == f"torchxrayvision:{txv_file}"
    prep = pretrained.preprocessing_for({"densenet121": weights}, size)
    gray = np.random.default_rng(1).integers(0, 256, (size, size + 20), dtype=np.uint8)
    with torch.no_grad():
        ours = start.eval().forward_features(prep.to_tensor(prep.to_model_pixels(gray)))
        theirs = txv_model.features2(txv_input(gray))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 * float(theirs.abs().max()))

    assert train.main(argv) == 0
    exp = runs.read_experiment(tmp_path / "runs" / "txv")
    assert exp.manifest["preprocessing"] == pretrained.txv_preprocessing(size).to_json()
    assert exp.preprocessing.crop == "center" and exp.preprocessing.std[0] == pytest.approx(0.5 / 1024)
    backbone = exp.manifest["backbones"]["densenet121"]
    assert backbone["init"]["weights"] == f"txv:{txv_file}"
    assert backbone["init"]["source"] == f"torchxrayvision:{txv_file}"
    assert list((tmp_path / "cache" / "pixels").glob(f"pixels-{size}-center-*.npy"))
    # After one epoch the trunk is still the checkpoint's, a long way from a random initialisation.
    trained = exp.load_state_dict("densenet121")
    mapped = weights.state
    torch.manual_seed(0)
    random_init = Classifier("densenet121", 3, output_stride=32).state_dict()
    key = "features.0.denseblock2.denselayer3.conv2.weight"
    assert float((trained[key] - mapped[key]).norm()) < 0.2 * float((trained[key] - random_init[key]).norm())


def test_an_earlier_experiment_passes_on_its_preprocessing(tiny_experiment, tmp_path):
    """--weights runs/EXP from a torchxrayvision-started experiment keeps its scaling and centre crop."""
    import json
    import shutil

    from covidviz import runs

    exp_dir = shutil.copytree(tiny_experiment, tmp_path / "txv-started")
    manifest = json.loads((exp_dir / runs.MANIFEST).read_text())
    arch = runs.read_experiment(exp_dir).backbones[0]
    w = runs.pretrained_state(str(exp_dir), arch)
    assert w.preprocessing == runs.read_experiment(exp_dir).preprocessing
    assert pretrained.preprocessing_for({arch: w}, 96) == Preprocessing(96)  # a default experiment: the default
    manifest["preprocessing"] = pretrained.txv_preprocessing(manifest["preprocessing"]["image_size"]).to_json()
    (exp_dir / runs.MANIFEST).write_text(json.dumps(manifest))
    w = runs.pretrained_state(str(exp_dir), arch)
    prep = pretrained.preprocessing_for({arch: w, "other": "none"}, 96)
    assert prep == pretrained.txv_preprocessing(96) and prep.crop == "center"
    other = PretrainedState(w.state, "x", Preprocessing(96, mean=(0.5,) * 3, std=(0.5,) * 3))
    with pytest.raises(ValueError, match="different preprocessing"):
        pretrained.preprocessing_for({"a": w, "b": other}, 96)
