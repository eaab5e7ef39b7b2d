#!/usr/bin/env python
"""Cold start of Diagnose: how much slower the first upload of a fresh server is than the second.

Each run is a fresh Python process (a freshly started ``streamlit run app.py``: nothing cached), driving
the Diagnose page through Streamlit's ``AppTest`` (the page script, its caches and session state, as the
server runs them; no browser). It times:

- ``open``: the page opens (with the preload, the experiment's models load and warm up here, under
  "Loading the models of EXPERIMENT…");
- ``first upload``: a PNG film uploaded, the page run with its results (both backbones, heat maps,
  verdict, similar images, report);
- ``later uploads``: ``--uploads - 1`` other films, the same (their median).

It prints the medians over the runs and the median ratio first / later upload: 1.0 means no cold start
(one upload against the median of several, because single uploads on a shared 2-core machine vary by 2x).
``--baseline DIR`` also runs a copy of the app from before the preload (e.g. ``git archive HEAD``
unpacked in DIR) the same way, interleaved, so both see the same machine load.

Without ``--exp`` it trains a demo-like experiment once (``train.py --demo`` on 120 phantoms, 1 epoch:
DenseNet121 + ResNet50 at 64 px, analysed) into ``$COVIDVIZ_CACHE/bench-cold-start``.

    python -m bench.cold_start [--exp runs/demo] [--runs 3] [--uploads 5] [--baseline /tmp/covidviz-head]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "cold-start"  # the experiment's folder name in the bench's runs root (not "demo": Diagnose opens on the uploader)
FILM = 512           # side of the uploaded phantom films (px)


def bench_experiment() -> Path:
    """A demo-like experiment (trained once, then reused)."""
    from covidviz.data.cache import default_cache_dir

    root = default_cache_dir() / "bench-cold-start"
    exp = root / NAME
    if (exp / "manifest.json").exists():
        return exp
    sys.path.insert(0, str(REPO))
    import train

    argv = ["--demo", "--data", "synthetic:120:difficulty=0.3,size=128", "--epochs", "1", "--out", str(root),
            "--name", NAME, "--workers", "0", "--overwrite"]
    if train.main(argv) != 0:
        raise SystemExit("training the bench experiment failed")
    return exp


def runs_root_for(exp: Path) -> Path:
    """A runs folder holding only ``exp`` under the name ``NAME`` (a symlink: nothing copied)."""
    root = Path(tempfile.mkdtemp(prefix="cold-start-runs-"))
    (root / NAME).symlink_to(exp.resolve(), target_is_directory=True)
    return root


def films(n: int) -> list[bytes]:
    """``n`` different phantom films as PNG bytes (``n`` uploads)."""
    import numpy as np
    from PIL import Image

    from covidviz.data.synthetic import render_phantom

    out = []
    for seed in range(11, 11 + n):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(render_phantom(seed, (), size=FILM)[0], np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def child(app: Path, uploads: int) -> dict:
    """One cold session on the app in ``app`` (its own process): wall seconds of the page's opening and of
    each upload, in order."""
    from streamlit.testing.v1 import AppTest

    pngs = films(uploads)
    t0 = time.perf_counter()
    at = AppTest.from_file(str(app / "app_pages" / "diagnose.py"), default_timeout=900).run()
    times = {"open": time.perf_counter() - t0, "uploads": []}
    assert not at.exception, [e.value for e in at.exception]
    for k, data in enumerate(pngs):
        name = f"film-{k}.png"
        t0 = time.perf_counter()
        at.file_uploader(key=f"{NAME}::diagnose_upload").set_value((name, data, "image/png")).run()
        times["uploads"].append(time.perf_counter() - t0)
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        assert at.session_state["upload"]["name"] == name  # the page did predict this film
    return times


def run_child(app: Path, root: Path, uploads: int) -> dict:
    env = {**os.environ, "COVIDVIZ_RUNS": str(root), "PYTHONPATH": str(app)}
    # This file runs the session; PYTHONPATH puts the measured app's covidviz first (the baseline's copy).
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(app), "--uploads", str(uploads)],
                         cwd=app, env=env,
                         capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"cold-start run in {app} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exp", type=Path, default=None, help="experiment folder (default: train a demo-like one)")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per app")
    ap.add_argument("--uploads", type=int, default=5, help="films uploaded one after the other in each process")
    ap.add_argument("--baseline", type=Path, default=None, help="a copy of the app without the preload, run alike")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, max(2, args.uploads))))
        return 0
    exp = (args.exp or bench_experiment()).resolve()
    root = runs_root_for(exp)
    try:
        return report(exp, root, args)
    finally:
        (root / NAME).unlink()
        root.rmdir()


def report(exp: Path, root: Path, args) -> int:
    """Run the fresh processes (interleaved) and print the table."""
    apps = {"preload": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    results: dict[str, list[dict]] = {k: [] for k in apps}
    for _ in range(args.runs):
        for label, app in apps.items():  # interleaved: the machine's load hits both alike
            results[label].append(run_child(app, root, max(2, args.uploads)))
    print(f"cold start of Diagnose: {exp}, {args.runs} fresh process(es) each, {max(2, args.uploads)} uploads, "
          "wall seconds (median over the runs)")
    print(f"{'app':<10}{'open':>8}{'1st upload':>12}{'later':>8}{'1st / later':>13}  each run: open | uploads")
    for label, rows in results.items():
        first = [r["uploads"][0] for r in rows]
        later = [statistics.median(r["uploads"][1:]) for r in rows]
        ratio = statistics.median(f / lat for f, lat in zip(first, later))
        each = "; ".join(f"{r['open']:.1f} | " + " ".join(f"{u:.1f}" for u in r["uploads"]) for r in rows)
        print(f"{label:<10}{statistics.median(r['open'] for r in rows):>8.2f}{statistics.median(first):>12.2f}"
              f"{statistics.median(later):>8.2f}{ratio:>13.2f}  {each}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
