"""The "Where the backbones disagree" gallery of the Compare page: which test images to show, in which
order, with which captions, and which class each backbone's heat map explains. Streamlit-free."""

from __future__ import annotations

import numpy as np
import pandas as pd

from covidviz.cam.overlay import DEFAULT_COLORMAP
from covidviz.data.labels import MULTICLASS
from covidviz.views import glossary
from covidviz.views.compare import MACRO
from covidviz.views.formats import RAW, threshold_text
from covidviz.views.style import arch_label

LIMIT = 24          # images shown at most
PER_ROW = 6         # thumbnails per gallery row
CAM = glossary.link("CAM", "class activation maps")
KINDS = {"disagree": "The backbones disagree", "confident": "Either is confidently wrong"}
# How each colour map of covidviz.cam.overlay reads: (strongest, none).
COLOUR_WORDS = {"jet": ("Red", "dark blue"), "inferno": ("Pale yellow", "black"),
                "viridis": ("Yellow", "dark purple"), "cividis": ("Yellow", "dark blue")}


def needs_class(task: str, cls: str) -> bool:
    """Multi-label findings are decided one by one: the gallery needs a class, not the macro average."""
    return task != MULTICLASS and cls == MACRO


def decision(task: str, cls: str, pair: tuple[str, str], points: dict[str, dict]) -> tuple[tuple[float, float], str]:
    """(each backbone's threshold, the sentence that says how a call is made).

    Multi-class: the most probable class (thresholds unused). Multi-label: the operating point chosen
    above (0.5 where a backbone has none)."""
    if task == MULTICLASS:
        return (0.5, 0.5), ("decision = the most probable class; probabilities shown are each backbone's top-class "
                            "probability; sorted by how differently they score the true class")
    a, b = pair
    ta, tb = ((points.get(arch) or {}).get("threshold") for arch in pair)
    thresholds = (0.5 if ta is None else ta, 0.5 if tb is None else tb)
    return thresholds, (f"a backbone calls {cls} at the operating point above: {arch_label(a)} ≥ "
                        f"{threshold_text(thresholds[0], RAW)}, {arch_label(b)} ≥ {threshold_text(thresholds[1], RAW)}; "
                        f"probabilities shown are for {cls}; sorted by their difference")


def select(onehot: np.ndarray, probs: dict[str, np.ndarray], pair: tuple[str, str], task: str, names: list[str],
           cls: str, points: dict[str, dict], confident: float, kind: str) -> tuple[pd.DataFrame, str]:
    """(the gallery's images, ``disagreements`` of the pair, and the sentence saying how a call is made)."""
    thresholds, rule = decision(task, cls, pair, points)
    frame = disagreements(onehot, probs[pair[0]], probs[pair[1]], task, names, None if task == MULTICLASS else cls,
                          thresholds, confident, kind)
    return frame, rule


def summary(frame: pd.DataFrame, n_test: int, rule: str, where: str = "test") -> str:
    """How many of the ``n_test`` images of ``where`` (the test split, or an external set's name) qualify."""
    total = int(frame["total"].iloc[0]) if len(frame) else 0
    return (f"{total} of {n_test} {where} images ({rule}). Showing up to {LIMIT}; "
            f"press **Heatmaps** under an image to see, just below, where each backbone looks ({CAM}).")


