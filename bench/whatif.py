#!/usr/bin/env python
"""What-if panel cost: every occlusion what-if of one image for both backbones, each with its random band
(``--draws`` same-size random regions, 10 by default: issue 24), in milliseconds and as a ratio to one
bare forward pass of both backbones.

Builds DenseNet121 and ResNet50 with random weights (speed does not depend on them; ``bench.diagnose``'s
``StandIn``) and one phantom-like film (``bench.diagnose.film``) resized to the model input. Each
round, interleaved so drift on a shared machine hits every row alike, measures:

- ``bare``: ``model(x)`` under ``torch.no_grad()`` for both backbones, one image each;
- ``panel (page's maps)``: ``whatif.what_if_panel`` with the heat maps and probabilities the Diagnose page
  already has (what the page calls): hottest 5/10/20 % hidden, the hottest 20 % kept alone, borders,
  centre, a user box, each with ``--draws`` random regions, and the original; one batched forward per
  backbone;
- ``panel (own CAMs)``: the same, computing its own CAMs first (one more single-image forward each);
- ``box row alone``: ``whatif.box_what_if`` with its band (what a page reruns when the user moves the box);
- ``chart (no model)``: ``views.whatif``'s reading of the panel and the box: summary, figure (as JSON, with
  its thumbnails), contradictions, sentences.

Prints median milliseconds, the images each backbone scores and the median per-round ratio to
``bare``. ``--clock wall --threads 2`` is what a user waits for on a 2-core machine; the default
``--clock cpu`` (process CPU time) keeps the ratios steady when other jobs share the machine.

    python -m bench.whatif [--size 224] [--repeats 3] [--draws 10] [--threads N] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.diagnose import ARCHS, StandIn, film, make_clock
from covidviz.anatomy.inputs import model_pixels
from covidviz.cam import compute_cam
from covidviz.cam import whatif as W
from covidviz.views import whatif as view

BOX = {"x": 0.05, "y": 0.05, "w": 0.25, "h": 0.2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--film", type=int, default=1024, help="side of the decoded upload (px)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--draws", type=int, default=W.RANDOM_DRAWS, help="random same-size regions per condition")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = make_clock(args.clock)
    exp = StandIn(ARCHS, args.size)
    prep = exp.preprocessing
    models = {a: exp.load_model(a) for a in ARCHS}
    pixels = model_pixels(prep, film(args.film))
    x = prep.to_tensor(pixels)
    cls = 0
    # What the Diagnose page already holds for the shown image: each backbone's map and probability.
    heats = {a: compute_cam(m, x, cls) for a, m in models.items()}
    temps = {a: 1.5 for a in ARCHS}
    scorer = W.Scorer(models, prep, exp.labels.task, exp.labels.names, temps)
    before = {a: float(scorer.probs(a, heats[a].logits, cls)[0]) for a in ARCHS}

    def bare():
        with torch.no_grad():
            for m in models.values():
                m(x)

    design = W.PanelDesign(box=BOX, draws=args.draws)
    given, bare_request = W.WhatIfRequest(pixels, cls, heats=heats, before=before), W.WhatIfRequest(pixels, cls)

    def panel_given():
        return W.what_if_panel(scorer, given, design)

    def panel_own():
        return W.what_if_panel(scorer, bare_request, design)

    n_panel = (len(W.FRACTIONS) + 1 + 2 + 1) * (1 + args.draws) + 1  # conditions x (1 + band), the original

    def box_row():
        return W.box_what_if(scorer, given, BOX, draws=args.draws)

    panel, box = panel_given(), box_row()

    def chart():  # what the page draws from them: the reading, the summary, the figure, the sentences
        reading = view.read_panel(panel, box)
        return reading.summary(), reading.figure(BOX).to_json(), reading.flags(), reading.sentences()

    rows = {"bare (2 forwards)": (bare, 1, 0), "panel (page's maps)": (panel_given, n_panel, 0),
            "panel (own CAMs)": (panel_own, n_panel, 1), "box row alone": (box_row, 2 + args.draws, 0),
            "chart (no model)": (chart, 0, 0)}
    for f, _, _ in rows.values():  # warm up (allocator, first-call costs)
        f()
    times = {k: [] for k in rows}
    for _ in range(args.repeats):
        for k, (f, _, _) in rows.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    base = times["bare (2 forwards)"]
    print(f"what-if panel: {', '.join(ARCHS)} at {args.size} px, {args.draws} random draws, {args.repeats} rounds, "
          f"clock={args.clock}, torch threads={torch.get_num_threads()}")
    print(f"{'step':<22}{'images/backbone':>16}{'median ms':>11}{'ratio':>8}")
    for k, ts in times.items():
        _, n, extra = rows[k]
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        imgs = f"{n}" + (f" + {extra}" if extra else "")
        print(f"{k:<22}{imgs:>16}{1000 * statistics.median(ts):>11.1f}{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
