"""The Batch page's data shaping and texts (no streamlit): the page's limits, the on-screen table, the CSV
(``covidviz.batch.export``'s, the one ``train.py predict`` writes), the bad-files table and the
contact-sheet choice.

The table reads like the Diagnose page: one row per file, sorted by name (natural order), its short name
(an archive member's own name; the full ``ARCHIVE:PATH`` is in the CSV), the verdict's badge (the ONE
out-of-distribution verdict, ``Predictor.verdict``, judged as on Diagnose), then per backbone its most
likely class with the calibrated probability, that class's call as it reads on Diagnose
(``views.reliability.call_reading``: Positive / Negative / indeterminate / not reliable) with the
shortcut audit's badge when the audit found one for that class, and its heat map's share on the lungs.
An out-of-distribution row is greyed and its calls are withheld (blank; the CSV keeps every number).
Narrow on purpose: ``st.table`` shows every column and wraps, and every word may break
(``TABLE_STYLES``), so nothing is cut at 1280 px.

Scoring is ``covidviz.batch``'s; the page (``app_pages/batch.py``) and its session cache
(``covidviz.ui.batch_cache``) only call these.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from covidviz import batch
from covidviz.anatomy.view import CT, LATERAL, NOT_CHEST
from covidviz.batch import export
from covidviz.views import glossary
from covidviz.views import reliability as rel
from covidviz.views.diagnose_calls import top_call
from covidviz.views.reliability import SHORTCUT_HELP  # noqa: F401 - the page's help text for the badge
from covidviz.views.style import arch_label

# ---------------------------------------------------------------- limits (the page's; the CLI has none but the ZIP ones)

MAX_IMAGES = 200                      # images scored per batch: uploaded files and ZIP members together
MAX_UPLOAD_BYTES = 200 * 1024**2      # uploaded bytes in all (each file is also capped by server.maxUploadSize)
MAX_ZIP_BYTES = 1024**3               # declared uncompressed bytes per ZIP archive
ZIP_LIMITS = {"max_members": MAX_IMAGES, "max_bytes": MAX_ZIP_BYTES, "max_member_bytes": batch.MAX_MEMBER_BYTES}
SHEET_MAX = 24                        # images on one contact sheet
SHEET_DEFAULT = 6                     # preselected for the sheet: the table's first rows not withheld
SHEET_COLUMNS = 2                     # tiles per line: captions stay legible when the sheet fits the page
CLI_COMMAND = "python train.py predict runs/EXPERIMENT FILES_OR_FOLDERS_OR_ZIPS... --out predictions.csv"

UPLOAD_LABEL = "Chest X-rays (PNG, JPEG, TIFF, BMP, WebP, DICOM) or ZIP archives of them"
UPLOAD_HELP = ("Select many files at once, or ZIP archives (read in memory, never extracted to disk; folders "
               "inside are searched, `__MACOSX` litter and non-image files are skipped). Nothing is written to "
               "disk and nothing is kept after the session.")
UPLOAD_PROMPT = "Upload X-rays or ZIP archives to score them all with every backbone of this experiment."
INTRO = ("Score many chest X-rays at once with every backbone of the experiment: one row per file, sorted by "
         "name, with the out-of-distribution verdict (the same check as the Diagnose page), each backbone's most "
         "likely class, its calibrated probability and call, and how much of its heat map lies on the lungs. "
         "Files that cannot be read are listed below the table; they do not stop the batch.")
TABLE_NOTE = ("Sorted by file name (an image inside a ZIP archive by its own name; the full `ARCHIVE:PATH` is in the "
              "CSV). *Verdict*: the {ood} check, the same as on Diagnose; a row it flags is greyed and its calls "
              "are withheld, because the models were never trained on such images. *Most likely*: the class with "
              "the highest temperature-calibrated probability. *Call*: that class's call at the operating point "
              "chosen on validation (Youden's J), read as on Diagnose: {reading} *On the lungs*: the share of the "
              "backbone's heat map (CAM, most likely class) inside the lung fields found on the film; empty when the "
              "lungs could not be found reliably (the lungs' own share of the film, what an evenly spread map would "
              "score, is in the CSV). The CSV names the experiment, backbones, operating point and every threshold, "
              "keeps every number (flagged rows too) and lists the unreadable files with their error; it is the "
              "command line's (`{cli}`).")
SHORTCUT_TITLE = "**⚠ shortcut** in a call: the experiment's shortcut audit found a sign for that class:"
SHEET_CAPTION = ("Film, then each backbone's heat map (CAM) for its most likely class; under it the "
                 "backbone's most likely class, its probability and its call, as in the table.")
SHEET_HELP = ("Each tile: the film as the models saw it, then each backbone's class activation map for its most "
              "likely class; a file flagged as unlike the training X-rays gets grey \"withheld\" panels instead. "
              "Pick the files to draw (at most {n}).")


def _mib(n: float) -> str:
    return f"{n / 1024**2:.0f} MB"


def limits_text(max_file_mb: int | float | None = None) -> str:
    """The limits, in one sentence; ``max_file_mb``: the server's ``server.maxUploadSize`` (MB per file)."""
    per_file = f", {max_file_mb:g} MB per uploaded file" if max_file_mb else ""
    return (f"Limits: at most {MAX_IMAGES} images per batch (files and images inside ZIP archives together)"
            f"{per_file}, {_mib(MAX_UPLOAD_BYTES)} of uploads in all and {MAX_ZIP_BYTES / 1024**3:.0f} GB "
            f"uncompressed per ZIP. For more, use the command line: `{CLI_COMMAND}`.")


