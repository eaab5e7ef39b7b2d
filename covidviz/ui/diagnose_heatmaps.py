"""The Diagnose page's heat maps (widgets only): the map controls (layer, method, class, opacity, colour
scale, the lung outline) in the "Heat maps" section, the maps computed once per run (``compute_maps``)
for the reading at the top (``covidviz.ui.diagnose_reading`` draws the film and one overlay per
backbone), and in the section each map's "evidence on the lungs" line and its download. Maps shown at
the user's request (an out-of-distribution image) are stamped "shown at your request — not a call".
Texts, overlays and sentences: ``covidviz.views.diagnose``; the lung share: ``Diagnosis.lung_weight``
(``covidviz.cam.lungshare``)."""

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
class HeatSettings:
    """The section's choices: layer, method, class (None: each model's top class), opacity, scale, outline."""

    layer: str = ""
    method: str = "cam"
    cls: int | None = None
    alpha: float = OVERLAY_ALPHA
    scale_mode: str = view.SCALE_MODES[0]
    outline: bool = True


@dataclass
class ShownMaps:
    """What the page shows, for the reading, the what-ifs and the case report: per backbone the [0, 1]
    map drawn (None: no evidence), the class it explains, its ``CamResult``, its lung weight (absent: no
    map drawn; None: no reliable lung fields), its overlay PNG; the method, layer and
    opacity; the film as the model sees it and the lung mask outlined on it (None: outline off or no
    reliable fields); ``greyed``: shown at the user's request (an OOD image), every map stamped so."""

    heats: dict = field(default_factory=dict)
    explained: dict = field(default_factory=dict)
    cams: dict = field(default_factory=dict)
    lung_weights: dict[str, LungWeight | None] = field(default_factory=dict)
    pngs: dict[str, bytes] = field(default_factory=dict)
    method: str = "cam"
    layer: str = ""
    alpha: float = OVERLAY_ALPHA
    film: np.ndarray | None = None
    lungs: np.ndarray | None = None
    outline: bool = True
    greyed: bool = False


def heat_controls(exp, predictor) -> HeatSettings:
    """The map controls: the three choices on one row, display settings under them (no truncated values)."""
    names = list(exp.labels.names)
    c0, c1, c2 = st.columns(3)
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
    return HeatSettings(layer, method, view.target_class(target, names), alpha, scale_mode, outline)


def film_only(predictor, diag, film, settings: HeatSettings | None = None) -> ShownMaps:
    """The film as the model sees it, with its lung outline (unless switched off), and no map: what the
    reading and the report show when the calls are withheld."""
    settings = settings or HeatSettings()
    shown = ShownMaps(method=settings.method, layer=settings.layer, alpha=settings.alpha, outline=settings.outline,
                      film=view.as_model_sees(film, predictor.prep, diag.input))
    if settings.outline and diag.lung_mask is not None:
        shown.lungs = view.as_model_sees(diag.lungs.mask, predictor.prep, diag.input)
    return shown


def compute_maps(exp, predictor, diag, film, settings: HeatSettings, greyed: bool = False) -> ShownMaps:
    """``film_only`` and each backbone's map for the chosen class, overlaid (PNG); a map
    with no evidence for its class is left undrawn. ``greyed``: shown at the user's request, stamped so."""
    names = list(exp.labels.names)
    shown = film_only(predictor, diag, film, settings)
    shown.greyed = greyed
    cache = heat_cache()
    for arch in diag.backbones:
        shown.cams[arch] = cam = view.explained_map(predictor, diag, arch, settings.method, settings.cls, cache,
                                                    settings.layer)
        shown.explained[arch] = names[int(cam.class_idx[0])]
        if cam.no_evidence(0):
            shown.heats[arch] = None
            continue
        scale = predictor.fixed_scale(arch, settings.method, settings.layer) if (
            settings.scale_mode == view.SCALE_MODES[1]) else None
        shown.heats[arch] = view.heat_for_display(cam, scale)
        shown.lung_weights[arch] = diag.lung_weight(cam.raw[0])
        rgb = view.overlay_image(shown.film, shown.heats[arch], settings.alpha, DEFAULT_COLORMAP, shown.lungs)
        shown.pngs[arch] = view.png_bytes(view.stamp(rgb) if greyed else rgb)
    return shown


def film_png(shown: ShownMaps) -> np.ndarray:
    """The film at display size with its lung outline (what the reading shows first)."""
    return view.film_image(shown.film, shown.lungs)


def heat_details(exp, diag, shown: ShownMaps, size: int) -> None:
    """Under the controls: what the film's outline is, and per backbone its map's caption (with its
    true resolution at the model's input ``size``), its "evidence on the lungs" line (or why no map is
    drawn) and the overlay's download."""
    st.caption(view.lungs_caption(diag.lungs, diag.lung_mask, shown.outline, diag.view))
    for col, arch in zip(st.columns(len(diag.backbones)), diag.backbones):
        with col:
            grid = shown.cams[arch].grid
            st.markdown(f"**{arch_label(arch)}** · {view.heat_caption(shown.method, shown.explained[arch], grid, size)}"
                        + (f" · :grey[{view.SHOWN_LABEL}]" if shown.greyed else ""))
            if shown.heats.get(arch) is None:
                st.info(view.no_evidence_text(shown.explained[arch]), icon=":material/block:")
                continue
            st.markdown(view.lung_text(shown.lung_weights.get(arch), diag.lungs, diag.view))
            st.download_button("Download overlay (PNG)", shown.pngs[arch],
                               file_name=f"{arch}-{shown.method}-{shown.explained[arch]}.png", mime="image/png",
                               key=scoped(exp, f"diagnose_dl_{arch}"), icon=":material/download:")
    st.caption(view.HEAT_NOTE + " " + view.LUNG_NOTE)
