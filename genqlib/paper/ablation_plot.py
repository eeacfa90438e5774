"""Notebook 06's figure of one analysis: the frame (axes, FP line, zoom, title, summary) around the plot of
the paper item the analysis measures (``fig5.plot``, ``fig6.plot``, ``fig4.plot``, ``table5.plot``,
``table1.plot``). Each point is the mean top-1 of its rows (one per reconstruction seed) with ± one std.
"""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper import fig4, fig5, fig6, table1, table5
from genqlib.paper.plots import Curves, width_label, zoom

ITEMS = {item.ANALYSIS: item for item in (fig5, fig6, fig4, table5, table1)}  # the explorer's order
ANALYSES = tuple(ITEMS)
TITLES = {  # what each analysis asks, in words (the keys are code)
    "n_synthetic": "How many synthetic calibration images are enough?",
    "filter_strength": "How hard should the two filters drop?",
    "cross_model": "Does a set filtered by one teacher calibrate another?",
    "data_scarce": "A style token from k real images per class",
    "generation_cost": "What each calibration source costs, and how close it is in BN statistics",
}


def ablation_figure(results: Mapping, analysis: str) -> tuple[Figure, dict]:
    """One analysis of notebook 06's metrics (``figures/06_ablations/metrics.json``) drawn by its paper item,
    beside the full-precision accuracy of the analysis teacher. ``state["curve"]`` holds, per series, the
    plotted (x, mean, std)."""
    if analysis not in ITEMS:
        raise ValueError(f"unknown analysis {analysis!r}; choose one of {list(ANALYSES)}")
    block = results.get(analysis)
    if block is None:
        raise ValueError(f"no {analysis!r} in these results; they hold {sorted(results)}")
    rows = block.get("rows") or []
    fp = results.get("fp") or {}
    seeds = len({r.get("seed") for r in rows if "seed" in r})
    fig = Figure(figsize=(6, 3.4))
    c = Curves(fig.subplots())
    top, teacher = ITEMS[analysis].plot(c, rows, fp, block.get("teacher") or results.get("teacher"))
    if analysis != "generation_cost":
        c.ax.set_ylabel("top-1 (%)")
        if top is not None and analysis != "cross_model":
            c.ax.axhline(top, color="k", linestyle="--", linewidth=1, label=f"FP {top:.1f}")
        if analysis == "cross_model":  # bars: their length is the value, so the axis starts at zero
            c.ax.set_ylim(0, (top or 100.0) + 4)
        elif top is not None and c.marks:  # the margin below the lowest point leaves room for its error bar
            widest = max((e for points in c.curve.values() for *_, e in points), default=0.0)
            zoom(c.ax, c.marks, top, margin=max(2.0, widest + 0.5))
    where = (
        f"{teacher} {width_label(block['w_bits'], block['a_bits'])}" if "w_bits" in block else str(teacher)
    )
    spread = f"bars: ± std over {seeds} seeds" if seeds > 1 else "one seed: no spread"
    c.ax.set_title(
        f"{TITLES[analysis]}\n{where}" + ("" if analysis == "generation_cost" else f"; {spread}"), fontsize=9
    )
    if c.ax.get_legend_handles_labels()[0]:  # beside the axes, never over a point or the FP line
        c.ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    points = sum(len(v) for v in c.curve.values())
    summary = f"{analysis} for {where}: {points} points"
    if analysis != "generation_cost":
        summary += f", mean ± std over {seeds} seeds" if seeds > 1 else ", one seed (no spread)"
    state = {"analysis": analysis, "teacher": teacher, "seeds": seeds, "curve": c.curve, "points": points}
    state["summary"] = summary
    return fig, state
