"""Chest-X-ray-pretrained starting points: torchxrayvision's DenseNet121 checkpoints (``--weights txv:PATH``).

torchxrayvision (Cohen et al.) trains DenseNet121s on NIH ChestX-ray14, CheXpert, MIMIC-CXR, PadChest,
RSNA and their union. Its models differ from ours in three ways, each handled here:

- **1 input channel.** Its first convolution is (64, 1, 7, 7). Our backbones take the gray film
  repeated in 3 channels (``Preprocessing.to_tensor``); three identical channels through ``w / 3``
  each give exactly ``w`` on one channel, so the mapped first convolution is ``w / 3`` repeated three
  times and everything after it is the same network, tensor for tensor (its trunk keys are
  torchvision's DenseNet121 ones). The model stays a standard ``Classifier`` (CAM, the app, the bench
  need nothing special).
- **Its own intensity scaling and crop.** It was trained on images scaled to [-1024, 1024]
  (``xrv.utils.normalize(img, 255)``: ``(2 p / 255 - 1) * 1024``), centre-cropped to a square
  (``XRayCenterCrop``) and resized to 224 px. The scaling is affine, so it is our ``mean``/``std``
  fields (mean 0.5, std 0.5 / 1024); the crop is ``Preprocessing.crop = "center"``. The experiment
  must record ``txv_preprocessing()`` in its manifest so training, analysis and the app feed the model
  what it was trained on (``preprocessing_for``).
- **Its head** (18 pathologies) is dropped; ``models.build_model`` makes a fresh one for our classes.

Only the state dict is read, with ``torch.load(weights_only=True)``. torchxrayvision's released
files (``~/.torchxrayvision/models_data/*.pt``, downloaded by ``xrv.models.DenseNet(weights=...)``
from github.com/mlmed/torchxrayvision/releases) are *pickled whole models*, which only an unsafe load
can read: convert one once, on a machine with torchxrayvision and internet
(``CONVERT_COMMAND``), and pass the state-dict file.

The features of the mapped model equal torchxrayvision's ``features2`` at output stride 32
(torchvision's, ``--output-stride 32``); a finer stride dilates the last block(s) of the same weights,
a different (usually fine-tuned) network.

``resolve_weights(weights, arch)`` turns a ``--weights`` value into what ``models.build_model`` takes:
``TxvWeights`` (a ``models.PretrainedState`` carrying its ``preprocessing``) for a torchxrayvision
checkpoint, named by the ``txv:`` prefix or recognised from its keys; a ``PretrainedState`` for a file
holding our or torchvision's weights; anything else unchanged; and a clear ``ValueError`` for a file
that is none of these.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from covidviz.data.preprocess import Preprocessing
from covidviz.models import PretrainedState, get_spec

log = logging.getLogger(__name__)

TXV_PREFIX = "txv:"
TXV_ARCH = "densenet121"            # the only torchxrayvision model mapped (its ResNet50 is 512 px, another head)
TXV_IMAGE_SIZE = 224                # every torchxrayvision DenseNet121 was trained at 224 px
TXV_RANGE = 1024.0                  # xrv.utils.normalize: [0, 255] -> [-1024, 1024]
TXV_MEAN = (0.5, 0.5, 0.5)          # (p / 255 - 0.5) / (0.5 / 1024) == (2 p / 255 - 1) * 1024
TXV_STD = (0.5 / TXV_RANGE,) * 3
TXV_CONV0 = "features.conv0.weight"
TXV_CONV0_SHAPE = (64, 1, 7, 7)
CONVERT_COMMAND = ("python -c \"import torch, torchxrayvision as xrv; "
                   "m = xrv.models.DenseNet(weights='densenet121-res224-all'); torch.save(m.state_dict(), 'txv-all.pt')\"")


def txv_preprocessing(image_size: int = TXV_IMAGE_SIZE, crop: str = "center") -> Preprocessing:
    """The preprocessing contract torchxrayvision's DenseNet121s were trained with (see the module doc).
    ``crop="none"`` keeps the intensity scaling but squashes the whole film, as our default does."""
    if int(image_size) != TXV_IMAGE_SIZE:
        log.warning("torchxrayvision weights were trained at %d px; using them at %d px changes what the "
                    "features mean", TXV_IMAGE_SIZE, image_size)
    shape = "centre square, then bilinear" if crop == "center" else "bilinear, whole image to a square"
    resize = f"{shape} (torchxrayvision scaling: [-1024, 1024])"
    return Preprocessing(image_size=int(image_size), channels=3, mean=TXV_MEAN, std=TXV_STD, resize=resize, crop=crop)


@dataclass(frozen=True)
class TxvWeights(PretrainedState):
    """A torchxrayvision checkpoint mapped onto our DenseNet121 trunk.

    ``state``: keys as ``Classifier("densenet121", n).state_dict()`` has them (``features.0.*``; no head),
    so ``models.build_model(arch, n, weights=this)`` loads it unchanged. ``preprocessing``: what the
    experiment's manifest must record. ``head_outputs``: how many outputs the dropped head had."""

    preprocessing: Preprocessing = None  # type: ignore[assignment]  (always set by load_txv)
    head_outputs: int | None = None


