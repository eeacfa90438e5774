"""Notebook 06's generator picker: the generator ladder's record (``genqlib.paper.generator_ladder``), one
rung at a time, ringed in the ladder plot (``genqlib.paper.ladder_verdicts.plot``) with its numbers below."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper.ladder_verdicts import measured, plot
from genqlib.paper.profiles import REPO_ROOT
from genqlib.ui.panel import Panel


def samples_path(record: dict) -> Path | None:
    """The record's figure of each rung's sample images (a path relative to the repository, or absolute),
    or None when it has none on disk."""
    path = REPO_ROOT / record["samples_figure"] if record.get("samples_figure") else None
    return path if path is not None and path.is_file() else None


def ladder_explorer(record: dict | None, rung: str | None = None, command: str = "") -> Panel:
    """Pick a generator of the ladder and see where its GenQ images land: its points ringed in every panel
    (top-1 against class fidelity, BN distance, high-frequency share, KID) and, in the summary, its quality
    metrics and downstream top-1 beside real data and BN inversion. Opens on the best generator (highest
    class fidelity). Without a record the panel says so and names ``command``, the one that makes it."""
    rungs = list(reversed(measured(record))) if record else []
    specs = [r["rung"] for r in rungs] or ["(none)"]

    def draw(generator: str) -> tuple[Figure, dict]:
        if not rungs:
            return _no_record(command)
        picked = next(r for r in rungs if r["rung"] == generator)
        return plot(record, highlight=generator), {"rung": generator, "summary": _summary(picked, record)}

    controls = {"generator": widgets.Dropdown(options=specs, value=rung or specs[0], description="generator")}
    hint = (
        "pick a worse generator (fewer sampler steps, a quantized UNet) and see whether GenQ's points fall."
    )
    return Panel(controls, draw, name="ladder", hint=hint)


def _cell(c: dict) -> str:
    return f"{c['mean']:.2f} ± {c['std']:.2f}"


def _summary(r: dict, record: dict) -> str:
    m, t, base = r["metrics"], r["top1"], record["baselines"]
    bn = "–" if m.get("bn_distance") is None else f"{m['bn_distance']:.3g}"
    return (
        f"{r['rung']}: class fidelity {m['class_fidelity']:.1%}, BN distance {bn}, high-frequency share "
        f"{m['hf_share_ratio']:.2f} of real, KID {m['kid']:.3g}; top-1 GenQ {_cell(t['genq'])}, unfiltered "
        f"{_cell(t['genq_unfiltered'])}; real data {_cell(base['real'])}, BN inversion "
        f"{_cell(base['bn_inversion'])} ({t['genq']['n']} seeds)"
    )


def _no_record(command: str) -> tuple[Figure, dict]:
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, "no generator ladder recorded yet", ha="center", va="center", transform=ax.transAxes)
    return fig, {
        "rung": None,
        "summary": f"no ladder record: make one with {command or 'the ladder command'}",
    }
