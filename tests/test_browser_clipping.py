"""Nothing clipped, nothing covered: every page of every fixture experiment, in Debian chromium at
1280x800 and 1920x1080 (``streamlit run app.py`` + Playwright).

What fails, measured in the DOM after the page's script has finished (expanders opened):

- a table cell or header (``st.table``, markdown/HTML tables), a button label, a selectbox value or
  multiselect tag, a widget or metric label, a sidebar label or navigation entry, or a tab whose content
  is wider than its box (``scrollWidth > clientWidth + 1``: cut, ellipsised or scrolling sideways);
- an ``st.dataframe`` (a glide canvas, no DOM cells) whose columns need more width than its box
  (its scroller scrolls sideways, hiding columns);
- a Plotly modebar whose box (drawn on hover, top right) intersects a text of the same chart (title,
  legend, annotation, tick label) or any text outside the chart (a widget above it).

Each offence names the experiment, the page, the kind, its text, the nearest heading above it and the
sizes; a screenshot of the first offenders and of each page's first screen go to ``tmp_path``
(never into docs/).

Fixtures: ``demo`` (the tiny trained experiment, demo-like), ``covid3-ext`` (the same with an external
site, ``tests/external_fixtures.py``) and ``nih14`` (14 findings, two backbones, probabilities of
``make_analysed`` with the real analysis step's maps). The pages are walked in one browser session by
the sidebar navigation, as a user does (so the SOM page knows the image Diagnose opened).

The full walk (3 experiments x 7 pages x 2 sizes) is marked slow; the default suite keeps Overview and
Compare of ``covid3-ext`` at 1280.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.browser_support import CHROMIUM_MARKS, chromium_page, streamlit_server
from tests.external_fixtures import tiny_with_external

pytestmark = CHROMIUM_MARKS

SIZES = {1280: (1280, 800), 1920: (1920, 1080)}
# (sidebar navigation entry, start of the title the page draws: the experiment's own name follows, which
# for a linked copy is not its folder's)
PAGES = [("Overview", "Overview:"), ("Diagnose", "Diagnose:"), ("Batch", "Batch:"),
         ("Compare backbones", "Compare backbones:"), ("Latent space", "Latent space:"),
         ("Self-organizing map", "Self-organizing map:"), ("Glossary", "Glossary")]
EXPERIMENTS = ("demo", "covid3-ext", "nih14")

# Text-bearing elements whose content must fit their box: selector -> kind (first match wins).
FITS = [
    ("[data-testid='stTable'] th, [data-testid='stTable'] td, [data-testid='stTable'] [data-testid='stMarkdownContainer'], "
     "[data-testid='stMarkdownContainer'] table th, [data-testid='stMarkdownContainer'] table td", "table cell"),
    ("[data-testid='stTable'] > div, [data-testid='stMarkdownContainer'] div:has(> table)", "table"),
    ("button[role='tab'], button[role='tab'] *", "tab"),
    ("button, button *", "button"),
    ("[data-testid='stSelectbox'] input, [data-testid='stSelectbox'] [data-baseweb='select'] *, [data-baseweb='tag'], "
     "[data-baseweb='tag'] *", "selectbox value"),
    ("[data-testid='stSidebar'] label, [data-testid='stSidebar'] label *, [data-testid='stSidebarNav'] a *, "
     "[data-testid='stSidebar'] [data-testid='stCaptionContainer']", "sidebar label"),
    ("[data-testid='stWidgetLabel'], [data-testid='stWidgetLabel'] *, [data-testid='stMetricLabel'] *, "
     "[data-testid='stMetricValue'] *", "label"),
]

MEASURE_JS = """([fits]) => {
  const shown = e => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
                       return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const ownText = e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  // A selectbox shows its value in an <input> (a combobox): its text is the value.
  const txt = e => (e.tagName === 'INPUT' ? e.value : e.innerText || e.textContent || '')
    .trim().replace(/\\s+/g, ' ').slice(0, 90);
  const heads = [...document.querySelectorAll('h1, h2, h3, h4')];
  const near = e => { const x = e.closest("[data-testid='stExpander']");  // an expander's title, else the heading above
    if (x) return 'expander ' + txt(x.querySelector("summary [data-testid='stMarkdownContainer']") || x);
    let h = null; for (const x of heads) { if (x.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING) h = x; }
    return h ? txt(h) : (e.closest("[data-testid='stSidebar']") ? 'sidebar' : ''); };
  document.querySelectorAll('[data-clip-id]').forEach(e => e.removeAttribute('data-clip-id'));  // the last page's
  const out = []; let id = 0;
  const flag = (e, o) => { e.setAttribute('data-clip-id', String(id)); out.push({id: id++, near: near(e), ...o}); };
  const seen = new Set();
  for (const [sel, kind] of fits) {
    for (const e of document.querySelectorAll(sel)) {
      if (seen.has(e) || e.tagName === 'svg' || e.closest('svg')) continue;
      if (e.tagName === 'INPUT' && !e.closest("[data-testid='stSelectbox']")) continue;
      seen.add(e);
      if (!shown(e) || !txt(e)) continue;
      if (e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)
        flag(e, {kind, text: txt(e), need: e.scrollWidth, box: e.clientWidth});
    }
  }
  // st.dataframe: a glide canvas; its scroller scrolls sideways when the columns need more than the box.
  for (const d of document.querySelectorAll("[data-testid='stDataFrame']")) {
    const s = d.querySelector('.dvn-scroller');
    if (!s || !shown(d)) continue;
    if (s.scrollWidth > s.clientWidth + 1)
      flag(d, {kind: 'dataframe', text: '(canvas)', need: s.scrollWidth, box: s.clientWidth});
  }
  // Plotly modebar (top right, shown on hover) over a text of its chart or over anything outside it.
  const cut = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
                     && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const mainTexts = [...document.querySelectorAll("[data-testid='stMain'] *")]
    .filter(e => ownText(e) && !e.closest('.js-plotly-plot') && shown(e));
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const mb = g.querySelector('.modebar');
    if (!mb || !shown(g) || !shown(mb)) continue;
    const m = mb.getBoundingClientRect();
    const inside = [...g.querySelectorAll('text')].filter(t => t.textContent.trim() && !t.closest('.hoverlayer') && shown(t));
    for (const t of [...inside, ...mainTexts]) {
      const r = t.getBoundingClientRect();
      if (cut(m, r))
        flag(t, {kind: inside.includes(t) ? 'modebar over chart text' : 'modebar over text outside the chart',
                 text: txt(t) || t.textContent.trim().slice(0, 90),
                 need: Math.round(Math.min(m.right, r.right) - Math.max(m.left, r.left)),
                 box: Math.round(m.width), modebar: [m.left, m.top, m.right, m.bottom].map(Math.round),
                 at: [r.left, r.top, r.right, r.bottom].map(Math.round)});
    }
  }
  return out;
}"""

# The page's script has finished and every chart and grid is drawn.
SETTLED_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const charts = [...document.querySelectorAll("[data-testid='stPlotlyChart']")];
  return charts.every(c => c.querySelector('.main-svg'));
}"""

