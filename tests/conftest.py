"""Shared fixtures: the real development data (when present) and a tiny trained experiment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on a 2-core machine: one torch thread each, or the two
    # workers' convolutions fight over the cores (and every test gets slower than without workers).
    import torch

    torch.set_num_threads(1)
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture
def app_like_server(monkeypatch):
    """Make AppTest keep ``st.navigation`` mode across reruns, as the real server does.

    The page scripts live in ``app_pages/``, not ``pages/``: with a ``pages/`` folder Streamlit's
    legacy multipage mode takes over whenever ``st.navigation`` has not run yet (a fresh server opened
    at /diagnose ran the page alone, with file names in the sidebar). AppTest also resets
    ``PagesManager.uses_pages_directory`` before every run; pinning it to False, as the server does
    once ``st.navigation`` has run, keeps reruns on the router. Page-test modules use it with
    ``pytestmark = pytest.mark.usefixtures("app_like_server")``.
    """
    from streamlit.runtime import pages_manager
    from streamlit.testing.v1 import app_test

    class NavigationPagesManager(pages_manager.PagesManager):
        def __init__(self, *args, **kwargs):
            pages_manager.PagesManager.uses_pages_directory = False
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(app_test, "PagesManager", NavigationPagesManager)
    yield
    pages_manager.PagesManager.uses_pages_directory = None


@pytest.fixture
def runs_root(tmp_path, monkeypatch) -> Path:
    """An empty experiments folder that the app (COVIDVIZ_RUNS) reads."""
    from covidviz import ui

    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "covid3" / "metadata.csv").exists():
        pytest.skip(f"real development data not found at {SHARED_DATA}")
    return SHARED_DATA


def train_tiny(out: Path, name: str = "tiny", extra: list[str] | None = None) -> Path:
    """Train a seconds-long experiment on phantoms with both a tiny CNN and DenseNet121."""
    import train

    argv = ["--data", "synthetic:90", "--arch", "tinycnn", "densenet121", "--epochs", "1",
            "--image-size", "32", "--batch-size", "16", "--weights", "none", "--out", str(out),
            "--name", name, "--seed", "0", "--workers", "0", "--projections", "pca", "tsne"] + (extra or [])
    assert train.main(argv) == 0
    return out / name


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> Path:
    """Path of a published tiny experiment (runs/<name>) shared by the whole session."""
    root = tmp_path_factory.mktemp("runs")
    return train_tiny(root)
