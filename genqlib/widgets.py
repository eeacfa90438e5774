"""The notebooks' controls: each is a ``Panel`` of ipywidgets over one matplotlib figure.

A panel draws its default state when it is built. Displayed in JupyterLab (or any front end with the
widget manager) it is live: moving a control redraws the figure and the summary line below it. Its display
bundle also carries the current figure as a plain ``image/png``, so a headless run (papermill) and any
viewer without widgets (the executed copy on disk, nbviewer) show the default state as an ordinary figure.

Every panel keeps what it drew last in ``panel.state`` (numbers) and ``panel.png`` (the figure), so tests
can build one, set a control's ``value`` and check that the output changed, without a browser.

Panels here: ``filter_explorer`` (02), ``token_compare`` (03), ``ptq_explorer`` (04),
``ablation_explorer`` (06).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.profiles import FILTER_DROPS
from genqlib.prompts import prompt_name
from genqlib.ptq_runs import seed_mean
from genqlib.tables.common import group_top1, mean
from genqlib.tables.verdict import spread_of
from genqlib.viz import zoom

__all__ = [
    "Panel",
    "filter_explorer",
    "token_compare",
    "ptq_explorer",
    "cached_ptq_rows",
    "ablation_explorer",
    "ablation_figure",
    "mosaic",
]


# ---------------------------------------------------------------- the panel


class Panel(widgets.VBox):
    """Controls, a figure and a one-line summary; ``draw(**values) -> (Figure, state dict)`` makes the figure.

    The summary shows ``state["summary"]`` (plain text; escaped). Errors in a live redraw are shown in the
    summary instead of being lost in the kernel log; the first draw raises them.
    """

    def __init__(
        self,
        controls: Mapping[str, widgets.Widget],
        draw: Callable[..., tuple[Figure, dict]],
        extra: Sequence[widgets.Widget] = (),
        name: str = "panel",
    ) -> None:
        self.controls = dict(controls)
        self.draw = draw
        self.name = name
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.summary = widgets.HTML()
        self.image.add_class("genq-figure")
        self.summary.add_class("genq-summary")
        self.png = b""
        self.state: dict = {}
        self.draws = 0
        row = widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([row, *extra, self.summary, self.image])
        self.add_class(f"genq-{name}")
        for key, control in self.controls.items():
            control.add_class(f"genq-{name}-{key}")
            control.observe(self._changed, names="value")
        self.update()

    def values(self) -> dict:
        """The controls' current values, by name."""
        return {key: control.value for key, control in self.controls.items()}

    def update(self) -> None:
        """Redraw with the current values (a live front end calls this on every change)."""
        fig, state = self.draw(**self.values())
        self.png = figure_png(fig)
        self.state = state
        self.draws += 1
        self.image.value = self.png
        self.summary.value = self._summary_html(state)

    def _summary_html(self, state: dict) -> str:
        text = html.escape(str(state.get("summary", "")))
        return f'<span class="genq-draw" data-draw="{self.draws}">{text}</span>'

    def _changed(self, _change=None) -> None:
        self.summary.value = '<span class="genq-busy">updating…</span>'
        try:
            self.update()
        except Exception as err:  # a live callback has nowhere else to report
            self.summary.value = f'<span class="genq-error">error: {html.escape(repr(err))}</span>'

    def save(self, folder: str | Path, name: str | None = None) -> Path:
        """Write the current figure as ``folder/name.png`` (default name: the panel's)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name or self.name}.png"
        path.write_bytes(self.png)
        return path

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        bundle["text/plain"] = str(self.state.get("summary", self.name))
        return bundle


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (the figure is not shown or kept by pyplot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def mosaic(images: torch.Tensor, cols: int, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] tiled ``cols`` wide into one (H', W') or (H', W', 3) array for imshow."""
    n, c, h, w = images.shape if len(images) else (0, 1, 1, 1)
    rows = max(1, math.ceil(n / cols))
    out = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), fill)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[:, top : top + h, left : left + w] = images[i].clamp(0, 1)
    return out[0] if c == 1 else out[:3].permute(1, 2, 0)


