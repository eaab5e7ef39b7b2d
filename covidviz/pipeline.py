"""One experiment end to end: datasets -> cache -> patient split -> each backbone -> run folder.

``train.py`` parses the command line into a ``RunConfig`` and calls ``run_experiment``. Every
backbone is trained on the same split, so they can be compared on the same test images. On rank 0 the
experiment is built in the run format's partial folder and published atomically at the end.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import covidviz
from covidviz import runs
from covidviz.anatomy.inputs import cache_input
from covidviz.data.adapters import load_datasets
from covidviz.data.cache import build_cache, default_cache_dir
from covidviz.data.labels import LabelSpace
from covidviz.data.preprocess import DEFAULT_IMAGE_SIZE, Preprocessing
from covidviz.data.splits import check_no_leakage, make_split
from covidviz.deconfound import MIN_FILMS, AdversaryPlan, plan_source_adversary, strata_of
from covidviz.models import build_model, cam_grid, get_spec, legacy_output_stride, pick_device, resolve_output_stride
from covidviz.pretrained import preprocessing_for, resolve_weights
from covidviz.runs.manifest import DatasetCard, Deconfounding, ManifestBackbone, ManifestInfo, SplitCard
from covidviz.stats.metrics import auc_per_class, macro_auc
from covidviz.stats.projection import METHODS as PROJECTION_METHODS
from covidviz.training import DistInfo, Feed, FitData, TrainConfig, fit, predict

log = logging.getLogger(__name__)

# Conspicuous lesions (difficulty 0.3; the default 0.5 is the harder research setting), so that a few
# epochs teach DenseNet121 maps that find them (issue 12; measured in the README).
# Phantoms drawn at 128 px (the models see 64): a quarter of the drawing and writing time of 256 px.
DEMO_DATA = ["synthetic:600:difficulty=0.3,size=128"]
DEMO_ARCHS = ["densenet121", "resnet50"]
# The demo's settings are ``RunConfig.demo()`` (train.py --demo; flags given on the command line win). At 64 px,
# DenseNet121 at output stride 8 gives an 8x8 CAM grid (1.04 forward GFLOPs per film, 2.2x stride 32).
# ResNet50 stays at its native stride 32 (2x2): at stride 16 (4x4) it cost 1.5x the training time and its
# map still missed every phantom lesion (pointing game 0.00), and stride 8 would cost 4.7x. No UMAP: its
# first fit compiles for ~30 s. Measured on 2 cores (README, "The demo"): 4 epochs of batches of 16 at a
# peak rate of 2e-3, about 5 minutes with the analysis. DenseNet121 alone, CAM pointing game on the test
# lesions by seed (split, init and augmentation; generator v2): difficulty 0.3: 0.70, 0.70, 0.67, 0.72
# (seeds 0-3); 0.4: 0.78, 0.48, 0.18 (seeds 0-2: at 64 px every cell sees the whole film, and some runs
# learn to read the evidence out at a fixed central cell); 0.5: 0.65 (seed 0). Random map 0.10-0.13.
# With generator v1 (pneumonia a small blob near the hilum) the same recipe found 0.48-0.58 (pneumonias
# 0.17-0.23), and no setting that fitted 5 minutes reliably passed 0.5: 6 epochs of 32 at 1e-3 (0.57,
# 6.3 min), 5 of 32 (0.50, 5.7 min), 4 of 32 (0.27), 4 of 16 at 1e-3 (0.48), a peak rate of 3e-3 (0.30),
# no augmentation (0.47), difficulty 0.2 (0.38).


@dataclass
class RunConfig:
    """One experiment's settings: the one place their defaults are written (``train.py`` reads them;
    the optimisation settings are ``TrainConfig``'s, under ``train``)."""

    data: list[str]
    archs: list[str] = field(default_factory=lambda: list(DEMO_ARCHS))
    out: str = "runs"
    name: str | None = None
    image_size: int = DEFAULT_IMAGE_SIZE
    input: str = "full"  # what the model sees (Preprocessing.input, data.preprocess.INPUTS): train.py --input
    # CAM grid fineness (models.OUTPUT_STRIDES): None = each backbone's default, an int for all of them,
    # or {arch: stride}.
    output_stride: int | dict[str, int] | None = None
    weights: str = "auto"
    device: str = "auto"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    cache_dir: str | None = None
    workers: int | None = None
    resume: bool = False
    overwrite: bool = False
    analysis: bool = True
    projections: tuple[str, ...] = PROJECTION_METHODS
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def demo(cls) -> RunConfig:
        """``train.py --demo``: phantoms, both backbones, about 5 minutes on 2 CPU cores (the settings tried
        are listed above ``RunConfig``)."""
        return cls(data=list(DEMO_DATA), name="demo", weights="none", image_size=64,
                   output_stride={"densenet121": 8, "resnet50": 32}, projections=("pca", "tsne"),
                   train=TrainConfig(epochs=4, batch_size=16, lr=2e-3))

    def to_json(self) -> dict:
        d = asdict(self)
        d["split_fractions"] = list(self.split_fractions)
        d["projections"] = list(self.projections)
        return d

    @classmethod
    def from_json(cls, d: dict) -> RunConfig:
        d = dict(d)
        # a config saved before the objective was a choice was deconfounded by gradient reversal: resume it so
        d["train"] = TrainConfig(**{"deconfound_objective": "reverse", **d["train"]})
        d["split_fractions"] = tuple(d["split_fractions"])
        d["projections"] = tuple(d.get("projections", cls.projections))
        # A config saved before the option existed was trained at each backbone's native stride.
        d.setdefault("output_stride", {a: legacy_output_stride(a) for a in d.get("archs", DEMO_ARCHS)})
        return cls(**d)

    def stride_for(self, arch: str) -> int:
        """The output stride ``arch`` is built with (validated against the backbone's choices)."""
        s = self.output_stride.get(arch) if isinstance(self.output_stride, dict) else self.output_stride
        return resolve_output_stride(arch, s)


