"""Fig. 5: PTQ top-1 against the number of GenQ calibration images (notebook 06), beside PTQ on real images."""

from __future__ import annotations

from genqlib.tables.ablation import ablation_setting, noise, runs_of, seed_table, where
from genqlib.tables.common import (
    Claim,
    Metrics,
    claims_table,
    diff,
    join,
    markdown_table,
    not_measured,
    pct,
    section,
    signed,
)

TITLE = "Fig. 5: accuracy against the number of synthetic images"
PAPER = (
    "with ResNet-50 at W2A4 (Genie-M), accuracy keeps rising as synthetic images are added, and from about 4k "
    "GenQ images it passes PTQ on 1k real images."
)
KEY = "n_synthetic"
HEADLINE = "most GenQ images > fewest"


def claims(runs: Metrics) -> list[Claim]:
    """Per teacher: the most images against the fewest, and the most GenQ images against the real line."""
    found = []
    for run in runs_of(runs.get("06"), KEY):
        part = run[KEY]
        rows = sorted(part["rows"], key=lambda r: r["n"])
        first, last, real = rows[0], rows[-1], part.get("real") or {}
        found.append(Claim(HEADLINE, where(part), diff(last["top1"], first["top1"]), noise(run)))
        if real:
            claim = f"{last['n']:,} GenQ > {real.get('n', 0):,} real"
            found.append(Claim(claim, where(part), diff(last["top1"], real.get("top1")), noise(run)))
    return found


def block(m: dict, run: dict) -> str:
    """One teacher's curve: top-1 per number of GenQ images, the real line, and the seed spread."""
    part = run[KEY]
    real = part.get("real") or {}
    rows = sorted(part["rows"], key=lambda r: r["n"])
    body = [[f"{r['n']:,} GenQ", pct(r["top1"]), signed(diff(r["top1"], real.get("top1")))] for r in rows]
    if real:
        body.append([f"{real['n']:,} real", pct(real.get("top1")), ""])
    table = markdown_table(["calibration images", "top-1 (%)", "Δ vs real"], body)
    return join(ablation_setting(m, part), table, seed_table(run))


def render(runs: Metrics, replicate: Metrics) -> str:
    """Fig. 5 as markdown: one curve table per ablation teacher, then the claims with verdicts."""
    m = runs.get("06")
    found = runs_of(m, KEY)
    if not found:
        return not_measured(TITLE, "06")
    return section(
        join(*(block(m, run) for run in found)), claims_table(claims(runs), claims(replicate)), PAPER, "06"
    )
