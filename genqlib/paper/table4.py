"""Table 4: data-free PTQ of the ViT teacher (notebook 04), GenQ images against real data."""

from __future__ import annotations

from genqlib.paper.common import (
    METHODS,
    Claim,
    Metrics,
    bits,
    cell_claims,
    claims_table,
    diff,
    group_top1,
    join,
    markdown_table,
    mean,
    not_measured,
    pct,
    section,
    seeded,
    setting,
    signed,
)
from genqlib.paper.table2 import SOURCES, source

TITLE = "Table 4: data-free PTQ of a ViT"
PAPER = (
    "at W4A4 on ViT-B, DeiT-B and Swin-B, GenQ images beat the earlier data-free ViT method (PSAQ-ViT) and come "
    "within about 3 points of real-data calibration, above it in some cases."
)
CLAIMS = (("GenQ ≥ real data − 3", "genq", "real", 3.0),)
HEADLINE = "GenQ ≥ real data − 3"
TEACHER = "vit"


def vit_rows(m: dict | None) -> list[dict]:
    """Notebook 04's rows of the ViT teacher."""
    return [r for r in (m or {}).get("rows") or [] if r["teacher"] == TEACHER]


def claims(runs: Metrics) -> list[Claim]:
    """GenQ against real-data calibration at each bit width of the ViT."""
    rows = vit_rows(runs.get("04"))
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), source(r)))
    return cell_claims(groups, list(dict.fromkeys((TEACHER, bits(r)) for r in rows)), CLAIMS)


def results(m: dict, rows: list[dict]) -> str:
    """Rows = (bits, calibration source); top-1 (mean ± std over seeds where run) and its drop from FP."""
    fp = m.get("fp", {}).get(TEACHER)
    groups = group_top1(rows, lambda r: (bits(r), source(r)))
    body = [["full precision", "32/32", pct(fp), ""]]
    for b in dict.fromkeys(bits(r) for r in rows):
        for key, label in SOURCES.items():
            if (b, key) in groups:
                name = (
                    label if key == "nearest" else f"{METHODS.get(m.get('method'), m.get('method'))}, {label}"
                )
                body.append([name, b, seeded(groups[(b, key)]), signed(diff(mean(groups[(b, key)]), fp))])
    return markdown_table([f"`{TEACHER}` calibration", "bits", "top-1 (%)", "Δ vs FP"], body)


def render(runs: Metrics) -> str:
    """Table 4 as markdown: the ViT's PTQ results and GenQ's claim with its verdict."""
    m = runs.get("04")
    rows = vit_rows(m)
    if not rows:
        return not_measured(TITLE, "04")
    return section(
        join(setting(m, METHODS.get(m.get("method"), "")), results(m, rows)),
        claims_table(claims(runs)),
        PAPER,
        "04",
    )
