"""Shared pieces of the results tables: reading the metrics JSON, formatting cells, markdown, claims.

Every table reads ``figures/<notebook>/metrics.json``. A claim's noise floor is its seed spread: rows made at one
thread repeat bit for bit (``python -m genqlib.bench repro``). Missing data is a dash, and a missing notebook is a row
saying "not measured" with the command that measures it, never a silently shorter table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from genqlib.paper.profiles import REPO_ROOT
from genqlib.paper.verdict import Spread, spread_cell, spread_of, verdict, widest

FIGURES = REPO_ROOT / "figures"
NOTEBOOKS = {"03": "03_token_inversion", "04": "04_ptq", "05": "05_qat", "06": "06_ablations"}
MISSING = "–"
METHODS = {"nearest": "nearest rounding", "brecq": "BRECQ", "qdrop": "QDrop", "genie_m": "Genie-M"}

# notebook number -> its metrics.json, and "bench/<name>" -> a benchmark record a table quotes (BENCHES);
# None when not committed
Metrics = dict[str, dict | None]
BENCHES = ("solver",)  # figures/bench/<name>.json records that a table reads (Table 1: the sampler bench)


def notebook_records(name: str, figures: Path = FIGURES) -> Metrics:
    """Each notebook's ``<figures>/<notebook>/<name>`` JSON (``metrics.json``, ``run.json``), None where
    the file is missing."""
    found: Metrics = {}
    for number, folder in NOTEBOOKS.items():
        path = figures / folder / name
        found[number] = json.loads(path.read_text()) if path.exists() else None
    return found


def load(figures: Path = FIGURES) -> Metrics:
    """Every notebook's metrics and the ``BENCHES`` records, None where a file is missing."""
    found = notebook_records("metrics.json", figures)
    for name in BENCHES:
        path = figures / "bench" / f"{name}.json"
        found[f"bench/{name}"] = json.loads(path.read_text()) if path.exists() else None
    return found


def reproduce(*notebooks: str) -> str:
    """The command(s) that regenerate these notebooks' metrics at the committed size."""
    return "; ".join(
        f"`python -m genqlib.paper.run_notebooks --profile mini --only {nb}`" for nb in notebooks
    )


def not_measured(what: str, *notebooks: str) -> str:
    """The table shown in place of one whose metrics do not exist yet."""
    return markdown_table(
        ["result", "status"], [[what, f"{MISSING} not measured: run {reproduce(*notebooks)}"]]
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table from a header and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def join(*blocks: str) -> str:
    """Markdown blocks separated by blank lines (empty blocks dropped)."""
    return "\n\n".join(b for b in blocks if b)


def pct(value: float | None) -> str:
    """A top-1 (percent) with two decimals, or a dash when not measured."""
    return MISSING if value is None else f"{value:.2f}"


def diff(a: float | None, b: float | None) -> float | None:
    """``a - b``, or None when either was not measured."""
    return None if a is None or b is None else a - b


def signed(value: float | None) -> str:
    """A signed difference with two decimals, or a dash."""
    return MISSING if value is None else f"{value:+.2f}"


def with_delta(value: float | None, reference: float | None) -> str:
    """A cell ``top1 (Δ)``: the number and its difference from a reference, compact for pivots."""
    if value is None or reference is None:
        return pct(value)
    return f"{pct(value)} ({signed(value - reference)})"


def bits(row: dict) -> str:
    """``W4A4``-style label of a row's bit widths."""
    return f"W{row['w_bits']}A{row['a_bits']}"


def setting(m: dict, *extra: str) -> str:
    """The run's profile, evaluation size, first/last-layer convention and ``extra``, as one list line."""
    parts = [f"profile `{m['profile']}`"] if "profile" in m else []
    parts += [f"{m['n_eval']:,} test images"] if "n_eval" in m else []
    parts += [str(m["convention"])] if "convention" in m else []
    parts += [e for e in extra if e]
    return "Setting: " + " · ".join(parts) if parts else ""


@dataclass(frozen=True)
class Claim:
    """One of the paper's directional claims, measured: ``claim`` reads "A > B" (or "A ≥ B − margin")."""

    claim: str
    where: str  # the column/setting it was measured in, e.g. "resnet W2A4"
    gap: float | None  # top-1(A) − top-1(B) (or the item's own quantity, oriented the same way)
    spread: Spread | None = None
    margin: float = 0.0


def claims_table(claims: list[Claim]) -> str:
    """Claims as rows: the gap, the seed spread, and the verdict (rule: verdict.py)."""
    body = [
        [c.claim, c.where, signed(c.gap), spread_cell(c.spread), verdict(c.gap, c.spread, c.margin)]
        for c in claims
    ]
    header = ["paper's claim", "where", "gap", "seed spread", "verdict"]
    return markdown_table(header, body)


def group_top1(rows: Iterable[dict], key: Callable[[dict], Hashable]) -> dict[Hashable, list[float]]:
    """Top-1 of the rows grouped by ``key``: one value per seed a setting was run with."""
    groups: dict[Hashable, list[float]] = {}
    for row in rows:
        if row.get("top1") is not None:
            groups.setdefault(key(row), []).append(row["top1"])
    return groups


def mean(values: list[float] | None) -> float | None:
    """The mean over seeds, or None when the setting was not run."""
    return sum(values) / len(values) if values else None


def seeded(values: list[float] | None) -> str:
    """A cell ``mean ± std`` over seeds, or the single value when one seed ran, or a dash."""
    spread = spread_of(values or [])
    return pct(mean(values)) if spread is None else f"{spread.mean:.2f} ± {spread.std:.2f}"


ClaimSpec = tuple[str, str, str, float]  # (claim, cell A, cell B, margin)


def cell_claims(
    groups: dict[Hashable, list[float]], columns: Sequence[tuple[str, ...]], specs: Sequence[ClaimSpec]
) -> list[Claim]:
    """Each claim "A > B" measured in each column from top-1 grouped by ``(*column, cell)``; the noise is the
    widest seed spread of the two cells."""
    found = []
    for claim, a, b, margin in specs:
        for column in columns:
            va, vb = groups.get((*column, a)), groups.get((*column, b))
            noise = widest(spread_of(va or []), spread_of(vb or []))
            found.append(Claim(claim, " ".join(column), diff(mean(va), mean(vb)), noise, margin))
    return found


def section(body: str, claims: str, paper: str, *notebooks: str) -> str:
    """One paper item: its result table(s), its claims with verdicts, the paper's finding, the command."""
    return join(body, claims, f"Paper: {paper}", f"Reproduce: {reproduce(*notebooks)}")
