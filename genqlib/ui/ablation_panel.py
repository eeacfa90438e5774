"""Notebook 06's panel: pick an analysis and see its paper item's plot (``paper.ablation_plot``)."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper.ablation_plot import ANALYSES, ablation_figure
from genqlib.ui.panel import Panel
from genqlib.ui.run_record import read_record, write_record


def ablation_explorer(
    results: Mapping, analysis: str | None = None, committed: Mapping | None = None
) -> Panel:
    """Pick an analysis of notebook 06 and see its points: mean top-1 over seeds with ± std error bars.

    ``results``: this run's analyses; ``committed``: the analyses of the committed record
    (``read_ablation_record``), shown for each analysis this run did not compute (this run's win). The
    summary says how many rows came from the committed record; with neither, the panel shows "no runs"."""
    merged, from_record = merge_analyses(results, committed or {})
    present = [a for a in ANALYSES if a in merged]

    def draw(analysis: str) -> tuple[Figure, dict]:
        if analysis not in merged:
            return _no_runs()
        fig, state = ablation_figure(merged, analysis)
        n_record = sum(len(merged[a].get("rows") or []) for a in from_record)
        state["summary"] += f"; {n_record} rows from the committed record" + (
            f" ({', '.join(from_record)})" if from_record else ""
        )
        return fig, state

    controls = {
        "analysis": widgets.Dropdown(
            options=present or ["(none)"],
            value=analysis or (present or ["(none)"])[0],
            description="analysis",
        ),
    }
    hint = "pick another analysis; each point is the mean over seeds, the bars one std either side."
    return Panel(controls, draw, name="ablation", hint=hint)


def merge_analyses(results: Mapping, committed: Mapping) -> tuple[dict, list[str]]:
    """(this run's results ∪ the committed record's analyses it lacks, the analyses taken from the record);
    the full-precision accuracies merge the same way."""
    merged = dict(results)
    from_record = [a for a in ANALYSES if a in committed and a not in results]
    for a in from_record:
        merged[a] = committed[a]
    merged["fp"] = {**(committed.get("fp") or {}), **(results.get("fp") or {})}
    return merged, from_record


def read_ablation_record(path, **key: object) -> dict:
    """The analyses of the committed record at ``path`` made on the settings ``key`` (empty when there is
    none, or when it was made on other settings, which warns)."""
    record = read_record(path, key)
    return (record or {}).get("results", {})


def write_ablation_record(path, results: Mapping, **key: object) -> None:
    """The analyses the explorer draws (rows and their settings, numbers only) as the record at ``path``,
    keyed by ``key``; prints its path and size."""
    shown = {k: v for k, v in results.items() if k in ANALYSES or k == "fp"}
    out = write_record(path, key, results=shown)
    print(f"wrote {out} ({len(shown) - ('fp' in shown)} analyses, {out.stat().st_size / 1024:.0f} KB)")


def _no_runs() -> tuple[Figure, dict]:
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, "no runs yet: run the analyses above", ha="center", va="center", transform=ax.transAxes)
    summary = "no runs: no analysis computed in this run and no committed record"
    return fig, {"analysis": None, "points": 0, "summary": summary}
