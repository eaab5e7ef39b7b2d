"""One fact, one reading (issue 25, part 1): for the same image and experiment (a test film of the tiny
experiment), the Diagnose page, the SOM page, Compare and the case report print the same SOM position,
the same thresholds on the same named scale, and the same out-of-distribution yardstick, and name the
backbones by their display names. The facts go through ``covidviz.views.formats``; these tests read what
each page printed (AppTest) and what the report the Diagnose page built says (``report_blocks``), and
compare them with each other, not with the formatter."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidviz import runs, ui
from covidviz.ood import OodVerdict
from covidviz.views import diagnose as diagnose_view
from covidviz.views import diagnose_calls as calls_view
from covidviz.views import formats
from covidviz.views import report as report_view
from covidviz.views.style import arch_label

REPO = Path(__file__).resolve().parents[1]
PAGES = REPO / "app_pages"
TIMEOUT = 120
NAME = "chest.png"
POSITION = r"column \d+ of \d+ \(left to right\), row \d+ of \d+ \(top to bottom\)"
RAW_LINE = "The same thresholds on the model's raw score"

pytestmark = pytest.mark.usefixtures("app_like_server")


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _key(exp, name: str) -> str:
    return ui.scoped(exp, name)


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _texts(at) -> list[str]:
    """Every sentence the page printed (markdown, captions, alerts, headings)."""
    kinds = ("markdown", "caption", "info", "warning", "success", "error", "title", "header", "subheader")
    return [el.value for kind in kinds for el in getattr(at, kind)]


def _printed(table):
    """An ``st.table`` as printed (the Styler's display values, with the digits the page shows)."""
    import pyarrow as pa

    return pa.ipc.open_stream(table.proto.arrow_data.styler.display_values).read_pandas()


def _diagnose(exp, monkeypatch):
    """The Diagnose page after an upload of a test film, and the case report it built."""
    from streamlit.testing.v1 import AppTest

    built = []
    monkeypatch.setattr(report_view, "case_report_png", lambda case, *a, **k: built.append(case) or b"png")
    at = AppTest.from_file(str(PAGES / "diagnose.py"), default_timeout=TIMEOUT).run()
    _ok(at)
    film = exp.thumbnails()[int(np.flatnonzero((exp.images()["split"] == "test").to_numpy())[1])]
    at.file_uploader(key=_key(exp, "diagnose_upload")).set_value((NAME, _png(film), "image/png")).run()
    _ok(at)
    if at.session_state["upload"]["verdict"]["is_ood"]:  # the placements and calls are then shown on request only
        at.toggle(key=_key(exp, f"diagnose_show_anyway::{NAME}")).set_value(True).run()
        _ok(at)
    assert built, "the page built no case report"
    return at, built[-1]


def test_every_page_and_the_case_report_state_the_same_facts(tiny_experiment, monkeypatch):
    from streamlit.testing.v1 import AppTest

    exp = runs.read_experiment(tiny_experiment)
    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    names, archs = list(exp.labels.names), list(exp.backbones)
    labels = [arch_label(a) for a in archs]
    at, case = _diagnose(exp, monkeypatch)
    record = at.session_state["upload"]
    blocks = report_view.report_blocks(case)
    report_text = [str(p) for k, p in blocks if k not in ("images", "table")]
    report_tables = [p for k, p in blocks if k == "table"]
    yardstick = formats.ood_yardstick(record["verdict"])
    assert yardstick and yardstick == case.diag.verdict.rule  # the stored verdict and the report's are one

    # ------------------------------------------------ SOM position: Diagnose, the report, the SOM page
    page_som = [m for c in at.caption if (m := re.match(rf"SOM node (\d+), at ({POSITION})\.", c.value))]
    assert len(page_som) == len(archs), [c.value for c in at.caption]
    diagnose_pos = {a: (int(m[1]), m[2]) for a, m in zip(archs, page_som)}
    report_som = {a: re.search(rf"{re.escape(lab)}: SOM node (\d+), at ({POSITION})\.", " ".join(report_text))
                  for a, lab in zip(archs, labels)}
    assert {a: (int(m[1]), m[2]) for a, m in report_som.items() if m} == diagnose_pos
    assert {a: record["backbones"][a]["som_node"] for a in archs} == {a: n for a, (n, _) in diagnose_pos.items()}

    som = AppTest.from_file(str(PAGES / "som.py"), default_timeout=TIMEOUT)
    som.session_state[ui.UPLOAD_KEY] = record
    _ok(som.run())
    boxes = [t for t in [i.value for i in som.info] + [w.value for w in som.warning] if f"**{NAME}** (★)" in t]
    assert len(boxes) == len(archs), boxes
    som_pos = []
    for text in boxes:
        m = re.search(rf"sits on node (\d+), at ({POSITION})\.", text)
        som_pos.append((int(m[1]), m[2]))
        assert yardstick in text  # THE yardstick, the same sentence as Diagnose's and the report's
        assert text.index(yardstick) < text.index(formats.DETAIL_LEAD)  # the QE comes after it, as a detail
    assert som_pos == [diagnose_pos[a] for a in archs]
    arch = archs[0]
    node, pos = diagnose_pos[arch]
    som.button(key=_key(exp, f"som_goto_upload_{arch}")).click().run()
    _ok(som)
    assert f"Node {node} is at {pos} on the map above." in [c.value for c in som.caption]
    centres = next(t for t in json.loads(som.get("plotly_chart")[0].proto.spec)["data"] if t.get("name") == "nodes")
    col, row = re.match(r"column (\d+) of \d+ \(left to right\), row (\d+)", pos).groups()
    assert centres["text"][node].startswith(f"node {node} (column {col}, row {row})")  # the hover says it too

    # ------------------------------------------------ thresholds: Diagnose, the report, Compare
    tables = [t for t in at.table if "Call" in t.value.columns]
    assert len(tables) == len(archs) == len(report_tables)
    for table, rep in zip(tables, report_tables):
        printed = _printed(table)
        columns = list(table.value.columns)
        assert columns[1:3] == [calls_view.prob_column(formats.CALIBRATED), calls_view.threshold_column(formats.CALIBRATED)]
        assert [n for n, _ in rep["columns"]][:3] == columns[:3]  # the report names the same scale
        assert [r[2] for r in rep["rows"]] == list(printed[columns[2]])  # and prints the same calibrated thresholds
    sentences = [t for t in _texts(at) + report_text if re.search(r"threshold, \d\.\d", t)]
    assert all(re.search(r"threshold, \d\.\d+ \(calibrated\)", t) for t in sentences), sentences
    raw_lines = [c.value for c in at.caption if c.value.startswith(RAW_LINE)]
    report_raw = [t for t in report_text if t.startswith(RAW_LINE)]
    assert len(raw_lines) == len(archs) and raw_lines == report_raw

    compare = AppTest.from_file(str(PAGES / "compare.py"), default_timeout=TIMEOUT)
    _ok(compare.run())
    for cls in names:
        compare.selectbox(key=_key(exp, "cmp_class")).set_value(cls).run()
        _ok(compare)
        rates = next(t.value for t in compare.table if "Threshold" in map(str, t.value.index))
        for lab, raw_line, rep in zip(labels, raw_lines, report_raw):
            shown = rates.loc["Threshold", lab]  # Compare: the raw-score threshold, saying so
            assert shown == "—" or re.fullmatch(r"\d\.\d{3} \(raw score\)", shown), shown
            assert f"{cls} {shown}" in raw_line and f"{cls} {shown}" in rep  # the same number, the same scale
            assert f"**{lab}** — confusion matrix at threshold {shown}" in [m.value for m in compare.markdown] \
                or shown == "—"

    # ------------------------------------------------ one OOD yardstick; backbones by their display names
    similar = [c.value for c in at.caption if "verdict at the top of the page decides" in c.value]
    assert len(similar) == len(archs) and all(yardstick in c for c in similar)
    assert yardstick in report_text
    everything = _texts(at) + _texts(som) + _texts(compare) + report_text
    rate = f"{100 * record['verdict']['false_alarm_rate']:.0f}"
    for text in everything:  # one stated rate; any other share of the training images is a detail of the verdict
        assert all(m == rate for m in re.findall(r"farthest (\d+) %", text)), text
        if re.search(r"(larger|above|farther) than (that of |for )?\d+(\.\d)? % of (the )?training images", text):
            assert formats.DETAIL_LEAD in text or yardstick in text, text
    raw_ids = [a for a in archs if arch_label(a) != a]
    for text in _texts(at) + _texts(som) + report_text:
        assert not [a for a in raw_ids if re.search(rf"\b{a}\b", text)], text


def _verdict(**kw) -> OodVerdict:
    base = dict(is_ood=True, reasons=[], score=9.0, percentile=100.0, gate=None, checked=True, cutoff=2.0,
                false_alarm_rate=0.05, detector="mahalanobis", per_backbone={"densenet121": 9.0, "resnet50": 3.0})
    return OodVerdict(**{**base, **kw})


def test_ood_reasons_name_what_was_measured_for_this_image():
    """No fixed list of what the image "may be": the check that fired, with this image's number against
    its cut-off; a real frontal film that only the feature check flags is told it looks like one."""
    from covidviz.ood.gate import GateResult

    film = GateResult(passed=True, view="frontal")
    text = formats.ood_summary(_verdict(gate=film))
    assert "It looks like a frontal chest radiograph, but the models find it unlike their training images." in text
    assert "distance score is 9.00, above the cut-off of 2.00" in text and "the farthest 5 %" in text
    assert "most of all for DenseNet121" in text and "densenet121" not in text  # display names
    assert "photo" not in text and "CT slice" not in text
    lateral = GateResult(passed=False, reasons=["It looks like a lateral view (one lung field covering 20 % of "
                                                "the image); the models were trained on plain frontal chest films."],
                         view="lateral", view_reason="It looks like a lateral view (one lung field covering 20 % of "
                                                     "the image); the models were trained on plain frontal chest films.")
    text = formats.ood_summary(_verdict(gate=lateral, score=0.5, percentile=40.0))
    assert "lateral view (one lung field covering 20 %" in text and "distance score" not in text  # only what fired
    message = diagnose_view.ood_message(type("D", (), {"ood": True, "verdict": _verdict(gate=film)})())
    assert "may be a photo" not in message and message.endswith("So the results below are withheld.")
    legacy = _verdict(detector="legacy", false_alarm_rate=0.01, score=None, cutoff=None, per_backbone={"resnet50": 99.7},
                      reasons=["resnet50: its SOM quantisation error (4.10) is larger than for 99.7 % of the training images."])
    text = formats.ood_summary(legacy)
    assert "ResNet50: its SOM quantisation error (4.10) is larger than for 99.7 % of the training images (the check " \
           "flags what is larger than for 99 % of them)." in text


def test_thresholds_and_positions_are_formatted_once():
    assert formats.threshold_text(0.5944, formats.RAW) == "0.594 (raw score)"
    assert formats.threshold_text(0.99912, formats.CALIBRATED) == "0.999 (calibrated)"
    assert formats.threshold_text(None, formats.RAW) == formats.threshold_text(float("nan"), formats.RAW) == "—"
    # node = column_index * rows + row_index; rows are counted from the top, as the map is drawn
    assert formats.som_cell(0, (11, 9)) == (1, 9) and formats.som_cell(8, (11, 9)) == (1, 1)
    assert formats.som_position(2 * 9 + 5, (11, 9)) == "column 3 of 11 (left to right), row 4 of 9 (top to bottom)"
    assert diagnose_view.som_caption(2 * 9 + 5, (11, 9)).startswith(f"SOM {formats.som_node_text(23, (11, 9))}.")
