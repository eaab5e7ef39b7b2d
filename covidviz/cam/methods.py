"""Class activation maps for a ``Classifier``: classic CAM, Grad-CAM, Grad-CAM++, LayerCAM, Eigen-CAM.

Why written here rather than taken from ``pytorch-grad-cam`` (each method is a few lines once the
activations and gradients are in hand):

- The app shares one model between all its users' sessions (threads). The library registers hooks on
  the model for the lifetime of a CAM object, so a concurrent prediction in another thread would run
  through them (and have its activations captured). Here the default path registers *no hook at all*
  (``Classifier`` is ``features -> pool -> head``, so the trunk is simply run on its own and the head
  on its output), calls on one model are serialised by a per-model lock, and the hook path (for a
  non-default layer) only acts in the calling thread and is removed in ``finally``.
- Raw maps must be on a fixed scale comparable between images (the library min-max normalises).
- Classic CAM (the paper's method) is exact for the pooled linear head and needs one forward pass and
  no gradient; the library computes it through gradients.
- No extra dependency (and it pulls in opencv).

Scales. ``raw`` maps are rectified and bilinearly upsampled to the input size, and are comparable
between images for one model and method (they are not min-max normalised):

- ``cam``: ``sum_k w_ck A_k`` in logit units per feature-map cell; the (signed) map's mean over the
  cells is exactly ``logit_c - bias_c``.
- ``gradcam``: channel weights are the spatial *sum* of the gradients (the paper's mean times h*w), so
  for the pooled linear head Grad-CAM equals CAM exactly (d logit / dA_kij = w_ck / (h*w)), and for
  any other head it is in the same logit-per-cell units.
- ``layercam``: ``h*w * relu(sum_k relu(dS/dA_kij) A_kij)``: for the linear head, CAM restricted to the
  positively weighted channels.
- ``gradcam++``: the paper's weights (closed-form higher derivatives of exp(score)); its own units.
- ``eigencam``: projection on the first principal component of the activations; class-agnostic
  (the same map for every class), in activation units.

Layers. ``layer`` is a name from ``models.layer_names(arch)``: ``"block4"`` (the default, the
rectified last block the head pools, the only layer classic CAM is defined on) or an earlier stage
(``"block3"``, ``"block2"``: a 2x / 4x finer grid at stride 32) for the gradient methods and Eigen-CAM.
On block4 Grad-CAM *is* CAM, so ``offered_methods(layer)`` lists it only on earlier layers. A finer
grid at block4 comes from the backbone's output stride instead (``models``, ``--output-stride``).

Targets are the class *logit* (the pre-softmax / pre-sigmoid score), for multi-class and multi-label
models alike: the probability saturates, and under softmax it mixes in every other class.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covidviz.models import FINAL_LAYER, Classifier, cam_layer

METHODS = ("cam", "gradcam", "gradcam++", "layercam", "eigencam")
METHOD_NAMES = {
    "cam": "CAM (class activation map)",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
    "eigencam": "Eigen-CAM (class-agnostic)",
}
METHOD_HELP = {
    "cam": "Head weights times the last feature maps; exact for this architecture, one forward pass.",
    "gradcam": "Feature maps weighted by their summed gradients; equals CAM for a pooled linear head.",
    "gradcam++": "Gradient weights that favour several separate regions of evidence.",
    "layercam": "Pixel-wise positive gradients times activations; keeps only supporting channels.",
    "eigencam": "First principal component of the feature maps; ignores the chosen class.",
}
GRADIENT_METHODS = frozenset({"gradcam", "gradcam++", "layercam"})
# What the app shows first and the analysis calls "the default map" (chosen by measurement: bench/cam.py).
DEFAULT_METHOD = "cam"
DEFAULT_LAYER = FINAL_LAYER
# A map whose strongest positive cell is below this fraction of its strongest (negative) cell has
# "no evidence" for the class: nothing in the image speaks for it (see ``no_evidence``).
NO_EVIDENCE_RATIO = 0.02


def offered_methods(layer: str | None = None) -> tuple[str, ...]:
    """The methods worth offering on ``layer`` (a name from ``models.layer_names``): on the last block
    (the default) classic CAM and not Grad-CAM, which equals it there; on an earlier layer the gradient
    methods and Eigen-CAM (classic CAM is not defined there)."""
    if layer in (None, FINAL_LAYER):
        return tuple(m for m in METHODS if m != "gradcam")
    return tuple(m for m in METHODS if m != "cam")


@dataclass(frozen=True)
class CamResult:
    """Maps for N images; numpy arrays on the CPU."""

    method: str
    class_idx: np.ndarray    # (N,) int64: the class each map explains
    raw: np.ndarray          # (N, H, W) float32 >= 0, input size, fixed per-method scale (see module doc)
    normalised: np.ndarray   # (N, H, W) float32 in [0, 1], per-image min-max of ``raw`` (all 0 if flat)
    low_res: np.ndarray      # (N, h, w) float32: the signed map at the CAM layer, before ReLU/upsampling
    logits: np.ndarray       # (N, C) float32: the model's outputs for the images
    layer: str | None = None  # the layer's name (models.layer_names), None for a module passed by the caller

    def __len__(self) -> int:
        return len(self.class_idx)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) cells of the map at its layer (each cell covers input size / grid pixels)."""
        return int(self.low_res.shape[-2]), int(self.low_res.shape[-1])

    def no_evidence(self, i: int = 0) -> bool:
        """True when image ``i``'s map has (near) zero positive activation for its class; see
        ``no_evidence``."""
        return no_evidence(self.low_res[i], self.method)


