#!/usr/bin/env python
"""Train chest X-ray backbones into one experiment that ``streamlit run app.py`` explores.

Examples::

    python train.py --demo                                   # phantoms, both backbones, < 5 min on CPU
    python train.py --data csv:../shared/data/covid3 --arch densenet121 resnet50 --epochs 10
    python train.py --data nih:/data/ChestX-ray14 --image-size 224 --weights imagenet
    python train.py --data csv:covid3 --data nih:nih14 --name merged15     # 15-class merge
    python train.py --resume --name merged15                 # continue after an interruption
    python train.py analyze runs/merged15                    # (re)compute the analysis in place
    python train.py evaluate runs/covid3 --data folder:/data/site-b --name site-b   # external test set
    python train.py predict runs/covid3 scans/ more.dcm --out preds.csv --heatmaps sheets/   # batch
    torchrun --nproc_per_node=2 train.py --data synthetic:600 --arch resnet50   # DDP

``main(argv)`` is importable so tests can call it; it returns a process exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from covidviz.data.adapters import KINDS
from covidviz.stats.projection import METHODS as PROJECTIONS

if TYPE_CHECKING:
    from covidviz.pipeline import RunConfig

DATA_KINDS = ", ".join(KINDS)


def build_parser() -> argparse.ArgumentParser:
    """The training command line; its defaults and their help are read from ``RunConfig``/``TrainConfig``
    (``--epochs`` & co. default to None so that ``--demo`` can tell a flag given from one left out)."""
    from covidviz.data.preprocess import INPUTS
    from covidviz.deconfound import METHODS as DECONFOUND_METHODS
    from covidviz.deconfound import OBJECTIVES as DECONFOUND_OBJECTIVES
    from covidviz.models import REGISTRY
    from covidviz.pipeline import DEMO_ARCHS, RunConfig  # noqa: F811 (the TYPE_CHECKING name, at run time)
    from covidviz.training import TrainConfig

    demo = RunConfig.demo()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", action="append", metavar="KIND:PATH",
                   help=f"dataset, repeatable to merge label spaces; kinds: {DATA_KINDS}; e.g. synthetic:600")
    p.add_argument("--arch", nargs="+", default=None, choices=sorted(REGISTRY), metavar="ARCH",
                   help=f"backbones trained on the same split (default {' '.join(DEMO_ARCHS)}; choices {', '.join(REGISTRY)})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"maximum epochs (early stopping may end sooner; default {TrainConfig.epochs}, "
                        f"the demo {demo.train.epochs})")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"square input size in pixels (default {RunConfig.image_size}, the demo {demo.image_size})")
    p.add_argument("--input", default=None, choices=INPUTS,
                   help="what the models see: full (the whole film), lung-crop (the lung fields' box with a margin, "
                        "squared) or lung-mask (only the lung fields, the rest filled with their blurred background); "
                        "lung inputs segment every film once into the cache and record it in the manifest "
                        f"(default {RunConfig.input})")
    p.add_argument("--output-stride", nargs="+", default=None, metavar="STRIDE",
                   help="input size / CAM grid size: 32 (torchvision's), 16 or 8 (finer heatmaps, more compute); "
                        "one value for every backbone or ARCH=STRIDE pairs (default: each backbone's, "
                        + ", ".join(f"{a} {s.default_output_stride}" for a, s in REGISTRY.items()) + ")")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default {TrainConfig.batch_size} (the demo {demo.train.batch_size})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {TrainConfig.lr:g} from scratch, {TrainConfig.pretrained_lr:g} "
                        f"pretrained; the demo {demo.train.lr:g})")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="epochs without validation-AUC gain before stopping (default %(default)s)")
    p.add_argument("--weights", default=RunConfig.weights,
                   help="imagenet | none | auto (ImageNet if it can be had, else random + warning) | PATH.pt | runs/EXPERIMENT | "
                        "txv:PATH (a torchxrayvision DenseNet121 checkpoint, with its preprocessing; --arch densenet121; "
                        "default %(default)s, the demo " + demo.weights + ")")
    p.add_argument("--out", default=RunConfig.out, help="folder holding experiments (default %(default)s/)")
    p.add_argument("--name", default=None,
                   help=f"experiment name (default: data kinds + timestamp; '{demo.name}' with --demo)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name (or the only one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing experiment of the same name at the end")
    p.add_argument("--demo", action="store_true", help="train the demo experiment on synthetic phantoms (< 5 min on 2 CPU cores)")
    p.add_argument("--device", default=RunConfig.device,
                   help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps (default %(default)s)")
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="split, init and augmentation (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes decoding images for the cache")
    p.add_argument("--cache-dir", default=None, help="preprocessing cache (default ~/.cache/covidviz or $COVIDVIZ_CACHE)")
    p.add_argument("--no-augment", action="store_true", help="disable random affine/contrast augmentation")
    p.add_argument("--deconfound", default=TrainConfig.deconfound, choices=DECONFOUND_METHODS,
                   help="source: train against an adversary that predicts each film's source (hospital) within its "
                        "class, so the features drop what tells hospitals apart but not the disease; ignored with a "
                        "message when the training data has one source (default %(default)s)")
    p.add_argument("--deconfound-strength", type=float, default=TrainConfig.deconfound_strength, metavar="LAMBDA",
                   help="peak weight of the deconfounding loss, reached by DANN's ramp (default %(default)s)")
    p.add_argument("--deconfound-objective", default=TrainConfig.deconfound_objective, choices=DECONFOUND_OBJECTIVES,
                   help="confusion: the features are pushed to make the adversary's answer uniform (bounded); "
                        "reverse: DANN's gradient reversal (default %(default)s; docs/training.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-analysis", action="store_true", help="skip the analysis step (run it later with `analyze`)")
    p.add_argument("--projections", nargs="+", default=None, choices=PROJECTIONS,
                   help="latent maps to fit in the analysis (default: " + " ".join(RunConfig.projections) + "; the demo: "
                        + " ".join(demo.projections) + ", since umap's first fit compiles for ~30 s)")
    return p


def build_analyze_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py analyze",
                                description="(Re)compute the analysis of an existing experiment in place.")
    p.add_argument("experiment", help="experiment folder, e.g. runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--projections", nargs="+", default=list(PROJECTIONS), choices=PROJECTIONS)
    p.add_argument("--no-localisation", action="store_true", help="skip CAM localisation scoring")
    p.add_argument("--shortcuts", action="store_true",
                   help="also run the shortcut audit (test AUCs with borders, centre or hottest 10%% hidden)")
    p.add_argument("--shortcut-images", type=int, default=200, help="test images the audit uses at most")
    return p


def analyze_main(argv: list[str]) -> int:
    args = build_analyze_parser().parse_args(argv)
    from covidviz.analysis.experiment import analyse_experiment
    from covidviz.runs import RunFormatError

    try:
        analyse_experiment(args.experiment, seed=args.seed, n_boot=args.n_boot, projections=tuple(args.projections),
                           localisation=not args.no_localisation, shortcuts=args.shortcuts,
                           max_shortcut_images=args.shortcut_images, say=print)
    except (RunFormatError, ValueError) as exc:
        print(f"train.py analyze: error: {exc}", file=sys.stderr)
        return 2
    return 0


def parse_output_stride(values: list[str] | None) -> int | dict[str, int] | None:
    """``["16"]`` -> 16; ``["densenet121=8", "resnet50=16"]`` -> a dict; None -> None (defaults)."""
    if not values:
        return None
    try:
        if len(values) == 1 and "=" not in values[0]:
            return int(values[0])
        pairs = [v.split("=", 1) for v in values]
        if any(len(p) != 2 for p in pairs):
            raise ValueError
        return {arch: int(stride) for arch, stride in pairs}
    except ValueError:
        raise SystemExit("train.py: --output-stride takes one stride (32, 16, 8) or ARCH=STRIDE pairs; "
                         f"got {' '.join(values)}") from None


def build_evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py evaluate",
                                description="Score a trained experiment on another dataset (an external test set) "
                                            "without retraining; stored inside the experiment.")
    p.add_argument("experiment", help="experiment folder, e.g. runs/covid3")
    p.add_argument("--data", action="append", required=True, metavar="KIND:PATH",
                   help=f"the external dataset (repeatable); kinds: {DATA_KINDS}")
    p.add_argument("--name", required=True, help="name of the external set, e.g. site-b (re-using a name replaces it)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cache-dir", default=None, help="preprocessing cache (default ~/.cache/covidviz or $COVIDVIZ_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def evaluate_main(argv: list[str]) -> int:
    args = build_evaluate_parser().parse_args(argv)
    from covidviz.analysis.external import evaluate_external, format_external
    from covidviz.data.imageio import ImageDecodeError
    from covidviz.runs import RunFormatError

    try:
        metrics = evaluate_external(args.experiment, args.data, args.name, cache_dir=args.cache_dir, n_boot=args.n_boot,
                                    seed=args.seed, batch_size=args.batch_size, progress=not args.quiet)
    except (RunFormatError, FileNotFoundError, ValueError, ImageDecodeError) as exc:
        print(f"train.py evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(format_external(metrics))
    return 0


def config_from_args(args) -> RunConfig:
    """The flags given, over ``RunConfig.demo()`` with ``--demo`` or ``RunConfig``'s defaults without."""
    from dataclasses import replace

    from covidviz.pipeline import RunConfig  # noqa: F811 (the TYPE_CHECKING name, at run time)
    from covidviz.training import TrainConfig

    base = RunConfig.demo() if args.demo else RunConfig(data=[])
    data = args.data or base.data
    stride = parse_output_stride(args.output_stride)
    if args.deconfound_strength < 0:
        raise SystemExit(f"train.py: --deconfound-strength must be >= 0; got {args.deconfound_strength:g}")
    if not data and not args.resume:
        raise SystemExit("train.py: give at least one --data KIND:PATH (kinds: " + DATA_KINDS + "), or --demo")
    weights = args.weights if args.weights != RunConfig.weights else base.weights
    scratch = weights in ("none", "auto")
    lr = args.lr if args.lr is not None else (base.train.lr if scratch else TrainConfig.pretrained_lr)
    train_cfg = replace(base.train, epochs=args.epochs or base.train.epochs,
                        batch_size=args.batch_size or base.train.batch_size, lr=lr, patience=args.patience,
                        seed=args.seed, augment=not args.no_augment, progress=not args.quiet,
                        deconfound=args.deconfound, deconfound_strength=args.deconfound_strength,
                        deconfound_objective=args.deconfound_objective)
    return replace(
        base, data=list(data), archs=args.arch or list(base.archs), out=args.out, name=args.name or base.name,
        image_size=args.image_size or base.image_size, input=args.input or base.input, weights=weights, device=args.device,
        output_stride=stride if stride is not None else base.output_stride,
        cache_dir=args.cache_dir, workers=args.workers, resume=args.resume, overwrite=args.overwrite,
        analysis=not args.no_analysis, projections=tuple(args.projections or base.projections), train=train_cfg)


