"""The remedies' comparison table (issue 23) as Markdown: the experiments given (the same test films),
one row per experiment and backbone plus the thumbnail baseline, then the plain reading. The lung input
reported as ``covid3-lungs`` is the one with the better mean validation AUC of its backbones (picked on
validation, never on the test split). The Overview of each experiment shows the same table
(``covidviz.views.remedies``).

    python experiments/remedies.py runs/covid3 runs/covid3-lung-crop runs/covid3-lung-mask runs/covid3-deconf \
        --out docs/remedies.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from covidviz.runs import read_experiment
from covidviz.views import remedies


def best_lung_input(experiments) -> tuple[object | None, str]:
    """The lung-input experiment with the best mean validation AUC, and the sentence saying so."""
    lungs = [e for e in experiments if getattr(e.preprocessing, "input", "full") not in (None, "full")]
    if not lungs:
        return None, ""
    def val(e):
        v = [e.record(a).best_val_auc for a in e.backbones if e.record(a).best_val_auc is not None]
        return float(np.mean(v)) if v else -1.0
    best = max(lungs, key=val)
    said = ", ".join(f"{e.name} {val(e):.3f}" for e in lungs)
    return best, f"covid3-lungs = **{best.name}** (mean validation AUC of its backbones: {said})."


def markdown_table(df) -> str:
    """A pipe table (written here: pandas' to_markdown needs tabulate, a dependency for one call)."""
    cells = [[str(c) for c in df.columns], *[[str(v).replace("|", "\\|") for v in row] for row in df.to_numpy()]]
    out = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in cells[1:]])


def markdown(experiments) -> str:
    df = remedies.table(experiments)
    best, picked = best_lung_input(experiments)
    lines = ["# Remedies for the source shortcut, side by side", "",
             "Made by `make -f experiments/Makefile remedies` (`experiments/remedies.py`); the Overview shows the "
             "same table. Same test films for every row; AUCs with patient-bootstrap 95 % CIs. *Within-source AUC*: "
             "two classes compared inside one source only (disease signal the source cannot explain). *Source probe*: "
             "how well a linear classifier on the test features tells the sources apart inside one class "
             "(cross-validated AUC; lower = the model knows less about the hospital). *Lung-weight share*: mean share "
             "of the CAM weight inside the lung fields over the classes (range over classes), beside the lungs' own "
             "share of the input. Audit: test macro AUC with the region hidden.", ""]
    if picked:
        lines += [picked, ""]
    lines.append(markdown_table(df))
    lines += ["", "## Reading", ""] + [f"- {s}" for s in remedies.reading(experiments)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    args = ap.parse_args(argv)
    experiments = []
    for path in args.runs:
        try:
            experiments.append(read_experiment(path))
        except (FileNotFoundError, ValueError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
    if len(experiments) < remedies.MIN_SIBLINGS:
        print("need at least two readable experiments", file=sys.stderr)
        return 2
    text = markdown(experiments)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
