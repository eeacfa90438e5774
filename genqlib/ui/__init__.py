"""The notebooks' UI: one module per notebook panel, the prompt playground and the notebook context
(``context``). It reads the paper layer; nothing below imports it.

Panels: ``filter_explorer`` (02), ``token_compare`` (03), ``ptq_explorer`` (04), ``ablation_explorer`` and ``ladder_explorer`` (06);
see ``genqlib.ui.panel`` for what a panel is.
"""

from genqlib.paper.ablation_plot import ablation_figure
from genqlib.ui.ablation_panel import ablation_explorer
from genqlib.ui.filter_panel import filter_explorer
from genqlib.ui.ladder_panel import ladder_explorer
from genqlib.ui.panel import Panel, figure_png, mosaic
from genqlib.ui.ptq_panel import cached_ptq_rows, ptq_explorer
from genqlib.ui.token_panel import token_compare

__all__ = [
    "Panel",
    "ablation_explorer",
    "ablation_figure",
    "cached_ptq_rows",
    "figure_png",
    "filter_explorer",
    "ladder_explorer",
    "mosaic",
    "ptq_explorer",
    "token_compare",
]
