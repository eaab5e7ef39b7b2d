#!/usr/bin/env python
"""Transfer gain: the same backbone trained two ways, compared on the same test images.

    python experiments/transfer_gain.py runs/covid3-from-nih14 runs/covid3 [--arch densenet121 resnet50]

Both experiments must hold the same test images (same data and seed give the same patient split); the
AUC difference (pretrained - scratch) per class gets DeLong's p-value and a paired patient-bootstrap
95% CI, from the same functions the analysis uses for backbone comparisons.
"""

from __future__ import annotations

import argparse
import sys

from covidviz import runs
from covidviz.stats.metrics import compare_backbones


def transfer_gain(pretrained: runs.Experiment, scratch: runs.Experiment, arch: str, n_boot: int = 1000) -> dict:
    a, b = pretrained.images(), scratch.images()
    test_a = a.index[a["split"] == "test"]
    common = a.loc[test_a, ["image_id"]].reset_index().merge(
        b[b["split"] == "test"][["image_id"]].reset_index(), on="image_id", suffixes=("_a", "_b"))
    if len(common) < len(test_a):
        raise ValueError(f"the experiments' test sets differ ({len(common)} of {len(test_a)} images shared); "
                         "train both on the same data with the same --seed")
    if pretrained.labels != scratch.labels:
        raise ValueError("the experiments have different label spaces")
    labels = pretrained.labels
    onehot = labels.onehot(a.loc[common["index_a"], "labels"])
    pa = pretrained.probabilities(arch)[common["index_a"].to_numpy()]
    pb = scratch.probabilities(arch)[common["index_b"].to_numpy()]
    return compare_backbones(onehot, pa, pb, list(labels.names), a.loc[common["index_a"], "patient_id"].to_numpy(),
                             n_boot=n_boot)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pretrained")
    ap.add_argument("scratch")
    ap.add_argument("--arch", nargs="+", default=None)
    args = ap.parse_args()
    pre, scr = runs.read_experiment(args.pretrained), runs.read_experiment(args.scratch)
    for arch in args.arch or [x for x in pre.backbones if x in scr.backbones]:
        res = transfer_gain(pre, scr, arch)
        n_test = res["per_class"][pre.labels.names[0]]["n"]
        print(f"{arch}: {pre.name} - {scr.name} (AUC gain from pretraining, same {n_test} test images)")
        for name, d in res["per_class"].items():
            if d.get("diff") is None:
                print(f"  {name:12s} n/a")
                continue
            print(f"  {name:12s} {d['auc_a']:.3f} vs {d['auc_b']:.3f}  gain {d['diff']:+.3f} "
                  f"bootstrap 95% CI [{d['boot_ci_low']:+.3f}, {d['boot_ci_high']:+.3f}]  DeLong p={d['p_value']:.3g}")
        m = res["macro"]
        if m["diff"] is not None:
            print(f"  {'macro':12s} {m['auc_a']:.3f} vs {m['auc_b']:.3f}  gain {m['diff']:+.3f} "
                  f"bootstrap 95% CI [{m['boot_ci_low']:+.3f}, {m['boot_ci_high']:+.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
