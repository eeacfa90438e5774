"""Fig. 6: PTQ top-1 against filter strength (notebook 06): (energy, BN-sensitivity) drop pairs, each stage swept
with the other at GenQ's default, and the images each pair costs to generate."""

from __future__ import annotations

from collections.abc import Mapping

from genqlib.paper.ablation_table import ablation_setting, claim_of, first, points, rows_of, where
from genqlib.paper.common import (
    MISSING,
    Claim,
    Metrics,
    claims_table,
    diff,
    group_top1,
    join,
    markdown_table,
    mean,
    not_measured,
    section,
    seeded,
    signed,
)
from genqlib.paper.plots import Curves
from genqlib.paper.profiles import FILTER_DROPS

TITLE = "Fig. 6: accuracy against filter strength"
PAPER = (
    "for ResNet-18 at W2A4 (Genie-M), dropping more images by energy score helps slightly, at the price of "
    "generating more; for BN sensitivity, dropping about half works best (quantization needs diverse images)."
)
KEY = "filter_strength"
HEADLINE = "energy: strongest drop > weakest"
Pair = tuple[float, float]
DEFAULT: Pair = (round(FILTER_DROPS[0], 6), round(FILTER_DROPS[1], 6))  # GenQ's (energy, BN) drops
NO_FILTER: Pair = (0.0, 0.0)


def pair(row: dict) -> Pair:
    """A row's (energy, BN-sensitivity) drop pair, rounded so that 0.3 from JSON equals FILTER_DROPS' 0.3."""
    energy, bn = row["drops"]
    return round(energy, 6), round(bn, 6)


def role(p: Pair) -> str:
    """Where a drop pair sits in the grid: no filter, GenQ's default, one stage's sweep, or both changed."""
    if p == NO_FILTER:
        return "no filter"
    if p == DEFAULT:
        return "GenQ default"
    if p[1] == DEFAULT[1]:
        return "energy sweep"
    if p[0] == DEFAULT[0]:
        return "BN sweep"
    return "both stronger" if p[0] > DEFAULT[0] and p[1] > DEFAULT[1] else "both changed"


def claims(runs: Metrics) -> list[Claim]:
    """Energy: the strongest drop beats the weakest (BN at the default). BN sensitivity: the drop nearest 0.5
    beats each end (energy at the default). The two-stage default beats no filter; both stages stronger beat
    the default. A claim whose cells were not run is left out."""
    m = runs.get("06")
    groups = points(m, KEY, pair)
    if not groups:
        return []
    at = where(m[KEY])
    found = []
    energy = sorted(p[0] for p in groups if p[1] == DEFAULT[1])
    if len(energy) > 1:
        strong, weak = (energy[-1], DEFAULT[1]), (energy[0], DEFAULT[1])
        found.append(claim_of(HEADLINE, at, groups, strong, weak))
    bn = sorted(p[1] for p in groups if p[0] == DEFAULT[0])
    if len(bn) > 1:
        half = min(bn, key=lambda d: abs(d - 0.5))
        for end in sorted({bn[0], bn[-1]} - {half}):
            claim = f"BN sensitivity: drop {half:g} > drop {end:g}"
            found.append(claim_of(claim, at, groups, (DEFAULT[0], half), (DEFAULT[0], end)))
    if DEFAULT in groups and NO_FILTER in groups:
        found.append(claim_of("two-stage default > no filter", at, groups, DEFAULT, NO_FILTER))
    for p in sorted(p for p in groups if role(p) == "both stronger" and p[0] == p[1]):
        found.append(claim_of(f"both stronger ({p[0]:g}, {p[1]:g}) > default", at, groups, p, DEFAULT))
    return found


def render(runs: Metrics) -> str:
    """Fig. 6 as markdown: one row per drop pair (images generated, top-1 mean ± std, Δ vs the default)."""
    m = runs.get("06")
    rows = rows_of(m, KEY)
    if not rows:
        return not_measured(TITLE, "06")
    groups = points(m, KEY, pair)
    default = mean(groups.get(DEFAULT))
    body = []
    for p in dict.fromkeys(pair(r) for r in rows):  # the grid's own order
        generated = first(rows, lambda r, p=p: pair(r) == p, "n_generated")
        body.append(
            [
                role(p),
                f"{p[0]:g}",
                f"{p[1]:g}",
                MISSING if generated is None else f"{generated:,}",
                seeded(groups.get(p)),
                signed(diff(mean(groups.get(p)), default)) if p != DEFAULT else "",
            ]
        )
    delta = f"Δ vs default ({DEFAULT[0]:g}, {DEFAULT[1]:g})"
    header = ["filter", "energy drop", "BN drop", "images generated", "top-1 (%)", delta]
    part = m[KEY]
    table = markdown_table(header, body)
    return section(
        join(ablation_setting(m, part, part.get("n") or m.get("n_calib")), table),
        claims_table(claims(runs)),
        PAPER,
        "06",
    )


# ---------------------------------------------------------------- the plot (notebook 06)


ANALYSIS = "filter_strength"  # notebook 06's key
_DEFAULT = (round(FILTER_DROPS[0], 6), round(FILTER_DROPS[1], 6))  # GenQ's (energy, BN-sensitivity) drops


def _drops(row: Mapping) -> tuple[float, float]:
    energy, bn = row["drops"]
    return round(energy, 6), round(bn, 6)


def plot(c: Curves, rows: list[dict], fp: Mapping, teacher: str) -> tuple[float | None, str]:
    """Top-1 against each stage's drop ratio with the other at GenQ's default, and the other pairs as marks."""
    groups = group_top1(rows, _drops)
    energy, bn = _DEFAULT
    c.series(
        "energy",
        sorted((e, v) for (e, b), v in groups.items() if b == bn),
        f"energy swept, BN sensitivity at {bn:g}",
    )
    c.series(
        "bn",
        sorted((b, v) for (e, b), v in groups.items() if e == energy),
        f"BN sensitivity swept, energy at {energy:g}",
    )
    others = [(p, v) for p, v in groups.items() if p[0] != energy and p[1] != bn]
    for i, ((e, b), values) in enumerate(sorted(others)):
        name = "no filter" if e == b == 0 else f"both {e:g}" if e == b else f"energy {e:g}, BN {b:g}"
        marker = "ks" if e == b == 0 else f"C{i + 2}D"
        c.series(name, [(e, values)], f"{name} ({e:g}, {b:g})", fmt=marker, markersize=7)
    c.ax.set_xlabel("fraction of each class the swept stage drops")
    return fp.get(teacher), teacher
