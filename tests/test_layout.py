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


def test_no_module_imports_one_that_imports_it_back():
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    # A package's own __init__ re-exporting its submodules is not a cycle (Python loads the
    # package first); every other path back to a module is.
    def is_parent(a: str, b: str) -> bool:
        return b.startswith(a + ".")

    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if is_parent(node, nxt) or is_parent(nxt, node):
                    continue
                if nxt == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


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
