"""Where do calibration sources differ beyond seed noise? A grid over teachers, bit widths, calibration sizes,
sources and reconstruction seeds, each point one cached PTQ run (so the grid resumes where it stopped).

For every (teacher, bits, n) the summary gives each source's mean ± std over seeds and, for the comparisons
the paper's tables are about, the verdict of ``genqlib.paper.verdict`` (the rule the Results use).
``headline`` then picks, per teacher, the setting where the most of those comparisons resolve: the setting
the Results use (the ``mini`` profile's ``ptq.headline``; a test checks the two agree).

A source is a registry name (``genqlib.paper.calibration.SOURCES``) or a variant of one: ``genq@0.5,0.5`` is GenQ
with filter drops (0.5, 0.5) (Fig. 6's stronger filters), ``genq_style@5`` GenQ with a style token learned
from 5 real images per class (Fig. 4). Variants are compared with the default ``genq``.

Runs are cached with notebook 04's and 06's (``work_dir/ptq``): a notebook at a pilot setting reads them.
Rows of generated sources record the sampler steps their images were made with; a run at other steps drops
them (and the commands that made them) and runs them again, keeping the rows of real, noise and BN inversion.

``python -m genqlib.bench pilot`` (or ``python -m genqlib.paper.pilot``; defaults below) writes
``figures/bench/pilot.json`` after every run and ``pilot.png`` at the end; ``render`` turns such a record into
the Results' pilot section (docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from genqlib.datasets import eval_split
from genqlib.infra.machine import machine_record
from genqlib.metrics import evaluate
from genqlib.paper.calibration import parse_source, spec_set
from genqlib.paper.common import FIGURES, MISSING, group_top1, join, markdown_table, mean
from genqlib.paper.plots import save, zoom
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.paper.ptq_runs import PTQTask, profile_run, ptq_runs
from genqlib.paper.verdict import AGAINST, RESOLVED, spread_cell, spread_of, verdict, widest
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "pilot.json"
SOURCES = ("real", "noise", "bn_inversion", "genq_unfiltered", "genq")
# (a, b, what the paper claims): a should beat b
COMPARISONS = (
    ("genq", "genq_unfiltered", "the filters help (Table 4, Fig. 6)"),
    ("genq", "bn_inversion", "GenQ beats BN inversion (Table 2)"),
    ("genq", "noise", "synthetic data beats noise"),
    ("real", "genq", "real data is the ceiling"),
)


VARIANT_CLAIMS = {
    "genq": "a stronger filter helps (Fig. 6)",
    "genq_style": "the style token helps (Fig. 4)",
}


def comparisons(sources: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """The paper's comparisons among ``sources``, plus each variant against the default ``genq``."""
    found = [(a, b, claim) for a, b, claim in COMPARISONS if a in sources and b in sources]
    for s in sources:
        base = parse_source(s)[0]
        if s != base and "genq" in sources:
            found.append((s, "genq", VARIANT_CLAIMS[base]))
    return found


