"""The paper's tables and figures in miniature, as README markdown generated from the notebooks' metrics JSON.

One function per paper item (Tables 1-5, Figs. 4-6). Each reads ``figures/<notebook>/metrics.json``; when the
file or its key is missing it returns a one-line note naming the notebook to run, so the report never fails
before the experiments exist. Every table ends with the paper's own finding and the command that reproduces it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence

from genqlib.profiles import REPO_ROOT

FIGURES = REPO_ROOT / "figures"
NOTEBOOKS = {"03": "03_token_inversion", "04": "04_ptq", "05": "05_qat", "06": "06_ablations"}
METHODS = {"nearest": "nearest rounding", "brecq": "BRECQ", "qdrop": "QDrop", "genie_m": "Genie-M"}
SOURCES = {
    "real": "real data",
    "noise": "Gaussian noise",
    "bn_inversion": "BN inversion",
    "genq_unfiltered": "GenQ, unfiltered",
    "genq": "**GenQ**",
}
PTQ_ORDER = ("nearest", "real", "noise", "bn_inversion", "genq_unfiltered", "genq")
QAT_MODES = {"ptq_start": "PTQ start (BRECQ)", "genq": "**GenQ QAT** (offset u)", "lsq": "LSQ"}
SCARCE = {
    "real_shots": "real shots only",
    "genq_data_scarce": "GenQ data-scarce (style token)",
    "genq_data_free": "GenQ data-free (label prompts)",
}
STAGES = {"energy": "energy score", "bn": "BN sensitivity"}
MISSING = "–"


# ---------------------------------------------------------------- helpers


def reproduce(notebook: str) -> str:
    """The command that regenerates one notebook's metrics at the README's size."""
    return f"python -m genqlib.run_notebooks --profile mini --only {notebook}"


def not_measured(notebook: str) -> str:
    """The one-line note shown in place of a table whose metrics do not exist yet."""
    return f"_Not measured yet: run `{reproduce(notebook)}`._"


def load_metrics(notebook: str, key: str | None = None) -> dict | None:
    """A notebook's metrics.json (or one key of it); None when the file, the key or its value is missing."""
    path = FIGURES / NOTEBOOKS[notebook] / "metrics.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if key is None else data.get(key) or None


def pct(value: float | None) -> str:
    """A top-1 (percent) with two decimals, or a dash when not measured."""
    return MISSING if value is None else f"{value:.2f}"


def delta(value: float | None, reference: float | None) -> str:
    """Signed difference ``value - reference`` with two decimals, or a dash when either is missing."""
    return MISSING if value is None or reference is None else f"{value - reference:+.2f}"


def with_delta(value: float | None, reference: float | None) -> str:
    """A cell ``top1 (Δ)``: the number and its difference from a reference row, compact for pivots."""
    if value is None or reference is None:
        return pct(value)
    return f"{pct(value)} ({delta(value, reference)})"


def top1(row: dict | None) -> float | None:
    """A result row's top-1, or None when the row was not run."""
    return None if row is None else row.get("top1")


def bits(row: dict) -> str:
    """``W4A4``-style label of a row's bit widths."""
    return f"W{row['w_bits']}A{row['a_bits']}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table from a header and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def setting(m: dict, extra: str = "") -> str:
    """The run's profile, evaluation size and first/last-layer convention, so numbers are read in context."""
    parts = []
    if "profile" in m:
        parts.append(f"profile `{m['profile']}`")
    if "n_eval" in m:
        parts.append(f"{m['n_eval']:,} test images")
    if "convention" in m:
        parts.append(str(m["convention"]))
    if extra:
        parts.append(extra)
    return ("Setting: " + "; ".join(parts) + ".") if parts else ""


def footer(paper: str, *notebooks: str) -> str:
    """The paper's finding, the reproduce command(s) and the generator behind the numbers, for every table."""
    commands = "; ".join(f"`{reproduce(nb)}`" for nb in notebooks)
    return f"Paper: {paper}\n\nReproduce: {commands}\n\n{provenance(*notebooks)}"


def provenance(*notebooks: str) -> str:
    """Which generator made each notebook's numbers (from its ``run.json``), flagged when it is not the
    committed one, so a table left over from an older generator says so."""
    from genqlib.profiles import MINI_GENERATOR
    from genqlib.run_notebooks import generator_label

    current = generator_label(MINI_GENERATOR)
    parts = []
    for nb in notebooks:
        path = FIGURES / NOTEBOOKS[nb] / "run.json"
        made_by = json.loads(path.read_text()).get("generator") if path.exists() else None
        if made_by is None:
            parts.append(f"notebook {nb}: generator not recorded (run before run records existed)")
        elif made_by == current:
            parts.append(f"notebook {nb}: `{made_by}`, the committed generator")
        else:
            parts.append(f"notebook {nb}: `{made_by}`, **not** the committed `{current}`: re-run it")
    return "Generator: " + "; ".join(parts) + "."


