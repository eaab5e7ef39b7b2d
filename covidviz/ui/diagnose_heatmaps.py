"""The Diagnose page's "Where the models look" section (widgets only): the map controls (layer, method,
class, opacity, colour scale, the lung outline), the film with its lung fields and one overlay per
backbone, each with its "evidence on the lungs" line. Texts, overlays and sentences:
``covidviz.views.diagnose``; the lung share: ``Diagnosis.lung_weight`` (``covidviz.cam.lungshare``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from covidviz.cam import DEFAULT_COLORMAP, LAYER_NAMES, METHOD_HELP, METHOD_NAMES, OVERLAY_ALPHA, layer_names, offered_methods
from covidviz.cam.lungshare import LungWeight
from covidviz.ui.diagnose_cache import heat_cache
from covidviz.ui.state import scoped
from covidviz.views import diagnose as view
from covidviz.views.style import arch_label


@dataclass
class ShownMaps:
    """What the section showed, for the what-ifs and the case report: per backbone the [0, 1] map drawn
    (None: no evidence), the class it explains, its ``CamResult`` and its lung weight (absent: no map
    drawn; None: no reliable lung fields); the method, layer and opacity; the film as the model sees it
    and the lung mask outlined on it (None: outline off or no reliable fields)."""

    heats: dict = field(default_factory=dict)
    explained: dict = field(default_factory=dict)
    cams: dict = field(default_factory=dict)
    lung_weights: dict[str, LungWeight | None] = field(default_factory=dict)
    method: str = "cam"
    layer: str = ""
    alpha: float = OVERLAY_ALPHA
    film: np.ndarray | None = None
    lungs: np.ndarray | None = None


def _controls(exp, predictor):
    names = list(exp.labels.names)
    c0, c1, c2 = st.columns(3)  # the three choices on one row, display settings under them: no truncated values
    c3, c4, c5 = st.columns([2, 3, 2])
    layers = layer_names(predictor.archs[0])
    layer = c0.selectbox("Layer", layers, format_func=LAYER_NAMES.get, key=scoped(exp, "diagnose_layer"), help=view.LAYER_HELP)
    offered = offered_methods(layer)
    method = c1.selectbox("Method", offered, format_func=METHOD_NAMES.get, key=scoped(exp, f"diagnose_method::{layer}"),
                          help="\n\n".join(f"**{METHOD_NAMES[m]}**: {METHOD_HELP[m]}" for m in offered))
    target = c2.selectbox("Explain class", [view.TOP_CLASS] + names, key=scoped(exp, "diagnose_target"))
    alpha = c3.slider("Opacity", 0.0, 1.0, OVERLAY_ALPHA, 0.05, key=scoped(exp, "diagnose_alpha"))
    scale_mode = c4.radio("Colour scale", view.SCALE_MODES, key=scoped(exp, "diagnose_scale"), help=view.SCALE_HELP)
    outline = c5.toggle(view.LUNG_TOGGLE, value=True, key=scoped(exp, "diagnose_lungs"), help=view.LUNG_TOGGLE_HELP)
    return layer, method, view.target_class(target, names), alpha, scale_mode, outline


def heatmaps_section(exp, predictor, diag, film) -> ShownMaps:
    """The controls, the film with its lung outline and one overlay per backbone with its lung line. A map
    with no evidence for its class is said so, not drawn."""
    st.subheader("Where the models look")
    layer, method, cls, alpha, scale_mode, outline = _controls(exp, predictor)
    prep, names = predictor.prep, list(exp.labels.names)
    shown = ShownMaps(method=method, layer=layer, alpha=alpha, film=view.as_model_sees(film, prep))
    if outline and diag.lung_mask is not None:
        shown.lungs = view.as_model_sees(diag.lungs.mask, prep)
    cols = st.columns(1 + len(diag.backbones))
    cols[0].markdown("#### Film")
    cols[0].image(view.film_image(shown.film, shown.lungs), caption=view.lungs_caption(diag.lungs, diag.lung_mask, outline),
                  width="stretch")
    cache = heat_cache()
    for col, arch in zip(cols[1:], diag.backbones):
        shown.cams[arch] = cam = view.explained_map(predictor, diag, arch, method, cls, cache, layer)
        shown.explained[arch] = names[int(cam.class_idx[0])]
        col.markdown(f"#### {arch_label(arch)}")
        caption = view.heat_caption(method, shown.explained[arch], cam.grid, prep.image_size)
        if cam.no_evidence(0):
            shown.heats[arch] = None
            col.image(view.film_image(shown.film, shown.lungs), caption=caption, width="stretch")
            col.info(view.no_evidence_text(shown.explained[arch]), icon=":material/block:")
            continue
        scale = predictor.fixed_scale(arch, method, layer) if scale_mode == view.SCALE_MODES[1] else None
        shown.heats[arch] = view.heat_for_display(cam, scale)
        shown.lung_weights[arch] = weight = diag.lung_weight(cam.raw[0])
        png = view.overlay_png(shown.film, shown.heats[arch], alpha, DEFAULT_COLORMAP, shown.lungs)
        col.image(png, caption=caption, width="stretch")
        col.markdown(view.lung_text(weight, diag.lungs))
        col.download_button("Download overlay (PNG)", png, file_name=f"{arch}-{method}-{shown.explained[arch]}.png",
                            mime="image/png", key=scoped(exp, f"diagnose_dl_{arch}"), icon=":material/download:")
    st.caption(view.HEAT_NOTE + " " + view.LUNG_NOTE)
    return shown
