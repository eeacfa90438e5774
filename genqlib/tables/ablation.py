"""Notebook 06's shared shape: one run per ablation teacher (``by_teacher``), each with its own seed spread."""

from __future__ import annotations

from genqlib.tables.common import METHODS, group_top1, markdown_table, setting
from genqlib.tables.verdict import Spread, spread_of, widest


def runs_of(m: dict | None, key: str) -> list[dict]:
    """The runs of analysis ``key``: the main ablation teacher's, then each of ``by_teacher``'s, as dicts
    holding that analysis and the teacher's own ``seed_spread``."""
    if not m:
        return []
    runs = [m, *(m.get("by_teacher") or {}).values()]
    return [r for r in runs if (r.get(key) or {}).get("rows")]


def seed_rows(run: dict | None) -> list[dict]:
    """The rows of a run's ``seed_spread``: the same images reconstructed with several seeds."""
    return ((run or {}).get("seed_spread") or {}).get("rows") or []


def noise(run: dict | None) -> Spread | None:
    """The run's seed spread: the widest over the sources it measured (genq, real)."""
    groups = group_top1(seed_rows(run), lambda r: r["source"])
    return widest(*(spread_of(v) for v in groups.values()))


def teacher_noise(m: dict | None, teacher: str) -> Spread | None:
    """The seed spread measured for ``teacher`` (the main ablation teacher or one of ``by_teacher``)."""
    runs = [m or {}, *((m or {}).get("by_teacher") or {}).values()]
    found = [r for r in runs if (r.get("seed_spread") or {}).get("teacher") == teacher]
    return noise(found[0]) if found else None


def seed_table(run: dict) -> str:
    """Top-1 over reconstruction seeds per source: the noise floor the verdicts of this teacher use."""
    groups = group_top1(seed_rows(run), lambda r: r["source"])
    if not groups:
        return ""
    at = where(run["seed_spread"])
    spreads = {source: spread_of(v) for source, v in groups.items()}
    body = [
        [at, source, str(s.n_seeds), f"{s.mean:.2f} ± {s.std:.2f}", f"{s.range:.2f}"]
        for source, s in spreads.items()
        if s is not None
    ]
    return markdown_table(["seed spread", "source", "seeds", "top-1 (%) mean ± std", "range"], body)


def where(part: dict) -> str:
    """The teacher and bit widths of one analysis, e.g. ``resnet W2A4``."""
    return f"{part.get('teacher', '?')} W{part.get('w_bits', '?')}A{part.get('a_bits', '?')}"


def ablation_setting(m: dict, part: dict) -> str:
    """Setting line of one ablation: the run's context plus the ablated teacher, bits and method."""
    return setting(m, f"`{where(part)}`", METHODS.get(m.get("method"), m.get("method") or ""))