# ---------------------------------------------------------------- reading and recognising checkpoints

def read_state_dict(path: str | Path) -> dict:
    """A state dict from a file, safely (``weights_only=True``); unwraps ``{"model"|"state_dict": ...}``
    and DataParallel's ``module.`` prefix. Raises ``ValueError`` with the fix for pickled models."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch.save's zip format, or a legacy pickle
        raise ValueError(f"--weights {path}: cannot read it as a PyTorch file (not written by torch.save)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"--weights {path}: not a plain state dict (it pickles Python objects, e.g. a whole torchxrayvision "
            "model, and covidviz only loads weights with torch.load(weights_only=True), since a pickle can run "
            f"code). Convert it once, on a machine you trust, to a state dict, e.g.\n  {CONVERT_COMMAND}\n"
            "then pass --weights txv:txv-all.pt") from exc
    except Exception as exc:  # truncated file, not a torch file at all...
        raise ValueError(f"--weights {path}: cannot read it as a PyTorch file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"--weights {path}: not a state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def is_txv_state(state: dict) -> bool:
    """torchxrayvision DenseNet keys: a 1-channel ``features.conv0.weight`` and a ``classifier`` head."""
    conv0 = state.get(TXV_CONV0)
    return (isinstance(conv0, torch.Tensor) and tuple(conv0.shape) == TXV_CONV0_SHAPE
            and any(k.startswith("classifier.") for k in state))


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _templates(arch: str) -> dict[str, dict[str, tuple]]:
    """Parameter shapes of our trunk (``features.*``) and of torchvision's model, built without memory
    (meta device). Strides change no shape, so one template fits every stride."""
    from covidviz.models import Classifier

    with torch.device("meta"):
        out = {"covidviz": {f"features.{k}": s for k, s in _shapes(Classifier(arch, 1).features).items()}}
        if arch in ("densenet121", "resnet50"):
            import torchvision.models as tvm

            out["torchvision"] = _shapes(getattr(tvm, arch)())
    return out


def _fit(state: dict, template: dict[str, tuple]) -> float:
    ok = sum(1 for k, s in template.items() if k in state and tuple(state[k].shape) == s)
    return ok / max(len(template), 1)


def checkpoint_kind(state: dict, arch: str) -> str | None:
    """``"torchxrayvision"``, ``"covidviz"`` (a trunk of ours), ``"torchvision"`` or None (none of them)."""
    if is_txv_state(state):
        return "torchxrayvision"
    for kind, template in _templates(arch).items():
        if _fit(state, template) >= 0.9:
            return kind
    return None


# ---------------------------------------------------------------- the mapping

def txv_to_covidviz(state: dict) -> dict:
    """torchxrayvision DenseNet state -> our DenseNet121 ``Classifier`` keys (``features.0.*``), first
    convolution spread over 3 channels (``w / 3`` each), head dropped. Checks every trunk tensor."""
    conv0 = state.get(TXV_CONV0)
    if conv0 is None or conv0.ndim != 4 or conv0.shape[1] != 1:
        got = None if conv0 is None else tuple(conv0.shape)
        raise ValueError(f"not a torchxrayvision DenseNet121: {TXV_CONV0} is {got}, expected {TXV_CONV0_SHAPE}")
    template = _templates(TXV_ARCH)["covidviz"]
    out, missing, wrong = {}, [], []
    for key, shape in template.items():
        src = "features." + key.removeprefix("features.0.") if key.startswith("features.0.") else None
        if src is None:  # our trunk's final ReLU has no parameters; nothing else lives outside features.0
            continue
        if src not in state:
            missing.append(src)
            continue
        v = state[src]
        if src == TXV_CONV0:
            v = (v / 3.0).repeat(1, 3, 1, 1)
        if tuple(v.shape) != shape:
            wrong.append(f"{src} {tuple(state[src].shape)}")
            continue
        out[key] = v.detach().clone()
    if missing or wrong:
        raise ValueError("not a torchxrayvision DenseNet121 checkpoint: "
                         + (f"{len(missing)} trunk tensors missing (e.g. {missing[0]})" if missing else "")
                         + ("; " if missing and wrong else "")
                         + (f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""))
    return out


def load_txv(path: str | Path, image_size: int = TXV_IMAGE_SIZE) -> TxvWeights:
    """Read a torchxrayvision DenseNet121 state-dict file and map it (see the module doc)."""
    path = Path(str(path).removeprefix(TXV_PREFIX))
    state = read_state_dict(path)
    if not isinstance(state.get(TXV_CONV0), torch.Tensor) or tuple(state[TXV_CONV0].shape) != TXV_CONV0_SHAPE:
        hint = checkpoint_kind(state, TXV_ARCH)
        if any(k.startswith("model.conv1.") for k in state):
            hint = "a torchxrayvision ResNet (not supported: only its DenseNet121s are)"
        raise ValueError(f"--weights txv:{path}: not a torchxrayvision DenseNet121 checkpoint "
                         f"(no 1-channel {TXV_CONV0}; it looks like {hint or 'neither ours nor torchvision'}'s weights)")
    mapped = txv_to_covidviz(state)
    head = state.get("classifier.weight")
    return TxvWeights(state=mapped, source=f"torchxrayvision:{path}", preprocessing=txv_preprocessing(image_size),
                      head_outputs=None if head is None else int(head.shape[0]))


def resolve_weights(weights, arch: str, image_size: int = TXV_IMAGE_SIZE):
    """A ``--weights`` value -> what ``models.build_model`` takes.

    ``txv:PATH`` or a file recognised as torchxrayvision's -> ``TxvWeights`` (DenseNet121 only); a file of
    ours or torchvision's -> ``PretrainedState`` (read once here); a file that is none of these -> a
    ``ValueError`` saying so; anything else (``none``, ``imagenet``, ``auto``, a ``PretrainedState``
    from ``runs.pretrained_state``, an experiment folder) unchanged.
    """
    if not isinstance(weights, (str, Path)):
        return weights
    text = str(weights)
    if text.startswith(TXV_PREFIX):
        if arch != TXV_ARCH:
            raise ValueError(f"--weights {text}: torchxrayvision checkpoints are DenseNet121s; {arch} cannot start "
                             f"from one (train {arch} in another experiment, or use --arch {TXV_ARCH})")
        return load_txv(text, image_size)
    path = Path(text)
    if text in ("", "none", "imagenet", "auto") or not path.is_file():
        return weights
    state = read_state_dict(path)
    kind = checkpoint_kind(state, arch)
    if kind == "torchxrayvision":
        if arch != TXV_ARCH:
            raise ValueError(f"--weights {path}: a torchxrayvision DenseNet121 checkpoint; {arch} cannot start from it")
        log.info("%s: recognised as a torchxrayvision DenseNet121 checkpoint", path)
        return load_txv(path, image_size)
    if kind is None:
        first = ", ".join(list(state)[:3])
        raise ValueError(f"--weights {path}: neither a covidviz, a torchvision nor a torchxrayvision {arch} checkpoint "
                         f"(its {len(state)} tensors, e.g. {first}, do not fit {arch}: {get_spec(arch).feature_dim}-d "
                         "features). Use a state dict saved from one of those, or an experiment folder.")
    return PretrainedState(state, f"file:{path}")


def preprocessing_for(resolved, image_size: int) -> Preprocessing:
    """The experiment's preprocessing for its resolved weights (one value, or one per backbone): the
    intensity scaling and crop the starting weights were trained with (torchxrayvision's, or an earlier
    experiment's from ``--weights runs/EXP``) at ``image_size``; the default when none asks for another.
    Two backbones asking for different contracts is a ``ValueError`` (one experiment has one)."""
    items = list(resolved.values()) if isinstance(resolved, dict) else [resolved]
    default = Preprocessing(image_size=int(image_size))
    wanted = {replace(w.preprocessing, image_size=int(image_size)) for w in items
              if isinstance(w, PretrainedState) and w.preprocessing is not None}
    wanted.discard(default)
    if len(wanted) > 1:
        raise ValueError("the starting weights were trained with different preprocessing "
                         f"({'; '.join(sorted(p.resize for p in wanted))}); start every backbone from the same kind")
    return wanted.pop() if wanted else default
