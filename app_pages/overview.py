"""Overview page: what this experiment is, what it was trained on, and how well each backbone did.

Sections: identity (name, dates, task, labels, image size, training configuration), initialisation
warnings, the dataset card (class x split, patients per split, source x class, skipped images),
the model card (per-backbone training record, test AUC per class as a table and a chart) and the
training curves. Runs under ``app.py`` or on its own (``streamlit run app_pages/overview.py``).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from covidviz import ui

CHART_FONT = dict(size=14)
WIDE_INDEX = {"_index": st.column_config.Column(width="medium")}  # long finding names, e.g. Pleural_Thickening
SMALL_TEST = 100  # below this many test images an AUC's 95% interval is typically wider than ±0.1


def identity(exp) -> None:
    m = exp.manifest
    st.title(f"Overview: {exp.name}")
    dates = [f"created {m['created']}" if m.get("created") else "",
             f"completed {m['completed']}" if m.get("completed") else "",
             f"covidviz {m['covidviz_version']}" if m.get("covidviz_version") else ""]
    st.caption(" · ".join(d.replace("T", " ") for d in dates if d) + f" · folder `{exp.path}`")
    images = ui.images_table(exp)
    cols = st.columns(5)
    cols[0].metric("Images", f"{len(images):,}")
    cols[1].metric("Patients", f"{images['patient_id'].nunique():,}")
    cols[2].metric("Classes", exp.labels.num_classes)
    cols[3].metric("Backbones", len(exp.backbones))
    cols[4].metric("Image size", f"{exp.preprocessing.image_size} px")
    st.markdown(f"**Task:** {ui.task_label(exp.labels)}  \n**Labels:** {', '.join(exp.labels.names)}")
    config_summary(m.get("config") or {}, m.get("dataset") or {})


def config_summary(config: dict, dataset: dict) -> None:
    # train.py nests the optimisation settings under "train"; accept them flat as well.
    flat = {**config, **(config.get("train") or {})}
    keys = [("epochs", "Epochs (max)"), ("batch_size", "Batch size"), ("lr", "Learning rate"),
            ("weight_decay", "Weight decay"), ("patience", "Early-stopping patience"),
            ("weights", "Initial weights asked for"), ("seed", "Seed")]
    parts = [f"{label}: **{flat[k]}**" for k, label in keys if flat.get(k) is not None]
    specs = ", ".join(f"`{s}`" for s in dataset.get("specs") or config.get("data") or [])
    if specs:
        parts.insert(0, f"Data: {specs}")
    st.markdown(" · ".join(parts))
    with st.expander("Full training configuration"):
        st.json(config, expanded=True)


def init_warnings(exp) -> None:
    """A backbone that fell back to random weights must be impossible to miss."""
    for arch in exp.backbones:
        warning = ((exp.backbone(arch).get("init") or {}).get("warning"))
        if warning:
            st.warning(f"**{ui.arch_label(arch)}:** {warning}", icon=":material/warning:")


def dataset_card(exp) -> None:
    st.header("Dataset")
    tables = ui.dataset_tables(exp)
    left, right = st.columns([3, 2])
    with left:
        multilabel = exp.labels.task == "multilabel"
        st.subheader("Positive findings per split" if multilabel else "Images per class and split")
        if multilabel:
            st.caption("An image can carry several findings, so the 'Images' row is not the column sum.")
        st.dataframe(tables["label_split"], width="stretch", height=ui.table_height(tables["label_split"]),
                     column_config=WIDE_INDEX)
    with right:
        st.subheader("Patients per split")
        st.dataframe(tables["patients"], width="stretch")
        leaked = tables["leaked_patients"]
        if leaked:
            st.error(f"{leaked} patient(s) have images in more than one split: test metrics are optimistic.")
        else:
            st.caption("Split by patient: no patient has images in more than one split.")
    st.subheader("Images per class and source")
    st.caption("A class drawn mostly from one source lets a model learn the source (scanner, hospital, "
               "text markers) instead of the disease: compare the rows before trusting the AUCs.")
    sources = tables["source_label"]
    if sources.shape[1] > 1:
        st.dataframe(sources, width="stretch", height=ui.table_height(sources), column_config=WIDE_INDEX)
    else:
        st.caption(f"All images come from one source ({', '.join(map(str, sources.columns)) or 'unknown'}), so "
                   "this experiment cannot show source confounding; it may still exist across datasets.")
    for note in ui.source_confounding(tables["source_label"]):
        st.warning(f"**Possible source confounding.** {note}", icon=":material/warning:")
    sources_and_skipped(exp.manifest.get("dataset") or {})


def sources_and_skipped(dataset: dict) -> None:
    sources = dataset.get("sources") or []
    if sources:
        with st.expander(f"Data sources ({len(sources)})"):
            st.dataframe(pd.DataFrame(sources), width="stretch", hide_index=True)
    skipped = dataset.get("skipped") or []
    st.markdown(f"**Skipped images:** {len(skipped)}" + ("" if skipped else " (every image could be read)"))
    if skipped:
        with st.expander(f"Skipped images ({len(skipped)}): paths and reasons"):
            st.dataframe(pd.DataFrame(skipped, columns=["path", "reason"]), width="stretch", hide_index=True)


def sample_images(exp) -> None:
    with st.expander("Example images per class (test split)"):
        for name, (rows, count) in ui.example_rows(exp, "test", per_label=8).items():
            st.markdown(f"**{name}** ({count} test images)")
            ui.show_thumbnails(exp, rows, width=88)


def model_card(exp) -> None:
    st.header("Models")
    record = training_record(exp)
    st.dataframe(record, width="stretch", height=ui.table_height(record))
    aucs = ui.auc_table(exp, "test")
    n_test = [((exp.backbone(a).get("metrics") or {}).get("test") or {}).get("n") for a in exp.backbones]
    st.subheader("Test AUC per class")
    st.caption(f"Area under the ROC curve on the held-out test images ({_n_text(n_test)}): how well the model "
               "ranks images with that class above images without it. 0.5 (dotted line) is chance, 1.0 is perfect. "
               "Blank: the class is absent from the test split, so its AUC is undefined.")
    known = [int(n) for n in n_test if n is not None]
    if known and min(known) < SMALL_TEST:
        st.warning(f"Only {min(known)} test images: these AUCs are very uncertain and may change a lot with "
                   "other patients. Use them to compare backbones on this split, not as expected accuracy.",
                   icon=":material/info:")
    left, right = st.columns([2, 3])
    left.dataframe(aucs.style.format("{:.3f}", na_rep="—"), width="stretch", height=ui.table_height(aucs),
                   column_config=WIDE_INDEX)
    right.plotly_chart(auc_chart(exp, aucs), width="stretch")


def _n_text(ns: list) -> str:
    known = sorted({int(n) for n in ns if n is not None})
    return f"n = {known[0]}" if len(known) == 1 else ("n = " + " / ".join(map(str, known)) if known else "n unknown")


def training_record(exp) -> pd.DataFrame:
    """One column per backbone, one row per fact: reads like a model card and fits any width."""
    record = {}
    for arch in exp.backbones:
        b = exp.backbone(arch)
        best_auc = b.get("best_val_auc")
        facts = {
            "Initial weights": _init_text(b.get("init") or {}),
            "Epochs trained": _text(b.get("epochs_trained")),
            "Best epoch (kept)": _text(b.get("best_epoch")),
            "Best validation AUC (macro)": "—" if best_auc is None else f"{float(best_auc):.3f}",
            "Training time": ui.format_seconds(b.get("train_seconds")),
            "Device": _text(b.get("device")),
            "Embedding size": _text(b.get("feature_dim")),
        }
        if "stopped_early" in b:
            facts["Stopped early"] = "yes" if b["stopped_early"] else "no"
        record[ui.arch_label(arch)] = facts
    # Strings throughout: one column mixes counts, times and names.
    return pd.DataFrame(record).fillna("—").rename_axis("Training")


def _text(value) -> str:
    return "—" if value is None else str(value)


def _init_text(init: dict) -> str:
    """Where the starting weights really came from ('source'), not only what was asked ('weights')."""
    asked, source = init.get("weights"), str(init.get("source") or init.get("weights") or "—")
    if source == "random":
        return "Random (no pretraining)" + ("" if asked in (None, "", "none") else f"; asked for '{asked}'")
    if source == "imagenet":
        return "ImageNet (pretrained)"
    for prefix, text in (("experiment:", "Earlier experiment "), ("file:", "File ")):
        if source.startswith(prefix):
            return text + source.removeprefix(prefix)
    return source


def auc_chart(exp, aucs: pd.DataFrame) -> go.Figure:
    """Horizontal grouped bars: class names stay readable however many findings there are."""
    colours = ui.backbone_colours(exp)
    fig = go.Figure()
    for backbone in aucs.columns:
        fig.add_bar(y=list(aucs.index), x=aucs[backbone], name=backbone, orientation="h",
                    marker_color=colours[backbone],
                    text=[f"{v:.2f}" if pd.notna(v) else "n/a" for v in aucs[backbone]], textposition="outside",
                    hovertemplate="%{y}<br>" + backbone + ": AUC %{x:.3f}<extra></extra>")
    # Unlabelled: a text annotation would sit on the bars; the caption explains the dotted line.
    fig.add_vline(x=0.5, line_dash="dot", line_color="#555")
    bar_px = 16 * len(aucs.columns) + 12
    fig.update_layout(barmode="group", xaxis=dict(title="Test AUC", range=[0, 1.12], tickvals=[i / 10 for i in range(11)]),
                      yaxis=dict(autorange="reversed", title=None), legend_title_text="Backbone",
                      font=CHART_FONT, height=max(280, 90 + bar_px * len(aucs)),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0), margin=dict(t=40, b=10, l=10, r=10))
    return fig


def render(exp) -> None:
    identity(exp)
    init_warnings(exp)
    dataset_card(exp)
    sample_images(exp)
    model_card(exp)
    ui.training_curves(exp)


experiment = ui.page_setup("Overview")
if experiment is None:
    ui.no_experiment_help()
else:
    render(experiment)
