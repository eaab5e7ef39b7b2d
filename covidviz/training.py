"""Fit / evaluate loop for one backbone on cached pixels.

- Loss: cross-entropy with inverse-frequency class weights (multi-class) or BCE with ``pos_weight``
  (multi-label), so a rare finding is not ignored.
- AdamW + one-cycle schedule (warm-up then cosine decay), stepped per batch.
- Validation macro AUC after every epoch; the BEST epoch's weights are kept (not the last), and
  training stops early after ``patience`` epochs without improvement.
- A checkpoint (model, optimiser, schedule, best weights, history, RNG) is written atomically after
  each epoch, so ``--resume`` continues an interrupted run from its last finished epoch.
- cuda (mixed precision, channels_last) > mps > cpu; ``torchrun`` for several processes (DDP):
  each rank trains on its shard, every rank validates on the whole (small) validation set so they all
  take the same early-stopping decision.
- ``--deconfound source`` (``FitData.adversary``): a source adversary on the pooled features, through
  gradient reversal (``covidviz.deconfound``); training-only, the best weights kept are the classifier's.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.deconfound import (
    LR_SCALE,
    OBJECTIVES,
    AdversaryPlan,
    SourceAdversary,
    WithAdversary,
    dann_lambda,
    ramped_up,
)
from covidviz.io import atomic_torch_save
from covidviz.models import REGISTRY, probabilities
from covidviz.stats.metrics import auc_per_class, macro_auc


@dataclass
class TrainConfig:
    """The optimisation settings: the one place their defaults are written (``train.py`` reads them)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3                     # peak rate of the one-cycle schedule, training from scratch
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    augment: bool = True
    amp: bool = True
    progress: bool = True
    # ``--deconfound source``: an adversary predicting the source within each class through gradient
    # reversal of this peak strength (covidviz.deconfound; "none": off).
    deconfound: str = "none"
    deconfound_strength: float = 0.3
    deconfound_objective: str = OBJECTIVES[0]  # confusion (bounded) or reverse (DANN): covidviz.deconfound
    # The peak rate when the backbone starts from pretrained weights (``--lr`` unset): fine-tuning
    # wants a gentler rate than training from scratch.
    pretrained_lr: ClassVar[float] = 3e-4

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Feed:
    """How cached films reach a model: the uint8 pixel cache, the preprocessing contract that turns them
    into input, the device, the batch size and whether to use mixed precision (on cuda)."""

    pixels: np.ndarray
    prep: Preprocessing
    device: torch.device
    batch_size: int = 64
    amp: bool = True


@dataclass(frozen=True)
class FitData:
    """What ``fit`` trains and validates on: cache rows of the training and validation images, the
    training targets (class indices for multi-class, multi-hot for multi-label), the validation one-hot."""

    pixels: np.ndarray
    prep: Preprocessing
    labels: LabelSpace
    train_rows: np.ndarray
    train_targets: np.ndarray
    val_rows: np.ndarray
    val_onehot: np.ndarray
    adversary: AdversaryPlan | None = None    # --deconfound source: targets row-aligned with train_rows

    def feed(self, device: torch.device, batch_size: int, amp: bool = True) -> Feed:
        return Feed(self.pixels, self.prep, device, batch_size, amp)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class FitResult:
    best_state: dict
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc: float | None = None
    epochs_trained: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_loss(labels: LabelSpace, train_targets: np.ndarray, device) -> nn.Module:
    """Class-imbalance-weighted loss for the task."""
    if labels.task == MULTICLASS:
        counts = np.bincount(train_targets, minlength=labels.num_classes).astype(np.float64)
        weights = counts.sum() / np.maximum(counts, 1) / labels.num_classes
        return nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
    pos = train_targets.sum(0)
    neg = len(train_targets) - pos
    pos_weight = np.clip(neg / np.maximum(pos, 1), 1.0, 50.0)
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32, device=device))


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random affine (±8°, ±6% shift, 0.92–1.08 scale) and contrast/brightness jitter.

    No horizontal flips: the heart's side is anatomy, and flipping would teach the model dextrocardia.
    Done on the whole batch with ``affine_grid`` so it costs one resampling, not a Python loop.
    """
    n = x.shape[0]
    r = lambda lo, hi: torch.empty(n).uniform_(lo, hi, generator=gen)  # noqa: E731
    ang, scale = r(-8, 8) * math.pi / 180, r(0.92, 1.08)
    tx, ty = r(-0.06, 0.06), r(-0.06, 0.06)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    gain, bias = r(0.85, 1.15).to(x).view(n, 1, 1, 1), r(-0.1, 0.1).to(x).view(n, 1, 1, 1)
    return x * gain + bias


class Batches:
    """Mini-batches of (normalised input, target) of cache ``rows`` through ``feed``."""

    def __init__(self, feed: Feed, rows: np.ndarray, targets: np.ndarray, shuffle: bool = False, seed: int = 0,
                 dist: DistInfo | None = None):
        self.pixels, self.rows, self.targets = feed.pixels, np.asarray(rows), targets
        self.prep, self.batch_size, self.device = feed.prep, feed.batch_size, feed.device
        self.shuffle, self.seed, self.dist = shuffle, seed, dist or DistInfo()
        self.epoch = 0

    def _order(self) -> np.ndarray:
        idx = np.arange(len(self.rows))
        if self.shuffle:
            idx = np.random.default_rng(self.seed + 7919 * self.epoch).permutation(idx)
        if self.dist.world > 1:
            # Every rank must run the same number of steps (DDP all-reduces each one): wrap around.
            per_rank = math.ceil(len(idx) / self.dist.world)
            idx = np.resize(idx, per_rank * self.dist.world)[self.dist.rank::self.dist.world]
        return idx

    def __len__(self) -> int:
        n = math.ceil(len(self.rows) / self.dist.world)
        return math.ceil(n / self.batch_size)

    def __iter__(self):
        order = self._order()
        for s in range(0, len(order), self.batch_size):
            sel = order[s:s + self.batch_size]
            rows = self.rows[sel]
            # Sorted reads from the memmap are sequential on disk; restore the order afterwards.
            srt = np.argsort(rows)
            pix = np.empty((len(rows),) + self.pixels.shape[1:], np.uint8)
            pix[srt] = self.pixels[rows[srt]]
            x = self.prep.to_tensor(pix).to(self.device, non_blocking=True)
            y = torch.as_tensor(self.targets[sel]).to(self.device, non_blocking=True)
            yield x, y


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(model: nn.Module, feed: Feed, rows: np.ndarray, task: str, progress: bool = False,
            desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, C) and pooled features (N, D) for ``rows`` of the cache, in one pass."""
    model.eval()
    dummy = np.zeros(len(rows), np.int64)
    probs, feats = [], []
    for x, _ in tqdm(Batches(feed, rows, dummy), desc=desc, leave=False, disable=not progress):
        if feed.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(feed.device, feed.amp):
            logits, f = model.forward_all(x)
        probs.append(probabilities(logits.float(), task).cpu().numpy())
        feats.append(f.float().cpu().numpy())
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probs), np.concatenate(feats)