def upload_problem(sizes: Sequence[int]) -> str | None:
    """Why a set of uploads (their sizes in bytes) is refused before anything is read, or None."""
    if len(sizes) > MAX_IMAGES:
        return (f"{len(sizes)} files uploaded: the page scores at most {MAX_IMAGES} images per batch. "
                "Remove some, or use the command line for more.")
    total = sum(int(s) for s in sizes)
    if total > MAX_UPLOAD_BYTES:
        return (f"{total / 1024**2:.0f} MB uploaded: the page takes at most {_mib(MAX_UPLOAD_BYTES)} per batch. "
                "Remove some files, or use the command line for more.")
    return None


def cap_sources(inputs: batch.Inputs, limit: int | None = None) -> batch.Inputs:
    """Keep the first ``limit`` (default ``MAX_IMAGES``) images of ``inputs`` (several ZIPs may hold more
    together); the rest become one ``BadFile`` that says how many were not scored and why."""
    limit = MAX_IMAGES if limit is None else int(limit)
    extra = len(inputs.sources) - limit
    if extra > 0:
        first = inputs.sources[limit].name
        del inputs.sources[limit:]
        inputs.bad.append(batch.BadFile(f"{extra} more image(s), from {first}", (
            f"{extra} image(s) not scored, from {first} on: the page scores at most {limit} images per batch. "
            "Upload them in another batch, or use the command line.")))
    return inputs


def upload_key(exp_path, stamp, files: Sequence[tuple]) -> tuple:
    """Identity of one batch: the experiment (folder, manifest stamp) and the uploads (``(id, name, size)``)."""
    digest = hashlib.sha256(repr([tuple(f) for f in files]).encode()).hexdigest()
    return str(exp_path), stamp, digest


# ---------------------------------------------------------------- names

def _path_parts(name: str) -> list[str]:
    """"films.zip:set/a.png" -> ["films.zip", "set", "a.png"]; "/data/x/b.png" -> ["data", "x", "b.png"]."""
    return [p for chunk in str(name).split(":") for p in chunk.replace("\\", "/").split("/") if p] or [str(name)]


