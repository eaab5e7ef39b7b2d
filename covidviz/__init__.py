"""covidviz: a chest X-ray transfer-learning explorer.

The library behind ``train.py`` and ``app.py``. Only ``covidviz.ui`` imports streamlit.
"""


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, as ``pip install -e .`` recorded it); in a
    checkout that was never installed, read from its pyproject.toml; "unknown" when neither exists."""
    from importlib import metadata

    try:
        return metadata.version("covidviz")
    except metadata.PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.exists() else None
        return found.group(1) if found else "unknown"


__version__ = _version()  # recorded in every manifest (ManifestInfo.covidviz_version)
