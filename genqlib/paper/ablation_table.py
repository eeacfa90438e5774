"""Notebook 06's shared shape: each analysis holds one row per (point, seed); a cell is the mean ± std of its
point's seeds, and a claim's noise is the wider seed spread of the two cells it compares."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from genqlib.paper.common import METHODS, Claim, diff, group_top1, mean, setting
from genqlib.paper.verdict import spread_of, widest

Groups = dict[Hashable, list[float]]  # a point -> its top-1 per seed


def rows_of(m: dict | None, key: str) -> list[dict]:
    """The rows of analysis ``key``: empty when the analysis was skipped or not run, or when its metrics
    predate per-seed rows (rows without a ``seed``), so that such a file reads "not measured"."""
    return [r for r in ((m or {}).get(key) or {}).get("rows") or [] if "seed" in r]


def points(m: dict | None, key: str, point: Callable[[dict], Hashable]) -> Groups:
    """Top-1 of analysis ``key`` grouped by ``point``: one value per seed the point was run with."""
    return group_top1(rows_of(m, key), point)


def claim_of(claim: str, at: str, groups: Groups, a: Hashable, b: Hashable, margin: float = 0.0) -> Claim:
    """The claim "A > B" between two points' mean top-1, its noise the wider seed spread of the two."""
    va, vb = groups.get(a), groups.get(b)
    noise = widest(spread_of(va or []), spread_of(vb or []))
    return Claim(claim, at, diff(mean(va), mean(vb)), noise, margin)


def first(rows: list[dict], match: Callable[[dict], bool], field: str):
    """``field`` of the first row matching ``match`` (the same for every seed of a point), or None."""
    return next((r.get(field) for r in rows if match(r)), None)


def n_seeds(m: dict | None, rows: list[dict]) -> int:
    """How many seeds each point was run with: the run's ``seeds``, else the distinct seeds in ``rows``."""
    seeds = (m or {}).get("seeds")
    return len(seeds) if seeds else len({r.get("seed") for r in rows})


def seeds_note(count: int) -> str:
    """``3 seeds`` (or ``1 seed``)."""
    return f"{count} seed{'s' if count != 1 else ''}"


def where(part: dict) -> str:
    """The teacher and bit widths of one analysis, e.g. ``resnet W2A4``."""
    return f"{part.get('teacher', '?')} W{part.get('w_bits', '?')}A{part.get('a_bits', '?')}"


def ablation_setting(m: dict, part: dict, n_calib: int | None = None) -> str:
    """Setting line of one ablation: the run's context, the ablated teacher and bits (when the analysis has
    one), the method, ``n_calib`` calibration images per point (when it does not vary), the reconstruction
    iterations per block and the seeds every point ran with."""
    return setting(
        m,
        f"`{where(part)}`" if "teacher" in part else "",
        METHODS.get(m.get("method"), m.get("method") or ""),
        f"{n_calib:,} calibration images per point" if n_calib else "",
        f"{m['iters']:,} reconstruction iterations per block" if m.get("iters") else "",
        seeds_note(n_seeds(m, part.get("rows") or [])),
    )
