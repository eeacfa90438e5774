"""Notebook 06's panel: one ablation's curve (Figs. 4-6, Table 5) with its seed spread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper.common import group_top1, mean
from genqlib.paper.plots import zoom
from genqlib.paper.profiles import FILTER_DROPS
from genqlib.paper.verdict import spread_of
from genqlib.ui.panel import Panel, width_label

# ---------------------------------------------------------------- 06: ablation curves with their spread


ANALYSES = ("n_synthetic", "filter_strength", "data_scarce", "cross_model", "generation_cost")
_DEFAULT = (round(FILTER_DROPS[0], 6), round(FILTER_DROPS[1], 6))  # GenQ's (energy, BN-sensitivity) drops


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """One point's top-1 over its seeds as (mean, std); the std is 0 when it ran with one seed."""
    spread = spread_of(values)
    return (spread.mean, spread.std) if spread else (mean(list(values)), 0.0)


def _drops(row: Mapping) -> tuple[float, float]:
    energy, bn = row["drops"]
    return round(energy, 6), round(bn, 6)


def _ticks(ax, xs: Sequence[float]) -> None:
    """Label a log x axis at the measured values only."""
    xs = sorted(set(xs))
    ax.set_xticks(xs, [f"{x:,g}" for x in xs])
    ax.minorticks_off()


