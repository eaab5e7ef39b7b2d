"""covidviz app: ``streamlit run app.py``.

The router only: page config, the shared sidebar (experiment picker) and research notice, drawn once
per run before the chosen page (with a notice when the experiment shown is not the one the address or
the session asked for), and the page list. Each page is a short script under ``app_pages/``.
"""

import streamlit as st

from covidviz import ui

st.set_page_config(page_title="covidviz", page_icon=ui.FAVICON, layout="wide")

# One line per page; the glossary's url_path is what covidviz.views.glossary links to.
PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/diagnose.py", title="Diagnose", icon=":material/stethoscope:"),
    st.Page("app_pages/batch.py", title="Batch", icon=":material/library_add_check:"),
    st.Page("app_pages/compare.py", title="Compare backbones", icon=":material/compare_arrows:"),
    st.Page("app_pages/latent.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page("app_pages/som.py", title="Self-organizing map", icon=":material/hexagon:"),
    st.Page("app_pages/glossary.py", title="Glossary", icon=":material/menu_book:", url_path="glossary"),
]

page = st.navigation(PAGES)
asked = ui.asked_experiment()  # before the picker, which rewrites the address
ui.explain_fallback(asked, ui.app_chrome())  # an unknown ?exp= or a deleted experiment is named, never silent
page.run()