IMAGES_LOADED_JS = "() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')].every(i => i.complete)"
MAIN_HEIGHT_JS = "() => document.querySelector(\"[data-testid='stMain']\")?.scrollHeight || 0"

OPEN_EXPANDERS_JS = """() => { let n = 0;
  for (const d of document.querySelectorAll("[data-testid='stExpander'] details")) {
    if (!d.open) { d.querySelector('summary').click(); n++; } }
  return n; }"""


# ---------------------------------------------------------------- fixtures

def nih14_like(root: Path) -> Path:
    """14 findings, two backbones: ``make_analysed``'s probabilities, analysis and random features, with
    the analysis step's own map writers (PCA map, SOM) so the maps draw all 14 classes. (No OOD detector:
    the fake heads have no bias; Diagnose then says it has no weights, which is a page too.)"""
    from covidviz import runs
    from covidviz.analysis.experiment import _projections, _som, primary_label_index
    from covidviz.data.labels import MULTILABEL, NIH_FINDINGS
    from tests.test_compare_page import make_analysed

    path = make_analysed(root, "nih14", list(NIH_FINDINGS), MULTILABEL, ["densenet121", "resnet50"], n=300)
    exp = runs.read_experiment(path)
    images = exp.images()
    train = (images["split"] == "train").to_numpy()
    onehot, label_idx = exp.labels.onehot(images["labels"]), primary_label_index(images["labels"], exp.labels.names)
    for arch in exp.backbones:
        _projections(exp, arch, label_idx, train, 0, ("pca",))
        _som(exp, arch, onehot, exp.probabilities(arch), train, 0)
    return path


def link(root: Path, name: str, target: Path) -> None:
    (root / name).symlink_to(target, target_is_directory=True)


@pytest.fixture(scope="module")
def all_fixtures(tiny_experiment, tmp_path_factory) -> Path:
    """A runs folder with the three fixture experiments (the session's tiny ones linked, not copied)."""
    root = tmp_path_factory.mktemp("runs-clipping")
    link(root, "demo", tiny_experiment)
    link(root, "covid3-ext", tiny_with_external(tiny_experiment, tmp_path_factory))
    build = tmp_path_factory.mktemp("runs-nih14")
    link(root, "nih14", nih14_like(build))
    return root


@pytest.fixture(scope="module")
def walk_server(all_fixtures, tmp_path_factory):
    with streamlit_server(all_fixtures, tmp_path_factory.mktemp("log-clipping")) as url:
        yield url


# ---------------------------------------------------------------- the walk