def _only_partial(out: str) -> str | None:
    from pathlib import Path

    from covidviz.runs import PARTIAL

    partials = sorted((Path(out) / PARTIAL).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    return partials[-1].parent.name if partials else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["analyze"]:
        return analyze_main(argv[1:])
    if argv[:1] == ["evaluate"]:
        return evaluate_main(argv[1:])
    if argv[:1] == ["predict"]:
        from covidviz.predict import main as predict_main

        return predict_main(argv[1:])
    args = build_parser().parse_args(argv)
    from covidviz.data.imageio import ImageDecodeError
    from covidviz.data.splits import LeakageError
    from covidviz.models import WeightsUnavailable
    from covidviz.pipeline import default_name, run_experiment

    cfg = config_from_args(args)
    if cfg.resume and not cfg.name:
        cfg.name = _only_partial(cfg.out)
        if cfg.name is None:
            print(f"train.py: nothing to resume in {cfg.out}/.partial", file=sys.stderr)
            return 2
    cfg.name = cfg.name or default_name(cfg.data)
    try:
        run_experiment(cfg, say=print)
    except (FileNotFoundError, FileExistsError, ValueError, WeightsUnavailable, ImageDecodeError, LeakageError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: earlier experiments are untouched; continue with "
              f"`python train.py --resume --name {cfg.name or '<name>'}`", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
