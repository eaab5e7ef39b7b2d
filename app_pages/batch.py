"""Batch page: upload many chest X-rays (or ZIP archives of them) and score them all with every backbone.

Sections: the uploader and its limits; a progress bar while the models run; the table (one row per file,
sorted by name: its short name, the verdict's badge, per backbone the most likely class with its calibrated
probability, that class's call as it reads on Diagnose with the shortcut badge, and its heat map's share on
the lungs; flagged rows greyed with their calls withheld), why the flagged files were flagged, and the CSV
download (every number, the experiment's identity and thresholds, the unreadable files); the files that
could not be used; a heat-map contact sheet of the rows picked. Uploads stay in memory. Widget keys are
scoped to the experiment. Widgets and layout only: ``covidviz.batch`` scores, ``covidviz.views.batch`` shapes.
"""

from __future__ import annotations

import streamlit as st

from covidviz import ui
from covidviz.ui.batch_cache import batch_in_session
from covidviz.ui.state import scoped
from covidviz.views import batch as view


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
    else:
        if banner := view.weak_banner(exp, run):
            st.warning(banner, icon=":material/warning:")
        st.table(view.styled_table(run), hide_index=True, height=view.table_height(run))
        if found := view.shortcut_lines(run):
            st.markdown(view.SHORTCUT_TITLE + "  \n" + "  \n".join(found), help=view.SHORTCUT_HELP)
        if flagged := view.flagged_reasons(run):
            with st.expander(f"Why {len(flagged)} file(s) were flagged as unlike the training X-rays"):
                st.markdown("\n".join(f"- **{name}**: {why}" for name, why in flagged))
        st.caption(view.table_note(run))
    st.download_button("Download the table (CSV)", view.csv_bytes(run), file_name=view.file_name(exp.name, "predictions", "csv"),
                       mime="text/csv", key=scoped(exp, "batch_csv"), icon=":material/download:", on_click="ignore")


def bad_files(run: view.BatchRun) -> None:
    if not run.bad:
        return
    st.subheader("Files that could not be used")
    st.warning(view.bad_heading(run) + "; the others were scored. The CSV lists them with their error.",
               icon=":material/error:")
    st.table(view.styled_bad_table(run), hide_index=True)


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
    try:  # the models load (and warm up) as the page opens, so the first batch is scored at once
        ui.diagnose_predictor(exp)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights: say so, keep the app usable
        st.error(view.batch_error(exp.name, exc), icon=":material/error:")
        return
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
