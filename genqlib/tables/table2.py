"""Table 2: data-free PTQ of the CNN teachers (notebook 04), GenQ against real data and other sources."""

from __future__ import annotations

from genqlib.tables.common import (
    METHODS,
    Claim,
    Metrics,
    bits,
    cell_claims,
    claims_table,
    group_top1,
    join,
    markdown_table,
    not_measured,
    pct,
    section,
    seeded,
    setting,
)

TITLE = "Table 2: data-free PTQ of CNNs"
PAPER = (
    "with BRECQ or Genie-M, GenQ images land within about 1 point of 1,024 real images (sometimes above) and "
    "beat the other data-free sources; the margin is widest on light models at W2A4."
)
SOURCES = {
    "nearest": "nearest rounding, real data",
    "real": "real data",
    "noise": "Gaussian noise",
    "bn_inversion": "BN inversion",
    "genq_unfiltered": "GenQ, unfiltered",
    "genq": "**GenQ**",
}
CLAIMS = (
    ("GenQ ≥ real data − 1", "genq", "real", 1.0),
    ("GenQ > Gaussian noise", "genq", "noise", 0.0),
    ("GenQ > BN inversion", "genq", "bn_inversion", 0.0),
    ("GenQ > GenQ unfiltered", "genq", "genq_unfiltered", 0.0),
)
HEADLINE = "GenQ ≥ real data − 1"


def source(row: dict) -> str:
    """A row's pivot key: ``nearest`` for the no-reconstruction reference, else its calibration source."""
    return "nearest" if row["method"] == "nearest" else row["source"]


def cnn_rows(m: dict | None) -> list[dict]:
    """Notebook 04's rows of its BatchNorm teachers (``cnn_teachers``, else those calibrated by BN inversion;
    the ViT runs W4A4 only, Table 4)."""
    rows = (m or {}).get("rows") or []
    cnns = set((m or {}).get("cnn_teachers") or {r["teacher"] for r in rows if r["source"] == "bn_inversion"})
    return [r for r in rows if r["teacher"] in cnns]


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The (teacher, bits) columns, in the order the rows ran."""
    return list(dict.fromkeys((r["teacher"], bits(r)) for r in rows))


def claims(runs: Metrics) -> list[Claim]:
    """GenQ against each other calibration source, per teacher and bit width."""
    rows = cnn_rows(runs.get("04"))
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), source(r)))
    return cell_claims(groups, columns(rows), CLAIMS)


def pivot(m: dict, rows: list[dict]) -> str:
    """Rows = calibration source, columns = teacher × bits; cells top-1 (mean ± std over seeds where run)."""
    cols = columns(rows)
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), source(r)))
    body = [["full precision", *(pct(m.get("fp", {}).get(t)) for t, _ in cols)]]
    for key, label in SOURCES.items():
        cells = [groups.get((t, b, key)) for t, b in cols]
        if any(cells):
            name = label if key == "nearest" else f"{METHODS.get(m.get('method'), m.get('method'))}, {label}"
            body.append([name, *(seeded(c) for c in cells)])
    return markdown_table(["calibration", *(f"{t} {b}" for t, b in cols)], body)


def render(runs: Metrics) -> str:
    """Table 2 as markdown: the PTQ pivot and GenQ's claims with verdicts."""
    m = runs.get("04")
    rows = cnn_rows(m)
    if not rows:
        return not_measured(TITLE, "04")
    size = [
        f"{m['n_calib']:,} calibration images" if "n_calib" in m else "",
        f"{m['iters']:,} iterations per block" if "iters" in m else "",
        f"mean ± std over {len(m['seeds'])} reconstruction seeds" if len(m.get("seeds") or []) > 1 else "",
    ]
    return section(
        join(setting(m, METHODS.get(m.get("method"), ""), *size), "Top-1 (%):", pivot(m, rows)),
        claims_table(claims(runs)),
        PAPER,
        "04",
    )