def _show(ax, images: torch.Tensor, cols: int, title: str) -> None:
    ax.imshow(mosaic(images, cols).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _slider(value: float, low: float, high: float, step: float, description: str) -> widgets.FloatSlider:
    return widgets.FloatSlider(
        value=value,
        min=low,
        max=high,
        step=step,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
    )


# ---------------------------------------------------------------- 02: filter thresholds


def filter_explorer(
    models: Mapping[str, torch.nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    energy_drop: float = 0.3,
    second_drop: float = 0.3,
    T: float = 1.0,
    seed: int = 0,
    n_show: int = 24,
    *,
    class_names: Sequence[str],
) -> Panel:
    """Energy and second-stage drop sliders and a teacher picker over GenQ's two-stage filter.

    Shows the score histograms with the thresholds, the kept count per class, kept and rejected images, and
    the BN distance and class fidelity of the kept set (summary line). Scores are computed once per setting.
    """
    from genqlib.filters import batchnorm_layers, filter_pipeline
    from genqlib.metrics import class_fidelity, set_bn_distance

    cache: dict[tuple, object] = {}
    present = (
        labels.unique().tolist()
    )  # class indices into ``class_names`` (ImageNet runs use a few of 1,000)

    def draw(teacher: str, energy_drop: float, second_drop: float) -> tuple[Figure, dict]:
        model = models[teacher]
        key = (teacher, round(energy_drop, 4), round(second_drop, 4))
        if key not in cache:
            cache[key] = filter_pipeline(
                model, images, labels, energy_drop=energy_drop, second_drop=second_drop, T=T, seed=seed
            )
        result = cache[key]
        kept = result.kept
        mask = torch.zeros(len(images), dtype=torch.bool)
        mask[kept] = True
        rejected = (~mask).nonzero().flatten()
        energies = result.scores["energy"]
        second_name = next(k for k in result.scores if k != "energy")
        second = result.scores[second_name]
        survivors = ~second.isnan()
        per_class = torch.stack([(labels[kept] == c).sum() for c in present])
        state = {
            "teacher": teacher,
            "kept": len(kept),
            "of": len(images),
            "after_energy": int(survivors.sum()),
            "kept_per_class": per_class.tolist(),
            "kept_indices": kept.tolist(),
        }
        if len(kept):
            state["class_fidelity"] = class_fidelity(model, images[kept], labels[kept])["class_fidelity"]
            if batchnorm_layers(model):
                state["bn_distance"] = set_bn_distance(model, images[kept], min(100, len(kept)))["mean"]

        fig = Figure(figsize=(11, 5.6))
        grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.25])
        ax = fig.add_subplot(grid[0, 0])
        edges = torch.linspace(float(energies.min()), float(energies.max()) + 1e-6, 31).numpy()
        ax.hist(
            [energies[survivors].numpy(), energies[~survivors].numpy()],
            bins=edges,
            stacked=True,
            color=["C0", "C3"],
            label=["passed", f"dropped ({energy_drop:.0%} per class)"],
        )
        ax.set_xlabel(f"energy (T={T:g}); lower = more in-distribution", fontsize=8)
        ax.set_title("energy stage: every image", fontsize=9)
        ax.legend(fontsize=7)
        ax = fig.add_subplot(grid[0, 1])
        scored = second[survivors]
        if len(scored):
            edges = torch.linspace(float(scored.min()), float(scored.max()) + 1e-6, 31).numpy()
            ax.hist(
                [second[mask].numpy(), second[survivors & ~mask].numpy()],
                bins=edges,
                stacked=True,
                color=["C2", "C3"],
                label=["kept", f"dropped ({second_drop:.0%} per class)"],
            )
            ax.legend(fontsize=7)
        better = "lower" if second_name == "bn_sensitivity" else "higher"
        ax.set_xlabel(f"{second_name.replace('_', ' ')}; {better} is kept", fontsize=8)
        ax.set_title("second stage: the energy survivors", fontsize=9)
        ax = fig.add_subplot(grid[0, 2])
        ax.bar(range(len(present)), per_class.numpy(), color="C2")
        ax.set_xticks(
            range(len(present)), [prompt_name(class_names[c]) for c in present], rotation=60, fontsize=7
        )
        ax.set_title(f"kept per class ({len(kept)} of {len(images)})", fontsize=9)
        cols = max(4, n_show // 3)
        _show(fig.add_subplot(grid[1, :2]), images[kept[:n_show]], cols, "kept (first)")
        _show(fig.add_subplot(grid[1, 2]), images[rejected[:n_show]], cols // 2, "rejected (first)")
        fig.suptitle(f"{teacher}: energy drop {energy_drop:.2f}, then {second_name} drop {second_drop:.2f}")
        fig.tight_layout()
        parts = [f"{teacher}: kept {len(kept)} of {len(images)} ({state['after_energy']} after energy)"]
        if "bn_distance" in state:
            parts.append(f"BN distance {state['bn_distance']:.2f}")
        if "class_fidelity" in state:
            parts.append(f"class fidelity {state['class_fidelity']:.3f}")
        state["summary"] = "; ".join(parts)
        return fig, state

    controls = {
        "teacher": widgets.Dropdown(options=list(models), description="teacher"),
        "energy_drop": _slider(energy_drop, 0.0, 0.9, 0.05, "energy drop"),
        "second_drop": _slider(second_drop, 0.0, 0.9, 0.05, "second-stage drop"),
    }
    return Panel(controls, draw, name="filter")


# ---------------------------------------------------------------- 03: prompts with and without the token


def token_compare(
    sample: Callable[[str, int, int], torch.Tensor],
    shots: torch.Tensor,
    shot_labels: torch.Tensor,
    plain: str = "A photo of a {C}",
    styled: str = "A photo of a {C} in the style of {S}",
    token: str = "<S>",
    seed: int = 0,
    n: int = 6,
    *,
    class_names: Sequence[str],
) -> Panel:
    """Prompt text with and without the learned token, a class and a seed: generated images of both prompts
    beside the real shots of that class. ``sample(prompt, seed, n)`` returns (n, C, H, W) images in [0, 1];
    ``{C}`` in a prompt stands for the class name, ``{S}`` for the token."""
    cache: dict[tuple, torch.Tensor] = {}

    def images(prompt: str, seed: int) -> torch.Tensor:
        if (prompt, seed) not in cache:
            cache[prompt, seed] = sample(prompt, seed, n)
        return cache[prompt, seed]

    def draw(class_index: int, plain: str, styled: str, seed: int) -> tuple[Figure, dict]:
        c, class_name = class_index, class_names[class_index]
        fill = {"C": prompt_name(class_name), "S": token}
        prompts = {"without token": plain.format(**fill), "with token": styled.format(**fill)}
        real = shots[shot_labels == c]
        generated = {k: images(p, seed) for k, p in prompts.items()}
        rows = 2 if n > 3 else 1
        cols = math.ceil(n / rows)
        real_cols = max(1, math.ceil(len(real) / rows))
        fig = Figure(figsize=(1.2 + 0.75 * (real_cols + 2 * cols), 0.9 + 0.8 * rows))
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [real_cols, cols, cols]})
        _show(axes[0], real, real_cols, f"real shots ({len(real)})")
        for ax, (k, p) in zip(axes[1:], prompts.items(), strict=True):
            _show(ax, generated[k], cols, k)
            ax.set_xlabel(textwrap.fill(p, 34), fontsize=7)
        fig.suptitle(f"{class_name}, seed {seed}", fontsize=9)
        fig.tight_layout()
        state = {
            "prompts": prompts,
            "seed": seed,
            "class": class_name,
            "mean_abs_difference": float((generated["with token"] - generated["without token"]).abs().mean()),
            "summary": f"{class_name}, seed {seed}: {prompts['without token']!r} vs {prompts['with token']!r}",
        }
        return fig, state

    controls = {
        "class_index": widgets.Dropdown(
            options=[(class_names[c], c) for c in shot_labels.unique().tolist()], description="class"
        ),
        "plain": widgets.Text(value=plain, description="without", continuous_update=False),
        "styled": widgets.Text(value=styled, description="with token", continuous_update=False),
        "seed": widgets.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed"),
    }
    return Panel(controls, draw, name="token")


