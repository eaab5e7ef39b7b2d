"""Plotly figures of the "Compare backbones" page: ROC (with the operating points), precision-recall,
reliability before/after temperature scaling, and subgroup AUCs. Streamlit-free.

Every backbone keeps its colour (``colours``: display name -> colour, ``style.backbone_colours``) and
gets a second cue, a dash or a marker symbol, by its position in ``archs``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from covidviz.data.labels import MULTICLASS
from covidviz.runs.records import Analysis
from covidviz.views.compare import MACRO, pr_curves, reliability, roc_curves
from covidviz.views.compare_operating import threshold_text
from covidviz.views.style import CHART_FONT, DASHES, MARGIN, SYMBOLS, arch_label

CHANCE = dict(color="#888", dash="dot")
LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.18, x=0)


def line_style(arch: str, archs: list[str], colours: dict[str, str]) -> dict:
    """The backbone's colour and dash (by its position in ``archs``)."""
    return {"color": colours[arch_label(arch)], "dash": DASHES[archs.index(arch) % len(DASHES)]}


def symbol(arch: str, archs: list[str]) -> str:
    return SYMBOLS[archs.index(arch) % len(SYMBOLS)]


def roc_figure(analysis: Analysis, archs: list[str], cls: str, colours: dict[str, str],
               points: dict[str, dict] | None = None) -> go.Figure:
    """ROC curves of a class (or the macro average), AUC and CI in the legend, the chance diagonal, and
    each backbone's operating point (``points``: arch -> {"fpr", "tpr", "threshold"}) as a marker."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE, name="Chance (AUC 0.5)", hoverinfo="skip")
    for arch, c in roc_curves(analysis, archs, cls).items():
        if c["fpr"] is None:
            continue
        name = arch_label(arch)
        fig.add_scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=f"{name}: {c['text']}",
                        line=dict(width=2.5, **line_style(arch, archs, colours)),
                        hovertemplate="1 − specificity %{x:.3f}<br>sensitivity %{y:.3f}<extra>" + name + "</extra>")
    for arch, p in (points or {}).items():
        if p.get("fpr") is None:
            continue
        fig.add_scatter(x=[p["fpr"]], y=[p["tpr"]], mode="markers",
                        name=f"{arch_label(arch)} operating point, threshold {threshold_text(p)}",
                        marker=dict(size=15, symbol=symbol(arch, archs), color=colours[arch_label(arch)],
                                    line=dict(color="black", width=1.5)))
    title = "ROC, macro average over classes" if cls == MACRO else f"ROC: {cls} vs rest"
    fig.update_layout(title=title, font=CHART_FONT, height=520, margin=MARGIN, legend=LEGEND_BELOW,
                      xaxis=dict(title="1 − specificity (false-positive rate)", range=[-0.01, 1.01], constrain="domain"),
                      yaxis=dict(title="Sensitivity (true-positive rate)", range=[-0.01, 1.01], scaleanchor="x"))
    return fig


def pr_figure(analysis: Analysis, archs: list[str], cls: str, colours: dict[str, str]) -> go.Figure:
    """Precision-recall curves of one class, AP in the legend, the prevalence as the chance line."""
    fig = go.Figure()
    curves = pr_curves(analysis, archs, cls)
    prevalence = next((c["prevalence"] for c in curves.values() if c["prevalence"] is not None), None)
    if prevalence is not None:
        fig.add_scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", line=CHANCE,
                        name=f"Chance (prevalence {prevalence:.1%})", hoverinfo="skip")
    for arch, c in curves.items():
        if c["recall"] is None:
            continue
        name = arch_label(arch)
        ap = "n/a" if c["ap"] is None else f"{c['ap']:.3f}"
        fig.add_scatter(x=c["recall"], y=c["precision"], mode="lines", name=f"{name}: AP {ap}",
                        line=dict(width=2.5, shape="hv", **line_style(arch, archs, colours)),
                        hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<extra>" + name + "</extra>")
    fig.update_layout(title=f"Precision–recall: {cls}", font=CHART_FONT, height=520, margin=MARGIN, legend=LEGEND_BELOW,
                      xaxis=dict(title="Recall (sensitivity)", range=[-0.01, 1.01]),
                      yaxis=dict(title="Precision (PPV)", range=[-0.01, 1.05]))
    return fig


def reliability_figure(analysis: Analysis, archs: list[str], cls: str | None, colours: dict[str, str],
                       task: str = MULTICLASS) -> go.Figure:
    """Two panels, before and after temperature scaling: observed vs predicted per bin, marker size by
    the bin's count; ``cls`` (multi-label) for one class's bins, else the stored default."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Before (as trained)", "After temperature scaling"),
                        shared_yaxes=True, horizontal_spacing=0.06)
    for col, when in enumerate(("before", "after"), start=1):
        fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=CHANCE, row=1, col=col,
                        name="Perfect calibration", showlegend=col == 1, hoverinfo="skip")
        for arch in archs:
            bins = [b for b in reliability(analysis, arch, when, cls) if b["count"]]
            if not bins:
                continue
            name = arch_label(arch)
            counts = np.array([b["count"] for b in bins], float)
            fig.add_scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers",
                            row=1, col=col, name=name, showlegend=col == 1, legendgroup=arch,
                            line=dict(width=2, **line_style(arch, archs, colours)),
                            marker=dict(size=6 + 14 * np.sqrt(counts / counts.max()), color=colours[name],
                                        symbol=symbol(arch, archs)),
                            customdata=counts, hovertemplate="predicted %{x:.2f}<br>observed %{y:.2f}<br>"
                                                             "%{customdata:.0f} predictions<extra>" + name + "</extra>")
        fig.update_xaxes(title_text="Mean predicted probability", range=[0, 1], row=1, col=col)
    y_title = "Observed accuracy" if task == MULTICLASS else "Observed frequency of the finding"
    fig.update_yaxes(title_text=y_title, range=[0, 1.02], row=1, col=1)
    fig.update_layout(font=CHART_FONT, height=430, margin=dict(MARGIN, t=60),
                      legend=dict(LEGEND_BELOW, y=-0.2))
    return fig