def join(*blocks: str) -> str:
    """Markdown blocks separated by blank lines (empty blocks dropped)."""
    return "\n\n".join(b for b in blocks if b)


def ptq_method(m: dict) -> str:
    """A PTQ metrics record's reconstruction method and its size, for the setting line."""
    name = METHODS.get(m.get("method", ""), m.get("method", "?"))
    size = [
        f"{m['n_calib']:,} calibration images" if "n_calib" in m else "",
        f"{m['iters']:,} iterations per block" if "iters" in m else "",
    ]
    return ", ".join([name, *filter(None, size)])


# ---------------------------------------------------------------- replicates (a second run, other threads)


REPLICATE = "replicate"  # figures/<notebook>/replicate/metrics.json: the notebook run again, other threads


def load_replicate(notebook: str = "06") -> dict | None:
    """A notebook's metrics from a second, independent run (committed under ``replicate/``), or None."""
    path = FIGURES / NOTEBOOKS[notebook] / REPLICATE / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def row_threads(rows: Iterable[dict]) -> str | None:
    """The CPU thread count the rows ran on, when they all recorded the same one."""
    found = {r.get("threads") for r in rows}
    return str(found.pop()) if len(found) == 1 and None not in found else None


# the settings that identify a result row in any notebook's metrics, to pair it with its replicate
ROW_ID = (
    "teacher", "w_bits", "a_bits", "method", "source", "mode",
    "seed", "n", "k", "stage", "drop", "filter_teacher", "quant_teacher",
)  # fmt: skip


def row_id(row: dict) -> tuple:
    """A result row's identity (its ``ROW_ID`` settings), the same in a run and in its replicate."""
    return tuple(row.get(f) for f in ROW_ID)


def table_replicate_note(
    notebook: str,
    rows: list[dict],
    columns: list[tuple[str, str]],
    key: Callable[[dict], str],
    comparisons: Sequence[tuple[str, str, str]],
    rows_of: Callable[[dict], list[dict]] = lambda m: m.get("rows", []),
) -> str:
    """How far each trained point of a notebook-03/04/05 table moved in that notebook's replicate run, and each
    of the table's ``comparisons`` (label, row a, row b: a minus b per column) in both runs. ``rows_of`` finds
    the result rows in a metrics record."""
    rep = load_replicate(notebook)
    if rep is None:
        return ""
    theirs = {row_id(r): r for r in rows_of(rep)}
    pairs = [(r, theirs[row_id(r)]) for r in rows if r.get("method") != "nearest" and row_id(r) in theirs]
    if not pairs:
        return ""
    ours, replicated = [a for a, _ in pairs], [b for _, b in pairs]
    moved = [abs(b["top1"] - a["top1"]) for a, b in pairs]
    most = ours[moved.index(max(moved))]
    threads, ours_threads = row_threads(replicated), row_threads(ours)
    on = f" on {threads} CPU threads" if threads else ""
    instead = f" instead of {ours_threads}" if threads and ours_threads else ""
    both = [
        (label, gaps(ours, columns, key, a, b), gaps(replicated, columns, key, a, b))
        for label, a, b in comparisons
    ]
    shown = "; ".join(  # a comparison with no measured cell in either run is left out
        f"{label} {here} here, {there} there"
        for label, here, there in both
        if any(c.isdigit() for c in here + there)
    )
    return (
        f"Replicate: notebook {notebook} run again from an empty cache (images generated, filtered and used "
        f"anew){on}{instead}, which changes only the floating-point summation order, moved these {len(moved)} "
        f"trained points by up to {max(moved):.2f} ({most['teacher']} {bits(most)}, {row_name(most)}; "
        f"mean {sum(moved) / len(moved):.2f}, median {statistics.median(moved):.2f}). "
        f"Per column ({' / '.join(f'{t} {b}' for t, b in columns)}): {shown}."
    )


def row_name(row: dict) -> str:
    """A table row's calibration source or QAT mode, in words."""
    if "mode" in row:
        return QAT_MODES.get(row["mode"], row["mode"]).replace("*", "")
    names = SOURCES | SCARCE | {"real_shots_only": SCARCE["real_shots"]}
    return names.get(row["source"], row["source"]).replace("*", "")


