"""Table 5: cross-model transfer (notebook 06), GenQ images filtered by one teacher and used to quantize another."""

from __future__ import annotations

from genqlib.tables.ablation import seed_table, teacher_noise
from genqlib.tables.common import (
    METHODS,
    Claim,
    Metrics,
    bits,
    claims_table,
    diff,
    join,
    markdown_table,
    not_measured,
    pct,
    section,
    setting,
    with_delta,
)

TITLE = "Table 5: filtering with one model, quantizing another"
PAPER = (
    "at W2A4, GenQ images filtered by a different model (ResNet-18, MobileNetV2, even ViT-B/16) lose only about "
    "0.2-0.5 points against filtering by the quantized model itself; inversion data loses up to 33 points."
)
MARGIN = 0.5
HEADLINE = f"filtered by another ≥ by itself − {MARGIN:g}"


def matrix(m: dict | None) -> dict[tuple[str, str], float]:
    """Top-1 per (filtering teacher, quantized teacher)."""
    rows = ((m or {}).get("cross_model") or {}).get("rows") or []
    return {(r["filter_teacher"], r["quant_teacher"]): r["top1"] for r in rows}


def claims(runs: Metrics) -> list[Claim]:
    """Each off-diagonal cell against the diagonal of its quantized teacher, with that teacher's seed spread."""
    m = runs.get("06")
    cell = matrix(m)
    return [
        Claim(HEADLINE, f"{f} → {q}", diff(top1, cell.get((q, q))), teacher_noise(m, q), MARGIN)
        for (f, q), top1 in cell.items()
        if f != q
    ]


def render(runs: Metrics, replicate: Metrics) -> str:
    """Table 5 as markdown: the transfer matrix (Δ from the diagonal in brackets), then the claims."""
    m = runs.get("06")
    cell = matrix(m)
    if not cell:
        return not_measured(TITLE, "06")
    rows = m["cross_model"]["rows"]
    filters = list(dict.fromkeys(f for f, _ in cell))
    quants = list(dict.fromkeys(q for _, q in cell))
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
    spreads = [seed_table(run) for run in (m, *(m.get("by_teacher") or {}).values())]
    return section(
        join(
            setting(m, METHODS.get(m.get("method"), "")),
            "Top-1 (%), Δ from the diagonal in brackets:",
            table,
            *spreads,
        ),
        claims_table(claims(runs), claims(replicate)),
        PAPER,
        "06",
    )
