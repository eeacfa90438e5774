"""Which generator made each notebook's committed numbers (from its ``run.json``), flagged when not the
committed one, so a table left over from an older generator says so."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.paper.common import FIGURES, MISSING, NOTEBOOKS, markdown_table


def table(current: str, figures: Path = FIGURES) -> str:
    """Rows = notebook; the generator its run recorded and whether it is ``current`` (the committed one)."""
    body = []
    for number, folder in NOTEBOOKS.items():
        path = figures / folder / "run.json"
        made_by = json.loads(path.read_text()).get("generator") if path.exists() else None
        if made_by is None:
            body.append([number, MISSING, "not recorded"])
        else:
            body.append([number, f"`{made_by}`", "yes" if made_by == current else "**no: re-run it**"])
    return markdown_table(["notebook", "generator", "the committed one"], body)


def repro(figures: Path = FIGURES) -> str:
    """What ``python -m genqlib.bench repro`` measured: the same PTQ run repeated at each thread count, and
    whether the quantized weights came out bit-identical."""
    path = figures / "bench" / "repro.json"
    if not path.exists():
        return f"{MISSING} not measured: run `python -m genqlib.bench repro`"
    m = json.loads(path.read_text())
    run = m["run"]
    repeats = ", ".join(
        f"{r['threads']} thread(s): top-1 {r['top1']:.2f}, weights `{r['state_digest'][:8]}`"
        for r in m["repeats"]
    )
    same = "bit-identical" if m["same_threads_identical"] else "**not** bit-identical"
    across = "the same" if m["all_identical"] else "different"
    return (
        f"`{m['command']}` ({m['profile']}: {run['teacher']} W{run['w_bits']}A{run['a_bits']} {run['method']}, "
        f"{run['n_calib']} images, {run['iters']} iterations per block; {cpu(m['machine'])}, torch "
        f"{m['machine']['torch']}): {repeats}. Repeats at one thread count are {same}; across thread counts "
        f"the weights are {across}.{committed(m.get('committed_rows'))}"
    )


def cpu(machine: dict) -> str:
    """The CPU a record names: model name, and family/model and kernel capability where recorded."""
    kind = machine.get("cpu_kind")
    return f"{machine['cpu']} ({kind})" if kind else machine["cpu"]


def committed(rows: list[dict] | None) -> str:
    """The committed rows the bench recomputed in one-thread workers, and whether they came out identical."""
    if not rows:
        return ""
    each = "; ".join(
        f"{r['teacher']}{bits_of(r)} {r['source']} seed {r['seed']}: {r['committed'][0]:.2f} committed, "
        f"{r['recomputed'][0]:.2f} recomputed"
        for r in rows
    )
    verdict = "identical" if all(r["identical"] for r in rows) else "**not** identical"
    return (
        f" Committed notebook-04 rows recomputed from an empty cache in one-thread workers ({each}): top-1 and "
        f"agreement {verdict}."
    )


def bits_of(row: dict) -> str:
    """`` W4A2`` where a recomputed row records its widths (older records do not)."""
    return f" W{row['bits'][0]}A{row['bits'][1]}" if "bits" in row else ""
