"""Compare backbones: which backbone to trust, for which finding, at which threshold, and where they differ.

Sections, all driven by one class selector (a class or the macro average): ROC and precision-recall
curves (AUC with its 95% patient-bootstrap CI in the legend), the per-class table with paired DeLong
tests (CSV download), the operating point (validation presets or a free threshold, marked on the ROC;
confusion matrix, sensitivity/specificity/PPV/NPV, PPV/NPV at another prevalence), calibration
before/after temperature scaling, the disagreement gallery with both backbones' heatmaps, subgroup
AUCs with confounding warnings, and the training curves. Runs under ``app.py`` or on its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from covidviz import runs, ui
from covidviz.data.labels import MULTICLASS
from covidviz.views import compare

CHART_FONT = dict(size=14)
MARGIN = dict(t=50, b=10, l=10, r=10)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")  # second cue besides colour
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star")
GALLERY = 24


def label(arch: str) -> str:
    return ui.arch_label(arch)


def style(arch: str, archs: list[str], colours: dict) -> dict:
    i = archs.index(arch)
    return {"color": colours[label(arch)], "dash": DASHES[i % len(DASHES)]}


# ---------------------------------------------------------------- header

def header(exp, analysis: dict, archs: list[str]) -> tuple[str, tuple[str, str] | None]:
    st.title(f"Compare backbones: {exp.name}")
    meta = analysis.get("meta") or {}
    n = meta.get("n") or {}
    st.caption(f"Test split: {n.get('test', '?')} images from {meta.get('n_patients_test', '?')} patients · "
               f"{ui.task_label(exp.labels)} · 95% CIs from {meta.get('n_boot', '?')} patient-bootstrap resamples. "
               "Thresholds and temperatures were chosen on the validation split and judged on test.")
    warnings = compare.confounding_for(analysis)
    if warnings:
        st.warning(f"**{len(warnings)} confounding warning(s):** an attribute such as the image source predicts a "
                   "class, so part of any AUC may be shortcut learning. See *Subgroups* below.",
                   icon=":material/warning:")
    pair = None
    if len(archs) < 2:
        st.info(f"Only one backbone ({label(archs[0])}) in this experiment: comparison needs two. The curves, "
                "operating points and calibration below describe it alone. Train another backbone on the same "
                "split, e.g. `python train.py --data ... --arch densenet121 resnet50`.", icon=":material/info:")
    elif len(archs) > 2:
        pairs = [f"{a}|{b}" for i, a in enumerate(archs) for b in archs[i + 1:]]
        chosen = st.selectbox("Pair to compare", pairs, key="cmp_pair",
                              help="The table's differences and the disagreement gallery compare two backbones.",
                              format_func=lambda p: " vs ".join(label(x) for x in p.split("|")))
        pair = tuple(chosen.split("|"))
    else:
        pair = (archs[0], archs[1])
    options = list(exp.labels.names) + [compare.MACRO]
    cls = st.selectbox("Class", options, key="cmp_class",
                       help="Drives every section: curves, operating point, calibration, gallery, subgroups.")
    return cls, pair


# ---------------------------------------------------------------- ROC / PR

def roc_figure(analysis, archs, cls, colours, points: dict | None = None) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#888", dash="dot"), name="Chance (AUC 0.5)",
                    hoverinfo="skip")
    for arch, c in compare.roc_curves(analysis, archs, cls).items():
        if c["fpr"] is None:
            continue
        fig.add_scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=f"{label(arch)}: {c['text']}",
                        line=dict(width=2.5, **style(arch, archs, colours)),
                        hovertemplate="1 − specificity %{x:.3f}<br>sensitivity %{y:.3f}<extra>" + label(arch) + "</extra>")
    for i, (arch, p) in enumerate((points or {}).items()):
        if p.get("fpr") is None:
            continue
        fig.add_scatter(x=[p["fpr"]], y=[p["tpr"]], mode="markers", name=f"{label(arch)} operating point "
                        f"(threshold {p['threshold']:.3f})",
                        marker=dict(size=15, symbol=SYMBOLS[archs.index(arch) % len(SYMBOLS)],
                                    color=colours[label(arch)], line=dict(color="black", width=1.5)))
    title = "ROC, macro average over classes" if cls == compare.MACRO else f"ROC: {cls} vs rest"
    fig.update_layout(title=title, font=CHART_FONT, height=520, margin=MARGIN,
                      xaxis=dict(title="1 − specificity (false-positive rate)", range=[-0.01, 1.01], constrain="domain"),
                      yaxis=dict(title="Sensitivity (true-positive rate)", range=[-0.01, 1.01], scaleanchor="x"),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig


def pr_figure(analysis, archs, cls, colours) -> go.Figure:
    fig = go.Figure()
    curves = compare.pr_curves(analysis, archs, cls)
    prevalence = next((c["prevalence"] for c in curves.values() if c["prevalence"] is not None), None)
    if prevalence is not None:
        fig.add_scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", line=dict(color="#888", dash="dot"),
                        name=f"Chance (prevalence {prevalence:.1%})", hoverinfo="skip")
    for arch, c in curves.items():
        if c["recall"] is None:
            continue
        fig.add_scatter(x=c["recall"], y=c["precision"], mode="lines", name=f"{label(arch)}: AP {c['ap']:.3f}",
                        line=dict(width=2.5, shape="hv", **style(arch, archs, colours)),
                        hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<extra>" + label(arch) + "</extra>")
    fig.update_layout(title=f"Precision–recall: {cls}", font=CHART_FONT, height=520, margin=MARGIN,
                      xaxis=dict(title="Recall (sensitivity)", range=[-0.01, 1.01]),
                      yaxis=dict(title="Precision (PPV)", range=[-0.01, 1.05]),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig


def curves(analysis, archs, cls, colours, points) -> None:
    st.header("ROC and precision–recall")
    st.caption("ROC: each point is one threshold; the further up-left, the better. Legend: test AUC with its "
               "95% CI (patient bootstrap). Line style differs per backbone as well as colour. "
               "Precision–recall shows how many positive calls are right, which matters for rare findings.")
    missing = [label(a) for a, c in compare.roc_curves(analysis, archs, cls).items() if c["fpr"] is None]
    if missing:
        st.info(f"{cls}: no ROC curve, since the test split has only positives or only negatives for it.")
    base = compare.baseline_auc(analysis, cls)
    if base is not None:
        what = "the macro average" if cls == compare.MACRO else cls
        st.caption(f"Trivial baseline (logistic regression on 32×32 thumbnails) test AUC for {what}: "
                   f"**{base:.3f}**. A backbone not clearly above it may be using shortcuts, not lungs.")
    left, right = st.columns(2)
    left.plotly_chart(roc_figure(analysis, archs, cls, colours, points), width="stretch", key="cmp_roc")
    if cls == compare.MACRO:
        aps = []
        for arch in archs:
            ap = (analysis["backbones"][arch]["test"]["macro"] or {}).get("ap")
            aps.append(f"{label(arch)} {ap:.3f}" if ap is not None else f"{label(arch)} n/a")
        right.info("Precision–recall curves are per class: choose a class above. Mean average precision over "
                   "classes: " + ", ".join(aps) + ".")
    else:
        right.plotly_chart(pr_figure(analysis, archs, cls, colours), width="stretch", key="cmp_pr")


# ---------------------------------------------------------------- per-class table

def class_table(exp, analysis, archs, pair) -> None:
    st.header("Per-class AUC and paired tests")
    table = compare.class_table(analysis, archs, list(exp.labels.names), label, pair)
    if pair:
        a, b = pair
        st.caption(f"Difference = {label(a)} − {label(b)} AUC on the same test images, with DeLong's 95% CI and "
                   f"two-sided p-value (DeLong); in brackets the Holm-adjusted p, which allows for testing "
                   f"{len(exp.labels.names)} classes. "
                   "A winner is named only where the Holm-adjusted p < 0.05 (macro row: where the paired "
                   "patient-bootstrap 95% CI of the difference excludes 0). '—': no significant difference, "
                   "which is not evidence that the backbones are equal.")
    shown = compare.display_table(table, archs, label)
    st.dataframe(shown, width="stretch", height=ui.table_height(shown, 17),
                 column_config={"_index": st.column_config.Column(width="medium"),
                                "Test positives": st.column_config.Column("Positives", width="small")})
    st.download_button("Download the table as CSV", table.to_csv(float_format="%.6g").encode(), key="cmp_csv",
                       file_name=f"{exp.name}-per-class-auc.csv", mime="text/csv", icon=":material/download:")


# ---------------------------------------------------------------- operating point

def operating_point(exp, analysis, archs, cls, colours) -> dict:
    """Draws the section; returns arch -> the operating point (for the ROC marker)."""
    st.header("Operating point")
    if cls == compare.MACRO:
        st.info("Thresholds are per class: choose a class above to set an operating point.")
        return {}
    onehot, probs, _ = ui.compare_test(exp)
    j = list(exp.labels.names).index(cls)
    y = onehot[:, j]
    choices = list(compare.PRESET_LABELS) + [compare.CUSTOM]
    preset = st.radio("Threshold", choices, key="cmp_preset", horizontal=True,
                      format_func=lambda k: compare.PRESET_LABELS.get(k, "Custom (slider, same for every backbone)"))
    threshold = st.slider(f"Custom threshold: call {cls} when its probability ≥", 0.0, 1.0, 0.5, 0.001,
                          format="%.3f", key="cmp_threshold", disabled=preset != compare.CUSTOM)
    prevalence_test = float(np.mean(y > 0)) if len(y) else 0.0
    prevalence = st.slider(f"Prevalence of {cls} in the population you care about (%)", 0.1, 99.9,
                           round(max(0.1, min(99.9, 100 * prevalence_test)), 1), 0.1, format="%.1f%%",
                           key="cmp_prevalence",
                           help=f"Test split: {prevalence_test:.1%}. PPV and NPV depend on it; sensitivity and "
                                "specificity do not.") / 100.0
    points, missing = {}, []
    for arch in archs:
        t = threshold if preset == compare.CUSTOM else compare.presets(analysis, arch, cls)[preset]
        if t is None:
            missing.append(label(arch))
        points[arch] = compare.operating_point(y, probs[arch][:, j], t, prevalence)
    if preset != compare.CUSTOM:
        st.caption("Each backbone uses its own threshold, chosen on the validation split; the numbers below are "
                   "what that threshold gives on test (so they can miss the validation target).")
    if missing:
        st.warning(f"No '{compare.PRESET_LABELS[preset]}' threshold for {', '.join(missing)}: the validation split "
                   f"has a single outcome for {cls}, or no threshold reaches the target.", icon=":material/warning:")
    st.markdown(f"**Rates on the {len(y)} test images** ({int(np.sum(y > 0))} with {cls}); "
                "value (count/denominator) [Wilson 95% CI]. PPV/NPV at the chosen prevalence use Bayes' rule "
                "with the test sensitivity and specificity.")
    rates = compare.rates_table(points, label, prevalence)
    st.dataframe(rates, width="stretch")
    cols = st.columns(len(archs))
    for col, arch in zip(cols, archs):
        c = points[arch]
        col.markdown(f"**{label(arch)}** — confusion matrix at threshold "
                     + ("—" if c["threshold"] is None else f"{c['threshold']:.3f}"))
        if c["tp"] is None:
            col.caption("No threshold.")
        else:
            col.dataframe(compare.confusion_frame(c, cls), width="stretch")
    if exp.labels.task == MULTICLASS:
        argmax_confusion(analysis, archs)
    return points


def argmax_confusion(analysis, archs) -> None:
    with st.expander("All classes at once: confusion matrix of the most probable class (no threshold)"):
        cols = st.columns(len(archs))
        for col, arch in zip(cols, archs):
            m = analysis["backbones"][arch]["thresholds"].get("confusion")
            if not m:
                continue
            frame = pd.DataFrame(m["matrix"], index=pd.Index(m["names"], name="Truth"),
                                 columns=[f"Predicted {n}" for n in m["names"]])
            acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.1%}"
            col.markdown(f"**{label(arch)}** — accuracy {acc} on {m['n']} test images")
            col.dataframe(frame, width="stretch")


# ---------------------------------------------------------------- calibration

def reliability_figure(analysis, archs, cls, colours) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Before (as trained)", "After temperature scaling"),
                        shared_yaxes=True, horizontal_spacing=0.06)
    for col, when in enumerate(("before", "after"), start=1):
        fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#888", dash="dot"), row=1, col=col,
                        name="Perfect calibration", showlegend=col == 1, hoverinfo="skip")
        for arch in archs:
            bins = [b for b in compare.reliability(analysis, arch, when, cls) if b["count"]]
            if not bins:
                continue
            counts = np.array([b["count"] for b in bins], float)
            fig.add_scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers",
                            row=1, col=col, name=label(arch), showlegend=col == 1, legendgroup=arch,
                            line=dict(width=2, **style(arch, archs, colours)),
                            marker=dict(size=6 + 14 * np.sqrt(counts / counts.max()), color=colours[label(arch)],
                                        symbol=SYMBOLS[archs.index(arch) % len(SYMBOLS)]),
                            customdata=counts, hovertemplate="predicted %{x:.2f}<br>observed %{y:.2f}<br>"
                                                             "%{customdata:.0f} predictions<extra>" + label(arch) + "</extra>")
        fig.update_xaxes(title_text="Mean predicted probability", range=[0, 1], row=1, col=col)
    multiclass = analysis["meta"]["task"] == MULTICLASS
    y_title = "Observed accuracy" if multiclass else "Observed frequency of the finding"
    fig.update_yaxes(title_text=y_title, range=[0, 1.02], row=1, col=1)
    fig.update_layout(font=CHART_FONT, height=430, margin=dict(t=60, b=10, l=10, r=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


def calibration(exp, analysis, archs, cls, colours) -> None:
    st.header("Calibration")
    multiclass = exp.labels.task == MULTICLASS
    per_class = None if (multiclass or cls == compare.MACRO) else cls
    if not any(analysis["backbones"][a].get("calibration") for a in archs):
        st.info("No calibration: the experiment has no validation images to fit a temperature on.")
        return
    what = ("top-class probability vs how often the top class is right" if multiclass else
            (f"probability of {cls} vs how often {cls} is present" if per_class else
             "every (image, finding) probability pooled vs how often the finding is present"))
    st.caption(f"Reliability on test: {what}, in 15 equal-width bins (marker size ∝ number of predictions). "
               "On the dotted diagonal the probabilities mean what they say. ECE: the average gap (lower is "
               "better); Brier: mean squared error of the probabilities (lower is better). The temperature is "
               "fitted on validation; T > 1 softens over-confident probabilities. It changes no ranking, so "
               "AUCs stay the same.")
    st.plotly_chart(reliability_figure(analysis, archs, per_class, colours), width="stretch", key="cmp_reliability")
    st.dataframe(compare.calibration_table(analysis, archs, label, per_class), width="stretch")


# ---------------------------------------------------------------- disagreement gallery

def _pick(row: int) -> None:
    st.session_state["cmp_pick"] = row


def gallery(exp, analysis, archs, pair, cls, points) -> None:
    st.header("Where the backbones disagree")
    if not pair:
        st.info("The disagreement gallery needs two backbones.")
        return
    a, b = pair
    multiclass = exp.labels.task == MULTICLASS
    if not multiclass and cls == compare.MACRO:
        st.info("In a multi-label experiment each finding is decided separately: choose a class above.")
        return
    names = list(exp.labels.names)
    onehot, probs, rows = ui.compare_test(exp)
    left, right = st.columns([2, 1])
    kind = left.radio("Show", ["disagree", "confident"], key="cmp_gallery_kind", horizontal=True,
                      format_func=lambda k: {"disagree": "The backbones disagree",
                                             "confident": "Either is confidently wrong"}[k])
    confident = right.slider("'Confidently' means a probability of at least", 0.5, 0.99, 0.8, 0.01,
                             key="cmp_confident")
    if multiclass:
        rule = ("decision = the most probable class; probabilities shown are each backbone's top-class "
                "probability; sorted by how differently they score the true class")
        thresholds = (0.5, 0.5)
    else:
        ta = (points.get(a) or {}).get("threshold")
        tb = (points.get(b) or {}).get("threshold")
        thresholds = (0.5 if ta is None else ta, 0.5 if tb is None else tb)
        rule = (f"a backbone calls {cls} at the operating point above ({label(a)} ≥ {thresholds[0]:.3f}, "
                f"{label(b)} ≥ {thresholds[1]:.3f}); probabilities shown are for {cls}; sorted by their difference")
    frame = compare.disagreements(onehot, probs[a], probs[b], exp.labels.task, names, None if multiclass else cls,
                                  thresholds, confident, kind, GALLERY)
    total = int(frame["total"].iloc[0]) if len(frame) else 0
    st.caption(f"{total} of {len(onehot)} test images ({rule}). Showing up to {GALLERY}; "
               "press **Heatmaps** under an image to see, just below, where each backbone looks.")
    if not len(frame):
        st.success("No such test images.")
        return
    thumbs = ui.thumbnails(exp)
    image_ids = exp.images()["image_id"]
    captions = {int(rows[int(r["pos"])]): f"{image_ids.iloc[int(rows[int(r['pos'])])]} — truth {r['truth']}; "
                f"A {r['call_a']} {r['p_a']:.2f}, B {r['call_b']} {r['p_b']:.2f}" for _, r in frame.iterrows()}
    if st.session_state.get("cmp_pick") not in captions:
        st.session_state.pop("cmp_pick", None)
    picked = st.selectbox("Image for the heatmaps", list(captions), key="cmp_pick", index=None,
                          placeholder="Choose an image (or press Heatmaps under it)",
                          format_func=lambda r: captions[r])
    if picked is not None:
        # Multi-class: each backbone's map explains the class it predicted (the gallery's call);
        # multi-label: both explain the chosen finding.
        pos = int(np.flatnonzero(rows == int(picked))[0])
        explain = {arch: int(np.argmax(probs[arch][pos])) if multiclass else names.index(cls) for arch in pair}
        heatmaps(exp, pair, int(picked), explain, multiclass)
    st.markdown(f"A = {label(a)}, B = {label(b)}. ✗ marks a wrong call.")
    per_row = 6
    for start in range(0, len(frame), per_row):
        cols = st.columns(per_row)
        for col, (_, r) in zip(cols, frame.iloc[start:start + per_row].iterrows()):
            row = int(rows[int(r["pos"])])
            text = (f"truth: {r['truth']}  \nA: {r['call_a']} {r['p_a']:.2f}{' ✗' if r['wrong_a'] else ''}  \n"
                    f"B: {r['call_b']} {r['p_b']:.2f}{' ✗' if r['wrong_b'] else ''}")
            col.image(np.asarray(thumbs[row]), width="stretch")
            col.caption(text)
            col.button("Heatmaps", key=f"cmp_heat_{row}", on_click=_pick, args=(row,))


def heatmaps(exp, pair, row: int, explain: dict[str, int], multiclass: bool) -> None:
    names = list(exp.labels.names)
    cols = st.columns(len(pair))
    for col, arch in zip(cols, pair):
        heat, explained, problem = ui.compare_heatmap(exp, arch, row, explain[arch])
        with col:
            if heat is None:
                st.warning(f"{label(arch)}: {problem} Showing the thumbnail instead.", icon=":material/warning:")
                st.image(np.asarray(ui.thumbnails(exp)[row]), width=256)
                continue
            if problem:
                st.info(f"{label(arch)}: {problem}")
            st.image(heat, width="stretch",
                     caption=f"{label(arch)}: class activation map for '{names[explained]}'"
                             + (" (its prediction)" if multiclass else "")
                             + ". Yellow = strongest evidence, dark blue = none (cividis, scaled per image).")


# ---------------------------------------------------------------- subgroups

def subgroup_figure(table: pd.DataFrame, archs, colours, cls) -> go.Figure:
    fig = go.Figure()
    ylabels = [f"{r['Attribute']}: {r['Group']} (n={r['Images']}, {r['Positives']} pos.)" for _, r in table.iterrows()]
    k = len(archs)
    for i, arch in enumerate(archs):
        n = label(arch)
        if f"{n} AUC" not in table:
            continue
        auc, lo, hi = (table[f"{n} {c}"].to_numpy(float) for c in ("AUC", "CI low", "CI high"))
        # One row per subgroup; the backbones side by side within it (offsets), so equal AUCs never hide.
        y = (np.arange(len(table)) + (i - (k - 1) / 2) * 0.6 / max(k, 1)).tolist()
        fig.add_scatter(x=auc.tolist(), y=y, mode="markers", name=n, customdata=ylabels,
                        marker=dict(size=11, color=colours[n], symbol=SYMBOLS[i % len(SYMBOLS)]),
                        error_x=dict(type="data", symmetric=False, array=(hi - auc).tolist(),
                                     arrayminus=(auc - lo).tolist(), color=colours[n], thickness=2),
                        hovertemplate="%{customdata}<br>AUC %{x:.3f}<extra>" + n + "</extra>")
    cols = [f"{label(a)} AUC" for a in archs if f"{label(a)} AUC" in table]
    for i, (_, r) in enumerate(table.iterrows()):
        if cols and all(not np.isfinite(r[c]) for c in cols):
            fig.add_annotation(x=0.01, y=i, text=f"no AUC: {'no' if r['Positives'] == 0 else 'only'} {cls} images",
                               showarrow=False, xanchor="left", font=dict(size=12, color="#555"))
    fig.add_vline(x=0.5, line_dash="dot", line_color="#555")
    fig.update_layout(title=f"Test AUC for {cls} per subgroup (95% CI)", font=CHART_FONT,
                      height=max(300, 130 + 40 * len(table)), margin=MARGIN,
                      xaxis=dict(title="Test AUC (0.5 = chance)", range=[0, 1.04]),
                      yaxis=dict(title=None, tickvals=list(range(len(table))), ticktext=ylabels,
                                 range=[len(table) - 0.5, -0.5], showgrid=False),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    return fig


def subgroups(exp, analysis, archs, cls, colours) -> None:
    st.header("Subgroups")
    sentences = compare.confounding_for(analysis)
    for s in sentences:
        st.warning(f"**Confounding.** {s}", icon=":material/warning:")
    if not sentences:
        st.caption("No attribute (source, sex, age group, view) is strongly associated with a class in this "
                   "experiment (Cramér's V below the warning level).")
    src = (analysis.get("baseline") or {}).get("source")
    if src and src.get("accuracy") is not None:
        st.caption(f"A logistic regression on 32×32 thumbnails tells the image source with accuracy "
                   f"**{src['accuracy']:.0%}** (always guessing '{src['majority']}': {src['majority_accuracy']:.0%}).")
    if cls == compare.MACRO:
        st.info("Subgroup AUCs are per class: choose a class above.")
        return
    table = compare.subgroup_table(analysis, archs, cls, label)
    if table.empty:
        st.info("No subgroup attribute (source, sex, age, view) has two or more groups in the test split.")
        return
    st.caption("A subgroup where a class is absent (or the only label) has no AUC and is shown without a point. "
               "Small groups have wide intervals: do not read much into a difference that the intervals cover.")
    st.plotly_chart(subgroup_figure(table, archs, colours, cls), width="stretch", key="cmp_subgroups")
    with st.expander("Subgroup table"):
        shown = table[["Attribute", "Group", "Images", "Patients", "Positives"]].copy()
        for arch in archs:
            n = label(arch)
            if f"{n} AUC" in table:
                shown[f"{n} AUC (95% CI)"] = [compare._ci_text(v, lo, hi) for v, lo, hi in
                                              zip(table[f"{n} AUC"], table[f"{n} CI low"], table[f"{n} CI high"])]
        st.dataframe(shown, width="stretch", hide_index=True)


# ---------------------------------------------------------------- training curves

# ---------------------------------------------------------------- page

def not_analysed(exp, problem: str = "") -> None:
    st.title(f"Compare backbones: {exp.name}")
    st.warning(problem or "This experiment has not been analysed yet, so there are no curves, CIs or tests to "
               "compare.", icon=":material/warning:")
    st.markdown(f"Run this in `{ui.REPO}`, then reload the page:")
    st.code(compare.analyse_command(exp.path, ui.REPO), language="bash")


def render(exp) -> None:
    try:
        analysis = ui.compare_analysis(exp)
    except runs.RunFormatError as exc:
        not_analysed(exp, f"The analysis of this experiment cannot be read ({exc}); run the analysis again.")
        return
    if analysis is None:
        not_analysed(exp)
        return
    archs = compare.analysed_backbones(analysis, list(exp.backbones))
    if not archs:
        not_analysed(exp)
        return
    missing = [label(a) for a in exp.backbones if a not in archs]
    if missing:
        st.warning(f"{', '.join(missing)} trained after the last analysis, so not shown. Run "
                   f"`{compare.analyse_command(exp.path, ui.REPO)}` to include it.", icon=":material/warning:")
    colours = ui.backbone_colours(exp)
    cls, pair = header(exp, analysis, archs)
    # The operating point is computed before the curves are drawn so the ROC can mark it; the curves
    # go into a container placed above its widgets.
    curves_box = st.container()
    points = operating_point(exp, analysis, archs, cls, colours)
    with curves_box:
        curves(analysis, archs, cls, colours, points)
    class_table(exp, analysis, archs, pair)
    calibration(exp, analysis, archs, cls, colours)
    gallery(exp, analysis, archs, pair, cls, points)
    subgroups(exp, analysis, archs, cls, colours)
    ui.training_curves(exp, archs, key="cmp_training")


experiment = ui.page_setup("Compare backbones")
if experiment is None:
    ui.no_experiment_help()
else:
    render(experiment)