def no_evidence(low_res: np.ndarray, method: str = "cam", ratio: float = NO_EVIDENCE_RATIO) -> bool:
    """Does a signed map ((h, w), ``CamResult.low_res[i]``) show (near) zero positive evidence?

    True when no cell is positive, or the strongest positive cell is below ``ratio`` of the map's
    largest magnitude (every feature that fires speaks *against* the class, or nothing fires): its
    rectified, min-max normalised heat map would then be a uniform colour or amplified noise, so a page
    should say "no evidence for <class> in this image" instead of drawing it. Eigen-CAM is class-agnostic
    (its sign is arbitrary, oriented towards activity) and always shows something: never "no evidence".
    """
    if method == "eigencam":
        return False
    m = np.nan_to_num(np.asarray(low_res, dtype=np.float64))
    top = float(m.max(initial=0.0))
    scale = float(np.abs(m).max(initial=0.0))
    return top <= 0.0 or top < ratio * scale


# ------------------------------------------------------------------------------------------------
# sharing a model between threads
# ------------------------------------------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock serialising CAM-style uses of ``model`` (one per model, so two backbones run in
    parallel). Re-entrant, so a caller may hold it around several calls."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def evaluating(model: nn.Module):
    """Hold the model's lock and put it in eval mode for the duration, restoring every submodule's
    own mode afterwards (even on error). Eval mode matters beyond dropout: a training-mode forward
    would use batch statistics and *update* BatchNorm's running statistics, i.e. change the model."""
    with model_lock(model):
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            yield model
        finally:
            for m, was_training in modes:
                m.training = was_training


# ------------------------------------------------------------------------------------------------
# activations, logits and gradients
# ------------------------------------------------------------------------------------------------

def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _split_forward(model: Classifier, x: torch.Tensor, need_grad: bool):
    """features -> pool -> head by hand (mirrors ``Classifier.forward``): no hooks, and the trunk runs
    without building a graph; only the cheap head is differentiated, w.r.t. the activations."""
    with torch.no_grad():
        acts = model.features(x)
    acts = acts.detach().requires_grad_(need_grad)
    with torch.set_grad_enabled(need_grad):
        logits = model.head(torch.flatten(model.pool(acts), 1))
    return acts, logits


