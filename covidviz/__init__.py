"""covidviz: a chest X-ray transfer-learning explorer.

The library behind ``train.py`` and ``app.py``. Only ``covidviz.ui`` imports streamlit.
"""

__version__ = "0.1.0"
