"""Table 5: cross-model transfer (notebook 06), GenQ images filtered by one teacher and used to quantize another."""

from __future__ import annotations

from collections.abc import Mapping

from genqlib.paper.ablation_table import ablation_setting, claim_of, n_seeds, points, rows_of, seeds_note
from genqlib.paper.common import (
    Claim,
    Metrics,
    bits,
    claims_table,
    group_top1,
    join,
    markdown_table,
    mean,
    not_measured,
    pct,
    section,
    with_delta,
)
from genqlib.paper.plots import Curves, mean_std, width_label

TITLE = "Table 5: filtering with one model, quantizing another"
PAPER = (
    "at W2A4, GenQ images filtered by a different model (ResNet-18, MobileNetV2, even ViT-B/16) lose only about "
    "0.2-0.5 points against filtering by the quantized model itself; inversion data loses up to 33 points."
)
KEY = "cross_model"
MARGIN = 0.5
HEADLINE = f"filtered by another ≥ by itself − {MARGIN:g}"


def claims(runs: Metrics) -> list[Claim]:
    """Each off-diagonal cell against the diagonal of its quantized teacher; the noise is the wider seed
    spread of the two cells."""
    groups = points(runs.get("06"), KEY, lambda r: (r["filter_teacher"], r["quant_teacher"]))
    return [claim_of(HEADLINE, f"{f} → {q}", groups, (f, q), (q, q), MARGIN) for f, q in groups if f != q]


def render(runs: Metrics) -> str:
    """Table 5 as markdown: the transfer matrix of mean top-1 (Δ from the diagonal in brackets), the claims."""
    m = runs.get("06")
    rows = rows_of(m, KEY)
    if not rows:
        return not_measured(TITLE, "06")
    cell = {
        k: mean(v) for k, v in points(m, KEY, lambda r: (r["filter_teacher"], r["quant_teacher"])).items()
    }
    filters = list(dict.fromkeys(r["filter_teacher"] for r in rows))
    quants = list(dict.fromkeys(r["quant_teacher"] for r in rows))
    body = [
        [
            f"`{f}`",
            *(
                pct(cell.get((f, q))) if f == q else with_delta(cell.get((f, q)), cell.get((q, q)))
                for q in quants
            ),
        ]
        for f in filters
    ]
    bits_of = {r["quant_teacher"]: bits(r) for r in rows}
    table = markdown_table(["filtered by ↓ / quantized →", *(f"`{q}` {bits_of[q]}" for q in quants)], body)
    part = m[KEY]
    count = n_seeds(m, rows)
    over = f"mean over {seeds_note(count)}" if count > 1 else "one seed"
    note = (
        f"Top-1 (%), {over}, Δ from the diagonal in brackets; a claim's seed spread is its two cells' wider:"
    )
    return section(
        join(ablation_setting(m, part, part.get("n") or m.get("n_calib")), note, table),
        claims_table(claims(runs)),
        PAPER,
        "06",
    )


# ---------------------------------------------------------------- the plot (notebook 06)


ANALYSIS = "cross_model"  # notebook 06's key


def plot(c: Curves, rows: list[dict], fp: Mapping, teacher: str) -> tuple[float | None, str]:
    """Bars per quantized teacher, one per filtering teacher, each quantized teacher's FP top-1 dashed."""
    groups = group_top1(rows, lambda r: (r["filter_teacher"], r["quant_teacher"]))
    filters = list(dict.fromkeys(r["filter_teacher"] for r in rows))
    quants = list(dict.fromkeys(r["quant_teacher"] for r in rows))
    bits_of = {r["quant_teacher"]: width_label(r["w_bits"], r["a_bits"]) for r in rows}
    width = 0.8 / max(1, len(filters))
    for i, f in enumerate(filters):
        at = [(j, q) for j, q in enumerate(quants) if (f, q) in groups]
        drawn = [(q, *mean_std(groups[f, q])) for _, q in at]
        if not drawn:
            continue
        xs = [j + (i - (len(filters) - 1) / 2) * width for j, _ in at]
        c.ax.bar(
            xs,
            [m for _, m, _ in drawn],
            width,
            yerr=[s for _, _, s in drawn],
            capsize=3,
            color=f"C{i}",
            label=f"filtered by {f}",
        )
        c.curve[f] = drawn
        c.marks.extend((x, f, m) for x, (_, m, _) in zip(xs, drawn, strict=True))
    for j, q in enumerate(quants):
        if q in fp:
            c.ax.hlines(fp[q], j - 0.45, j + 0.45, colors="k", linestyles="--", linewidth=1)
    c.ax.set_xticks(range(len(quants)), [f"{q} {bits_of[q]}" for q in quants])
    c.ax.set_xlabel("quantized teacher (dashed: its FP top-1)")
    return max((fp[q] for q in quants if q in fp), default=None), "every teacher"