def disagreements(onehot: np.ndarray, pa: np.ndarray, pb: np.ndarray, task: str, names: list[str],
                  cls: str | None = None, thresholds: tuple[float, float] = (0.5, 0.5),
                  confident: float = 0.9, kind: str = "disagree", limit: int = LIMIT) -> pd.DataFrame:
    """Test images (positions in the test arrays) where two backbones disagree or either is confidently
    wrong, most different first.

    Multi-class: the decision is the argmax; "confidently wrong" = a wrong argmax with probability
    >= ``confident``. Multi-label (``cls`` required): a backbone calls ``cls`` present when its probability
    >= its threshold; "confidently wrong" = probability >= ``confident`` on an image without the finding
    or <= 1 - ``confident`` on one with it. Columns: pos, truth, p_a, p_b, call_a, call_b, wrong_a,
    wrong_b, gap (|p_a - p_b| of the class shown), total (how many images qualify before ``limit``).
    """
    onehot = np.asarray(onehot)
    if task == MULTICLASS:
        truth = np.argmax(onehot, axis=1)
        ca, cb = np.argmax(pa, axis=1), np.argmax(pb, axis=1)
        conf_a, conf_b = pa.max(axis=1), pb.max(axis=1)
        wrong_a, wrong_b = ca != truth, cb != truth
        confident_a, confident_b = wrong_a & (conf_a >= confident), wrong_b & (conf_b >= confident)
        idx = np.arange(len(truth))
        gap = np.abs(pa[idx, truth] - pb[idx, truth])
        frame = pd.DataFrame({"pos": idx, "truth": [names[t] for t in truth],
                              "call_a": [names[c] for c in ca], "call_b": [names[c] for c in cb],
                              "p_a": conf_a, "p_b": conf_b, "wrong_a": wrong_a, "wrong_b": wrong_b,
                              "confident_a": confident_a, "confident_b": confident_b, "gap": gap})
    else:
        if cls not in names:
            raise ValueError(f"multi-label disagreements need a class, one of {names}")
        j = names.index(cls)
        y = onehot[:, j] > 0
        sa, sb = pa[:, j], pb[:, j]
        ta, tb = thresholds
        ca, cb = sa >= ta, sb >= tb
        wrong_a, wrong_b = ca != y, cb != y
        confident_a = (~y & (sa >= confident)) | (y & (sa <= 1 - confident))
        confident_b = (~y & (sb >= confident)) | (y & (sb <= 1 - confident))
        word = {True: cls, False: f"no {cls}"}
        frame = pd.DataFrame({"pos": np.arange(len(y)), "truth": [word[bool(v)] for v in y], "positive": y,
                              "call_a": [word[bool(v)] for v in ca], "call_b": [word[bool(v)] for v in cb],
                              "p_a": sa, "p_b": sb, "wrong_a": wrong_a, "wrong_b": wrong_b,
                              "confident_a": confident_a, "confident_b": confident_b, "gap": np.abs(sa - sb)})
    disagree = ca != cb
    keep = disagree if kind == "disagree" else (frame["confident_a"] | frame["confident_b"]).to_numpy()
    frame = frame[keep]
    if kind != "disagree":  # most confident mistake first
        worst = np.maximum(np.where(frame["confident_a"], _wrongness(frame, "a", task), 0),
                           np.where(frame["confident_b"], _wrongness(frame, "b", task), 0))
        frame = frame.assign(_k=worst).sort_values(["_k", "pos"], ascending=[False, True]).drop(columns="_k")
    else:
        frame = frame.sort_values(["gap", "pos"], ascending=[False, True])
    return frame.head(limit).reset_index(drop=True).assign(total=int(keep.sum()))


def _wrongness(frame: pd.DataFrame, side: str, task: str) -> np.ndarray:
    """How confident the wrong call is: the top probability (multi-class), else p or 1 - p."""
    p = frame[f"p_{side}"].to_numpy()
    if task == MULTICLASS:
        return p
    positive = frame["positive"].to_numpy()
    return np.where(positive, 1 - p, p)


def tiles(frame: pd.DataFrame, rows: np.ndarray) -> list[tuple[int, str]]:
    """(images.parquet row, caption) of each gallery image, in the gallery's order; ✗ marks a wrong call."""
    out = []
    for _, r in frame.iterrows():
        text = (f"truth: {r['truth']}  \nA: {r['call_a']} {r['p_a']:.2f}{' ✗' if r['wrong_a'] else ''}  \n"
                f"B: {r['call_b']} {r['p_b']:.2f}{' ✗' if r['wrong_b'] else ''}")
        out.append((int(rows[int(r["pos"])]), text))
    return out


def pick_options(frame: pd.DataFrame, rows: np.ndarray, image_ids) -> dict[int, str]:
    """images.parquet row -> the label of the image selector ("id — truth ...; A call p, B call p")."""
    ids = list(image_ids)
    out = {}
    for _, r in frame.iterrows():
        row = int(rows[int(r["pos"])])
        out[row] = f"{ids[row]} — truth {r['truth']}; A {r['call_a']} {r['p_a']:.2f}, B {r['call_b']} {r['p_b']:.2f}"
    return out


def explained_classes(task: str, probs: dict[str, np.ndarray], rows: np.ndarray, row: int, pair: tuple[str, str],
                      names: list[str], cls: str) -> dict[str, int]:
    """arch -> index of the class its heat map explains for one image (images.parquet ``row``):
    multi-class, the class the backbone predicted (the gallery's call); multi-label, the chosen finding."""
    if task != MULTICLASS:
        return {arch: names.index(cls) for arch in pair}
    pos = int(np.flatnonzero(np.asarray(rows) == int(row))[0])
    return {arch: int(np.argmax(probs[arch][pos])) for arch in pair}


def heatmap_caption(arch: str, class_name: str, task: str, colormap: str = DEFAULT_COLORMAP) -> str:
    strongest, none = COLOUR_WORDS.get(colormap, ("Bright", "dark"))
    return (f"{arch_label(arch)}: class activation map for '{class_name}'"
            + (" (its prediction)" if task == MULTICLASS else "")
            + f". {strongest} = strongest evidence, {none} = none ({colormap}, scaled per image).")
