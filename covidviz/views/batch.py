"""The Batch page's data shaping and texts (no streamlit): the page's limits, the on-screen table, the CSV
(the same columns as ``python -m covidviz.predict``), the bad-files table and the contact-sheet choice.

Scoring is ``covidviz.batch``'s; the page (``app_pages/batch.py``) and its session cache
(``covidviz.ui.batch_cache``) only call these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from covidviz import batch
from covidviz.views.style import arch_label

# ---------------------------------------------------------------- limits (the page's; the CLI has none but the ZIP ones)

MAX_IMAGES = 200                      # images scored per batch: uploaded files and ZIP members together
MAX_UPLOAD_BYTES = 200 * 1024**2      # uploaded bytes in all (each file is also capped by server.maxUploadSize)
MAX_ZIP_BYTES = 1024**3               # declared uncompressed bytes per ZIP archive
ZIP_LIMITS = {"max_members": MAX_IMAGES, "max_bytes": MAX_ZIP_BYTES, "max_member_bytes": batch.MAX_MEMBER_BYTES}
SHEET_MAX = 24                        # images on one contact sheet
SHEET_DEFAULT = 6                     # preselected for the sheet: the table's first rows
SHEET_COLUMNS = 2                     # tiles per line: captions stay legible when the sheet fits the page
CLI_COMMAND = "python train.py predict runs/EXPERIMENT FILES_OR_FOLDERS_OR_ZIPS... --out predictions.csv"

UPLOAD_LABEL = "Chest X-rays (PNG, JPEG, TIFF, BMP, WebP, DICOM) or ZIP archives of them"
UPLOAD_HELP = ("Select many files at once, or ZIP archives (read in memory, never extracted to disk; folders "
               "inside are searched, `__MACOSX` litter and non-image files are skipped). Nothing is written to "
               "disk and nothing is kept after the session.")
UPLOAD_PROMPT = "Upload X-rays or ZIP archives to score them all with every backbone of this experiment."
INTRO = ("Score many chest X-rays at once with every backbone of the experiment: one row per file with each "
         "backbone's calibrated probabilities, its most likely class, its positive calls at the operating point "
         "chosen on validation (Youden's J), how much of its heat map lies on the lungs, and whether the image is "
         "unlike the training X-rays (the same check as the Diagnose page). Files that cannot be read are listed "
         "below the table; they do not stop the batch.")
FILE_HELP = "The uploaded file; an image inside a ZIP archive is named ARCHIVE:PATH."
LUNG_HELP = ("Share of the heat map's weight inside the lung fields found on the film (per backbone), or the lungs' own "
             "share of the film (chance). Empty: the lungs could not be found reliably on this film.")
TABLE_NOTE = ("Click a column header to sort; scroll sideways for every backbone (the file name stays). "
              "Probabilities are temperature-calibrated; a call is positive when the model's raw score reaches "
              "the threshold chosen on the validation split (Youden's J). *On the lungs*: the share of the backbone's "
              "heat map (CAM, most likely class) inside the lung fields found on the film, beside the lungs' own "
              "share of the film (what an evenly spread map would score); empty when the lungs could not be found "
              "reliably. Rows "
              "flagged as out of distribution keep their numbers, but the models were never trained on such "
              "images: do not trust them. The CSV holds the same columns as the command line (`{cli}`).")
SHEET_HELP = ("Each tile: the film as the models saw it, then each backbone's class activation map for its most "
              "likely class. Pick the files to draw (at most {n}).")
SHEET_CAPTION = ("Film, then each backbone's heat map (CAM) for its most likely class; under it the "
                 "backbone's top class, its probability and the call (+ or -).")
OOD_LABELS = {True: "Yes", False: "No", None: "Not checked"}
CALL_NONE = "none"


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


# ---------------------------------------------------------------- one scored batch

@dataclass
class BatchRun:
    """What the page shows of one batch: the scorer (names, backbones, point), scored rows, bad files."""

    scorer: batch.BatchPredictor
    rows: list[batch.ScoredImage]
    bad: list[batch.BadFile] = field(default_factory=list)
    ignored: int = 0

    @property
    def names(self) -> list[str]:
        return list(self.scorer.names)

    @property
    def archs(self) -> list[str]:
        return list(self.scorer.archs)


def progress_text(done: int, total: int, archs: Sequence[str]) -> str:
    return f"Scoring {done} / {total} file(s) with {', '.join(arch_label(a) for a in archs)}…"


def mostly_outside(row: batch.ScoredImage) -> bool:
    """Does a backbone's heat map of this row lie mostly outside the lung fields?"""
    return any(b.lung_weight is not None and b.lung_weight.mostly_outside for b in row.backbones.values())


def summary(run: BatchRun) -> str:
    n_ood = sum(1 for r in run.rows if r.ood)
    n_off = sum(1 for r in run.rows if mostly_outside(r))
    parts = [f"**{len(run.rows)}** file(s) scored with {' and '.join(arch_label(a) for a in run.archs)}"]
    if run.bad:
        parts.append(f"**{len(run.bad)}** could not be used (listed below the table)")
    if n_ood:
        parts.append(f"**{n_ood}** unlike the training X-rays")
    if n_off:
        parts.append(f"**{n_off}** with a heat map lying mostly outside the lungs")
    if run.ignored:
        parts.append(f"{run.ignored} non-image file(s) in the archives skipped")
    return "; ".join(parts) + "."