def source_gap(a: list[float], b: list[float], claim: str) -> dict:
    """Mean gap a - b, the wider of the two seed spreads, and the verdict by ``genqlib.paper.verdict``."""
    gap = mean(a) - mean(b)
    spread = widest(spread_of(a), spread_of(b))
    return {
        "claim": claim,
        "gap": gap,
        "spread": spread_cell(spread),
        "threshold": spread.threshold() if spread else None,
        "verdict": verdict(gap, spread),
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Per (teacher, bits, n): each source's seeds, mean and std, and the verdict of each comparison."""
    groups = group_top1(rows, lambda r: (r["teacher"], r["w_bits"], r["a_bits"], r["n_calib"], r["source"]))
    cells: dict[tuple, dict[str, list[float]]] = {}
    for (*setting, source), top1 in groups.items():
        cells.setdefault(tuple(setting), {})[source] = top1
    out = []
    for (teacher, w, a, n), by_source in cells.items():
        stats = {s: {"top1": v, "mean": mean(v), "std": _std(v)} for s, v in by_source.items()}
        checks = {
            f"{x} > {y}": source_gap(by_source[x], by_source[y], claim)
            for x, y, claim in comparisons(tuple(by_source))
        }
        out.append(
            {"teacher": teacher, "w_bits": w, "a_bits": a, "n_calib": n, "sources": stats, "checks": checks}
        )
    return out


def _std(top1: list[float]) -> float | None:
    spread = spread_of(top1)
    return spread.std if spread else None


def headline(summary: list[dict]) -> dict[str, dict]:
    """Per teacher, the (bits, n) whose paper comparisons (``COMPARISONS``, variants aside) resolve most often
    in either direction, ties broken by the larger smallest |gap| / threshold: where the data matter most."""
    main = {f"{a} > {b}" for a, b, _ in COMPARISONS}
    best: dict[str, tuple] = {}
    for cell in summary:
        checks = [c for k, c in cell["checks"].items() if k in main]
        resolved = sum(c["verdict"] in (RESOLVED, AGAINST) for c in checks)
        margin = min((abs(c["gap"]) / c["threshold"] for c in checks if c.get("threshold")), default=0.0)
        score = (len(checks) == len(main), resolved, margin)
        if cell["teacher"] not in best or score > best[cell["teacher"]][0]:
            best[cell["teacher"]] = (score, cell)
    return {
        t: {
            "bits": [c["w_bits"], c["a_bits"]],
            "n_calib": c["n_calib"],
            "resolved": score[1],
            "of": len(main),
        }
        for t, (score, c) in best.items()
    }


def plot(summary: list[dict], path: Path, fp: dict[str, float] | None = None) -> None:
    """One panel per (teacher, n): each source's mean top-1 with its seed std as an error bar, per width, on an
    axis zoomed to the data, with the full-precision line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c["teacher"], c["n_calib"]) for c in summary})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (teacher, n) in zip(axes[0], panels, strict=True):
        cells = [c for c in summary if (c["teacher"], c["n_calib"]) == (teacher, n)]
        widths = [f"W{c['w_bits']}A{c['a_bits']}" for c in cells]
        shown = list(dict.fromkeys(s for c in cells for s in c["sources"]))
        for k, source in enumerate(shown):
            got = [(i, c["sources"][source]) for i, c in enumerate(cells) if source in c["sources"]]
            ax.errorbar(
                [i + 0.8 * (k / max(1, len(shown) - 1) - 0.5) for i, _ in got],
                [v["mean"] for _, v in got],
                yerr=[v["std"] or 0.0 for _, v in got],
                fmt="o",
                markersize=4,
                capsize=3,
                label=source,
            )
        if fp and teacher in fp:
            ax.axhline(fp[teacher], color="k", linestyle="--", linewidth=1, label=f"FP {fp[teacher]:.1f}")
            means = [(i, s, v["mean"]) for i, c in enumerate(cells) for s, v in c["sources"].items()]
            zoom(ax, means, fp[teacher], margin=3.0)
        ax.set_xticks(range(len(widths)), widths)
        ax.set_title(f"{teacher}, {n} calibration images", fontsize=9)
        ax.set_ylabel("top-1 (%), mean ± std over seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()  # one legend for every panel, outside the data
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save(fig, Path(path).parent, Path(path).stem)  # PNG at print dpi, SVG beside
    plt.close(fig)


GENERATED = ("genq_unfiltered", "genq", "genq_style")  # sources whose images come from the generator


def _row(row: dict, source: str, gen_steps: int) -> dict:
    keep = ("teacher", "w_bits", "a_bits", "n_calib", "seed", "top1", "seconds", "threads")
    steps = {"gen_steps": gen_steps} if parse_source(source)[0] in GENERATED else {}
    return {**{k: row[k] for k in keep}, "source": source, **steps}


def _current(rows: list[dict], gen_steps: int) -> list[dict]:
    """The rows still valid at the profile's sampler steps: a generated source's rows from other steps (or
    from before rows recorded them) are other images, so they are dropped, and the count is printed."""
    keep = [
        r for r in rows if parse_source(r["source"])[0] not in GENERATED or r.get("gen_steps") == gen_steps
    ]
    if len(keep) < len(rows):
        print(
            f"pilot: {len(rows) - len(keep)} rows of generated sources from other than {gen_steps} "
            "sampler steps dropped; they run again",
            flush=True,
        )
    return keep


def run_pilot(
    out_path: str | Path = DEFAULT_OUT,
    profile: str = "mini",
    teachers: tuple[str, ...] = ("mobilenet", "resnet"),
    bits: tuple[tuple[int, int], ...] = ((2, 2), (4, 2), (2, 4), (4, 4)),
    sizes: tuple[int, ...] = (256,),
    sources: tuple[str, ...] = SOURCES,
    seeds: tuple[int, ...] = (0, 1, 2),
    method: str = "brecq",
    iters: int = 300,
    command: str = "python -m genqlib.bench pilot",
) -> dict:
    """Run (or read from the cache) every grid point, rewriting ``out_path`` after each teacher and size; rows
    already in ``out_path`` from other grids (other teachers, sources) are kept. The runs missing from the cache
    are computed in ``genqlib.infra.workers`` processes of one thread each; a stopped grid resumes from the cache."""
    p = get_profile(profile)
    test = eval_split(p)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"profile": p.name, "method": method, "iters": iters, "n_eval": len(test)}
    settings["bn_inversion_iters"] = p.bn_inversion.iters  # the bn_inversion source's
    old = json.loads(out_path.read_text()) if out_path.exists() else {}
    if old and any(old.get(k) != settings[k] for k in settings):
        raise ValueError(
            f"{out_path} holds a grid with other settings ({settings} asked); choose another --out"
        )
    rows = _current(old.get("rows", []), p.gen_steps)
    fp: dict[str, float] = old.get("fp", {})
    # a command whose generated rows were dropped no longer made this grid; the ones run again re-list themselves
    kept = old.get("commands", []) if len(rows) == len(old.get("rows", [])) else []
    commands = [c for c in kept if c != command] + [command]
    done = {(r["teacher"], r["w_bits"], r["a_bits"], r["n_calib"], r["source"], r["seed"]) for r in rows}
    for n in sizes:
        for teacher in teachers:
            model = load_teacher(teacher)
            fp[teacher] = evaluate(model, test)["top1"]
            todo = [
                (w, a, source, seed)
                for (w, a), source, seed in itertools.product(bits, sources, seeds)
                if (teacher, w, a, n, source, seed) not in done
            ]
            calib = {source: spec_set(model, source, n, p, teacher).images for source in sources}
            tasks = [
                PTQTask(
                    model,
                    calib[source],
                    profile_run(p, teacher, (w, a), source, n, method, iters=iters, seed=seed),
                )
                for w, a, source, seed in todo
            ]
            # missing runs are computed in one-thread workers (as notebook 04's), then read back in order
            for (w, a, source, seed), row in zip(
                todo, ptq_runs(tasks, test, p.work_dir / "ptq"), strict=True
            ):
                rows.append(_row(row, source, p.gen_steps))
                print(f"{teacher} W{w}A{a} n={n} {source:>16} seed {seed}: {row['top1']:.2f}", flush=True)
            _write(out_path, {**settings, "commands": commands}, rows, fp)
    record = _write(out_path, {**settings, "commands": commands}, rows, fp)
    plot(record["summary"], out_path.with_suffix(".png"), fp)
    return record


def _write(path: Path, settings: dict, rows: list[dict], fp: dict[str, float]) -> dict:
    summary = summarise(rows)
    record = {
        **settings,
        "fp": fp,
        "headline": headline(summary),
        "rows": rows,
        "summary": summary,
        "machine": machine_record(),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def bench_pilot(out_path: str | Path = DEFAULT_OUT) -> dict:
    """The default grid (``python -m genqlib.bench pilot``); ``python -m genqlib.paper.pilot --help`` narrows it."""
    return run_pilot(out_path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--teachers", nargs="+", default=["mobilenet", "resnet"])
    ap.add_argument("--bits", nargs="+", default=["2,2", "4,2", "2,4", "4,4"], help="W,A pairs")
    ap.add_argument("--sizes", nargs="+", type=int, default=[256])
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--method", default="brecq")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    run_pilot(
        args.out,
        args.profile,
        tuple(args.teachers),
        tuple(tuple(int(x) for x in b.split(",")) for b in args.bits),
        tuple(args.sizes),
        tuple(args.sources),
        tuple(args.seeds),
        args.method,
        args.iters,
        "python -m genqlib.paper.pilot " + " ".join(argv if argv is not None else sys.argv[1:]),
    )


# ---------------------------------------------------------------- the Results' section

TITLE = "Where the calibration sources differ: the settings pilot"
SHORT = {"resolved (paper's direction)": "✓", "resolved (against)": "✗", "within noise": "≈"}


def _cell(stats: dict | None) -> str:
    if not stats:
        return MISSING
    return f"{stats['mean']:.2f}" + (f" ± {stats['std']:.2f}" if stats["std"] is not None else "")


def others(figures: Path = FIGURES) -> list[str]:
    """Names of the pilot grids run at other settings than the Results' (``figures/bench/pilot-*.json``, e.g.
    fewer reconstruction iterations), each written by ``python -m genqlib.paper.pilot ... --out``."""
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
        + (" (the Results' setting, the profile's `ptq`)" if results else "")
        + f": {chosen}.",
        f"![{name}](../figures/bench/{name}.png)",
        "Reproduce (each grid adds its rows to the same file): "
        + "; ".join(f"`{_current_command(c)}`" for c in m["commands"]),
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
        check = source_gap(a[k], b[k], "")  # the pilot's own comparison: gap, wider spread, verdict
        teacher, w, act, n, source = k
        verdict = word.get(check["verdict"], check["verdict"])
        body.append([f"{teacher} W{w}A{act} n={n}", source, f"{check['gap']:+.2f}", check["spread"], verdict])
    return join(
        f"Generated sources at {_steps(here)} sampler steps (the Results' pilot) minus at {_steps(there)} (this "
        "grid), same seeds and settings otherwise:",
        markdown_table(["teacher, bits, n", "source", "gap", "noise (wider spread)", "verdict"], body),
    )


def _current_command(command: str) -> str:
    """A recorded command as it runs today: records made before the pilot moved into the paper layer name
    ``genqlib.bench.pilot``, the module that is now ``genqlib.paper.pilot`` (same arguments, same grid)."""
    return command.replace("python -m genqlib.bench.pilot ", "python -m genqlib.paper.pilot ")


if __name__ == "__main__":
    main()
