"""Backbone registry: name -> builder, pooled feature size, CAM layer; and weight initialisation.

Every model is a ``Classifier``: ``features`` (the convolutional trunk ending at the CAM layer),
global average pooling, and one linear ``head``. Keeping the head a single linear layer on pooled
features makes classic CAM exact (the paper's method) and the pooled vector is the embedding the
latent-space and SOM pages use.

Output stride (``--output-stride``): how much smaller the last feature map -- the CAM grid -- is
than the input. torchvision's DenseNet121 and ResNet50 are stride 32 (a 7x7 map at 224 px, 2x2 at 64
px). Stride 16 keeps the last block at the resolution of the one before it (ResNet50: torchvision's
``replace_stride_with_dilation``; DenseNet121: transition3 without its 2x2 average pool, and
denseblock4's 3x3 convolutions dilated by 2 so every layer keeps the receptive field it had); stride 8
does the same one block earlier. Only strides and dilations change, never a weight's shape, so one
state dict (ImageNet, a file, an earlier experiment of any stride) loads into every stride.

Initialisation (``--weights``): ``imagenet`` (torchvision's weights; fails with an offline fix when
they cannot be downloaded), ``none`` (random), ``auto`` (ImageNet if it can be had, else random with a
loud warning that is recorded in the manifest), a path to a ``.pt`` state dict, or an earlier
experiment folder (its backbone of the same architecture; the head is re-made for the new labels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covidviz.data.labels import MULTICLASS

log = logging.getLogger(__name__)


OUTPUT_STRIDES = (32, 16, 8)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[..., nn.Module]       # (weights=None, tv_state=None, output_stride=...) -> trunk (N,3,H,W) -> (N,C,h,w)
    feature_dim: int
    cam_layer: str                        # dotted path inside Classifier to the last conv block
    imagenet_weights: str                 # torchvision weights enum name, for messages
    output_strides: tuple[int, ...] = OUTPUT_STRIDES
    default_output_stride: int = 16       # chosen by measurement: bench/cam.py, README "Heatmaps"
    # Train in channels-last memory layout on a CPU too (always on CUDA): measured per training step at
    # 64 px, batch 16, 2 cores: DenseNet121 13 % faster, ResNet50 5 % slower, so only where it pays.
    cpu_channels_last: bool = False
    # Earlier layers for the gradient methods, by name: the rectified output of the network's 3rd and
    # 2nd stage (what the next stage reads), i.e. a 2x and 4x finer grid than the last block at stride 32.
    layers: tuple[tuple[str, str], ...] = ()


def _densenet121_trunk(weights=None, tv_state: dict | None = None, output_stride: int = 32) -> nn.Module:
    from torchvision.models import densenet121

    m = densenet121(weights=weights)
    if tv_state is not None:
        _load_matching(m, tv_state)
    f = m.features
    # Keep a dense block at the previous block's resolution: drop the transition's 2x2 average pool
    # and dilate the block's 3x3 convolutions (padding = dilation keeps the size), DeepLab-style.
    if output_stride <= 16:
        f.transition3.pool = nn.Identity()
        _dilate(f.denseblock4, 2 if output_stride == 16 else 4)
    if output_stride <= 8:
        f.transition2.pool = nn.Identity()
        _dilate(f.denseblock3, 2)
    # torchvision applies the final ReLU functionally in forward(); make it a module so the trunk
    # output is the rectified map CAM expects. Not in-place: in-place ReLU breaks backward hooks.
    return nn.Sequential(f, nn.ReLU(inplace=False))


def _dilate(block: nn.Module, dilation: int) -> None:
    for conv in block.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def _resnet50_trunk(weights=None, tv_state: dict | None = None, output_stride: int = 32) -> nn.Module:
    from torchvision.models import resnet50

    m = resnet50(weights=weights, replace_stride_with_dilation=[False, output_stride <= 8, output_stride <= 16])
    if tv_state is not None:
        _load_matching(m, tv_state)
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)


def _load_matching(module: nn.Module, state: dict) -> None:
    """Load a torchvision state dict, refusing one that does not fit (strict=False alone would not)."""
    target = module.state_dict()
    if _fit_fraction(state, target, "") < 0.9:
        raise ValueError("state dict does not fit the torchvision model")
    module.load_state_dict(state, strict=False)


def _tiny_trunk(weights=None, tv_state: dict | None = None, output_stride: int = 8) -> nn.Module:
    """A 4-block CNN for fast tests and quick looks (stride 8 only); not a paper backbone."""
    if weights is not None or tv_state is not None:
        raise ValueError("the tiny test backbone has no ImageNet weights")
    layers, c_in = [], 3
    for c_out in (16, 32, 64, 128):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=False), nn.MaxPool2d(2) if c_out != 128 else nn.Identity()]
        c_in = c_out
    return nn.Sequential(*layers)


REGISTRY: dict[str, BackboneSpec] = {
    "densenet121": BackboneSpec("densenet121", _densenet121_trunk, 1024, "features", "DenseNet121_Weights.IMAGENET1K_V1",
                                cpu_channels_last=True, layers=(("block3", "features.0.transition3.relu"),
                                        ("block2", "features.0.transition2.relu"))),
    "resnet50": BackboneSpec("resnet50", _resnet50_trunk, 2048, "features", "ResNet50_Weights.IMAGENET1K_V2",
                             layers=(("block3", "features.6"), ("block2", "features.5"))),
    "tinycnn": BackboneSpec("tinycnn", _tiny_trunk, 128, "features", "-", output_strides=(8,), default_output_stride=8,
                            layers=(("block3", "features.10"), ("block2", "features.6"))),
}

FINAL_LAYER = "block4"   # the name of every backbone's default CAM layer: the map the head pools
# Human names of the CAM layers, for a page's selector.
LAYER_NAMES = {
    "block4": "Last block (the classifier's)",
    "block3": "Block 3 (finer, less specific)",
    "block2": "Block 2 (finest, edges and texture)",
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(REGISTRY)}") from None


def legacy_output_stride(arch: str) -> int:
    """The stride ``arch`` had before the option existed (experiments written then do not record it):
    torchvision's native 32 for the ImageNet backbones, the tiny CNN's only stride for it."""
    return max(get_spec(arch).output_strides)


def resolve_output_stride(arch: str, output_stride: int | None) -> int:
    """``None`` -> the backbone's default; an unsupported stride -> a ValueError naming the choices."""
    spec = get_spec(arch)
    if output_stride is None:
        return spec.default_output_stride
    if int(output_stride) not in spec.output_strides:
        raise ValueError(f"{arch} supports output stride {', '.join(map(str, spec.output_strides))}; "
                         f"got {output_stride}")
    return int(output_stride)