def prob_column(arch: str, cls: str) -> str:
    return f"{arch_label(arch)}: P({cls})"


def top_column(arch: str) -> str:
    return f"{arch_label(arch)}: most likely"


def calls_column(arch: str) -> str:
    return f"{arch_label(arch)}: positive calls"


def lung_column(arch: str) -> str:
    return f"{arch_label(arch)}: on the lungs"


FILE_COLUMN, OOD_COLUMN, REASON_COLUMN = "File", "Out of distribution", "Why"
LUNG_AREA_COLUMN = "Lungs: share of the film"
PERCENT_FORMAT = "%.0f %%"            # how the page prints the lung columns (they hold percentages)


def display_table(run: BatchRun) -> pd.DataFrame:
    """One row per scored file, in upload order: the file, per backbone its most likely class, each class's
    calibrated probability, the classes called positive (``none``; ``—`` when no threshold is stored) and
    the share of its heat map on the lungs (%; None without reliable lung fields), then the lungs' share of
    the film (%), the OOD verdict (Yes / No / Not checked) and its reason."""
    out = []
    for row in run.rows:
        rec = {FILE_COLUMN: row.name}
        for arch in run.archs:
            b = row.backbones[arch]
            rec[top_column(arch)] = run.names[b.top]
            rec.update({prob_column(arch, c): float(b.probs[j]) for j, c in enumerate(run.names)})
            if all(c is None for c in b.calls):
                rec[calls_column(arch)] = "—"
            else:
                rec[calls_column(arch)] = ", ".join(c for c, call in zip(run.names, b.calls) if call) or CALL_NONE
            lw = b.lung_weight
            rec[lung_column(arch)] = 100 * lw.share_inside if lw is not None and lw.measured else None
        rec[LUNG_AREA_COLUMN] = None if row.lung_area is None else 100 * row.lung_area
        rec[OOD_COLUMN] = OOD_LABELS[row.ood]
        rec[REASON_COLUMN] = row.ood_reason
        out.append(rec)
    columns = [FILE_COLUMN]
    for arch in run.archs:
        columns += [top_column(arch), *(prob_column(arch, c) for c in run.names), calls_column(arch), lung_column(arch)]
    return pd.DataFrame(out, columns=columns + [LUNG_AREA_COLUMN, OOD_COLUMN, REASON_COLUMN])


def probability_columns(run: BatchRun) -> list[str]:
    return [prob_column(a, c) for a in run.archs for c in run.names]


def lung_columns(run: BatchRun) -> list[str]:
    """The table's percentage columns: each backbone's share on the lungs, the lungs' share of the film."""
    return [lung_column(a) for a in run.archs] + [LUNG_AREA_COLUMN]


def csv_bytes(run: BatchRun) -> bytes:
    """The table as the command line writes it (``BatchPredictor.columns()``; empty cells for None), UTF-8."""
    return run.scorer.table(run.rows).to_csv(index=False).encode("utf-8")


def bad_table(run: BatchRun) -> pd.DataFrame:
    """``File, Problem``: the inputs that could not be scored."""
    return batch.bad_table(run.bad).rename(columns={"file": FILE_COLUMN, "message": "Problem"})


def bad_heading(run: BatchRun) -> str:
    return f"{len(run.bad)} file(s) could not be used"


def file_labels(run: BatchRun) -> list[str]:
    """One label per scored row, unique (a repeated file name gets `` (2)``, ...), for the sheet picker."""
    seen: dict[str, int] = {}
    labels = []
    for row in run.rows:
        seen[row.name] = seen.get(row.name, 0) + 1
        labels.append(row.name if seen[row.name] == 1 else f"{row.name} ({seen[row.name]})")
    return labels


def default_sheet(run: BatchRun) -> list[int]:
    """Rows preselected for the contact sheet: the first ``SHEET_DEFAULT``."""
    return list(range(min(SHEET_DEFAULT, len(run.rows))))


def sheet_rows(run: BatchRun, chosen: Sequence[int]) -> list[batch.ScoredImage]:
    return [run.rows[i] for i in chosen if 0 <= i < len(run.rows)][:SHEET_MAX]


def sheet_png(run: BatchRun, chosen: Sequence[int]) -> bytes | None:
    """The contact sheet of the chosen rows as PNG bytes (None: nothing chosen)."""
    rows = sheet_rows(run, chosen)
    if not rows:
        return None
    return batch.contact_sheet_png(rows, run.names, archs=run.archs, columns=SHEET_COLUMNS)


def batch_error(exp_name: str, exc: Exception) -> str:
    """The models could not be loaded or could not run: say so (the app keeps working)."""
    return (f"The batch could not be scored with experiment '{exp_name}' ({type(exc).__name__}: {str(exc)[:300]}). "
            "If its models are missing or damaged, retrain it with train.py or pick another experiment.")


def file_name(exp_name: str, kind: str, ext: str) -> str:
    return f"covidviz-batch-{exp_name}-{kind}.{ext}"