def _hooked_forward(model: nn.Module, x: torch.Tensor, layer: nn.Module, need_grad: bool):
    """Whole forward with a temporary hook on ``layer`` that captures its output as a fresh leaf.

    The hook acts only in this thread (another thread's plain prediction through the shared model
    passes untouched), the layers before it run without a graph (grad mode is switched on by the hook,
    thread-locally), and it hands the rest of the network a *clone*: layers after it may work in place
    (torchvision's ``ReLU(inplace=True)`` in DenseNet, ResNet's ``out += identity``), which would
    otherwise overwrite the captured activations or trip autograd. If the layer runs several times in
    one forward (a shared ReLU module) the last call is kept.
    """
    owner = threading.get_ident()
    store: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        if threading.get_ident() != owner:
            return None
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise TypeError(f"CAM layer {type(module).__name__} must output an (N, C, h, w) tensor")
        leaf = output.detach().requires_grad_(need_grad)
        store["acts"] = leaf
        torch.set_grad_enabled(need_grad)
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    prev = torch.is_grad_enabled()
    try:
        torch.set_grad_enabled(False)
        logits = model(x)
    finally:
        handle.remove()
        torch.set_grad_enabled(prev)
    if "acts" not in store:
        raise ValueError("the CAM layer was not used by the model's forward pass")
    return store["acts"], logits


def _as_class_indices(class_idx, n: int, num_classes: int | None) -> torch.Tensor | None:
    if class_idx is None:
        return None
    if isinstance(class_idx, (int, np.integer)):
        idx = [int(class_idx)] * n
    else:
        idx = [int(c) for c in (class_idx.tolist() if hasattr(class_idx, "tolist") else class_idx)]
        if len(idx) != n:
            raise ValueError(f"got {len(idx)} class indices for {n} images")
    bad = [c for c in idx if c < 0 or (num_classes is not None and c >= num_classes)]
    if bad:
        raise ValueError(f"class index {bad[0]} out of range for a {num_classes}-class model")
    return torch.tensor(idx, dtype=torch.long)


def _num_classes(model: nn.Module) -> int | None:
    head = getattr(model, "head", None)
    return head.out_features if isinstance(head, nn.Linear) else None


# ------------------------------------------------------------------------------------------------
# the methods: signed maps at the layer's resolution, (N, h, w)
# ------------------------------------------------------------------------------------------------

def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nk,nkhw->nhw", weights, acts)


def _map(method: str, acts: torch.Tensor, grads: torch.Tensor | None, head_w: torch.Tensor | None):
    if method == "cam":
        return _weighted(head_w, acts)
    if method == "gradcam":
        return _weighted(grads.sum((2, 3)), acts)
    if method == "gradcam++":
        g2 = grads * grads
        denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grads
        alpha = torch.where(denom.abs() > 1e-30, g2 / torch.where(denom == 0, 1.0, denom), 0.0)
        return _weighted((alpha * F.relu(grads)).sum((2, 3)), acts)
    if method == "layercam":
        h, w = acts.shape[2:]
        return (F.relu(grads) * acts).sum(1) * (h * w)
    if method == "eigencam":
        return _eigen_maps(acts)
    raise AssertionError(method)


def _eigen_maps(acts: torch.Tensor) -> torch.Tensor:
    n, k, h, w = acts.shape
    out = torch.empty(n, h, w, dtype=acts.dtype, device=acts.device)
    for i in range(n):
        m = acts[i].reshape(k, h * w).T                      # (cells, channels)
        m = m - m.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        proj = m @ vh[0]
        # A principal axis has no sign; pick the one that agrees with the total activation, so the map
        # highlights where the layer fires rather than where it is quiet.
        total = acts[i].sum(0).reshape(-1)
        if torch.dot(proj, total - total.mean()) < 0:
            proj = -proj
        out[i] = proj.reshape(h, w)
    return out


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _minmax(raw: torch.Tensor) -> torch.Tensor:
    lo = raw.amin((1, 2), keepdim=True)
    span = raw.amax((1, 2), keepdim=True) - lo
    return torch.where(span > 0, (raw - lo) / torch.where(span > 0, span, 1.0), torch.zeros_like(raw))


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------

