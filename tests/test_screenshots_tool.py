"""tools/screenshots.py: a missing experiment is refused with a clear message before any server starts
(the screenshots themselves are taken on purpose by a maintainer, not by the suite)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "screenshots.py"


def _tool():
    spec = importlib.util.spec_from_file_location("screenshots_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_missing_experiment_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match="no experiment 'covid3' in"):
        _tool().main(["--runs", str(tmp_path), "--exp", "covid3"])


def test_every_page_of_the_app_is_listed():
    """The tool walks the navigation the app registers: a page added to app.py must be added here too."""
    titles = re.findall(r'st\.Page\([^)]*title="([^"]+)"', (TOOL.parents[1] / "app.py").read_text())
    assert len(titles) >= 7 and [nav for nav, _ in _tool().PAGES] == titles
