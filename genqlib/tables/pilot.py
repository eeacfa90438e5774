"""The settings pilot (``python -m genqlib.bench pilot``): where on the mini world the calibration sources
differ beyond seed noise, which is where the Results measure the paper's comparisons."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.bench.pilot import GENERATED, SOURCES, compare
from genqlib.calibration import parse_source
from genqlib.tables.common import FIGURES, MISSING, group_top1, join, markdown_table
from genqlib.tables.verdict import AGAINST, RESOLVED

TITLE = "Where the calibration sources differ: the settings pilot"
SHORT = {"resolved (paper's direction)": "✓", "resolved (against)": "✗", "within noise": "≈"}


def _cell(stats: dict | None) -> str:
    if not stats:
        return MISSING
    return f"{stats['mean']:.2f}" + (f" ± {stats['std']:.2f}" if stats["std"] is not None else "")


def others(figures: Path = FIGURES) -> list[str]:
    """Names of the pilot grids run at other settings than the Results' (``figures/bench/pilot-*.json``, e.g.
    fewer reconstruction iterations), each written by ``python -m genqlib.bench.pilot ... --out``."""
    return sorted(p.stem for p in (figures / "bench").glob("pilot-*.json"))


def render(figures: Path = FIGURES, name: str = "pilot") -> str:
    """Per teacher and bit width: each source's top-1 (mean ± std over seeds), each comparison's gap with its
    verdict (✓ paper's direction, ✗ against, ≈ within noise), and where the most comparisons resolve: for
    ``pilot``, the setting the Results use."""
    path = figures / "bench" / f"{name}.json"
    if not path.exists():
        return markdown_table(
            ["result", "status"], [["pilot", f"{MISSING} not measured: run `python -m genqlib.bench pilot`"]]
        )
    m = json.loads(path.read_text())
    found = dict.fromkeys(s for c in m["summary"] for s in c["sources"])
    sources = [s for s in SOURCES if s in found] + [
        s for s in found if s not in SOURCES
    ]  # the grid's order first
    checks = list(dict.fromkeys(k for c in m["summary"] for k in c["checks"]))
    body = []
    for c in sorted(m["summary"], key=lambda c: (c["teacher"], c["n_calib"], -c["w_bits"] - c["a_bits"])):
        row = [f"{c['teacher']} W{c['w_bits']}A{c['a_bits']} n={c['n_calib']}"]
        row += [_cell(c["sources"].get(s)) for s in sources]
        for k in checks:
            check = c["checks"].get(k)
            row.append(f"{check['gap']:+.2f} {SHORT.get(check['verdict'], '')}" if check else MISSING)
        body.append(row)
    results = name == "pilot"
    chosen = "; ".join(
        f"{t}: W{h['bits'][0]}A{h['bits'][1]}, n={h['n_calib']} ({h['resolved']} of {h['of']} comparisons resolve)"
        for t, h in m["headline"].items()
    )
    setting = (
        f"Setting: profile `{m['profile']}` · {m['method']} · {m['iters']} iterations per block · "
        f"{m['n_eval']:,} test images · BN inversion {m.get('bn_inversion_iters', MISSING)} steps per batch · "
        f"generated sources sampled at {_steps(m['rows'])} steps · "
        f"seeds {sorted({r['seed'] for r in m['rows']})} · "
        f"{m['machine'].get('threads', '?')} thread(s)"
    )
    return join(
        setting,
        "Top-1 (%), mean ± std over seeds, and each comparison's gap (A − B) with its verdict:",
        markdown_table(["teacher, bits, n", *sources, *checks], body),
        "Where the most comparisons resolve, per teacher"
        + (" (the Results' setting, `genqlib.profiles.PTQ`)" if results else "")
        + f": {chosen}.",
        f"![{name}](../figures/bench/{name}.png)",
        "Reproduce (each grid adds its rows to the same file): " + "; ".join(f"`{c}`" for c in m["commands"]),
        "" if results else steps_effect(figures, name),
    )


def _generated(rows: list[dict]) -> list[dict]:
    return [r for r in rows if parse_source(r["source"])[0] in GENERATED]


def _steps(rows: list[dict]) -> str:
    """The sampler steps the generated sources' rows record, or a dash when they record none."""
    steps = sorted({r["gen_steps"] for r in _generated(rows) if "gen_steps" in r})
    return "/".join(map(str, steps)) or MISSING


def steps_effect(figures: Path, name: str) -> str:
    """What the sampler steps change: each generated source's top-1 in ``pilot`` minus in pilot ``name``, where
    the two grids sampled at different steps, with the verdict of the Results' rule (empty when they did not)."""
    here, there = (json.loads((figures / "bench" / f"{n}.json").read_text())["rows"] for n in ("pilot", name))
    if _steps(here) == _steps(there):
        return ""

    def key(r: dict) -> tuple:
        return r["teacher"], r["w_bits"], r["a_bits"], r["n_calib"], r["source"]

    a, b = group_top1(_generated(here), key), group_top1(_generated(there), key)
    word = {RESOLVED: "higher, beyond noise", AGAINST: "lower, beyond noise"}
    body = []
    for k in sorted(a.keys() & b.keys()):
        check = compare(a[k], b[k], "")  # the pilot's own comparison: gap, wider spread, verdict
        teacher, w, act, n, source = k
        verdict = word.get(check["verdict"], check["verdict"])
        body.append([f"{teacher} W{w}A{act} n={n}", source, f"{check['gap']:+.2f}", check["spread"], verdict])
    return join(
        f"Generated sources at {_steps(here)} sampler steps (the Results' pilot) minus at {_steps(there)} (this "
        "grid), same seeds and settings otherwise:",
        markdown_table(["teacher, bits, n", "source", "gap", "noise (wider spread)", "verdict"], body),
    )