def evaluate(model: nn.Module, feed: Feed, rows: np.ndarray, targets_onehot: np.ndarray, labels: LabelSpace):
    """Validation loss and AUC per class."""
    probs, _ = predict(model, feed, rows, labels.task)
    p = torch.as_tensor(probs, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    y = torch.as_tensor(targets_onehot, dtype=torch.float64)
    if labels.task == MULTICLASS:
        loss = float(-(y * p.log()).sum(1).mean())
    else:
        loss = float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())
    per_class = auc_per_class(targets_onehot, probs, labels.names)
    return loss, per_class


def _cpu_channels_last(model: nn.Module) -> bool:
    """Whether this backbone trains faster in channels-last layout on a CPU (``BackboneSpec``, measured)."""
    arch = getattr(model, "arch", None)
    return arch in REGISTRY and REGISTRY[arch].cpu_channels_last


def fit(model: nn.Module, data: FitData, cfg: TrainConfig, device: torch.device, checkpoint: Path | None = None,
        dist: DistInfo | None = None, desc: str = "train") -> FitResult:
    """Train ``model`` on ``data``; keep the best-validation weights; resume from ``checkpoint`` if it exists."""
    dist = dist or DistInfo()
    seed_everything(cfg.seed + dist.rank)
    model.to(device)
    channels_last = device.type == "cuda" or _cpu_channels_last(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = data.adversary
    adv = None if plan is None else SourceAdversary(model.head.in_features, plan.allowed).to(device)
    net = model if adv is None else WithAdversary(model, adv, cfg.deconfound_objective)
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = make_loss(data.labels, data.train_targets, device)
    # Batches yield row positions; targets (and the adversary's) are looked up on the device.
    batches = Batches(data.feed(device, cfg.batch_size), data.train_rows, np.arange(len(data.train_rows)),
                      shuffle=True, seed=cfg.seed, dist=dist)
    targets = torch.as_tensor(data.train_targets).to(device)
    if adv is not None:
        adv_t = [torch.as_tensor(a).to(device) for a in (plan.stratum, plan.source, plan.weight)]
    groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    if adv is not None:
        groups.append({"params": list(adv.parameters()), "lr": cfg.lr * LR_SCALE})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.epochs * len(batches))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                pct_start=0.15)
    use_amp = cfg.amp and device.type == "cuda"
    val_feed = data.feed(device, cfg.batch_size * 2, amp=use_amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)

    res = FitResult(best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    start_epoch, bad_epochs, elapsed = 0, 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if use_amp and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        gen.set_state(ck["generator"])
        if adv is not None and ck.get("adversary"):
            adv.load_state_dict(ck["adversary"])
        res.best_state, res.history = ck["best_state"], ck["history"]
        res.best_epoch, res.best_val_auc = ck["best_epoch"], ck["best_val_auc"]
        start_epoch, bad_epochs, elapsed = ck["epoch"], ck["bad_epochs"], ck["seconds"]
        if dist.main:
            tqdm.write(f"[{desc}] resuming after epoch {start_epoch} (best val AUC {res.best_val_auc})")

    t0 = time.time() - elapsed
    epoch = start_epoch
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        if bad_epochs >= cfg.patience:
            res.stopped_early = True
            epoch -= 1
            break
        net.train()
        batches.epoch = epoch
        t_epoch, total, count = time.time(), 0.0, 0
        adv_sum = [0.0, 0.0, 0.0, 0.0]  # weighted loss, weighted correct calls, weight, weighted confusion loss
        bar = tqdm(batches, desc=f"[{desc}] epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
                   disable=not (cfg.progress and dist.main))
        for step, (x, idx) in enumerate(bar):
            y = targets[idx]
            if cfg.augment:
                x = augment_batch(x, gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, use_amp):
                if adv is None:
                    loss = loss_fn(net(x).float(), y)
                else:
                    adv.lambd = dann_lambda(((epoch - 1) * len(batches) + step) / steps, cfg.deconfound_strength)
                    logits, adv_logits, judged = net(x, adv_t[0][idx])
                    loss = loss_fn(logits.float(), y)
                    adv_loss, correct, weight = SourceAdversary.loss(adv_logits, adv_t[1][idx], adv_t[2][idx])
                    # confusion: the backbone's own loss towards a uniform adversary (reverse: the reversed
                    # gradient of adv_loss already pushes the backbone)
                    conf = None if judged is None else SourceAdversary.confusion(judged, adv_t[2][idx])
                    adv_sum = [adv_sum[0] + float(adv_loss.detach()) * weight, adv_sum[1] + correct, adv_sum[2] + weight,
                               adv_sum[3] + (0.0 if conf is None else float(conf.detach()) * weight)]
                    adv_loss = adv_loss if conf is None else adv_loss + adv.lambd * conf
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss if adv is None else loss + adv_loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += loss.item() * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        val_loss, per_class = evaluate(model, val_feed, data.val_rows, data.val_onehot, data.labels)
        val_auc = macro_auc(per_class)
        score = val_auc if val_auc is not None else -val_loss
        best_score = res.best_val_auc if res.best_val_auc is not None else -math.inf
        # A deconfounded model is one the adversary has acted on: the validation films share the training
        # data's source-class confound, so their AUC favours the early epochs before the reversal reaches
        # its strength (covid3 at 0.3 kept epoch 1 of 10). Until it is ramped, an epoch is kept only as a
        # stand-in that the first ramped epoch replaces, and patience does not run.
        ramped = adv is None or ramped_up(adv.lambd, cfg.deconfound_strength)
        best_lambda = next((h.get("adv_lambda", 0.0) for h in res.history if h["epoch"] == res.best_epoch), 0.0)
        best_ramped = res.best_epoch > 0 and (adv is None or ramped_up(best_lambda, cfg.deconfound_strength))
        if not ramped or res.best_epoch == 0 or not best_ramped or score > best_score:
            res.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            keep_score = ramped and val_auc is not None  # a stand-in's score must not bar the first ramped epoch
            res.best_epoch, res.best_val_auc, bad_epochs = epoch, score if keep_score else None, 0
        else:
            bad_epochs += 1
        res.history.append({
            "epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss, "val_auc": val_auc,
            "val_auc_per_class": per_class, "lr": sched.get_last_lr()[0], "seconds": time.time() - t_epoch,
        })
        if adv is not None:  # the adversary's training loss and balanced accuracy (its classes weigh the same)
            w = max(adv_sum[2], 1e-8)
            res.history[-1].update(adv_loss=adv_sum[0] / w, adv_accuracy=adv_sum[1] / w, adv_lambda=adv.lambd)
            if cfg.deconfound_objective == "confusion":  # log(sources) when the adversary is fully confused
                res.history[-1]["adv_confusion"] = adv_sum[3] / w
        if dist.main:
            auc_txt = f"{val_auc:.3f}" if val_auc is not None else "n/a"
            adv_txt = "" if adv is None else f"  source adversary accuracy {res.history[-1]['adv_accuracy']:.2f}"
            tqdm.write(f"[{desc}] epoch {epoch}: train loss {total / max(count, 1):.4f}  val loss {val_loss:.4f}  "
                       f"val AUC {auc_txt}{adv_txt}{'  *best*' if res.best_epoch == epoch else ''}")
            if checkpoint is not None:
                atomic_torch_save(checkpoint, {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict() if use_amp else {}, "generator": gen.get_state(),
                    "adversary": {} if adv is None else adv.state_dict(),
                    "best_state": res.best_state, "history": res.history, "best_epoch": res.best_epoch,
                    "best_val_auc": res.best_val_auc, "epoch": epoch, "bad_epochs": bad_epochs,
                    "seconds": time.time() - t0,
                })
        if dist.world > 1:
            torch.distributed.barrier()
    res.epochs_trained = max(epoch, start_epoch)
    res.seconds = time.time() - t0
    model.load_state_dict(res.best_state)
    return res
