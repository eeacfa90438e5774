"""Which generator made each notebook's committed numbers (from its ``run.json``), flagged when not the
committed one, so a table left over from an older generator says so."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.paper.common import FIGURES, MISSING, NOTEBOOKS, markdown_table, notebook_records
from genqlib.quant import ENGINE


def run_records(figures: Path = FIGURES) -> dict[str, dict | None]:
    """Each notebook's ``run.json`` (None where the notebook has not run)."""
    return notebook_records("run.json", figures)


def table(current: str, figures: Path = FIGURES) -> str:
    """Rows = notebook: when its run finished, the generator, engine and commit it recorded, and whether the
    generator is ``current`` (the committed one)."""
    body = []
    for number, run in run_records(figures).items():
        run = run or {}
        made_by = run.get("generator")
        current_cell = (
            "not recorded" if made_by is None else "yes" if made_by == current else "**no: re-run it**"
        )
        body.append(
            [
                number,
                run.get("finished", MISSING)[:10],
                f"`{made_by}`" if made_by else MISSING,
                run.get("engine", MISSING),
                f"`{run['commit']}`" if run.get("commit") else MISSING,
                current_cell,
            ]
        )
    head = ["notebook", "finished", "generator", "engine", "commit", "the committed generator"]
    return markdown_table(head, body)


def summary(current: str, figures: Path = FIGURES, engine: str = ENGINE) -> str:
    """One sentence for the README: when the committed notebook runs finished, with which generator(s) and
    engine(s), which notebooks did not record one, and whether the code's ``engine`` has moved on since."""
    runs = {n: r for n, r in run_records(figures).items() if r}
    if not runs:
        return "No notebook run is committed yet: `bash scripts/run.sh` makes them."
    days = sorted(r["finished"][:10] for r in runs.values())
    when = days[0] if days[0] == days[-1] else f"{days[0]} to {days[-1]}"
    generators = sorted({r.get("generator", MISSING) for r in runs.values()})
    gen_text = ", ".join(f"`{g}`" for g in generators)
    stale = [n for n, r in runs.items() if r.get("generator") != current]
    gen_text += (
        f" (not the committed generator in notebook(s) {', '.join(stale)})"
        if stale
        else " (the committed one)"
    )
    engines = {n: r.get("engine") for n, r in runs.items()}
    known = sorted({e for e in engines.values() if e})
    unrecorded = [n for n, e in engines.items() if not e]
    engine_text = f"engine {', '.join(known)}" if known else "engine not recorded"
    if known and unrecorded:
        engine_text += f" (not recorded by notebook(s) {', '.join(unrecorded)}, run before run.json named it)"
    if known and known != [engine]:
        engine_text += f"; the code is now engine {engine}, whose numbers differ until the notebooks re-run"
    missing = [n for n in NOTEBOOKS if n not in runs]
    tail = f" Notebook(s) {', '.join(missing)} have no committed run." if missing else ""
    return (
        f"They come from the `mini` notebook runs finished {when}: generator {gen_text}; {engine_text}.{tail}"
    )


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