# ---------------------------------------------------------------- 04: PTQ results over cached runs


def cached_ptq_rows(cache_dir: str | Path, **match: object) -> list[dict]:
    """Every PTQ result cached under ``cache_dir`` (``genqlib.ptq_runs.ptq_run``) whose settings equal
    ``match`` (e.g. ``eval=<digest>, n_calib=64``), sorted by teacher, bits, method and source."""
    rows, unreadable = [], []
    for path in sorted(Path(cache_dir).glob("*.json")):
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            unreadable.append(path.name)
            continue
        key, result = stored.get("key", {}), stored.get("result")
        if result is None or "top1" not in result:
            continue
        if all(json.loads(json.dumps(v)) == key.get(k) for k, v in match.items()):
            rows.append({**result, "from_cache": True})
    if unreadable:
        warnings.warn(
            f"{cache_dir}: skipped {len(unreadable)} unreadable cache file(s): {unreadable[:5]}", stacklevel=2
        )
    return sorted(rows, key=lambda r: (r["teacher"], -r["w_bits"], -r["a_bits"], r["method"], r["source"]))


def _bits_label(w: int, a: int) -> str:
    return f"W{w}A{a}"


def ptq_explorer(
    rows: Sequence[dict],
    calib: Mapping[tuple[str, str], torch.Tensor] | None = None,
    fp: Mapping[str, float] | None = None,
    methods: Sequence[str] = ("brecq", "qdrop", "genie_m"),
    compute: Callable[[str, int, int, str, str], dict] | None = None,
    n_show: int = 10,
    shown_sources: Sequence[str] | None = None,
) -> Panel:
    """Teacher, bits, method and source pickers over PTQ result rows (``ptq_run``'s, e.g. every cached one):
    the table and the accuracy plot follow the pickers without recomputing anything; the calibration images
    of each picked source are shown side by side. Picked runs that are not cached are listed, and computed
    only when the "compute missing" button is pressed (``compute(teacher, w_bits, a_bits, method, source)``
    must return the new row; a source without calibration images in ``calib`` cannot be computed).
    ``shown_sources``: the sources picked at first (default: all); the teacher picked at first is the first
    one with calibration images (the notebook's own), else the first by name."""
    rows = list(rows)
    calib = dict(calib or {})
    teachers = sorted({r["teacher"] for r in rows} | {t for t, _ in calib})
    bits = sorted({(r["w_bits"], r["a_bits"]) for r in rows}, reverse=True) or [(4, 4)]
    all_methods = list(dict.fromkeys([*methods, *(r["method"] for r in rows if r["method"] != "nearest")]))
    sources = list(dict.fromkeys([*(s for _, s in calib), *(r["source"] for r in rows)]))
    default_method = next((m for m in all_methods if any(r["method"] == m for r in rows)), all_methods[0])
    colors = {name: f"C{i}" for i, name in enumerate(["nearest", *sources])}  # fixed while picking
    button = widgets.Button(description="compute missing", disabled=True, layout=widgets.Layout(width="auto"))
    button.add_class("genq-ptq-compute")

    def lookup(teacher, w, a, method, source):
        """The cached runs of one choice merged over their seeds (mean top-1 and agreement, ``top1_std``)."""
        spec = (teacher, w, a, method, source)
        found = [
            r for r in rows if (r["teacher"], r["w_bits"], r["a_bits"], r["method"], r["source"]) == spec
        ]
        return seed_mean(found) if found else None

    def picked(teacher, bits_label, method, sources):
        w, a = next(b for b in bits if _bits_label(*b) == bits_label)
        return [(teacher, w, a, method, s) for s in sources]

    def draw(teacher: str, bits_label: str, method: str, sources: tuple[str, ...]) -> tuple[Figure, dict]:
        wanted = picked(teacher, bits_label, method, sources)
        found = [(spec, lookup(*spec)) for spec in wanted]
        missing = [spec for spec, r in found if r is None]
        present = [r for _, r in found if r is not None]
        nearest = lookup(teacher, *wanted[0][1:3], "nearest", "real") if wanted else None
        computable = [m for m in missing if (m[0], m[-1]) in calib]
        button.disabled = compute is None or not computable
        button.description = f"compute missing ({len(computable)})" if computable else "compute missing"
        shown = [s for s in sources if (teacher, s) in calib]
        fig = Figure(figsize=(10, 3.8))
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 1.2])
        ax = fig.add_subplot(grid[0, 0])
        bars = [("nearest", nearest)] if nearest else []
        bars += [(r["source"], r) for r in present]
        heights = [b[1]["top1"] for b in bars]
        drawn = ax.bar(
            range(len(bars)),
            heights,
            yerr=[b[1]["top1_std"] for b in bars],
            capsize=3,
            color=[colors[b[0]] for b in bars],
        )
        ax.bar_label(drawn, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=40, ha="right", fontsize=7)
        top = 100.0
        if fp and teacher in fp:
            ax.axhline(fp[teacher], color="k", linestyle="--", linewidth=1, label=f"FP {fp[teacher]:.1f}")
            ax.legend(fontsize=7, loc="lower right")
        low = min([*heights, fp.get(teacher, top) if fp else top])
        ax.set_ylim(max(0.0, math.floor(low / 10) * 10 - 10), top)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{teacher} {bits_label} {method}", fontsize=9)
        ax = fig.add_subplot(grid[0, 1])
        if shown:
            strip = torch.cat([calib[teacher, s][:n_show] for s in shown])
            ax.imshow(mosaic(strip, n_show).numpy(), cmap="gray", vmin=0, vmax=1)
            h = calib[teacher, shown[0]].shape[-2] + 1
            ax.set_yticks([1 + h * (i + 0.5) for i in range(len(shown))], shown, fontsize=7)
            ax.set_xticks([])
        else:
            ax.axis("off")
        ax.set_title("calibration images (first of each source)", fontsize=9)
        fig.tight_layout()
        table = [
            {
                k: r[k]
                for k in (
                    "teacher",
                    "w_bits",
                    "a_bits",
                    "method",
                    "source",
                    "n_calib",
                    "seeds",
                    "top1",
                    "top1_std",
                    "agreement",
                )
            }
            for r in ([nearest] if nearest else []) + present
        ]
        state = {
            "table": table,
            "missing": [
                dict(zip(("teacher", "w_bits", "a_bits", "method", "source"), m, strict=True))
                for m in missing
            ],
            "summary": f"{teacher} {bits_label} {method}: {len(present)} cached runs shown"
            + (f", {len(missing)} not computed ({', '.join(m[-1] for m in missing)})" if missing else ""),
        }
        table_html.value = _html_table(table)
        return fig, state

    def run_missing(_=None) -> None:
        spec = panel.values()
        for teacher, w, a, method, source in picked(**spec):
            if lookup(teacher, w, a, method, source) is None and (teacher, source) in calib:
                panel.summary.value = f"computing {teacher} W{w}A{a} {method} {source}…"
                rows.append(compute(teacher, w, a, method, source))
        panel.update()

    table_html = widgets.HTML()
    table_html.add_class("genq-ptq-table")
    button.on_click(run_missing)
    controls = {
        "teacher": widgets.Dropdown(
            options=teachers, value=next(iter(calib), (teachers[0],))[0], description="teacher"
        ),
        "bits_label": widgets.Dropdown(options=[_bits_label(*b) for b in bits], description="bits"),
        "method": widgets.Dropdown(options=all_methods, value=default_method, description="method"),
        "sources": widgets.SelectMultiple(
            options=sources,
            value=tuple(s for s in (shown_sources or sources) if s in sources),
            description="sources",
            rows=min(6, len(sources)),
        ),
    }
    panel = Panel(controls, draw, extra=[button, table_html], name="ptq")
    return panel


def _html_table(rows: Sequence[dict]) -> str:
    if not rows:
        return "<p>no cached runs for this choice</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{v:.2f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
            for v in r.values()
        )
        + "</tr>"
        for r in rows
    )
    style = "<style>.genq-ptq-table td, .genq-ptq-table th {padding: 1px 8px; text-align: right}</style>"
    return f"{style}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
        bits_of = {r["quant_teacher"]: _bits_label(r["w_bits"], r["a_bits"]) for r in rows}
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
        f"{teacher} {_bits_label(block['w_bits'], block['a_bits'])}" if "w_bits" in block else str(teacher)
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
