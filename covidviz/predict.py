"""Score many X-rays with a trained experiment: one CSV row per file.

    python -m covidviz.predict runs/EXP FILES_OR_FOLDERS_OR_ZIPS... --out preds.csv [--heatmaps DIR]
                               [--batch-size N] [--arch ARCH ...] [--point youden] [--quiet]

Folders are searched recursively for PNG/JPEG/TIFF/BMP/WebP/DICOM files; ZIP archives are read in
memory (limits: ``covidviz.batch.MAX_ZIP_MEMBERS`` files, ``MAX_ZIP_BYTES`` uncompressed). The CSV is
``covidviz.batch.export``'s, the same the Batch page offers: identity columns on every row (experiment,
when it was trained, backbones, operating point), ``file``, ``error``, the out-of-distribution verdict
(``ood``, ``ood_kind``, ``ood_reason``), per backbone and class the calibrated probability, the
threshold on that scale, the call and the validation threshold on the raw score, the lung shares.
A file that cannot be read gets a row with its message in ``error`` (and one line on stderr).
``--heatmaps DIR`` writes contact sheets (``contact-0001.png``, ... ``SHEET_SIZE`` images each: the film
and every backbone's CAM overlay). The CSV is written to a temporary name and renamed when complete.

Exit status: 0 when at least one file was scored, 1 when none could be, 2 on usage errors (a missing
or unreadable experiment, bad options).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

SHEET_SIZE = 24     # images per contact sheet
SHEET_COLUMNS = 4
PROG = "covidviz.predict"


def build_parser() -> argparse.ArgumentParser:
    from covidviz.batch import DEFAULT_BATCH_SIZE, DEFAULT_POINT
    from covidviz.runs.records import POINTS

    p = argparse.ArgumentParser(prog=PROG, description="Score X-ray files, folders and ZIP archives with a trained "
                                "experiment (one CSV row per file; unreadable files with their error).")
    p.add_argument("experiment", help="experiment folder, e.g. runs/demo")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER", help="image/DICOM files, folders (recursive), ZIP archives")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    p.add_argument("--heatmaps", default=None, metavar="DIR", help="write heat-map contact sheets (PNG) into DIR")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per forward pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--arch", nargs="+", default=None, help="only these backbones (default: all of the experiment's)")
    p.add_argument("--point", default=DEFAULT_POINT, choices=POINTS,
                   help=f"operating point of the calls, chosen on validation (default {DEFAULT_POINT}: Youden's J)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _bad_line(bad) -> str:
    msg = bad.message if bad.name in bad.message else f"{bad.name}: {bad.message}"
    return f"{PROG}: skipped {msg}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): a return code, not an exit, for callers
        return int(exc.code or 0)
    if args.batch_size < 1:
        print(f"{PROG}: error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from tqdm.auto import tqdm

    from covidviz import batch, runs
    from covidviz.batch import export
    from covidviz.inference import Predictor

    try:
        predictor = Predictor(runs.read_experiment(args.experiment))
    except (runs.RunFormatError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"{PROG}: error: cannot use experiment {args.experiment}: {exc}", file=sys.stderr)
        return 2
    try:
        scorer = batch.BatchPredictor(predictor, args.batch_size, point=args.point, archs=args.arch)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    out = Path(args.out)
    heat_dir = Path(args.heatmaps) if args.heatmaps else None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if heat_dir is not None:
            heat_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    n_ok, n_bad, sheet, n_sheets = 0, 0, [], 0

    def write_sheet():
        nonlocal n_sheets
        n_sheets += 1
        batch.contact_sheet(sheet, scorer.names, archs=scorer.archs, columns=SHEET_COLUMNS).save(
            heat_dir / f"contact-{n_sheets:04d}.png")
        sheet.clear()

    with batch.collect_inputs(args.inputs) as inputs:
        bar = tqdm(total=len(inputs.sources), unit="img", desc=f"scoring with {', '.join(scorer.archs)}",
                   disable=True if args.quiet else None, file=sys.stderr)
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = export.writer(fh, scorer)
                for bad in inputs.bad:
                    n_bad += 1
                    bar.write(_bad_line(bad), file=sys.stderr)
                    writer.writerow(export.csv_row(scorer, bad))
                for item in scorer.iter_scored(inputs.sources, progress=bar.update):
                    writer.writerow(export.csv_row(scorer, item))
                    if isinstance(item, batch.BadFile):
                        n_bad += 1
                        bar.write(_bad_line(item), file=sys.stderr)
                        continue
                    n_ok += 1
                    if heat_dir is not None:
                        sheet.append(item)
                        if len(sheet) >= SHEET_SIZE:
                            write_sheet()
            if heat_dir is not None and sheet:
                write_sheet()
            os.replace(tmp, out)
        finally:
            bar.close()
            if tmp.exists():
                tmp.unlink()
    ignored = f", {inputs.ignored} non-image files ignored" if inputs.ignored else ""
    sheets = f"; {n_sheets} contact sheet(s) in {heat_dir}" if n_sheets else ""
    print(f"scored {n_ok} file(s), {n_bad} unreadable (in the CSV with their error){ignored} -> {out}{sheets}")
    if not n_ok:
        print(f"{PROG}: no file could be scored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