def gaps(rows: list[dict], columns: list[tuple[str, str]], key: Callable[[dict], str], a: str, b: str) -> str:
    """``a`` minus ``b`` in each (teacher, bits) column, e.g. ``+0.13 / -0.40``: one comparison of a table."""
    cell = {(r["teacher"], bits(r), key(r)): r["top1"] for r in rows}
    return " / ".join(delta(cell.get((t, w, a)), cell.get((t, w, b))) for t, w in columns)


# ---------------------------------------------------------------- PTQ (notebook 04)


def ptq_key(row: dict) -> str:
    """A PTQ row's pivot key: ``nearest`` for the no-reconstruction reference, else its calibration source."""
    return "nearest" if row["method"] == "nearest" else row["source"]


def ptq_label(key: str, method: str) -> str:
    """Row label of a PTQ pivot, e.g. ``BRECQ, **GenQ**``."""
    if key == "nearest":
        return "nearest rounding, real data"
    return f"{METHODS.get(method, method)}, {SOURCES.get(key, key)}"


def ptq_columns(rows: list[dict], teachers: list[str]) -> list[tuple[str, str]]:
    """The (teacher, bits) columns of a PTQ pivot, in the order the rows ran."""
    return [(t, b) for t in teachers for b in dict.fromkeys(bits(r) for r in rows if r["teacher"] == t)]


def ptq_pivot(m: dict, rows: list[dict], teachers: list[str]) -> str:
    """Rows = calibration source, columns = teacher × bits; each cell top-1 and its Δ vs real-data calibration."""
    columns = ptq_columns(rows, teachers)
    cell = {(r["teacher"], bits(r), ptq_key(r)): r["top1"] for r in rows}
    header = ["calibration", *(f"{t} {b}" for t, b in columns)]
    body = [["full precision", *(pct(m.get("fp", {}).get(t)) for t, _ in columns)]]
    for key in PTQ_ORDER:
        if not any(k == key for *_, k in cell):
            continue
        reference = [cell.get((t, b, "real")) for t, b in columns]
        values = [cell.get((t, b, key)) for t, b in columns]
        shown = [
            pct(v) if key == "real" else with_delta(v, r) for v, r in zip(values, reference, strict=True)
        ]
        body.append([ptq_label(key, m.get("method", "")), *shown])
    return markdown_table(header, body)


def table2() -> str:
    """Table 2: data-free PTQ of the CNN teachers at W4A4 and W2A4, GenQ against real data and other sources."""
    m = load_metrics("04")
    if m is None or not m.get("rows"):
        return not_measured("04")
    teachers = list(dict.fromkeys(r["teacher"] for r in m["rows"] if (r["w_bits"], r["a_bits"]) == (2, 4)))
    if not teachers:
        return not_measured("04")
    rows = [r for r in m["rows"] if r["teacher"] in teachers]
    return join(
        setting(m, ptq_method(m)),
        f"Top-1 (%); in brackets, the difference from the `{ptq_label('real', m.get('method', ''))}` row.",
        ptq_pivot(m, rows, teachers),
        table_replicate_note(
            "04",
            rows,
            ptq_columns(rows, teachers),
            ptq_key,
            [("GenQ − real data", "genq", "real"), ("GenQ − unfiltered", "genq", "genq_unfiltered")],
        ),
        footer(
            "with BRECQ or Genie-M, calibrating on GenQ images lands within about 1 point of calibrating on 1,024 "
            "real images (sometimes above it) and beats the other data-free generators; the margin is widest on the "
            "light models at W2A4, e.g. about 5 points over GENIE-D on MobileNet-b.",
            "04",
        ),
    )


def table4() -> str:
    """Table 4: data-free PTQ of the ViT teacher, GenQ images against real data, with Δ vs FP and vs real."""
    m = load_metrics("04")
    rows = [r for r in (m or {}).get("rows", []) if r["teacher"] == "vit"]
    if not rows:
        return not_measured("04")
    fp = m.get("fp", {}).get("vit")
    real = {bits(r): r["top1"] for r in rows if ptq_key(r) == "real"}
    order = {k: i for i, k in enumerate(PTQ_ORDER)}
    rows = sorted(rows, key=lambda r: (-r["w_bits"], -r["a_bits"], order.get(ptq_key(r), len(order))))
    body = [["full precision", "32/32", pct(fp), "", ""]]
    for r in rows:
        key = ptq_key(r)
        vs_real = "" if key == "real" else delta(r["top1"], real.get(bits(r)))
        body.append([ptq_label(key, r["method"]), bits(r), pct(r["top1"]), delta(r["top1"], fp), vs_real])
    return join(
        setting(m, ptq_method(m)),
        markdown_table(["`vit` calibration", "bits", "top-1 (%)", "Δ vs FP", "Δ vs real"], body),
        table_replicate_note(
            "04", rows, ptq_columns(rows, ["vit"]), ptq_key, [("GenQ − real data", "genq", "real")]
        ),
        footer(
            "at W4A4 on ViT-B, DeiT-B and Swin-B, GenQ images beat the earlier data-free ViT method (PSAQ-ViT) under "
            "both PTQ4ViT and RepQ-ViT and come within about 3 points of real-data calibration, above it in some cases.",
            "04",
        ),
    )


