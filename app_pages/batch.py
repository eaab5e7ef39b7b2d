"""Batch page: upload many chest X-rays (or ZIP archives of them) and score them all with every backbone.

Sections: the uploader and its limits; a progress bar while the models run; a sortable table (one row per
file: each backbone's probabilities, most likely class, positive calls at the validation operating point and
share of its heat map on the lungs, the out-of-distribution verdict and why) with a CSV download; the files
that could not be used; a heat-map contact sheet of the rows picked. Uploads stay in memory. Widget keys are
scoped to the experiment. Widgets and layout only: ``covidviz.batch`` scores, ``covidviz.views.batch`` shapes.
"""

from __future__ import annotations

import streamlit as st

from covidviz import ui
from covidviz.ui.batch_cache import batch_in_session
from covidviz.ui.state import scoped
from covidviz.views import batch as view
from covidviz.views.style import table_height


def pick_files(exp) -> list:
    """The uploader, under its limits; returns the uploads (empty: nothing to score, or refused)."""
    uploads = st.file_uploader(view.UPLOAD_LABEL, type=None, accept_multiple_files=True, help=view.UPLOAD_HELP,
                               key=scoped(exp, "batch_upload"))
    st.caption(view.limits_text(st.get_option("server.maxUploadSize")))
    if not uploads:
        st.info(view.UPLOAD_PROMPT, icon=":material/upload:")
        return []
    if problem := view.upload_problem([f.size for f in uploads]):
        st.error(problem, icon=":material/block:")
        return []
    return uploads


def results_table(exp, run: view.BatchRun) -> None:
    st.subheader("Predictions")
    st.markdown(view.summary(run))
    if not run.rows:
        st.warning("No file could be scored.", icon=":material/warning:")
        return
    table = view.display_table(run)
    config = {c: st.column_config.NumberColumn(c, format="%.3f", help="Calibrated probability")
              for c in view.probability_columns(run)}
    config.update({c: st.column_config.NumberColumn(c, format=view.PERCENT_FORMAT, help=view.LUNG_HELP)
                   for c in view.lung_columns(run)})
    config[view.FILE_COLUMN] = st.column_config.TextColumn(view.FILE_COLUMN, pinned=True, help=view.FILE_HELP)
    config[view.REASON_COLUMN] = st.column_config.TextColumn(view.REASON_COLUMN, width="large")
    st.dataframe(table, hide_index=True, width="stretch", height=table_height(table, 15), column_config=config,
                 key=scoped(exp, "batch_table"))
    st.caption(view.TABLE_NOTE.format(cli=view.CLI_COMMAND))
    st.download_button("Download the table (CSV)", view.csv_bytes(run), file_name=view.file_name(exp.name, "predictions", "csv"),
                       mime="text/csv", key=scoped(exp, "batch_csv"), icon=":material/download:", on_click="ignore")


def bad_files(run: view.BatchRun) -> None:
    if not run.bad:
        return
    st.subheader("Files that could not be used")
    st.warning(view.bad_heading(run) + "; the others were scored.", icon=":material/error:")
    bad = view.bad_table(run)
    st.dataframe(bad, hide_index=True, width="stretch", height=table_height(bad, 10),
                 column_config={"Problem": st.column_config.TextColumn("Problem", width="large")})


def contact_sheet(exp, run: view.BatchRun) -> None:
    if not run.rows:
        return
    st.subheader("Heat-map contact sheet")
    labels = view.file_labels(run)
    chosen = st.multiselect("Files on the sheet", list(range(len(run.rows))), default=view.default_sheet(run),
                            format_func=labels.__getitem__, max_selections=view.SHEET_MAX,
                            key=scoped(exp, "batch_sheet"), help=view.SHEET_HELP.format(n=view.SHEET_MAX))
    png = view.sheet_png(run, chosen)
    if png is None:
        st.info("Pick files above to draw their heat maps.", icon=":material/grid_view:")
        return
    st.download_button("Download the contact sheet (PNG)", png, file_name=view.file_name(exp.name, "heatmaps", "png"),
                       mime="image/png", key=scoped(exp, "batch_sheet_png"), icon=":material/download:",
                       on_click="ignore")
    st.image(png, caption=view.SHEET_CAPTION)


def render(exp) -> None:
    st.title(f"Batch: {exp.name}")
    st.caption(view.INTRO)
    uploads = pick_files(exp)
    if not uploads:
        return
    try:
        run = batch_in_session(exp, uploads)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights: say so, keep the app usable
        st.error(view.batch_error(exp.name, exc), icon=":material/error:")
        return
    results_table(exp, run)
    bad_files(run)
    contact_sheet(exp, run)


ui.run_page("Batch", render)