def compute_cams(model: nn.Module, x: torch.Tensor, class_idx: int | Sequence[int] | None = None,
                 methods: Iterable[str] = METHODS, layer: str | nn.Module | None = None) -> dict[str, CamResult]:
    """Several methods from ONE forward (and at most one backward) pass: ``{method: CamResult}``.

    ``x``: (3, H, W) or (N, 3, H, W) preprocessed input (``Preprocessing.to_tensor``). ``class_idx``:
    one class for all images, one per image, or None for each image's top-scoring class.
    ``layer``: a name from ``models.layer_names(arch)`` or a submodule; defaults to ``cam_layer(model)``
    (``"block4"``, the rectified last conv map); another layer works for the gradient methods and
    Eigen-CAM, not for classic CAM (which needs the layer the head pools).
    Safe to call from several threads on one shared model; leaves no hook, mode, gradient or parameter
    change behind; works inside ``torch.no_grad()`` / ``torch.inference_mode()``.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown CAM method {unknown[0] if unknown else None!r}; choose from "
                         + ", ".join(f"{m} ({METHOD_NAMES[m]})" for m in METHODS))
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise ValueError("x must be a (3, H, W) or (N, 3, H, W) tensor")
    default_layer = cam_layer(model)
    layer_name = FINAL_LAYER if layer is None else layer if isinstance(layer, str) else None
    if isinstance(layer, str):
        if not isinstance(model, Classifier):
            raise ValueError("a layer name needs a covidviz Classifier; pass the module itself")
        layer = cam_layer(model, layer)
    layer = default_layer if layer is None else layer
    if layer is default_layer:
        layer_name = FINAL_LAYER
    split = layer is default_layer and isinstance(model, Classifier) and default_layer is model.features
    if "cam" in methods:
        if not (split and isinstance(model.head, nn.Linear)
                and isinstance(model.pool, nn.AdaptiveAvgPool2d) and model.pool.output_size in (1, (1, 1))):
            raise ValueError("classic CAM needs the layer that the pooled linear head reads "
                             "(the default CAM layer); use gradcam for other layers")
    if not split and not any(m is layer for m in model.modules()):
        raise ValueError("layer is not a submodule of the model")
    need_grad = any(m in GRADIENT_METHODS for m in methods)

    # inference_mode(False): a caller's inference mode would otherwise make autograd impossible even
    # under enable_grad(); tensors made in inference mode are cloned into normal ones.
    with torch.inference_mode(False):
        if x.ndim == 3:
            x = x[None]
        x = x.to(_device_of(model), torch.float32)
        if x.is_inference():
            x = x.clone()
        n, size = x.shape[0], tuple(x.shape[-2:])
        n_classes = _num_classes(model)
        idx = _as_class_indices(class_idx, n, n_classes)  # checked before any work is done

        with evaluating(model):
            if split:
                acts, logits = _split_forward(model, x, need_grad)
            else:
                acts, logits = _hooked_forward(model, x, layer, need_grad)
            if idx is None:
                idx = logits.detach().argmax(1).cpu()
            elif n_classes is None and int(idx.max()) >= logits.shape[1]:
                raise ValueError(f"class index {int(idx.max())} out of range for a "
                                 f"{logits.shape[1]}-class model")
            idx_dev = idx.to(logits.device)
            grads = None
            if need_grad:
                # Images are independent in eval mode, so one backward of the summed targets gives
                # every image's own gradient. autograd.grad (not .backward) leaves .grad untouched
                # and skips the weight gradients entirely.
                score = logits.gather(1, idx_dev[:, None]).sum()
                (grads,) = torch.autograd.grad(score, acts)
            head_w = model.head.weight.detach()[idx_dev] if "cam" in methods else None
            acts = acts.detach()

        results = {}
        logits_np = logits.detach().float().cpu().numpy()
        for method in methods:
            low = _map(method, acts, grads, head_w).float()
            raw = _upsample(F.relu(low), size)
            results[method] = CamResult(
                method=method, class_idx=idx.numpy().astype(np.int64),
                raw=raw.cpu().numpy().astype(np.float32, copy=False),
                normalised=_minmax(raw).cpu().numpy().astype(np.float32, copy=False),
                low_res=low.cpu().numpy().astype(np.float32, copy=False), logits=logits_np, layer=layer_name)
    return results


def compute_cam(model: nn.Module, x: torch.Tensor, class_idx: int | Sequence[int] | None = None,
                method: str = "cam", layer: str | nn.Module | None = None) -> CamResult:
    """One method's maps for ``x`` ((3, H, W) or (N, 3, H, W)); see ``compute_cams``."""
    return compute_cams(model, x, class_idx, (method,), layer)[method]
