"""The training-curves figure (loss and validation AUC per epoch, the kept epoch marked), defined once
for the Overview and Compare pages. Streamlit-free."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from covidviz.views.style import CHART_FONT, arch_label, backbone_colours

CAPTION = ("Loss: lower is better; solid = training, dashed = validation. A validation loss that rises while "
           "the training loss falls means over-fitting. The kept model is the best-validation epoch (marked ◆).")


def history_frames(histories: dict[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """arch -> per-epoch frame, leaving out backbones without a recorded history."""
    frames = {a: pd.DataFrame(h or []) for a, h in histories.items()}
    return {a: f for a, f in frames.items() if not f.empty and "epoch" in f}


def training_curves_figure(frames: dict[str, pd.DataFrame], best_epochs: dict[str, int | None],
                           archs: list[str] | None = None) -> go.Figure:
    """Two panels: loss per epoch (training solid, validation dashed) and validation macro AUC per
    epoch with the kept (best-validation) epoch as a diamond. ``archs`` fixes the colours (the
    experiment's backbone order); by default the frames' order."""
    colours = backbone_colours(archs or list(frames))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss per epoch", "Validation AUC (macro) per epoch"))
    for arch, h in frames.items():
        name, colour = arch_label(arch), colours[arch_label(arch)]
        for col, dash, what in (("train_loss", "solid", "training"), ("val_loss", "dash", "validation")):
            if col in h:
                fig.add_scatter(x=h["epoch"], y=h[col], mode="lines+markers", name=f"{name}, {what} loss",
                                line=dict(color=colour, dash=dash), row=1, col=1)
        if "val_auc" in h:
            fig.add_scatter(x=h["epoch"], y=h["val_auc"], mode="lines+markers", name=f"{name}, validation AUC",
                            line=dict(color=colour), row=1, col=2)
            hit = h[h["epoch"] == best_epochs.get(arch)]
            if len(hit):
                fig.add_scatter(x=hit["epoch"], y=hit["val_auc"], mode="markers", showlegend=False, row=1, col=2,
                                marker=dict(symbol="diamond", size=14, color=colour, line=dict(color="white", width=1)),
                                hovertemplate=f"{name}: kept epoch %{{x}}, AUC %{{y:.3f}}<extra></extra>")
    longest = max((len(h) for h in frames.values()), default=0)
    fig.update_xaxes(title_text="Epoch", dtick=1 if longest <= 20 else None)  # whole epochs, not 0.5 ticks
    fig.update_yaxes(title_text="Loss", row=1, col=1)
    fig.update_yaxes(title_text="Validation AUC", row=1, col=2)
    fig.update_layout(font=CHART_FONT, height=420, margin=dict(t=60, b=10, l=10, r=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig
