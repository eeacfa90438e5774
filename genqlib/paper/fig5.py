"""Fig. 5: PTQ top-1 against the number of GenQ calibration images (notebook 06), beside PTQ on real images."""

from __future__ import annotations

from collections.abc import Mapping

from genqlib.paper.ablation_table import ablation_setting, claim_of, points, rows_of, where
from genqlib.paper.common import (
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
from genqlib.paper.plots import Curves, log_ticks

TITLE = "Fig. 5: accuracy against the number of synthetic images"
PAPER = (
    "with ResNet-50 at W2A4 (Genie-M), accuracy keeps rising as synthetic images are added, and from about 4k "
    "GenQ images it passes PTQ on 1k real images."
)
KEY = "n_synthetic"
HEADLINE = "most GenQ images > fewest"
RATIO = 4  # the paper: 4k GenQ images against 1k real ones


def sizes(groups: dict, source: str) -> list[int]:
    """The numbers of images ``source`` was measured at, ascending."""
    return sorted(n for s, n in groups if s == source)


def real_partner(most: int, real: list[int]) -> int | None:
    """The real-data size the most GenQ images are compared with: ``most / 4`` if measured, else the largest
    measured real size below it (None when there is none)."""
    below = [n for n in real if n <= most / RATIO]
    return max(below, default=None)


def claims(runs: Metrics) -> list[Claim]:
    """The most GenQ images against the fewest; the most GenQ images against about four times fewer real."""
    m = runs.get("06")
    groups = points(m, KEY, lambda r: (r["source"], r["n"]))
    genq = sizes(groups, "genq")
    if not genq:
        return []
    at, most = where(m[KEY]), genq[-1]
    found = [claim_of(HEADLINE, at, groups, ("genq", most), ("genq", genq[0]))] if len(genq) > 1 else []
    real = real_partner(most, sizes(groups, "real"))
    if real is not None:
        found.append(claim_of(f"{most:,} GenQ > {real:,} real", at, groups, ("genq", most), ("real", real)))
    return found


def render(runs: Metrics) -> str:
    """Fig. 5 as markdown: rows = number of images, GenQ and real top-1 (mean ± std over seeds), the claims."""
    m = runs.get("06")
    if not rows_of(m, KEY):
        return not_measured(TITLE, "06")
    groups = points(m, KEY, lambda r: (r["source"], r["n"]))
    body = [
        [
            f"{n:,}",
            seeded(groups.get(("genq", n))),
            seeded(groups.get(("real", n))),
            signed(diff(mean(groups.get(("genq", n))), mean(groups.get(("real", n))))),
        ]
        for n in sorted({n for _, n in groups})
    ]
    header = ["calibration images", "GenQ top-1 (%)", "real top-1 (%)", "Δ GenQ − real"]
    table = markdown_table(header, body)
    return section(join(ablation_setting(m, m[KEY]), table), claims_table(claims(runs)), PAPER, "06")


# ---------------------------------------------------------------- the plot (notebook 06)


ANALYSIS = "n_synthetic"  # notebook 06's key


def plot(c: Curves, rows: list[dict], fp: Mapping, teacher: str) -> tuple[float | None, str]:
    """Top-1 against calibration images (log 2 axis), GenQ's filtered images beside real ones."""
    groups = group_top1(rows, lambda r: (r["source"], r["n"]))
    for source, label in (("genq", "GenQ (filtered)"), ("real", "real data")):
        c.series(source, sorted((n, v) for (s, n), v in groups.items() if s == source), label)
    c.ax.set_xscale("log", base=2)
    log_ticks(c.ax, c.xs())
    c.ax.set_xlabel("calibration images")
    return fp.get(teacher), teacher
