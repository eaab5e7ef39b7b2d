"""The Compare page's shortcut-audit section, without Streamlit: per backbone a class x condition table
of test AUCs with their CIs (and the change from the original films), the verdict sentences, and what
to run when the experiment has not been audited. The audit itself is ``covidviz.analysis.shortcuts``."""

from __future__ import annotations

import pandas as pd

from covidviz.runs.records import Shortcuts
from covidviz.views import glossary
from covidviz.views.style import signed_change

TITLE = "Shortcut audit: does the score need the lungs?"
NOT_AUDITED = ("Not audited yet. `python train.py analyze {path} --shortcuts` scores every test image with its borders, "
               "its centre (the lung fields), the heat map's hottest 10 % and a random 10 % hidden, and stores the "
               "test AUCs here with their confidence intervals.")
NO_VERDICT = ("No warning sign: for every class with enough signal (AUC ≥ 0.65) the AUC falls when the centre is hidden, "
              "and the borders carry no more than chance.")


def caption(audit: Shortcuts) -> str:
    s = audit.settings
    return (f"Test ROC AUC [95 % CI, bootstrap over patients] on {audit.n_images} {audit.split} images "
            f"({audit.n_patients} patients) with parts of every film hidden, filled with the film's own blurred "
            f"background: the outer {100 * (s.get('border') or 0):.0f} % strip (borders), a central box of "
            f"{100 * (s.get('centre') or 0):.0f} % of each side (centre), each model's hottest "
            f"{100 * (s.get('fraction') or 0):.0f} % of its CAM, or the same area at random. In brackets after "
            f"each AUC: the change from the original films. See {glossary.link('Shortcut audit')}.")


def _cell(c: dict, original: bool) -> str:
    if c.get("auc") is None:
        return "—"
    text = f"{c['auc']:.2f}"
    if c.get("ci_low") is not None:
        text += f" [{c['ci_low']:.2f}–{c['ci_high']:.2f}]"
    if not original and c.get("diff") is not None:
        text += f" ({signed_change(c['diff'])})"
    return text


def audit_table(audit: Shortcuts, arch: str) -> pd.DataFrame:
    """Rows: each class then "Macro average"; columns: n positives and one per condition (its label)."""
    rows = []
    for cls in [*audit.names, "macro"]:
        row = {"Class": "Macro average" if cls == "macro" else cls,
               "Positives": "" if cls == "macro" else str(audit.n_pos(arch, cls) or 0)}
        for cond in audit.conditions:
            row[audit.condition_label(cond).capitalize()] = _cell(audit.cell(arch, cls, cond), cond == "original")
        rows.append(row)
    return pd.DataFrame(rows)
