"""Notebook 04's panel: the PTQ grid's cached rows, by bit width, source and method."""

from __future__ import annotations

import html
import json
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper.plots import width_label
from genqlib.paper.ptq_runs import RUN_FIELDS, seed_mean
from genqlib.ui.panel import Panel, mosaic
from genqlib.ui.run_record import FROM_RECORD, merge_rows, read_record, write_record

# ---------------------------------------------------------------- 04: PTQ results over cached runs


def cached_ptq_rows(cache_dir: str | Path, **match: object) -> list[dict]:
    """Every PTQ result cached under ``cache_dir`` (``genqlib.paper.ptq_runs.ptq_run``) whose settings equal
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


def run_identity(row: Mapping) -> tuple:
    """The fields that make a PTQ result row one run (``ptq_runs.RUN_FIELDS``; the eval set's digest is the
    record's key)."""
    return tuple(row.get(k) for k in RUN_FIELDS)


def explorer_ptq_rows(cache_dir: str | Path, record: str | Path, **match: object) -> list[dict]:
    """The cached PTQ rows whose settings equal ``match`` (``cached_ptq_rows``) ∪ the rows of the committed
    record at ``record`` made with the same ``match`` (``write_ptq_record``); the cache wins on the same run,
    and a row from the record carries ``from_record``. A fresh clone, without a cache, still has the record."""
    committed = read_record(record, match)
    return merge_rows(cached_ptq_rows(cache_dir, **match), (committed or {}).get("rows", []), run_identity)


def write_ptq_record(record: str | Path, rows: Sequence[dict], **match: object) -> Path:
    """The explorer's rows (numbers only, no weights or machine records) as the record at ``record``, keyed
    by ``match`` as ``explorer_ptq_rows`` reads it; prints its path and size."""
    path = write_record(record, match, rows=sorted(rows, key=lambda r: tuple(map(str, run_identity(r)))))
    print(f"wrote {path} ({len(rows)} runs, {path.stat().st_size / 1024:.0f} KB)")
    return path


def ptq_explorer(
    rows: Sequence[dict],
    calib: Mapping[tuple[str, str], torch.Tensor] | None = None,
    fp: Mapping[str, float] | None = None,
    methods: Sequence[str] = ("brecq", "qdrop", "genie_m"),
    compute: Callable[[str, int, int, str, str], dict] | None = None,
    n_show: int = 10,
    shown_sources: Sequence[str] | None = None,
    background: bool = True,
) -> Panel:
    """Teacher, bits, method and source pickers over PTQ result rows (``ptq_run``'s, e.g. every cached one):
    the table and the accuracy plot follow the pickers without recomputing anything; the calibration images
    of each picked source are shown side by side. Picked runs that are not cached are listed, and computed
    only when the "compute missing" button is pressed (``compute(teacher, w_bits, a_bits, method, source)``
    must return the new row; a source without calibration images in ``calib`` cannot be computed). The
    summary says how many rows came from the committed record (``from_record``). With
    ``background`` the button computes in a thread (``panel.worker``), showing ``k/n`` as it goes, so the
    notebook does not freeze; the redraw follows the last run.
    ``shown_sources``: the sources picked at first (default: all). The first choice shows data: the teacher
    is the first with calibration images (the notebook's own) that has runs, and the bit width and method
    are the ones with the most runs of it (``_default_choice``)."""
    rows = list(rows)
    calib = dict(calib or {})
    teachers = sorted({r["teacher"] for r in rows} | {t for t, _ in calib}) or ["(none)"]
    bits = sorted({(r["w_bits"], r["a_bits"]) for r in rows}, reverse=True) or [(4, 4)]
    all_methods = list(dict.fromkeys([*methods, *(r["method"] for r in rows if r["method"] != "nearest")]))
    sources = list(dict.fromkeys([*(s for _, s in calib), *(r["source"] for r in rows)]))
    default_teacher, default_bits, default_method = _default_choice(rows, teachers, calib, bits, all_methods)
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
        w, a = next(b for b in bits if width_label(*b) == bits_label)
        return [(teacher, w, a, method, s) for s in sources]

    def draw(teacher: str, bits_label: str, method: str, sources: tuple[str, ...]) -> tuple[Figure, dict]:
        wanted = picked(teacher, bits_label, method, sources)
        found = [(spec, lookup(*spec)) for spec in wanted]
        missing = [spec for spec, r in found if r is None]
        present = [r for _, r in found if r is not None]
        nearest = lookup(teacher, *wanted[0][1:3], "nearest", "real") if wanted else None
        computable = [m for m in missing if (m[0], m[-1]) in calib]
        button.disabled = compute is None or not computable
        button.description = _button_label(computable, rows)
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
            ax.legend(fontsize=7, loc="lower right", framealpha=1.0)
        ax.set_ylim(0.0, top)  # bars from zero: their length is the accuracy
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{teacher} {bits_label} {method}", fontsize=9)
        if not bars:  # said in the figure too, not only by an empty axis
            ax.text(0.5, 0.5, "no runs for this choice", ha="center", va="center", transform=ax.transAxes)
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
            "summary": _summary(teacher, bits_label, method, present, missing, rows),
        }
        table_html.value = _html_table(table)
        return fig, state

    def work(todo: list[tuple]) -> None:
        try:
            for k, (teacher, w, a, method, source) in enumerate(todo, 1):
                panel.summary.value = f"computing {k}/{len(todo)}: {teacher} W{w}A{a} {method} {source}…"
                rows.append(compute(teacher, w, a, method, source))
            panel.update()
        except Exception as err:  # a background thread has nowhere else to report
            panel.summary.value = f'<span class="genq-error">error: {html.escape(repr(err))}</span>'
            button.disabled = False

    def run_missing(_=None) -> None:
        todo = [s for s in picked(**panel.values()) if lookup(*s) is None and (s[0], s[-1]) in calib]
        button.disabled = True
        if background:  # the kernel stays free: other cells and controls run while it computes
            panel.worker = threading.Thread(target=work, args=(todo,), daemon=True, name="compute missing")
            panel.worker.start()
        else:
            work(todo)

    table_html = widgets.HTML()
    table_html.add_class("genq-ptq-table")
    button.on_click(run_missing)
    controls = {
        "teacher": widgets.Dropdown(options=teachers, value=default_teacher, description="teacher"),
        "bits_label": widgets.Dropdown(
            options=[width_label(*b) for b in bits], value=width_label(*default_bits), description="bits"
        ),
        "method": widgets.Dropdown(options=all_methods, value=default_method, description="method"),
        "sources": widgets.SelectMultiple(
            options=sources,
            value=tuple(s for s in (shown_sources or sources) if s in sources),
            description="sources (ctrl/shift-click to pick several)",
            rows=min(6, len(sources)),
            style={"description_width": "initial"},
        ),
    }
    hint = (
        "compare genq with noise and real at each bit width; pick a method with no runs and press "
        "'compute missing' to run them here."
    )
    panel = Panel(controls, draw, extra=[button, table_html], name="ptq", hint=hint)
    return panel


