"""The layout's rules, checked from the source (no imports run): imports flow one way, only ``ui/``
imports streamlit, pages are thin, and facts are defined once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "covidviz"
PAGES = sorted((REPO / "app_pages").glob("*.py"))
MAX_PAGE_LINES = 250


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """covidviz modules a file imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from covidviz.views import latent` imports the module covidviz.views.latent
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n.startswith("covidviz")}
    return {n for n in out if n in MODULES}


# The layers, bottom (0) to top, as docs/architecture.md states them: a module may import its own
# rank or lower, never higher. Every covidviz package (or top-level module) must be listed.
LAYER_RANKS = {
    "covidviz": 0, "io": 0, "data": 0, "stats": 0,
    "models": 1,
    "runs": 2,
    "training": 3, "deconfound": 3, "cam": 3, "ood": 3, "anatomy": 3, "pretrained": 3,
    "analysis": 4,
    "inference": 5, "batch": 5, "pipeline": 5, "predict": 5,
    "views": 6,
    "ui": 7,
}


def package_of(module: str) -> str:
    """``covidviz.stats.metrics`` -> ``stats``; ``covidviz.io`` -> ``io``; ``covidviz`` -> ``covidviz``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports (module -> imported module) that go from a lower layer to a higher one, or touch a
    package missing from LAYER_RANKS."""
    bad = []
    for name, targets in graph.items():
        for target in targets:
            src, dst = package_of(name), package_of(target)
            if src not in LAYER_RANKS or dst not in LAYER_RANKS:
                bad.append(f"{name} -> {target} (package not in LAYER_RANKS)")
            elif LAYER_RANKS[dst] > LAYER_RANKS[src]:
                bad.append(f"{name} (rank {LAYER_RANKS[src]}) -> {target} (rank {LAYER_RANKS[dst]})")
    return sorted(bad)


def find_cycles(graph: dict[str, set[str]], skip=lambda a, b: a == b) -> list[str]:
    """Every path that leads from a node back to itself (edges for which ``skip`` is true ignored)."""
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if skip(node, nxt):
                    continue
                if nxt == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    return sorted(set(cycles))


def package_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Cycles between packages (A imports B, B imports A, possibly through others)."""
    pgraph: dict[str, set[str]] = {}
    for name, targets in graph.items():
        pgraph.setdefault(package_of(name), set()).update(package_of(t) for t in targets)
    return find_cycles(pgraph)


def _graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def test_every_package_has_a_rank():
    missing = sorted({package_of(n) for n in MODULES} - set(LAYER_RANKS))
    assert not missing, f"add these packages to LAYER_RANKS (and docs/architecture.md): {missing}"


def test_imports_never_go_up_a_layer():
    bad = upward_imports(_graph())
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_no_package_imports_one_that_imports_it_back():
    cycles = package_cycles(_graph())
    assert not cycles, "package-level import cycles:\n" + "\n".join(cycles)


def test_the_layer_check_catches_a_planted_upward_import(tmp_path):
    """The checks above are not vacuous: a lazy import of ``inference`` planted inside a ``stats``
    function is found by the same AST walk and reported, and the package cycle it makes too."""
    planted = tmp_path / "metrics.py"
    planted.write_text("def auc():\n    from covidviz.inference import Predictor\n    return Predictor\n")
    graph = _graph()
    graph["covidviz.stats.planted"] = imported_modules(planted)
    assert graph["covidviz.stats.planted"] == {"covidviz.inference"}
    bad = upward_imports(graph)
    assert bad == ["covidviz.stats.planted (rank 0) -> covidviz.inference (rank 5)"]
    assert any("stats" in c and "inference" in c for c in package_cycles(graph))


def test_no_module_imports_one_that_imports_it_back():
    # A package's own __init__ re-exporting its submodules is not a cycle (Python loads the
    # package first); every other path back to a module is.
    def parent_or_child(a: str, b: str) -> bool:
        return b.startswith(a + ".") or a.startswith(b + ".")

    cycles = find_cycles(_graph(), skip=parent_or_child)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_ui_package_imports_streamlit():
    offenders = []
    for name, path in MODULES.items():
        if name == "covidviz.ui" or name.startswith("covidviz.ui."):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "streamlit" or m.startswith("streamlit.") for m in mods):
                offenders.append(name)
    assert not offenders, f"streamlit imported outside covidviz/ui: {sorted(set(offenders))}"


CLI_MODULES = {"covidviz.predict"}   # command lines (``python -m ...``): they print, like train.py


def test_library_code_does_not_print():
    printing = [f"{name}:{node.lineno}" for name, path in MODULES.items() if name not in CLI_MODULES
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not printing, f"library code prints (log instead; the CLI prints): {printing}"


def _calls_streamlit(fn: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.Name) and n.id in ("st", "ui") for n in ast.walk(fn))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_are_thin(page):
    source = page.read_text()
    assert len(source.splitlines()) <= MAX_PAGE_LINES, f"{page.name}: {len(source.splitlines())} lines"
    tree = ast.parse(source)
    pure = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and not _calls_streamlit(n)]
    assert not pure, f"{page.name}: functions that never call Streamlit belong in covidviz/views: {pure}"
    assert "sys.path" not in source
    last = tree.body[-1]
    assert (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and ast.unparse(last.value.func) == "ui.run_page"), f"{page.name} must end with ui.run_page(title, render)"


def _top_level_constants(path: Path) -> dict[str, str]:
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.unparse(node.value)
    return out


ONCE = ("NO_FINDING", "CHART_FONT", "OKABE_ITO", "PALETTE", "NOTICE", "UPLOAD_KEY", "OPERATING_POINTS",
        "PRESET_LABELS", "ARCH_LABELS", "OVERLAY_ALPHA")


def test_shared_facts_are_defined_once():
    where: dict[str, list[str]] = {}
    for path in [*MODULES.values(), *PAGES]:
        for name in _top_level_constants(path):
            if name in ONCE:
                where.setdefault(name, []).append(str(path.relative_to(REPO)))
    repeated = {k: v for k, v in where.items() if len(v) > 1}
    assert not repeated, f"defined more than once: {repeated}"