def settle(page) -> None:
    """Wait for the script to finish, charts to draw and late reruns (e.g. Diagnose's) to end; open expanders."""
    page.wait_for_function(SETTLED_JS, timeout=180_000)
    page.wait_for_timeout(300)  # a script can rerun itself right after finishing
    page.wait_for_function(SETTLED_JS, timeout=180_000)
    if page.evaluate(OPEN_EXPANDERS_JS):
        page.wait_for_timeout(300)
        page.wait_for_function(SETTLED_JS, timeout=60_000)
    # An opened expander grows (animation, then its thumbnails load): measured mid-way, the text above a
    # chart and the chart's modebar overlap for a moment. Wait for every image and a height that holds.
    page.wait_for_function(IMAGES_LOADED_JS, timeout=60_000)
    last = -1
    for _ in range(20):
        height = page.evaluate(MAIN_HEIGHT_JS)
        if height == last:
            break
        last = height
        page.wait_for_timeout(250)
    page.wait_for_timeout(200)  # plotly's and glide's last layout pass


def open_page(page, url: str, exp: str, nav: str, title: str) -> None:
    """The first page by address (``?exp=``), the others by the sidebar navigation (same session)."""
    from playwright.sync_api import expect

    if nav == "Overview":
        page.goto(f"{url}/?exp={exp}", wait_until="domcontentloaded")
    else:
        page.locator("[data-testid='stSidebarNav'] a", has_text=nav).first.click()
    expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=180_000)
    settle(page)


def measure(page, where: str, shots: Path) -> list[str]:
    """The offences on the open page as lines; screenshots of the first few offenders to ``shots``."""
    found = page.evaluate(MEASURE_JS, [[[s, k] for s, k in FITS]])
    lines = []
    for k, f in enumerate(found):
        extra = f" modebar {f['modebar']} text at {f['at']}" if "modebar" in f else ""
        lines.append(f"{where}: {f['kind']} '{f['text']}' (under '{f['near']}'): content {f['need']} px "
                     f"in a {f['box']} px box{extra}")
        if k < 3:
            try:
                page.locator(f"[data-clip-id='{f['id']}']").first.screenshot(
                    path=str(shots / f"{where.replace(' ', '_').replace('/', '-')}-clip{k}.png"), timeout=5000)
            except Exception:  # noqa: BLE001 - an SVG text or a detached node: the message says enough
                pass
    return lines


PAGE_SECONDS: dict[str, float] = {}  # how long each page took to open and settle (printed by the slow walk)


def walk(url: str, size: int, experiments, pages, shots: Path) -> tuple[list[str], float]:
    """Open ``pages`` of each experiment at ``size``; returns (offences, seconds)."""
    width, height = SIZES[size]
    shots.mkdir(parents=True, exist_ok=True)
    problems, t0 = [], time.perf_counter()
    with chromium_page(width=width, height=height) as page:
        for exp in experiments:
            for nav, title in pages:
                t = time.perf_counter()
                open_page(page, url, exp, nav, title)
                PAGE_SECONDS[f"{size}px {exp}/{nav}"] = time.perf_counter() - t
                errors = page.locator("[data-testid='stException']")
                assert errors.count() == 0, f"{exp}/{nav}: {errors.first.inner_text()[:1500]}"
                where = f"{size}px {exp}/{nav}"
                problems += measure(page, where, shots)
                page.screenshot(path=str(shots / f"{size}-{exp}-{nav.split()[0].lower()}.png"))
    return problems, time.perf_counter() - t0


def report(problems: list[str], seconds: float, shots: Path) -> str:
    return f"{len(problems)} clipped or covered element(s) ({seconds:.0f} s; screenshots in {shots}):\n" + \
        "\n".join(problems[:60])


# ---------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def external_server(tiny_experiment, tmp_path_factory):
    """The default variant's server: only the experiment with an external site."""
    root = tmp_path_factory.mktemp("runs-clipping-fast")
    link(root, "covid3-ext", tiny_with_external(tiny_experiment, tmp_path_factory))
    with streamlit_server(root, tmp_path_factory.mktemp("log-clipping-fast")) as url:
        yield url


def test_overview_and_compare_fit_at_1280(external_server, tmp_path):
    """Overview (AUC and external-set tables, sidebar label) and Compare (modebar vs the test-set
    selector) of the experiment with an external site, at 1280x800."""
    pages = [p for p in PAGES if p[0] in ("Overview", "Compare backbones")]
    problems, seconds = walk(external_server, 1280, ["covid3-ext"], pages, tmp_path)
    assert not problems, report(problems, seconds, tmp_path)


@pytest.mark.slow  # 3 experiments x 7 pages per size (~30-60 s each on 2 cores, plus building nih14)
@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_page_fits_at(size, walk_server, tmp_path):
    problems, seconds = walk(walk_server, size, EXPERIMENTS, PAGES, tmp_path)
    slowest = sorted(((t, p) for p, t in PAGE_SECONDS.items() if p.startswith(f"{size}px")), reverse=True)[:5]
    # Not asserted: a shared 2-core machine makes times noisy.
    print(f"walk at {size} px: {seconds:.0f} s; slowest pages: " + ", ".join(f"{p} {t:.1f} s" for t, p in slowest))
    assert not problems, report(problems, seconds, tmp_path)