def _summary(teacher, bits_label, method, present, missing, rows) -> str:
    """What the figure shows, what is not computed, and how many rows came from the committed record."""
    if not rows:
        return "no runs: nothing in the cache and no committed record; press 'compute missing' to run some"
    text = f"{teacher} {bits_label} {method}: {len(present)} runs shown"
    if missing:
        text += f", {len(missing)} not computed ({', '.join(m[-1] for m in missing)})"
    n_record = sum(bool(r.get(FROM_RECORD)) for r in rows)
    return text + f"; {n_record} of the {len(rows)} rows from the committed record"


def _button_label(computable: Sequence[tuple], rows: Sequence[dict]) -> str:
    """``compute missing (k runs, about N min)``: the estimate is the median wall time of the cached runs
    of the same teacher (any run when it has none) times k; without any timed run, no estimate."""
    if not computable:
        return "compute missing"
    teacher = computable[0][0]
    timed = [r["seconds"] for r in rows if r.get("seconds") and r["method"] != "nearest"]
    mine = [
        r["seconds"]
        for r in rows
        if r.get("seconds") and r["teacher"] == teacher and r["method"] != "nearest"
    ]
    times = sorted(mine or timed)
    n = len(computable)
    if not times:
        return f"compute missing ({n} run{'s' * (n > 1)})"
    minutes = times[len(times) // 2] * n / 60
    return f"compute missing ({n} run{'s' * (n > 1)}, about {max(1, round(minutes))} min)"


def _default_choice(
    rows: Sequence[dict],
    teachers: Sequence[str],
    calib: Mapping[tuple[str, str], torch.Tensor],
    bits: Sequence[tuple[int, int]],
    methods: Sequence[str],
) -> tuple[str, tuple[int, int], str]:
    """(teacher, bits, method) the explorer opens on: one that has runs, so its first figure is not empty.

    The teacher is the notebook's own (first with calibration images) when it has runs, else the first with
    runs; then the (bits, method) with the most runs of that teacher, ties to the widest bits. Without any
    run: the first teacher, the widest bits and the first method."""
    run_rows = [r for r in rows if r["method"] != "nearest"]
    with_runs = {r["teacher"] for r in run_rows}
    preferred = [t for t, _ in calib] + list(teachers)
    teacher = next((t for t in preferred if t in with_runs), preferred[0] if preferred else "")
    counts: dict[tuple, int] = {}
    for r in run_rows:
        if r["teacher"] == teacher:
            key = ((r["w_bits"], r["a_bits"]), r["method"])
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return teacher, bits[0], methods[0]
    (w_a, method), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0][0]))
    return teacher, w_a, method


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