# ---------------------------------------------------------------- QAT (notebook 05)


def qat_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The (teacher, bits) columns of the QAT pivot, in the order the rows ran."""
    return list(dict.fromkeys((r["teacher"], bits(r)) for r in rows))


def qat_pivot(m: dict) -> str:
    """Rows = QAT mode (and its data), columns = teacher × bits; cells top-1 and Δ vs LSQ on real data."""
    rows = m["rows"]
    columns = qat_columns(rows)
    cell = {(r["teacher"], bits(r), r["mode"]): r for r in rows}
    header = ["mode", "training data", *(f"{t} {b}" for t, b in columns)]
    body = [["full precision", "", *(pct(m.get("fp", {}).get(t)) for t, _ in columns)]]
    for mode, label in QAT_MODES.items():
        found = [cell.get((t, b, mode)) for t, b in columns]
        if not any(found):
            continue
        source = next(r["source"] for r in found if r)
        lsq = [cell.get((t, b, "lsq")) for t, b in columns]
        shown = [
            pct(top1(r)) if mode == "lsq" else with_delta(top1(r), top1(ref))
            for r, ref in zip(found, lsq, strict=True)
        ]
        body.append([label, SOURCES.get(source, source).replace("*", ""), *shown])
    return markdown_table(header, body)


def qat_cost(rows: list[dict]) -> str:
    """Training images, epochs, wall time and throughput of every QAT run (the paper's cost argument)."""
    body = [
        [
            r["teacher"],
            bits(r),
            QAT_MODES.get(r["mode"], r["mode"]).replace("*", ""),
            f"{r['n_images']:,}" if r.get("n_images") is not None else MISSING,
            str(r.get("epochs", MISSING)),
            f"{r['seconds']:.0f}" if r.get("seconds") is not None else MISSING,
            f"{r['images_per_s']:.0f}" if r.get("images_per_s") is not None else MISSING,
        ]
        for r in rows
    ]
    return markdown_table(["teacher", "bits", "mode", "images", "epochs", "seconds", "images/s"], body)


def table3() -> str:
    """Table 3: QAT on filtered GenQ images (offset u on the PTQ model) against LSQ on as many real images."""
    m = load_metrics("05")
    if m is None or not m.get("rows"):
        return not_measured("05")
    extra = ", ".join(f"{k} {m[k]}" for k in ("epochs", "lr", "loss") if k in m)
    return join(
        setting(m, extra),
        "Top-1 (%); in brackets, the difference from LSQ on the same number of real images.",
        qat_pivot(m),
        table_replicate_note(
            "05",
            m["rows"],
            qat_columns(m["rows"]),
            lambda r: r["mode"],
            [("GenQ QAT − LSQ", "genq", "lsq"), ("GenQ QAT − its PTQ start", "genq", "ptq_start")],
        ),
        "Cost of each run:",
        qat_cost(m["rows"]),
        footer(
            "QAT on 0.4M filtered synthetic images gets within about 1 point of LSQ on all 1.2M real images at W4A4 "
            "(even above it on MobileNetV2) and leads the other data-free QAT methods by a wide margin, most of all "
            "at W3A3.",
            "05",
        ),
    )


# ---------------------------------------------------------------- data-scarce (notebooks 03 and 06)


def token_sets_table(m: dict) -> str:
    """BN distance and class fidelity of the label-prompt, style-token and real sets (notebook 03)."""
    names = {
        "label": "GenQ label prompts (data-free)",
        "style": "GenQ style token (data-scarce)",
        "real": "real",
    }
    body = [
        [name, f"{m[key]['bn_distance']:.2f}", f"{100 * m[key]['class_fidelity']:.1f}%"]
        for key, name in names.items()
        if key in m
    ]
    return markdown_table(["set", "BN distance", "class fidelity"], body)


def scarce_ptq_table(ptq: dict) -> str:
    """Notebook 03's W2A4 PTQ per teacher: data-free vs data-scarce GenQ vs the real shots alone."""
    body = [
        [
            f"`{t}`",
            pct(s.get("genq_data_free")),
            pct(s.get("genq_data_scarce")),
            pct(s.get("real_shots_only")),
            delta(s.get("genq_data_scarce"), s.get("genq_data_free")),
            delta(s.get("genq_data_scarce"), s.get("real_shots_only")),
        ]
        for t, s in ptq.items()
    ]
    header = [
        "teacher",
        "GenQ data-free",
        "GenQ data-scarce",
        "real shots only",
        "Δ scarce vs free",
        "Δ scarce vs real shots",
    ]
    return markdown_table(header, body)


def scarce_curve_table(curve: dict) -> str:
    """Notebook 06's curve: rows = real images per class k, columns = source; cells top-1 and images used."""
    rows = curve.get("rows", [])
    sources = [s for s in SCARCE if any(r["source"] == s for r in rows)]
    cell = {(r.get("k") or 0, r["source"]): r for r in rows}
    body = []
    for k in sorted({k for k, _ in cell}):
        found = [cell.get((k, s)) for s in sources]
        shown = [f"{pct(r['top1'])} (n={r['n']:,})" if r else MISSING for r in found]
        body.append([str(k) if k else "0 (data-free)", *shown])
    title = f"`{curve.get('teacher', '?')}` W{curve.get('w_bits', '?')}A{curve.get('a_bits', '?')} PTQ top-1 (%) by real images per class k (n = calibration images):"
    return join(title, markdown_table(["k", *(SCARCE[s] for s in sources)], body))


def scarce_here(m: dict, curve: dict) -> str:
    """What the mini run shows for the Fig. 4 curve: each style-token point against the same k real shots alone
    and against data-free GenQ, beside ``m``'s seed range."""
    rows = curve.get("rows", [])
    shots = {r.get("k"): r["top1"] for r in rows if r["source"] == "real_shots"}
    free = next((r["top1"] for r in rows if r["source"] == "genq_data_free"), None)
    parts = [
        f"with k = {r['k']}, the style token gives {r['top1']:.2f}, "
        f"{delta(r['top1'], shots.get(r['k']))} against those real shots alone and {delta(r['top1'], free)} "
        "against data-free GenQ"
        for r in sorted((r for r in rows if r["source"] == "genq_data_scarce"), key=lambda r: r["k"])
    ]
    if shots:
        best = max(shots, key=shots.get)
        parts.append(f"the real shots alone peak at k = {best} ({shots[best]:.2f})")
    return "Here: " + "; ".join(parts) + f"{against_noise(m)}." if parts else ""


def token_sets(m3: dict | None) -> str:
    """Notebook 03's part of Fig. 4: set quality, then W2A4 PTQ per teacher; the note when not measured."""
    if m3 is None or not any(k in m3 for k in ("label", "style", "real")):
        return not_measured("03")
    learn = f"style token learned in {m3['learn_seconds'] / 60:.1f} min" if "learn_seconds" in m3 else ""
    shots = f"{m3['k_shots']} real image(s) per class" if "k_shots" in m3 else ""
    teacher = f"BN distance and class fidelity by `{m3['teacher']}`" if "teacher" in m3 else ""
    ptq = m3.get("ptq_w2a4")
    return join(
        setting(m3, ", ".join(filter(None, [shots, learn, teacher]))),
        token_sets_table(m3),
        "W2A4 PTQ top-1 (%) calibrated on each set:" if ptq else "",
        scarce_ptq_table(ptq) if ptq else "",
        table_replicate_note(
            "03",
            scarce_ptq_rows(m3),
            [(t, "W2A4") for t in ptq or {}],
            lambda r: r["source"],
            [
                ("data-scarce − data-free", "genq_data_scarce", "genq"),
                ("data-scarce − real shots", "genq_data_scarce", "real_shots_only"),
            ],
            rows_of=scarce_ptq_rows,
        ),
    )


def scarce_ptq_rows(m3: dict) -> list[dict]:
    """Notebook 03's W2A4 PTQ result rows of every teacher, as one list."""
    return [r for rows in (m3.get("ptq_w2a4_rows") or {}).values() for r in rows]


def fig4() -> str:
    """Fig. 4 (data-scarce GenQ): set quality and W2A4 PTQ from notebook 03, the k-shot curve from notebook 06."""
    m6 = load_metrics("06") or {}
    curve = m6.get("data_scarce") or {}
    sets = token_sets(load_metrics("03"))
    curve_table = (
        join(
            scarce_curve_table(curve),
            scarce_here(m6, curve),
            replicate_note(m6, m6, "data_scarce", scarce_here),
        )
        if curve.get("rows")
        else not_measured("06")
    )
    if sets == not_measured("03") and curve_table == not_measured("06"):
        return join(sets, curve_table)
    return join(
        sets,
        curve_table,
        footer(
            "QAT accuracy (ResNet-50, W3A3) climbs with the amount of real data; with one real image per class, GenQ's "
            "style-token data reaches 68.88%, about what real-data QAT needs some 300x more images for.",
            "03",
            "06",
        ),
    )


# ---------------------------------------------------------------- ablations (notebook 06)


def ablation_setting(m: dict, part: dict) -> str:
    """Setting line of one ablation: the run's context plus the ablated teacher and bits."""
    model = f"`{part['teacher']}` W{part['w_bits']}A{part['a_bits']}" if "teacher" in part else ""
    method = METHODS.get(m.get("method", ""), m.get("method", ""))
    return setting(m, ", ".join(filter(None, [model, method])))


def seed_note(m: dict | None) -> str:
    """One line on the noise floor measured by notebook 06's ``seed_spread`` (empty when it was not run)."""
    part = (m or {}).get("seed_spread")
    if not part or not part.get("spread"):
        return ""
    n_seeds = len({r["seed"] for r in part["rows"]})
    spreads = ", ".join(
        f"{source} {s['mean']:.2f} ± {s['std']:.2f} (range {s['range']:.2f})"
        for source, s in part["spread"].items()
    )
    return (
        f"Noise floor (`{part['teacher']}` W{part['w_bits']}A{part['a_bits']}): the same {part['rows'][0]['n']:,} "
        f"images reconstructed with {n_seeds} seeds give top-1 {spreads}; "
        "gaps within that range are not evidence either way."
    )


def seed_range(m: dict | None) -> float | None:
    """The widest top-1 range over reconstruction seeds in ``seed_spread``, or None when it was not run."""
    spread = ((m or {}).get("seed_spread") or {}).get("spread") or {}
    return max((s["range"] for s in spread.values()), default=None)


def against_noise(m: dict | None) -> str:
    """`` against a seed range of R`` after a measured span of top-1, so the reader sees both side by side."""
    noise = seed_range(m)
    return "" if noise is None else f" against a seed range of {noise:.2f}"


def _top1_by_row(part: dict) -> dict[tuple, float]:
    """Top-1 of every row of an analysis (and its ``real`` line), keyed by the row's settings."""
    rows = {row_id(r): r["top1"] for r in part.get("rows", []) if r.get("top1") is not None}
    if (part.get("real") or {}).get("top1") is not None:
        rows[("real line",)] = part["real"]["top1"]
    return rows


def _threads(m: dict) -> str:
    return str((m.get("generation_cost") or {}).get("threads", "?"))


def replicate_note(m: dict, runs: dict, key: str, here: Callable[[dict, dict], str]) -> str:
    """How far every point of analysis ``key`` in ``runs`` (``m`` itself, or one of its ``by_teacher``) moved
    in the replicate run, and what the replicate shows (``here`` applied to it): the second noise floor."""
    rep = load_replicate()
    if rep is None:
        return ""
    part = runs[key]
    rep_runs = rep if runs is m else (rep.get("by_teacher") or {}).get(part.get("teacher")) or {}
    rep_part = rep_runs.get(key)
    if not rep_part:
        return ""
    ours, theirs = _top1_by_row(part), _top1_by_row(rep_part)
    moved = [abs(theirs[k] - ours[k]) for k in ours if k in theirs]
    if not moved:
        return ""
    shown = here(rep_runs, rep_part).removeprefix("Here: ")
    return (
        f"Replicate: notebook 06 run again, none of its own points cached, on {_threads(rep)} CPU threads "
        f"instead of {_threads(m)}, which changes only the floating-point summation order of the reconstruction, "
        f"moved these {len(moved)} points by up to {max(moved):.2f} (mean {sum(moved) / len(moved):.2f}); in that "
        f"run {shown}"
    )


def fig5_here(m: dict, part: dict) -> str:
    """What the mini run shows for Fig. 5: the change from fewest to most images, the best size, and the real line."""
    rows = sorted(part["rows"], key=lambda r: r["n"])
    first, last = rows[0], rows[-1]
    best = max(rows, key=lambda r: r["top1"])
    span = best["top1"] - min(r["top1"] for r in rows)
    text = (
        f"Here: {first['n']:,} → {last['n']:,} GenQ images moves top-1 {first['top1']:.2f} → {last['top1']:.2f} "
        f"({last['top1'] - first['top1']:+.2f}); the best is {best['top1']:.2f} at {best['n']:,}; the curve spans "
        f"{span:.2f} points{against_noise(m)}."
    )
    real = part.get("real") or {}
    if real.get("top1") is not None:
        text += f" {last['n']:,} GenQ images against {real['n']:,} real: {last['top1'] - real['top1']:+.2f}."
    return text


def fig5_block(m: dict, runs: dict) -> str:
    """Fig. 5 for one teacher: ``runs`` holds its ``n_synthetic`` and (when run) its ``seed_spread``."""
    part = runs["n_synthetic"]
    real = part.get("real") or {}
    rows = sorted(part["rows"], key=lambda r: r["n"])
    body = [[f"{r['n']:,}", pct(r["top1"]), delta(r["top1"], real.get("top1"))] for r in rows]
    if real:
        body.append([f"{real['n']:,} real images", pct(real.get("top1")), ""])
    header = ["GenQ images", "top-1 (%)", "Δ vs real"]
    return join(
        ablation_setting(m, part),
        markdown_table(header, body),
        seed_note(runs),
        fig5_here(runs, part),
        replicate_note(m, runs, "n_synthetic", fig5_here),
    )


def per_teacher(m: dict, key: str) -> list[dict]:
    """The runs of one analysis for the main ablation teacher and then each of ``by_teacher`` (notebook 06's
    ``more_teachers``), as dicts holding that analysis and the teacher's own ``seed_spread``."""
    runs = [m] + list((m.get("by_teacher") or {}).values())
    return [r for r in runs if (r.get(key) or {}).get("rows")]


def fig5() -> str:
    """Fig. 5: PTQ top-1 against the number of GenQ calibration images, beside PTQ on real images."""
    return ablation_section(
        "n_synthetic",
        fig5_block,
        "with ResNet-50 at W2A4 (Genie-M), accuracy keeps rising as synthetic images are added, and from about 4k "
        "GenQ images it passes PTQ on 1k real images.",
    )


def ablation_section(key: str, block: Callable[[dict, dict], str], paper: str) -> str:
    """One README section of notebook 06: a ``block`` per teacher that ran analysis ``key``, then the footer."""
    m = load_metrics("06")
    runs = per_teacher(m or {}, key)
    if not runs:
        return not_measured("06")
    return join(*(block(m, r) for r in runs), footer(paper, "06"))


def fig6_here(m: dict, part: dict) -> str:
    """What the mini run shows for Fig. 6: each stage's weakest to strongest drop, its best drop and its span."""
    parts = []
    for stage, name in STAGES.items():
        rows = sorted((r for r in part["rows"] if r["stage"] == stage), key=lambda r: r["drop"])
        if not rows:
            continue
        best = max(rows, key=lambda r: r["top1"])
        span = best["top1"] - min(r["top1"] for r in rows)
        parts.append(
            f"{name}, r = {rows[0]['drop']:g} → {rows[-1]['drop']:g}: {rows[0]['top1']:.2f} → {rows[-1]['top1']:.2f}, "
            f"best at r = {best['drop']:g} ({best['top1']:.2f}), span {span:.2f}"
        )
    noise = seed_range(m)
    tail = "" if noise is None else f" (seed range {noise:.2f})"
    return "Here: " + "; ".join(parts) + tail + "."


def fig6_block(m: dict, runs: dict) -> str:
    """Fig. 6 for one teacher: ``runs`` holds its ``filter_strength`` and (when run) its ``seed_spread``."""
    part = runs["filter_strength"]
    drops = sorted({r["drop"] for r in part["rows"]})
    cell = {(r["stage"], r["drop"]): r for r in part["rows"]}
    body = []
    for stage in [s for s in STAGES if any(k[0] == s for k in cell)]:
        found = [cell.get((stage, d)) for d in drops]
        body.append([f"{STAGES[stage]}: top-1 (%)", *(pct(r["top1"]) if r else MISSING for r in found)])
        body.append(
            [
                f"{STAGES[stage]}: images generated",
                *(f"{r['n_generated']:,}" if r else MISSING for r in found),
            ]
        )
    kept = f" Each run calibrates on the {part['n']:,} images kept." if "n" in part else ""
    return join(
        ablation_setting(m, part) + kept,
        markdown_table(["drop ratio", *(f"{d:g}" for d in drops)], body),
        seed_note(runs),
        fig6_here(runs, part),
        replicate_note(m, runs, "filter_strength", fig6_here),
    )


def fig6() -> str:
    """Fig. 6: PTQ top-1 against filter strength (drop ratio) for each filter stage, and how many images that costs."""
    return ablation_section(
        "filter_strength",
        fig6_block,
        "for ResNet-18 at W2A4 (Genie-M), dropping more images by energy score helps slightly, at the price of "
        "generating more, and the spread is small; for BN sensitivity, dropping about half works best, which the "
        "authors read as quantization needing diverse images.",
    )


def table5_here(m: dict, cell: dict[tuple[str, str], float]) -> str:
    """What the mini run shows for Table 5: how far another teacher's filter moves top-1 from the diagonal."""
    deltas = [t - cell[(q, q)] for (f, q), t in cell.items() if f != q and (q, q) in cell]
    if not deltas:
        return ""
    return (
        f"Here: filtering with another teacher changes top-1 by {min(deltas):+.2f} to {max(deltas):+.2f} "
        f"(mean {sum(deltas) / len(deltas):+.2f}) relative to filtering with the quantized teacher itself"
        f"{against_noise(m)}."
    )


def table5_here_of(m: dict, part: dict) -> str:
    """``table5_here`` computed from a ``cross_model`` record."""
    return table5_here(m, {(r["filter_teacher"], r["quant_teacher"]): r["top1"] for r in part["rows"]})


def table5() -> str:
    """Table 5: cross-model transfer, GenQ images filtered by one teacher and used to quantize another."""
    m = load_metrics("06")
    part = (m or {}).get("cross_model")
    if not part or not part.get("rows"):
        return not_measured("06")
    rows = part["rows"]
    filters = list(dict.fromkeys(r["filter_teacher"] for r in rows))
    quants = list(dict.fromkeys(r["quant_teacher"] for r in rows))
    cell = {(r["filter_teacher"], r["quant_teacher"]): r["top1"] for r in rows}
    body = [
        [
            f"`{f}`",
            *(
                with_delta(cell.get((f, q)), cell.get((q, q))) if f != q else pct(cell.get((f, q)))
                for q in quants
            ),
        ]
        for f in filters
    ]
    bits_of = {r["quant_teacher"]: bits(r) for r in rows}
    header = ["filtered by ↓ / quantized →", *(f"`{q}` {bits_of[q]}" for q in quants)]
    return join(
        setting(m, METHODS.get(m.get("method", ""), m.get("method", ""))),
        "Top-1 (%); in brackets, the difference from filtering with the quantized teacher itself (the diagonal).",
        markdown_table(header, body),
        seed_note(m),
        table5_here(m, cell),
        replicate_note(m, m, "cross_model", table5_here_of),
        footer(
            "at W2A4, GenQ images filtered by a different model (ResNet-18, MobileNetV2 or even ViT-B/16) lose only "
            "about 0.2-0.5 points against filtering by the quantized model itself, whereas inversion-based data "
            "loses up to 33 points when moved from ViT to MobileNetV2.",
            "06",
        ),
    )


def table1_here(part: dict) -> str:
    """What the mini run shows for Table 1: GenQ's time per 1,000 images against BN inversion's, and BN distances."""
    rows = {r["source"]: r for r in part["rows"]}
    genq, inversion = rows.get("genq") or {}, rows.get("bn_inversion") or {}
    if genq.get("seconds_per_1000") is None or inversion.get("seconds_per_1000") is None:
        return ""
    ratio = inversion["seconds_per_1000"] / genq["seconds_per_1000"]
    threads = f" on {part['threads']} CPU thread(s)" if "threads" in part else ""
    text = (
        f"Here: filtered GenQ images cost {genq['seconds_per_1000']:.0f} s per 1,000 against "
        f"{inversion['seconds_per_1000']:.0f} s for BN inversion{threads}, {ratio:.1f}x "
        f"{'faster' if ratio >= 1 else 'slower'}"
    )
    if genq.get("bn_distance") is not None and inversion.get("bn_distance") is not None:
        text += f"; BN distance {genq['bn_distance']:.2f} against {inversion['bn_distance']:.2f}"
    return text + "."


def table1() -> str:
    """Table 1: the cost of making 1,000 calibration images and their BN distance, GenQ vs BN inversion vs real."""
    m = load_metrics("06")
    part = (m or {}).get("generation_cost")
    if not part or not part.get("rows"):
        return not_measured("06")
    names = {
        "genq_unfiltered": "GenQ, unfiltered",
        "genq": "GenQ (text-to-image + filter)",
        "bn_inversion": "BN inversion",
        "real": "real",
    }
    body = [
        [
            names.get(r["source"], r["source"]),
            MISSING if r.get("seconds_per_1000") is None else f"{r['seconds_per_1000']:.1f}",
            MISSING if r.get("bn_distance") is None else f"{r['bn_distance']:.2f}",
            f"{r['n']:,}" if r.get("n") is not None else MISSING,
        ]
        for r in part["rows"]
    ]
    return join(
        setting(m),
        markdown_table(["data", "seconds per 1,000 images", "BN distance", "images"], body),
        table1_here(part),
        footer(
            "for 1,000 ImageNet images, text-to-image generation takes 24 min against 152 min for GENIE's image "
            "inversion (a GAN is faster, 10 min, but its images serve one model only), and the BN distance of GenQ images "
            "is close to that of inversion images, which minimize it directly (and lower than theirs on MobileNetV2).",
            "06",
        ),
    )