def ablation_figure(results: Mapping, analysis: str) -> tuple[Figure, dict]:
    """One analysis of notebook 06's metrics (``figures/06_ablations/metrics.json``): each point is the mean
    top-1 of its rows (one per reconstruction seed) with ± one std as error bars, beside the full-precision
    accuracy of the analysis teacher. ``state["curve"]`` holds, per series, the plotted (x, mean, std)."""
    if analysis not in ANALYSES:
        raise ValueError(f"unknown analysis {analysis!r}; choose one of {list(ANALYSES)}")
    block = results.get(analysis)
    if block is None:
        raise ValueError(f"no {analysis!r} in these results; they hold {sorted(results)}")
    rows = block.get("rows") or []
    teacher = block.get("teacher") or results.get("teacher")
    fp = results.get("fp") or {}
    seeds = len({r.get("seed") for r in rows if "seed" in r})
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    curve: dict[str, list[tuple]] = {}
    marks: list[tuple[float, str, float]] = []  # (x, label, mean) of every plotted point, for the zoom

    def plot(
        name: str, points: Sequence[tuple[float, Sequence[float]]], label: str, fmt: str = "o-", **style
    ):
        drawn = [(x, *_mean_std(values)) for x, values in points]
        if not drawn:
            return
        curve[name] = drawn
        xs, ys, errors = zip(*drawn, strict=True)
        ax.errorbar(xs, ys, yerr=errors, fmt=fmt, capsize=3, label=label, **style)
        marks.extend((x, name, y) for x, y, _ in drawn)

    top = fp.get(teacher)
    if analysis == "n_synthetic":
        groups = group_top1(rows, lambda r: (r["source"], r["n"]))
        for source, label in (("genq", "GenQ (filtered)"), ("real", "real data")):
            plot(source, sorted((n, v) for (s, n), v in groups.items() if s == source), label)
        ax.set_xscale("log", base=2)
        _ticks(ax, [x for x, _, _ in marks])
        ax.set_xlabel("calibration images")
    elif analysis == "filter_strength":
        groups = group_top1(rows, _drops)
        energy, bn = _DEFAULT
        plot("energy", sorted((e, v) for (e, b), v in groups.items() if b == bn), f"energy (BN {bn:g})")
        plot(
            "bn",
            sorted((b, v) for (e, b), v in groups.items() if e == energy),
            f"BN sensitivity (energy {energy:g})",
        )
        others = [(p, v) for p, v in groups.items() if p[0] != energy and p[1] != bn]
        for i, ((e, b), values) in enumerate(sorted(others)):
            name = "no filter" if e == b == 0 else f"both {e:g}" if e == b else f"energy {e:g}, BN {b:g}"
            marker = "ks" if e == b == 0 else f"C{i + 2}D"
            plot(name, [(e, values)], f"{name} ({e:g}, {b:g})", fmt=marker, markersize=7)
        ax.set_xlabel("drop ratio of the swept stage")
    elif analysis == "data_scarce":
        groups = group_top1(rows, lambda r: (r.get("k") or 0, r["source"]))
        for source, label in (("real_shots", "real shots alone"), ("genq_data_scarce", "style token (GenQ)")):
            plot(source, sorted((k, v) for (k, s), v in groups.items() if s == source), label)
        if (0, "genq_data_free") in groups:
            m, s = _mean_std(groups[0, "genq_data_free"])
            ax.axhline(m, color="C2", linestyle=":", label=f"data-free GenQ {m:.1f}")
            if s:
                ax.axhspan(m - s, m + s, color="C2", alpha=0.15)
            curve["genq_data_free"] = [(0, m, s)]
            xs = [x for x, _, _ in marks] or [1]
            marks.append((min(xs), "data-free", m))
        ax.set_xscale("log")
        _ticks(ax, [x for x, _, _ in marks])
        ax.set_xlabel("real images per class (k)")
    elif analysis == "cross_model":
        groups = group_top1(rows, lambda r: (r["filter_teacher"], r["quant_teacher"]))
        filters = list(dict.fromkeys(r["filter_teacher"] for r in rows))
        quants = list(dict.fromkeys(r["quant_teacher"] for r in rows))
        bits_of = {r["quant_teacher"]: width_label(r["w_bits"], r["a_bits"]) for r in rows}
        width = 0.8 / max(1, len(filters))
        for i, f in enumerate(filters):
            at = [(j, q) for j, q in enumerate(quants) if (f, q) in groups]
            drawn = [(q, *_mean_std(groups[f, q])) for _, q in at]
            if not drawn:
                continue
            xs = [j + (i - (len(filters) - 1) / 2) * width for j, _ in at]
            ax.bar(
                xs,
                [m for _, m, _ in drawn],
                width,
                yerr=[s for _, _, s in drawn],
                capsize=3,
                color=f"C{i}",
                label=f"filtered by {f}",
            )
            curve[f] = drawn
            marks.extend((x, f, m) for x, (_, m, _) in zip(xs, drawn, strict=True))
        for j, q in enumerate(quants):
            if q in fp:
                ax.hlines(fp[q], j - 0.45, j + 0.45, colors="k", linestyles="--", linewidth=1)
        ax.set_xticks(range(len(quants)), [f"{q} {bits_of[q]}" for q in quants])
        ax.set_xlabel("quantized teacher (dashed: its FP top-1)")
        top = max((fp[q] for q in quants if q in fp), default=None)
        teacher = "every teacher"
    else:  # generation_cost
        ax.bar(
            [r["source"] for r in rows],
            [r["bn_distance"] for r in rows],
            yerr=[r.get("bn_distance_std", 0.0) for r in rows],
            capsize=4,
        )
        ax.set_ylabel(f"BN distance to {teacher} (± std over batches)")
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        curve["bn_distance"] = [(r["source"], r["bn_distance"], r.get("bn_distance_std", 0.0)) for r in rows]
    if analysis != "generation_cost":
        ax.set_ylabel("top-1 (%)")
        if top is not None and analysis != "cross_model":
            ax.axhline(top, color="k", linestyle="--", linewidth=1, label=f"FP {top:.1f}")
        if top is not None and marks:  # the margin below the lowest point leaves room for its error bar
            widest = max((e for points in curve.values() for *_, e in points), default=0.0)
            zoom(ax, marks, top, margin=max(2.0, widest + 0.5))
    where = (
        f"{teacher} {width_label(block['w_bits'], block['a_bits'])}" if "w_bits" in block else str(teacher)
    )
    spread = f"bars: ± std over {seeds} seeds" if seeds > 1 else "one seed: no spread"
    ax.set_title(
        f"{analysis} ({where})" + ("" if analysis == "generation_cost" else f"; {spread}"), fontsize=9
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    points = sum(len(v) for v in curve.values())
    summary = f"{analysis} for {where}: {points} points"
    if analysis != "generation_cost":
        summary += f", mean ± std over {seeds} seeds" if seeds > 1 else ", one seed (no spread)"
    state = {"analysis": analysis, "teacher": teacher, "seeds": seeds, "curve": curve, "points": points}
    state["summary"] = summary
    return fig, state


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
    return Panel(controls, draw, name="ablation")