def default_name(data: list[str]) -> str:
    kinds = "+".join(dict.fromkeys(s.split(":", 1)[0] for s in data))
    return f"{kinds}-{time.strftime('%Y%m%d-%H%M%S')}"


def dist_info() -> DistInfo:
    """Rank and world size when launched by torchrun; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return DistInfo(int(os.environ.get("RANK", "0")), world)


def _barrier(dist: DistInfo) -> None:
    if dist.world > 1:
        torch.distributed.barrier()


def _prepare_data(cfg: RunConfig, prep: Preprocessing, dist: DistInfo):
    """Load, decode-cache and split. Rank 0 goes first so the other ranks hit its caches."""
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    result = None
    for turn in (True, False) if dist.world > 1 else (True,):
        if dist.main == turn:
            table, labels, datasets = load_datasets(cfg.data, cache_dir=cache_dir / "datasets", seed=cfg.train.seed)
            cache = build_cache(table["path"].tolist(), prep.image_size, cache_dir / "pixels",
                                workers=cfg.workers, progress=dist.main and cfg.train.progress, crop=prep.crop,
                                input=prep.input, make_input=cache_input)
            result = (table, labels, datasets, cache)
        _barrier(dist)
    table, labels, datasets, cache = result
    skipped = [{"path": p, "reason": r} for d in datasets for p, r in d.skipped]
    skipped += [{"path": p, "reason": r} for _, p, r in cache.errors]
    table = table.copy()
    table["cache_row"] = np.arange(len(table))
    if cache.errors:
        table = table.drop(index=[r for r, _, _ in cache.errors]).reset_index(drop=True)
        # The label space is kept as the datasets declared it: a class emptied by undecodable images
        # shows as n/a in the metrics (and the splitter warns) instead of silently vanishing.
    if table.empty:
        raise ValueError("no readable images left after skipping unreadable ones; see the warnings above")
    table["split"] = make_split(table, labels, seed=cfg.train.seed, fractions=cfg.split_fractions).to_numpy()
    check_no_leakage(table, table["split"])
    return table, labels, datasets, cache, skipped


def _dataset_card(cfg: RunConfig, table: pd.DataFrame, datasets, skipped, cache=None) -> DatasetCard:
    lungs = getattr(cache, "lungs", None)
    return DatasetCard(
        specs=list(cfg.data),
        sources=[{"kind": d.kind, "root": str(d.root), "description": d.description,
                  "n_images": int(len(d.table)), "n_skipped": len(d.skipped)} for d in datasets],
        n_images=int(len(table)),
        n_patients=int(table["patient_id"].nunique()),
        skipped=skipped,
        # lung inputs: how many films fell back to the fixed lung boxes (covidviz.anatomy.inputs)
        lung_input={} if lungs is None else
        lungs.summary(table["cache_row"].to_numpy(), dict(zip(table["cache_row"], table["path"]))),
    )


def _split_card(cfg: RunConfig, table: pd.DataFrame) -> SplitCard:
    return SplitCard(
        seed=cfg.train.seed, fractions=list(cfg.split_fractions), unit="patient",
        counts={s: int((table["split"] == s).sum()) for s in ("train", "val", "test")},
        patients={s: int(table.loc[table["split"] == s, "patient_id"].nunique()) for s in ("train", "val", "test")},
    )


def deconfounding(cfg: RunConfig, table: pd.DataFrame, labels: LabelSpace,
                  say: Callable[[str], None]) -> tuple[Deconfounding | None, AdversaryPlan | None]:
    """``--deconfound``'s manifest record and the adversary's targets for the training films (None, None
    when not asked for). Says what the adversary will tell apart, or why the flag is ignored (one source,
    or no class with two sources of ``MIN_FILMS`` training films)."""
    method = cfg.train.deconfound
    if method in (None, "", "none"):
        return None, None
    if method != "source":
        raise ValueError(f"--deconfound {method}: unknown method; choose none or source")
    train = table[table["split"] == "train"]
    plan, reason = plan_source_adversary(strata_of(train["labels"], labels), train["source"].fillna("").tolist())
    objective = cfg.train.deconfound_objective
    record = Deconfounding(method=method, strength=float(cfg.train.deconfound_strength), active=plan is not None,
                           min_films=MIN_FILMS, schedule="DANN ramp: strength * (2 / (1 + exp(-10 p)) - 1)",
                           objective=objective)
    if plan is None:
        record.message = f"--deconfound source ignored: {reason}."
        say(record.message)
        return record, None
    record.per_class = plan.counts
    how = "the features pushed to confuse it" if objective == "confusion" else "gradient reversal"
    record.message = (f"source adversary ({how}, peak strength "
                      f"{cfg.train.deconfound_strength:g}) inside " + "; ".join(
                          f"{k}: {' vs '.join(f'{s} ({n})' for s, n in v.items())}" for k, v in plan.counts.items()))
    say(f"--deconfound source: {record.message}")
    return record, plan


def starting_weights(cfg: RunConfig) -> dict:
    """Each backbone's ``--weights``, resolved once before any work (``pretrained.resolve_weights``): an
    experiment folder becomes its state, a state-dict file is read and recognised (ours, torchvision's
    or torchxrayvision's: ``txv:PATH``, mapped onto DenseNet121 and carrying its preprocessing), names
    (``none``, ``imagenet``, ``auto``) pass unchanged. Raises ``ValueError``/``FileNotFoundError`` with
    the fix (e.g. a torchxrayvision checkpoint for a backbone other than DenseNet121)."""
    return {arch: resolve_weights(runs.pretrained_state(cfg.weights, arch), arch, cfg.image_size)
            for arch in cfg.archs}


def run_experiment(cfg: RunConfig, say: Callable[[str], None] | None = None) -> Path | None:
    """Train every backbone of ``cfg`` on one split; return the published folder (rank 0).

    Progress lines and summaries go to ``say`` (the CLI passes ``print``); by default they are logged."""
    say = say or log.info
    dist = dist_info()
    device = pick_device(cfg.device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    for arch in cfg.archs:
        get_spec(arch)  # fail before any work on a typo
        cfg.stride_for(arch)  # ... or on a stride the backbone does not offer
    name = cfg.name or default_name(cfg.data)
    writer = None
    if dist.main:
        writer = runs.ExperimentWriter(cfg.out, name, resume=cfg.resume, overwrite=cfg.overwrite)
        if cfg.resume and writer.has_partial_manifest:
            saved = RunConfig.from_json(writer.read_info().config)
            saved.resume, saved.overwrite, saved.device = True, cfg.overwrite, cfg.device
            cfg = saved
            log.info("resuming experiment %s from %s", name, writer.workdir)
    if dist.world > 1:  # every rank must agree on the name (timestamped) and the resumed config
        shared = [name, cfg]
        torch.distributed.broadcast_object_list(shared, src=0)
        name, cfg = shared
    weights = starting_weights(cfg)
    # torchxrayvision weights bring their own contract (intensity scaling, centre crop): the cache, the
    # training, the analysis and the app (through the manifest) all use it.
    prep = replace(preprocessing_for(weights, cfg.image_size), input=cfg.input)
    table, labels, datasets, cache, skipped = _prepare_data(cfg, prep, dist)
    if writer is not None and cfg.resume and (writer.workdir / runs.IMAGES).exists():
        saved_split = writer.read_images()[["image_id", "split"]]
        merged = table.drop(columns="split").merge(saved_split, on="image_id", how="inner")
        if len(merged) != len(saved_split):
            # e.g. phantoms re-generated under new names after a code change: resuming would train
            # on a different (or an empty) split and overwrite the saved one.
            raise ValueError(f"cannot resume {name}: {len(saved_split) - len(merged)} of its {len(saved_split)} images "
                             "are no longer in the data; start afresh (without --resume)")
        table = merged
    deconf, adversary = deconfounding(cfg, table, labels, say if dist.main else (lambda _: None))
    if dist.main:
        manifest = ManifestInfo(
            status="training", created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            covidviz_version=covidviz.__version__, torch_version=torch.__version__,
            dataset=_dataset_card(cfg, table, datasets, skipped, cache), labels=labels,
            split=_split_card(cfg, table), preprocessing=prep, config=cfg.to_json(), deconfound=deconf,
        )
        if writer.has_partial_manifest:
            manifest.backbones = writer.read_info().backbones
        writer.write_manifest(manifest)
        writer.write_images(table.drop(columns="cache_row"))
        writer.write_thumbnails(np.asarray(cache.thumbs)[table["cache_row"].to_numpy()])

    rows = {s: table.index[table["split"] == s].to_numpy() for s in ("train", "val", "test")}
    cache_rows = table["cache_row"].to_numpy()
    onehot = labels.onehot(table["labels"])
    targets = labels.targets(table["labels"])
    for arch in cfg.archs:
        if runs.partial_backbone_done(cfg.out, name, arch):
            if dist.main:
                say(f"[{arch}] already finished in the partial run; skipping")
            continue
        torch.manual_seed(cfg.train.seed)
        model, init = build_model(arch, labels.num_classes, weights[arch], output_stride=cfg.stride_for(arch))
        init["weights"] = cfg.weights  # as the user typed it (a folder stays a folder)
        ckpt = runs.partial_checkpoint(cfg.out, name, arch)
        data = FitData(cache.pixels, prep, labels, cache_rows[rows["train"]], targets[rows["train"]],
                       cache_rows[rows["val"]], onehot[rows["val"]], adversary=adversary)
        res = fit(model, data, cfg.train, device, checkpoint=ckpt, dist=dist, desc=arch)
        if not dist.main:
            continue
        probs, feats = predict(model, Feed(cache.pixels, prep, device, cfg.train.batch_size * 2), cache_rows,
                               labels.task, progress=cfg.train.progress, desc=f"[{arch}] embed all images")
        pred = pd.DataFrame(probs, columns=runs.prob_columns(labels))
        pred.insert(0, "image_id", table["image_id"].to_numpy())
        metrics = {s: _split_metrics(onehot[rows[s]], probs[rows[s]], labels) for s in ("val", "test")}
        writer.write_backbone(arch, model.state_dict(), pred, feats, res.history)
        manifest = writer.read_info()
        manifest.backbones[arch] = ManifestBackbone(
            arch, init=init, feature_dim=get_spec(arch).feature_dim, cam_layer=get_spec(arch).cam_layer,
            output_stride=model.output_stride, cam_grid=tuple(cam_grid(model, prep.image_size)),
            epochs_trained=res.epochs_trained, best_epoch=res.best_epoch, best_val_auc=res.best_val_auc,
            stopped_early=res.stopped_early, train_seconds=round(res.seconds, 1), device=str(device),
            metrics=metrics)
        writer.write_manifest(manifest)
        say(_summary_line(arch, metrics["test"], res))
    _barrier(dist)
    if not dist.main:
        return None
    if cfg.analysis:
        from covidviz.analysis.experiment import analyse_experiment

        say("analysing: metrics with CIs, calibration, maps, SOM, CAM localisation ...")
        analyse_experiment(writer.workdir, seed=cfg.train.seed, projections=cfg.projections, say=say)
    final = writer.commit()
    say(f"experiment written to {final}")
    return final


def _split_metrics(onehot: np.ndarray, probs: np.ndarray, labels: LabelSpace) -> dict:
    per_class = auc_per_class(onehot, probs, labels.names)
    return {"auc": per_class, "macro_auc": macro_auc(per_class), "n": int(len(onehot))}


def _summary_line(arch: str, test: dict, res) -> str:
    macro = test["macro_auc"]
    parts = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in test["auc"].items())
    return (f"[{arch}] best epoch {res.best_epoch}/{res.epochs_trained}; test AUC macro "
            f"{macro:.3f} ({parts})" if macro is not None else f"[{arch}] test AUC n/a")
