"""Fig. 6: PTQ top-1 against filter strength (notebook 06), per filter stage, and the images each costs."""

from __future__ import annotations

from genqlib.tables.ablation import ablation_setting, noise, runs_of, seed_table, where
from genqlib.tables.common import (
    MISSING,
    Claim,
    Metrics,
    claims_table,
    diff,
    join,
    markdown_table,
    not_measured,
    pct,
    section,
)

TITLE = "Fig. 6: accuracy against filter strength"
PAPER = (
    "for ResNet-18 at W2A4 (Genie-M), dropping more images by energy score helps slightly, at the price of "
    "generating more; for BN sensitivity, dropping about half works best (quantization needs diverse images)."
)
KEY = "filter_strength"
STAGES = {"energy": "energy score", "bn": "BN sensitivity"}
HEADLINE = "energy: strongest drop > weakest"


def by_drop(part: dict, stage: str) -> dict[float, float]:
    """Top-1 per drop ratio of one filter stage."""
    return {r["drop"]: r["top1"] for r in part["rows"] if r["stage"] == stage}


def stage_claims(part: dict, where_: str, spread) -> list[Claim]:
    """Energy: the strongest drop beats the weakest. BN sensitivity: the drop nearest 0.5 beats both ends."""
    found = []
    energy = by_drop(part, "energy")
    if energy:
        strong, weak = max(energy), min(energy)
        found.append(Claim(HEADLINE, where_, diff(energy[strong], energy[weak]), spread))
    bn = by_drop(part, "bn")
    if bn:
        half = min(bn, key=lambda d: abs(d - 0.5))
        for end in sorted({min(bn), max(bn)} - {half}):
            claim = f"BN sensitivity: drop {half:g} > drop {end:g}"
            found.append(Claim(claim, where_, diff(bn[half], bn[end]), spread))
    return found


def claims(runs: Metrics) -> list[Claim]:
    """The paper's reading of Fig. 6, measured for each ablation teacher."""
    return [
        c for run in runs_of(runs.get("06"), KEY) for c in stage_claims(run[KEY], where(run[KEY]), noise(run))
    ]


def block(m: dict, run: dict) -> str:
    """One teacher's grid: rows = stage (top-1, images generated), columns = drop ratio; then the seed spread."""
    part = run[KEY]
    drops = sorted({r["drop"] for r in part["rows"]})
    cell = {(r["stage"], r["drop"]): r for r in part["rows"]}
    body = []
    for stage, name in STAGES.items():
        found = [cell.get((stage, d)) for d in drops]
        if any(found):
            body.append([f"{name}: top-1 (%)", *(pct(r["top1"]) if r else MISSING for r in found)])
            body.append(
                [f"{name}: images generated", *(f"{r['n_generated']:,}" if r else MISSING for r in found)]
            )
    kept = f"{part['n']:,} images kept per run" if "n" in part else ""
    table = markdown_table(["drop ratio", *(f"{d:g}" for d in drops)], body)
    return join(ablation_setting(m, part) + (f" · {kept}" if kept else ""), table, seed_table(run))


def render(runs: Metrics, replicate: Metrics) -> str:
    """Fig. 6 as markdown: one grid per ablation teacher, then the claims with verdicts."""
    m = runs.get("06")
    found = runs_of(m, KEY)
    if not found:
        return not_measured(TITLE, "06")
    return section(
        join(*(block(m, run) for run in found)), claims_table(claims(runs), claims(replicate)), PAPER, "06"
    )