def subgroup_figure(table: pd.DataFrame, archs: list[str], colours: dict[str, str], cls: str,
                    where: str = "Test") -> go.Figure:
    """Forest plot of ``compare.subgroup_table``: one row per subgroup, each backbone's AUC with its CI
    (offset within the row so equal AUCs never hide), a note on rows without any AUC; ``where``: the test
    set's name in the title ("Test", or an external set's)."""
    fig = go.Figure()
    ylabels = [f"{r['Attribute']}: {r['Group']} (n={r['Images']}, {r['Positives']} pos.)" for _, r in table.iterrows()]
    k = len(archs)
    for i, arch in enumerate(archs):
        n = arch_label(arch)
        if f"{n} AUC" not in table:
            continue
        auc, lo, hi = (table[f"{n} {c}"].to_numpy(float) for c in ("AUC", "CI low", "CI high"))
        y = (np.arange(len(table)) + (i - (k - 1) / 2) * 0.6 / max(k, 1)).tolist()
        fig.add_scatter(x=auc.tolist(), y=y, mode="markers", name=n, customdata=ylabels,
                        marker=dict(size=11, color=colours[n], symbol=SYMBOLS[i % len(SYMBOLS)]),
                        error_x=dict(type="data", symmetric=False, array=(hi - auc).tolist(),
                                     arrayminus=(auc - lo).tolist(), color=colours[n], thickness=2),
                        hovertemplate="%{customdata}<br>AUC %{x:.3f}<extra>" + n + "</extra>")
    cols = [f"{arch_label(a)} AUC" for a in archs if f"{arch_label(a)} AUC" in table]
    for i, (_, r) in enumerate(table.iterrows()):
        if cols and all(not np.isfinite(r[c]) for c in cols):
            fig.add_annotation(x=0.01, y=i, text=f"no AUC: {'no' if r['Positives'] == 0 else 'only'} {cls} images",
                               showarrow=False, xanchor="left", font=dict(size=12, color="#555"))
    fig.add_vline(x=0.5, line_dash="dot", line_color="#555")
    fig.update_layout(title=f"{where} AUC for {cls} per subgroup (95% CI)", font=CHART_FONT,
                      height=max(300, 130 + 40 * len(table)), margin=MARGIN,
                      xaxis=dict(title=f"{where} AUC (0.5 = chance; left of it: worse than chance)", range=[0, 1.04]),
                      yaxis=dict(title=None, tickvals=list(range(len(table))), ticktext=ylabels,
                                 range=[len(table) - 0.5, -0.5], showgrid=False),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    return fig
