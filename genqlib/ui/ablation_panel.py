"""Notebook 06's panel: pick an analysis and see its paper item's plot (``paper.ablation_plot``)."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper.ablation_plot import ANALYSES, ablation_figure
from genqlib.ui.panel import Panel


def ablation_explorer(results: Mapping, analysis: str | None = None) -> Panel:
    """Pick an analysis of notebook 06 and see its points: mean top-1 over seeds with ± std error bars."""
    present = [a for a in ANALYSES if a in results]
    if not present:
        raise ValueError(f"no analysis in these results; expected some of {list(ANALYSES)}")

    def draw(analysis: str) -> tuple[Figure, dict]:
        return ablation_figure(results, analysis)

    controls = {
        "analysis": widgets.Dropdown(options=present, value=analysis or present[0], description="analysis"),
    }
    hint = "pick another analysis; each point is the mean over seeds, the bars one std either side."
    return Panel(controls, draw, name="ablation", hint=hint)
