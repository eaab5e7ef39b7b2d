"""The only library code importing streamlit: cached loaders (``cache`` and one ``<page>_cache`` per
page), the chrome (``chrome``), session keys (``state``) and shared widgets (``widgets``).
Pages use ``from covidviz import ui``; this module only re-exports."""

from covidviz.ui.cache import *
from covidviz.ui.cache import _experiment, _model, _stamp, _thumbnails
from covidviz.ui.chrome import (
    DEMO_COMMAND,
    FAVICON,
    REAL_DATA_COMMAND,
    REPO,
    RUNS_ENV,
    app_chrome,
    no_experiment_help,
    page_setup,
    research_notice,
    run_page,
    runs_root,
    sidebar_experiment_picker,
)
from covidviz.ui.compare_cache import *
from covidviz.ui.compare_cache import _compare_analysis
from covidviz.ui.compare_shortcuts import shortcut_section
from covidviz.ui.diagnose_cache import *
from covidviz.ui.latent_cache import *
from covidviz.ui.navigation import asked_experiment, explain_fallback
from covidviz.ui.som_cache import *
from covidviz.ui.state import CHROME_KEY, EXPERIMENT_KEY, UPLOAD_KEY, scoped, upload_for
from covidviz.ui.widgets import plotly_chart, show_thumbnails, training_curves
from covidviz.views.overview import (  # noqa: F401
    auc_table,
    label_split_counts,
    leaked_patients,
    patients_per_split,
    source_confounding,
    source_label_counts,
)
from covidviz.views.style import (  # noqa: F401  (transitional: pages move to views.style)
    ARCH_LABELS,
    NO_FINDING,
    NOTICE,
    NOTICE_TITLE,
    OKABE_ITO,
    SPLIT_LABELS,
    arch_label,
    backbone_colours,
    format_seconds,
    table_height,
    task_label,
)
