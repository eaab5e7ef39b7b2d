"""``covidviz.__version__`` is pyproject.toml's version (taken from the installed metadata, or from the
checkout's pyproject.toml when not installed), so every manifest records the right one."""

from __future__ import annotations

from importlib import metadata

import pytest

import covidviz
from tests.conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_version_is_pyprojects():
    assert covidviz.__version__ == _pyproject_version()


def test_version_without_installed_metadata_reads_pyproject(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert covidviz._version() == _pyproject_version()
