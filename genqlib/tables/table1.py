"""Table 1: the cost of making calibration images and their BN distance (notebook 06)."""

from __future__ import annotations

from genqlib.tables.common import (
    MISSING,
    Claim,
    Metrics,
    claims_table,
    diff,
    join,
    markdown_table,
    not_measured,
    section,
    setting,
)

TITLE = "Table 1: cost and quality of the calibration images"
PAPER = (
    "for 1,000 ImageNet images, text-to-image generation takes 24 min against 152 min for GENIE's image "
    "inversion, and GenQ images' BN distance is close to that of inversion images, which minimize it directly."
)
NAMES = {
    "genq_unfiltered": "GenQ, unfiltered",
    "genq": "GenQ (text-to-image + filter)",
    "bn_inversion": "BN inversion",
    "real": "real",
}
HEADLINE = "GenQ faster than BN inversion (s per 1,000)"


def sources(m: dict | None) -> dict[str, dict]:
    """The ``generation_cost`` rows by source."""
    return {r["source"]: r for r in (((m or {}).get("generation_cost") or {}).get("rows") or [])}


def claims(runs: Metrics) -> list[Claim]:
    """GenQ's time per 1,000 images against BN inversion's; the filter's drop in BN distance. Timed once."""
    rows = sources(runs.get("06"))
    teacher = ((runs.get("06") or {}).get("generation_cost") or {}).get("teacher", "teacher")
    genq, inversion, unfiltered = (rows.get(s) or {} for s in ("genq", "bn_inversion", "genq_unfiltered"))
    return [
        Claim(HEADLINE, "all images", diff(inversion.get("seconds_per_1000"), genq.get("seconds_per_1000"))),
        Claim(
            "filter lowers BN distance",
            teacher,
            diff(unfiltered.get("bn_distance"), genq.get("bn_distance")),
        ),
    ]


def bn_cell(row: dict) -> str:
    """BN distance ± its std over batches, or a dash."""
    if row.get("bn_distance") is None:
        return MISSING
    std = row.get("bn_distance_std")
    return f"{row['bn_distance']:.2f}" + ("" if std is None else f" ± {std:.2f}")


def render(runs: Metrics, replicate: Metrics) -> str:
    """Table 1 as markdown: seconds per 1,000 images and BN distance per source, then the claims."""
    m = runs.get("06")
    rows = sources(m)
    if not rows:
        return not_measured(TITLE, "06")
    cost = m["generation_cost"]
    body = [
        [
            NAMES.get(s, s),
            MISSING if r.get("seconds_per_1000") is None else f"{r['seconds_per_1000']:.1f}",
            bn_cell(r),
            MISSING if r.get("n") is None else f"{r['n']:,}",
        ]
        for s, r in rows.items()
    ]
    threads = f"{cost['threads']} CPU thread(s)" if "threads" in cost else ""
    teacher = f"BN distance by `{cost['teacher']}` (± std over batches)" if "teacher" in cost else ""
    return section(
        join(
            setting(m, threads, teacher),
            markdown_table(["data", "seconds per 1,000 images", "BN distance", "images"], body),
        ),
        claims_table(claims(runs), claims(replicate)),
        PAPER,
        "06",
    )