def probabilities(logits, task: str):
    """The head's link: softmax over classes for multi-class, an independent sigmoid per class for
    multi-label. Takes a torch tensor (N, C) or a numpy array ((C,) or (N, C)); returns the same kind."""
    if isinstance(logits, torch.Tensor):
        return logits.softmax(-1) if task == MULTICLASS else logits.sigmoid()
    z = np.asarray(logits, dtype=np.float64)
    if task == MULTICLASS:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow warnings


class Classifier(nn.Module):
    """Trunk -> global average pool -> linear head. ``forward_features`` gives the pooled embedding."""

    def __init__(self, arch: str, num_classes: int, trunk: nn.Module | None = None, output_stride: int | None = None):
        super().__init__()
        spec = get_spec(arch)
        self.arch = arch
        self.output_stride = resolve_output_stride(arch, output_stride)  # say which when passing a trunk
        self.features = trunk if trunk is not None else spec.build(output_stride=self.output_stride)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(spec.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled features) in one pass."""
        f = self.forward_features(x)
        return self.head(f), f


@dataclass(frozen=True)
class PretrainedState:
    """A state dict already read from somewhere (an earlier experiment) and where it came from."""

    state: dict
    source: str
    # The data.preprocess.Preprocessing the weights were trained with (an earlier experiment's manifest),
    # or None: the default. Training keeps its intensity scaling and crop (pretrained.preprocessing_for).
    preprocessing: object | None = None


class WeightsUnavailable(RuntimeError):
    """ImageNet weights could not be obtained (offline machine)."""


def _imagenet_trunk(arch: str, output_stride: int) -> nn.Module:
    spec = get_spec(arch)
    if arch == "tinycnn":
        raise WeightsUnavailable("tinycnn has no ImageNet weights; use --weights none")
    import torchvision.models as tvm

    enum_name, member = spec.imagenet_weights.split(".")
    weights = getattr(getattr(tvm, enum_name), member)
    try:
        return spec.build(weights, output_stride=output_stride)
    except Exception as exc:  # URLError, socket errors, hash mismatch...
        hub = torch.hub.get_dir()
        raise WeightsUnavailable(
            f"could not get ImageNet weights for {arch} ({type(exc).__name__}: {exc}).\n"
            f"Offline fix: on a machine with internet run\n"
            f"  python -c \"import torchvision.models as m; m.{arch}(weights='{spec.imagenet_weights.split('.')[1]}')\"\n"
            f"and copy the downloaded file from ~/.cache/torch/hub/checkpoints/ into {hub}/checkpoints/ here "
            f"(or pass --weights /path/to/state_dict.pt, or --weights none to train from scratch)."
        ) from exc


def build_model(arch: str, num_classes: int, weights: str | PretrainedState = "none",
                output_stride: int | None = None) -> tuple[Classifier, dict]:
    """Build a classifier and initialise it; returns (model, init record for the manifest).

    ``weights``: 'none' | 'imagenet' | 'auto' | path to a state-dict file | a ``PretrainedState``
    (an experiment folder resolved by ``runs.pretrained_state``). ``output_stride``: 32, 16 or 8
    (None: the backbone's default, ``BackboneSpec.default_output_stride``); weights of any stride fit.
    """
    stride = resolve_output_stride(arch, output_stride)
    label = weights.source if isinstance(weights, PretrainedState) else weights
    init = {"weights": label, "source": None, "warning": None}
    if weights in ("none", "", None):
        model = Classifier(arch, num_classes, output_stride=stride)
        init["source"] = "random"
    elif weights == "imagenet":
        model = Classifier(arch, num_classes, trunk=_imagenet_trunk(arch, stride), output_stride=stride)
        init["source"] = "imagenet"
    elif weights == "auto":
        try:
            model = Classifier(arch, num_classes, trunk=_imagenet_trunk(arch, stride), output_stride=stride)
            init["source"] = "imagenet"
        except WeightsUnavailable as exc:
            msg = (f"ImageNet weights could not be downloaded for {arch} (offline?); trained from RANDOM "
                   "initialisation, so results are well below ImageNet-pretrained ones.")
            log.warning("!" * 20 + " " + msg + "\n" + str(exc))
            model = Classifier(arch, num_classes, output_stride=stride)
            init["source"], init["warning"] = "random", msg
    else:
        model = Classifier(arch, num_classes, output_stride=stride)
        init["source"] = load_trunk_weights(model, weights)
    return model, init


def load_trunk_weights(model: Classifier, weights: str | Path | PretrainedState) -> str:
    """Copy trunk weights from a state-dict file or an earlier experiment's state; the head stays fresh.

    An experiment folder is resolved by the run format (``runs.pretrained_state``), which hands a
    ``PretrainedState`` here: models never read experiment folders, so the two modules import one way.
    """
    if isinstance(weights, PretrainedState):
        state, source, path = weights.state, weights.source, weights.source
    else:
        path = Path(weights)
        if path.is_dir():
            raise ValueError(f"--weights {path}: an experiment folder must be resolved with "
                             "covidviz.runs.pretrained_state first")
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path}: no such file or experiment folder "
                                    "(use none, imagenet, auto, a .pt file or a runs/<experiment> folder)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        source = f"file:{path}"
    if not isinstance(state, dict):
        raise ValueError(f"--weights {path}: not a state dict")
    target = model.features.state_dict()
    if _fit_fraction(state, target, "features.") < 0.9 and model.arch != "tinycnn":
        # Not one of ours: maybe a plain torchvision checkpoint (e.g. from torch.hub's cache).
        try:
            tv_trunk = get_spec(model.arch).build(None, tv_state=state, output_stride=model.output_stride)
            state = {"features." + k: v for k, v in tv_trunk.state_dict().items()}
        except Exception:
            pass
    fitted = {k.removeprefix("features."): v for k, v in state.items()
              if k.startswith("features.") and k.removeprefix("features.") in target
              and tuple(v.shape) == tuple(target[k.removeprefix("features.")].shape)}
    if len(fitted) < 0.9 * len(target):
        raise ValueError(f"--weights {path}: its weights do not fit {model.arch} "
                         f"(only {len(fitted)} of {len(target)} trunk tensors match)")
    model.features.load_state_dict(fitted, strict=False)
    return source


def _fit_fraction(state: dict, target: dict, prefix: str) -> float:
    ok = sum(1 for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in target
             and hasattr(v, "shape") and tuple(v.shape) == tuple(target[k[len(prefix):]].shape))
    return ok / max(len(target), 1)


def cam_layer(model: Classifier, name: str | None = None) -> nn.Module:
    """The module whose output activations CAM methods use: by default (``None`` or ``FINAL_LAYER``)
    the last conv block, rectified, which the head pools; or an earlier one of ``layer_names``."""
    spec = get_spec(model.arch)
    if name in (None, FINAL_LAYER):
        return model.get_submodule(spec.cam_layer)
    paths = dict(spec.layers)
    if name not in paths:
        raise ValueError(f"unknown CAM layer {name!r} for {model.arch}; choose from {', '.join(layer_names(model.arch))}")
    return model.get_submodule(paths[name])


def cam_grid(model: Classifier, image_size: int, layer: str | None = None) -> tuple[int, int]:
    """(h, w) of a CAM layer's map for a square ``image_size`` input (one tiny forward on the CPU side
    of the model's device; no gradient, no mode change beyond the call)."""
    module = cam_layer(model, layer)
    shape = {}

    def hook(mod, inputs, output) -> None:  # returns None: the forward's output is left alone
        shape["s"] = tuple(output.shape[-2:])

    handle = module.register_forward_hook(hook)
    modes = [(m, m.training) for m in model.modules()]
    try:
        p = next(model.parameters())
        model.eval()  # no BatchNorm statistics update
        with torch.no_grad():
            model.features(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        handle.remove()
        for m, was_training in modes:
            m.training = was_training
    return shape["s"]


def layer_names(arch: str) -> tuple[str, ...]:
    """CAM layer choices of a backbone, last (the default) first: ``("block4", "block3", "block2")``."""
    return (FINAL_LAYER, *(name for name, _ in get_spec(arch).layers))


def pick_device(requested: str = "auto") -> torch.device:
    """cuda > mps > cpu, unless the user asks for one."""
    if requested != "auto":
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but no CUDA GPU is available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
