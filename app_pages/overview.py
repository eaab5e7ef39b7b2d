"""Overview page: what this experiment is, what it was trained on, and how well each backbone did.

Sections: identity (name, dates, task, labels, image size, training configuration), initialisation
warnings (and a banner when a backbone's test macro AUC is below 0.7), the dataset card (class x split,
patients per split, source x class with the confounding warnings, skipped images), the model card
(per-backbone training record, the shortcut audit's verdict as badges, test AUC per class as a table and a
chart, the thumbnail-baseline sentence agreeing with the audit), the external test sets (``train.py
evaluate``: per-backbone AUC and drop from the internal test split) and the training curves. Widgets and
layout only: the content comes from ``covidviz.views.overview``. Runs under ``app.py`` or on its own
(``streamlit run app_pages/overview.py``).
"""

from __future__ import annotations

import streamlit as st

from covidviz import runs, ui
from covidviz.runs.records import ManifestInfo
from covidviz.ui import external as external_ui
from covidviz.ui import overview_remedies
from covidviz.views import external as external_view
from covidviz.views import overview as view
from covidviz.views import reliability
from covidviz.views.compare import below_chance_note
from covidviz.views.style import arch_label, table_height, task_label

WIDE_INDEX = {"_index": st.column_config.Column(width="medium")}  # long finding names, e.g. Pleural_Thickening


def identity(exp) -> None:
    st.title(f"Overview: {exp.name}")
    st.caption(view.identity_caption(exp))
    images = ui.images_table(exp)
    cols = st.columns(5)
    cols[0].metric("Images", f"{len(images):,}")
    cols[1].metric("Patients", f"{images['patient_id'].nunique():,}")
    cols[2].metric("Classes", exp.labels.num_classes)
    cols[3].metric("Backbones", len(exp.backbones))
    cols[4].metric("Image size", f"{exp.preprocessing.image_size} px")
    st.markdown(f"**Task:** {task_label(exp.labels)}  \n**Labels:** {', '.join(exp.labels.names)}")
    if note := view.phantom_note(exp):
        st.info(note, icon=":material/science:")
    info = ManifestInfo.from_json(exp.manifest)
    st.markdown(view.config_text(info))
    with st.expander("Full training configuration"):
        st.json(info.config, expanded=True)
    for warning in view.init_warnings(exp):  # a backbone that fell back to random weights must be impossible to miss
        st.warning(warning, icon=":material/warning:")
    if weak := reliability.low_auc_banner(reliability.macro_aucs(exp)):  # near-chance models: said before any number
        st.warning(weak, icon=":material/trending_down:")


def dataset_card(exp) -> None:
    st.header("Dataset")
    tables = ui.dataset_tables(exp)
    left, right = st.columns([3, 2])
    with left:
        multilabel = exp.labels.task == "multilabel"
        st.subheader("Positive findings per split" if multilabel else "Images per class and split")
        if multilabel:
            st.caption("An image can carry several findings, so the 'Images' row is not the column sum.")
        st.dataframe(tables["label_split"], width="stretch", height=table_height(tables["label_split"]),
                     column_config=WIDE_INDEX)
    with right:
        st.subheader("Patients per split")
        st.dataframe(tables["patients"], width="stretch")
        leaked = tables["leaked_patients"]
        if leaked:
            st.error(f"{leaked} patient(s) have images in more than one split: test metrics are optimistic.")
        else:
            st.caption("Split by patient: no patient has images in more than one split.")
    sources_and_confounding(exp, tables["source_label"])
    sources_and_skipped(ManifestInfo.from_json(exp.manifest))


def sources_and_confounding(exp, sources) -> None:
    st.subheader("Images per class and source")
    st.caption(view.SOURCES_NOTE)
    single = view.single_source_text(sources)
    if single:
        st.caption(single)
    else:
        st.dataframe(sources, width="stretch", height=table_height(sources), column_config=WIDE_INDEX)
    analysis = exp.analysis()
    warnings = view.confounding_warnings(analysis, sources)
    for warning in warnings:
        st.warning(warning, icon=":material/warning:")
    if analysis is not None and not warnings:
        st.caption(view.NO_CONFOUNDING)


def sources_and_skipped(info: ManifestInfo) -> None:
    sources = view.sources_table(info)
    if len(sources):
        with st.expander(f"Data sources ({len(sources)})"):
            st.table(sources.set_index(sources.columns[0]))  # a few rows; long descriptions wrap
    skipped = view.skipped_table(info)
    st.markdown(f"**Skipped images:** {len(skipped)}" + ("" if len(skipped) else " (every image could be read)"))
    if len(skipped):
        with st.expander(f"Skipped images ({len(skipped)}): paths and reasons"):
            st.dataframe(skipped, width="stretch", hide_index=True)


def sample_images(exp) -> None:
    with st.expander("Example images per class (test split)"):
        for name, (rows, count) in ui.example_rows(exp, "test", per_label=8).items():
            st.markdown(f"**{name}** ({count} test images)")
            ui.show_thumbnails(exp, rows, width=88)


def model_card(exp) -> None:
    st.header("Models")
    record = view.training_record(exp)
    st.dataframe(record, width="stretch", height=table_height(record))
    audit = ui.shortcut_audit(exp)
    badges = reliability.audit_badges(exp.backbones, audit)  # the audit's verdict on the model card, per backbone
    st.markdown("  \n".join(f"**{arch_label(a)}** {badge}" for a, badge in badges.items()), help=reliability.SHORTCUT_HELP)
    aucs = view.auc_table(exp, "test")
    n_test = view.n_test_images(exp)
    st.subheader("Test AUC per class")
    st.caption(view.auc_caption(n_test))
    small = view.small_test_warning(n_test)
    if small:
        st.warning(small, icon=":material/info:")
    shown = view.auc_display(aucs)
    spec = view.auc_columns(shown)  # beside the chart when the table fits its column, else above it
    left, right = st.columns(spec) if spec else (st.container(), st.container())
    left.table(shown)
    if note := below_chance_note(shown):
        left.caption(note)
    ui.plotly_chart(view.auc_chart(aucs, exp.backbones), where=right, width="stretch")
    try:
        analysis = ui.compare_analysis(exp)
    except runs.RunFormatError:  # the dataset card already says the analysis cannot be read
        analysis = None
    if sentence := view.baseline_sentence(exp, analysis, reliability.shortcut_findings(audit), audit is not None):
        st.markdown(sentence)


def external_sets(exp) -> None:
    """``train.py evaluate``'s sets: what each is, then one row per set and backbone (AUC and drop)."""
    st.header("External test sets")
    sets, problems = external_ui.external_sets(exp)
    if text := external_view.problems_text(problems):
        st.warning(text, icon=":material/warning:")
    if not sets:
        st.caption(external_view.NO_SETS)
        return
    st.caption(external_view.OVERVIEW_CAPTION)
    st.markdown(view.external_sets_text(sets))
    table = view.external_table(sets, list(exp.backbones))
    st.dataframe(table, width="stretch", hide_index=True, height=table_height(table))


def render(exp) -> None:
    identity(exp)
    dataset_card(exp)
    sample_images(exp)
    model_card(exp)
    overview_remedies.section(exp)
    external_sets(exp)
    ui.training_curves(exp)


ui.run_page("Overview", render)
