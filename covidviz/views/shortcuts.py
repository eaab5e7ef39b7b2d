"""The Compare page's shortcut sections, without Streamlit: "Evidence on the lungs" (per backbone and
class, the share of the heat map's weight on the lung fields beside chance and the pointing game, with a
one-sentence reading) and the shortcut audit (per backbone a class x condition table of test AUCs with
their CIs and the change from the original films, the verdict sentences, and what to run when the
experiment has not been audited). The numbers come from ``covidviz.analysis.lungs`` and
``covidviz.analysis.shortcuts``; audits written before the lung conditions render without them."""

from __future__ import annotations

import pandas as pd

from covidviz.runs.lungs import LungCell, LungShares
from covidviz.runs.records import Shortcuts
from covidviz.views import glossary
from covidviz.views.compare import chance_mark
from covidviz.views.style import arch_label, signed_change

TITLE = "Shortcut audit: does the score need the lungs?"
NOT_AUDITED = ("Not audited yet. `python train.py analyze {path} --shortcuts` scores every test image with its borders, "
               "its centre, its lung fields (or everything but them), the heat map's hottest 10 % and a random 10 % "
               "hidden, and stores the test AUCs here with their confidence intervals.")
NO_VERDICT = ("No warning sign: for every class with enough signal (AUC ≥ 0.65) the AUC falls when the lungs (or the "
              "centre, in an older audit) are hidden, and the borders carry no more than chance.")


def _lung_caption(audit: Shortcuts) -> str:
    """What the lung conditions hid and on how many films ('' for an audit without them)."""
    lungs = (getattr(audit, "raw", None) or {}).get("lungs") or {}
    if not any(c in ("lungs_hidden", "lungs_only") for c in audit.conditions):
        return (" The lung conditions are left out: no film had usable lung fields." if lungs else "")
    n_out = int(lungs.get("n_skipped") or 0)
    text = (f" Lungs hidden / only the lungs kept: the film's own lung fields (from the "
            f"{lungs.get('source') or 'covidviz segmenter'}) hidden, or everything but them, on "
            f"{lungs.get('n_images', audit.n_images)} films")
    if n_out:
        text += (f" ({n_out} left out: their lung segmentation is too uncertain; the change is to the original AUC "
                 "on the same films)")
    return text + "."


def caption(audit: Shortcuts) -> str:
    s = audit.settings
    return (f"Test ROC AUC [95 % CI, bootstrap over patients] on {audit.n_images} {audit.split} images "
            f"({audit.n_patients} patients) with parts of every film hidden, filled with the film's own blurred "
            f"background: the outer {100 * (s.get('border') or 0):.0f} % strip (borders), a central box of "
            f"{100 * (s.get('centre') or 0):.0f} % of each side (centre), each model's hottest "
            f"{100 * (s.get('fraction') or 0):.0f} % of its CAM, or the same area at random."
            f"{_lung_caption(audit)} In brackets after each AUC: the change from the original films. "
            f"See {glossary.link('Shortcut audit')}.")


def _cell(c: dict, original: bool) -> str:
    if c.get("auc") is None:
        return "—"
    text = f"{c['auc']:.2f}"
    if c.get("ci_low") is not None:
        text += f" [{c['ci_low']:.2f}–{c['ci_high']:.2f}]"
    if not original and c.get("diff") is not None:
        text += f" ({signed_change(c['diff'])})"
    return text + chance_mark(c["auc"])


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


# ------------------------------------------------------------------------- evidence on the lungs

LUNGS_TITLE = "Evidence on the lungs"
LUNGS_NOT_ANALYSED = ("No lung-weight analysis stored for this experiment yet: `python train.py analyze {path}` "
                      "measures how much of each class's heat map lies on the lung fields of the test films.")
LUNGS_NONE = "No test film had lung fields usable for this analysis (every segmentation was too uncertain)."


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def _share(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return "—"
    return _pct(value) + ("" if lo is None else f" [{100 * lo:.0f}–{100 * hi:.0f} %]")


def lungs_caption(shares: dict[str, LungShares], site: str | None = None) -> str:
    """What the table measures, on which films, and where the lung fields came from."""
    first = next(iter(shares.values()))
    where = f"{first.n_images} films of {site}" if site else f"{first.n_images} {first.split} films"
    left = first.n_low_quality + first.n_no_mask
    text = (f"Share of each class's heat map (CAM) weight that lies inside the lung fields, averaged over {where} "
            f"({first.n_patients} patients): the map of every class on every film, whichever its label, so it says "
            "where the evidence for that class comes from; 95 % CI from a bootstrap over patients. Chance: the "
            "lungs' share of the model input (what a map spread evenly would put there, and the chance that a "
            f"random peak lands on them). Peak on the lungs: the pointing game. Lung fields: {first.source}")
    if len(first.sources) > 1:
        text += " (" + ", ".join(f"{n} films from the {src}" for src, n in first.sources.items()) + ")"
    if left:
        text += f"; {left} films left out, their lung segmentation too uncertain"
    return text + f". See {glossary.link('Evidence on the lungs')}."


def lungs_table(shares: dict[str, LungShares], names) -> pd.DataFrame:
    """One row per backbone x class: weight on the lungs [CI], chance, peak on the lungs [CI], films."""
    rows = []
    for arch, rec in shares.items():
        for cls in names:
            c = rec.cell(cls)
            rows.append({"Backbone": arch_label(arch), "Class": cls,
                         "Weight on the lungs": _share(c.share, c.ci_low, c.ci_high),
                         "Chance": _pct(c.chance),
                         "Peak on the lungs": _share(c.pointing, c.pointing_ci_low, c.pointing_ci_high),
                         "Films": str(c.n) + (f" ({c.n_flat} flat maps left out)" if c.n_flat else "")})
    return pd.DataFrame(rows)


def _above(c: LungCell) -> bool | None:
    """True: clearly more weight on the lungs than chance (CI above it); False: clearly not (CI at or
    below it); None: not measured."""
    if c.share is None or c.chance is None:
        return None
    low = c.ci_low if c.ci_low is not None else c.share
    return low > c.chance


def _who(pairs: list[tuple[str, str]], total: int) -> str:
    if len(pairs) > 4:
        return f"{len(pairs)} of the {total} maps"
    parts = [f"{arch_label(a)}'s map for {cls}" for a, cls in pairs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def lungs_reading(shares: dict[str, LungShares], names) -> str:
    """One sentence: which maps put more of their weight on the lungs than chance, and which do not."""
    above, not_above = [], []
    for arch, rec in shares.items():
        for cls in names:
            verdict = _above(rec.cell(cls))
            if verdict is not None:
                (above if verdict else not_above).append((arch, cls))
    if not above and not not_above:
        return LUNGS_NONE
    if not not_above:
        return ("Every map puts more of its weight on the lungs than a map spread evenly would (chance): "
                "the evidence comes mainly from the lung fields.")
    if not above:
        return ("No map puts more of its weight on the lungs than a map spread evenly would (chance): the evidence "
                "does not come mainly from the lung fields; check the shortcut audit below.")
    n = len(above) + len(not_above)
    return (f"More weight on the lungs than chance for {_who(above, n)}; not for {_who(not_above, n)}, whose "
            "evidence lies no more on the lungs than an evenly spread map's: check the shortcut audit below.")