def short_names(names: Sequence[str]) -> list[str]:
    """One short name per file: its base name (an archive member's own name), with as many folders (or the
    archive's name) in front as it takes to tell files of the same name apart; the same full name twice
    gets `` (2)``, `` (3)``..."""
    parts = [_path_parts(n) for n in names]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        counts = Counter(labels)
        grow = [i for i, lab in enumerate(labels) if counts[lab] > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: Counter = Counter()
    out = []
    for lab in labels:
        seen[lab] += 1
        out.append(lab if counts[lab] == 1 or seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


def shortened(name: str, limit: int | None = None) -> str:
    """``name`` cut in the middle to ``limit`` (default ``NAME_CHARS``) characters, its start and its end
    (the extension) kept: "covid-19-pneumonia-15-PA.jpg" -> "covid-19-pne…nia-15-PA.jpg"."""
    limit = NAME_CHARS if limit is None else int(limit)
    if len(name) <= limit:
        return name
    tail = (limit - 1) // 2 + 1
    return name[:limit - 1 - tail] + "…" + name[-tail:]


def screen_names(run) -> list[str]:
    """The names the table shows: ``run.short``, long ones ``shortened`` unless that makes two alike."""
    cut = [shortened(n) for n in run.short]
    return cut if len(set(cut)) == len(cut) else list(run.short)


def natural_key(name: str) -> tuple:
    """Sort key: case-insensitive, numbers by value ("film-2" before "film-10")."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(name).lower()) if t)


# ---------------------------------------------------------------- one scored batch

@dataclass
class BatchRun:
    """What the page shows of one batch: the scorer (names, backbones, point), the scored rows and the bad
    files (both sorted by name on construction), the shortcut audit's findings
    (``reliability.shortcut_findings``) and how many non-image files the archives held."""

    scorer: batch.BatchPredictor
    rows: list[batch.ScoredImage]
    bad: list[batch.BadFile] = field(default_factory=list)
    ignored: int = 0
    findings: dict = field(default_factory=dict)
    short: list[str] = field(init=False, default_factory=list)
    _aucs: dict = field(init=False, default_factory=dict, repr=False)
    _cells: list = field(init=False, default_factory=list, repr=False)  # the table's cells, made once (``cells``)

    def __post_init__(self):
        names = short_names([r.name for r in self.rows])
        order = sorted(range(len(self.rows)), key=lambda i: (natural_key(names[i]), natural_key(self.rows[i].name)))
        self.rows = [self.rows[i] for i in order]
        self.short = [names[i] for i in order]
        self.bad = sorted(self.bad, key=lambda b: (natural_key(_path_parts(b.name)[-1]), natural_key(b.name)))

    @property
    def names(self) -> list[str]:
        return list(self.scorer.names)

    @property
    def archs(self) -> list[str]:
        return list(self.scorer.archs)

    @property
    def analysis(self):
        return getattr(self.scorer.predictor, "analysis", None)

    def calls(self, k: int, arch: str) -> list[dict]:
        """Row ``k``'s calls for ``arch`` as Diagnose reads them (``Predictor.calls`` at the scorer's point,
        each with its class's test AUC, ``"auc"``, when the experiment was analysed)."""
        calls = self.scorer.calls(self.rows[k], arch)
        if self.analysis is not None:
            for c in calls:
                key = (arch, c["class"])
                if key not in self._aucs:
                    self._aucs[key] = rel.class_auc(self.analysis, arch, c["class"])
                c["auc"] = self._aucs[key]
        return calls


def progress_text(done: int, total: int, archs: Sequence[str]) -> str:
    return f"Scoring {done} / {total} file(s) with {', '.join(arch_label(a) for a in archs)}…"


def mostly_outside(row: batch.ScoredImage) -> bool:
    """Does a backbone's heat map of this row lie mostly outside the lung fields?"""
    return any(b.lung_weight is not None and b.lung_weight.mostly_outside for b in row.backbones.values())


def summary(run: BatchRun) -> str:
    n_ood = sum(1 for r in run.rows if r.ood)
    n_off = sum(1 for r in run.rows if mostly_outside(r) and not r.ood)
    parts = [f"**{len(run.rows)}** file(s) scored with {' and '.join(arch_label(a) for a in run.archs)}"]
    if run.bad:
        parts.append(f"**{len(run.bad)}** could not be used (listed below the table)")
    if n_ood:
        parts.append(f"**{n_ood}** unlike the training X-rays (greyed, calls withheld)")
    if n_off:
        parts.append(f"**{n_off}** with a heat map lying mostly outside the lungs")
    if run.ignored:
        parts.append(f"{run.ignored} non-image file(s) in the archives skipped")
    return "; ".join(parts) + "."


def weak_banner(exp, run: BatchRun) -> str | None:
    """The Diagnose page's banner when a backbone's test macro AUC is below ``reliability.MIN_MACRO_AUC``."""
    return rel.low_auc_banner(rel.macro_aucs(exp, run.analysis))


# ---------------------------------------------------------------- the verdict's badge

BADGES = {export.IN_DISTRIBUTION: "✓ like training", export.UNLIKE_TRAINING: "⚠ unlike training",
          LATERAL: "⚠ lateral view", CT: "⚠ CT slice", NOT_CHEST: "⚠ not a chest film",
          export.GATE_FAILED: "⚠ not a radiograph", export.NOT_CHECKED: "? not checked", export.FLAGGED: "⚠ flagged"}
OOD_BADGE_STYLE = "background-color: #fde3c8; color: #7a3e00; font-weight: 600"
PASSED_BADGE_STYLE = "background-color: #e1f2e3; color: #1d5e2c"
UNCHECKED_BADGE_STYLE = "background-color: #eeeeee; color: #444444"


def verdict_badge(row: batch.ScoredImage) -> str:
    """A row's verdict in a few words (``batch.ood_kind``): "✓ like training", "⚠ lateral view"..."""
    return BADGES[batch.ood_kind(row.verdict, row.ood)]


def flagged_reasons(run: BatchRun) -> list[tuple[str, str]]:
    """(short name, why) of every flagged row, in table order: the verdict's own sentences, the backbones
    named for people (``OodVerdict.measured``)."""
    out = []
    for name, row in zip(run.short, run.rows):
        if not row.ood:
            continue
        why = " ".join(row.verdict.measured(arch_label)) if row.verdict is not None else row.ood_reason
        out.append((name, why or row.ood_reason))
    return out


# ---------------------------------------------------------------- the table on screen

FILE_COLUMN, VERDICT_COLUMN = "File", "Verdict"
WITHHELD = "withheld"
NO_LUNGS = "—"
ALSO_MAX = 2                 # other classes named as also Positive; more are counted
SHORTCUT_MARK = f"⚠ {rel.BADGE.lower()}"   # in a call cell: the audit found a shortcut for a class named there
GREY = "#8c8c8c"             # the text of a flagged row (Diagnose's grey for what is not a call)
READING_COLOURS = {rel.POSITIVE: "#b3261e", rel.NEGATIVE: "#1b6e2d", rel.INDETERMINATE: "#a15c00",
                   rel.NOT_RELIABLE: "#6b6b6b", rel.NO_CALL: "#6b6b6b"}  # Diagnose's red / green / orange / grey
# ``st.table`` cells wrap at spaces; a word longer than its cell breaks rather than overflows
# (``break-word``: it does not make columns narrower than their words, so names and headers stay whole
# where they fit). ``st.table`` draws each cell's text as markdown inside the cell, whose own CSS says
# "normal": the rules name the cell's descendants too.
TABLE_STYLES = [{"selector": "td, th, td *, th *", "props": [("overflow-wrap", "break-word")]}]
NAME_CHARS = 26              # a longer short name is shortened in the middle on screen (``shortened``)
SCROLL_ROWS, SCROLL_HEIGHT = 25, 900   # above this many rows the table scrolls inside a box this tall (px)
# The badge and the lung share ("44 %") stay on one line (about 230 px with two backbones); the rest wraps
# at spaces.
NOWRAP = [("white-space", "nowrap")]


def top_column(arch: str) -> str:
    return f"{arch_label(arch)} · most likely"


def call_column(arch: str) -> str:
    return f"{arch_label(arch)} · call"


def lung_column(arch: str) -> str:
    return f"{arch_label(arch)} · on the lungs"


def table_columns(run: BatchRun) -> list[str]:
    cols = [FILE_COLUMN, VERDICT_COLUMN]
    for arch in run.archs:
        cols += [top_column(arch), call_column(arch), lung_column(arch)]
    return cols


def call_cell(calls: list[dict], top: int, task: str, findings: dict, arch: str) -> tuple[str, str]:
    """(text, reading) of a backbone's call on one row: the most likely class's call as it reads
    (``reliability.call_reading``), the other classes that read Positive (one against the rest), and the
    shortcut badge ("⚠ shortcut", once) where the audit found one for a class named; what it found is
    said once under the table (``shortcut_lines``), not in every row."""
    c = top_call(calls, top, task)
    reading = rel.call_reading(c)
    text = reading
    named = [c["class"]]
    others = [x["class"] for x in calls if x is not c and rel.call_reading(x) == rel.POSITIVE]
    if others:
        text += (f" · also {', '.join(others)} Positive" if len(others) <= ALSO_MAX
                 else f" · {len(others)} more Positive")
        named += others[:ALSO_MAX] if len(others) <= ALSO_MAX else []
    if any((arch, cls) in findings for cls in named):
        text += f" · {SHORTCUT_MARK}"
    return text, reading


def shortcut_lines(run: BatchRun) -> list[str]:
    """What the audit found behind each "⚠ shortcut" badge, one markdown line per backbone and class
    (``reliability.shortcut_badge``, as Diagnose writes it), for this batch's backbones."""
    return [f"**{arch_label(f.arch)}**: {rel.shortcut_badge(f, with_class=True)}"
            for (a, _), f in sorted(run.findings.items()) if a in run.archs]


def cells(run: BatchRun) -> list[tuple[dict, dict]]:
    """Per row on screen: its cells and each call column's reading (for its colour); made once per batch
    (the page draws the table on every rerun: picking files for the sheet must not rebuild it)."""
    if len(run._cells) != len(run.rows):
        names = screen_names(run)
        run._cells = [_row_cells(run, k, names[k]) for k in range(len(run.rows))]
    return run._cells


def _row_cells(run: BatchRun, k: int, name: str) -> tuple[dict, dict]:
    """Row ``k`` on screen: its cells, and each call column's reading (for its colour)."""
    row = run.rows[k]
    rec = {FILE_COLUMN: name, VERDICT_COLUMN: verdict_badge(row)}
    readings = {}
    for arch in run.archs:
        if row.ood:  # withheld: no class, no call, no heat-map share (the CSV keeps them)
            rec.update({top_column(arch): WITHHELD, call_column(arch): "", lung_column(arch): ""})
            continue
        b = row.backbones[arch]
        calls = run.calls(k, arch)
        top = top_call(calls, b.top, run.scorer.task)
        rec[top_column(arch)] = f"{top['class']} {top['prob']:.2f}"
        rec[call_column(arch)], readings[call_column(arch)] = call_cell(calls, b.top, run.scorer.task, run.findings,
                                                                        arch)
        lw = b.lung_weight
        rec[lung_column(arch)] = f"{100 * lw.share_inside:.0f} %" if lw is not None and lw.measured else NO_LUNGS
    return rec, readings


def display_table(run: BatchRun) -> pd.DataFrame:
    """One row per scored file, sorted by name: ``table_columns`` (texts: the page shows them as they are)."""
    return pd.DataFrame([c for c, _ in cells(run)], columns=table_columns(run))


def styled_table(run: BatchRun):
    """``display_table`` for ``st.table``: the verdict as a coloured badge, each call coloured by how it reads
    (as on Diagnose), flagged rows greyed, every word breakable (``TABLE_STYLES``)."""
    table = display_table(run)
    readings = [r for _, r in cells(run)]
    short = {VERDICT_COLUMN} | {lung_column(a) for a in run.archs}

    def row_style(r: pd.Series) -> list[str]:
        k = r.name
        row = run.rows[k]
        out = []
        for col in table.columns:
            if col == VERDICT_COLUMN:
                out.append(OOD_BADGE_STYLE if row.ood else PASSED_BADGE_STYLE if row.ood is False
                           else UNCHECKED_BADGE_STYLE)
            elif row.ood:
                out.append(f"color: {GREY}")
            elif col in readings[k]:
                out.append(f"color: {READING_COLOURS.get(readings[k][col], GREY)}; font-weight: 600")
            else:
                out.append("")
        return out

    one_line = [{"selector": f"td.col{j}, td.col{j} *", "props": NOWRAP} for j, c in enumerate(table.columns)
                if c in short]
    return table.style.apply(row_style, axis=1).set_table_styles(TABLE_STYLES + one_line)


def table_height(run: BatchRun) -> int | str:
    """``st.table``'s height: the whole table up to ``SCROLL_ROWS`` rows, else a box that scrolls."""
    return SCROLL_HEIGHT if len(run.rows) > SCROLL_ROWS else "content"


def table_note(run: BatchRun) -> str:
    return TABLE_NOTE.format(ood=glossary.link("Out-of-distribution", "out-of-distribution"), reading=rel.READING_NOTE,
                             cli=CLI_COMMAND)


# ---------------------------------------------------------------- the CSV, the bad files, the sheet

def csv_bytes(run: BatchRun) -> bytes:
    """The CSV (``batch.export``: the command line's), scored rows in table order then the unreadable files
    with their ``error``, UTF-8."""
    return export.csv_text(run.scorer, [*run.rows, *run.bad]).encode("utf-8")


def bad_table(run: BatchRun) -> pd.DataFrame:
    """``File, Problem``: the inputs that could not be scored (short names; the CSV has the full ones)."""
    return pd.DataFrame({FILE_COLUMN: short_names([b.name for b in run.bad]), "Problem": [b.message for b in run.bad]},
                        columns=[FILE_COLUMN, "Problem"])


def styled_bad_table(run: BatchRun):
    return bad_table(run).style.set_table_styles(TABLE_STYLES)


def bad_heading(run: BatchRun) -> str:
    return f"{len(run.bad)} file(s) could not be used"


def file_labels(run: BatchRun) -> list[str]:
    """One label per scored row (its name as the table shows it, unique), in table order, for the sheet picker."""
    return screen_names(run)


def default_sheet(run: BatchRun) -> list[int]:
    """Rows preselected for the contact sheet: the first ``SHEET_DEFAULT`` whose calls are not withheld."""
    return [k for k, r in enumerate(run.rows) if not r.ood][:SHEET_DEFAULT]


def sheet_rows(run: BatchRun, chosen: Sequence[int]) -> list[int]:
    return [i for i in chosen if 0 <= i < len(run.rows)][:SHEET_MAX]


def sheet_png(run: BatchRun, chosen: Sequence[int]) -> bytes | None:
    """The contact sheet of the chosen rows as PNG bytes (None: nothing chosen); flagged rows withheld."""
    picked = sheet_rows(run, chosen)
    if not picked:
        return None
    return batch.contact_sheet_png([run.rows[i] for i in picked], run.names, archs=run.archs, columns=SHEET_COLUMNS,
                                   labels=[screen_names(run)[i] for i in picked],
                                   captions=[sheet_captions(run, i) for i in picked])


def sheet_captions(run: BatchRun, k: int) -> list[str]:
    """Row ``k``'s tile lines, one per backbone: its most likely class, probability and call as the table
    reads them ("DenseNet121: COVID-19 0.91 · Positive"); "withheld" for a flagged row (the sheet draws
    those itself). The sheet's font has no warning sign: the shortcut badge keeps its word."""
    row = cells(run)[k][0]
    return [(f"{arch_label(a)}: {row[top_column(a)]}" + (f" · {row[call_column(a)]}" if row[call_column(a)] else ""))
            .replace("⚠ ", "") for a in run.archs]


def batch_error(exp_name: str, exc: Exception) -> str:
    """The models could not be loaded or could not run: say so (the app keeps working)."""
    return (f"The batch could not be scored with experiment '{exp_name}' ({type(exc).__name__}: {str(exc)[:300]}). "
            "If its models are missing or damaged, retrain it with train.py or pick another experiment.")


def file_name(exp_name: str, kind: str, ext: str) -> str:
    return f"covidviz-batch-{exp_name}-{kind}.{ext}"
