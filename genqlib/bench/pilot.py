"""Where do calibration sources differ beyond seed noise? A grid over teachers, bit widths, calibration sizes,
sources and reconstruction seeds, each point one cached PTQ run (so the grid resumes where it stopped).

For every (teacher, bits, n) the summary gives each source's mean ± std over seeds and, for the comparisons
the paper's tables are about, the verdict of ``genqlib.tables.verdict`` (the rule the Results use). The
headline settings of Tables 2-5 and Figs. 4-6 are picked from this.

``python -m genqlib.bench pilot`` (defaults below) writes ``figures/bench/pilot.json`` after every run and
``pilot.png`` at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from genqlib.calibration import calibration_set
from genqlib.datasets import eval_split
from genqlib.machine import machine_record
from genqlib.profiles import REPO_ROOT, get_profile
from genqlib.ptq_runs import profile_run, ptq_run
from genqlib.tables.verdict import spread_cell, spread_of, verdict, widest
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


def _check(a: list[float], b: list[float], claim: str) -> dict:
    """Mean gap a - b, the wider of the two seed spreads, and the verdict by ``genqlib.tables.verdict``."""
    gap = statistics.mean(a) - statistics.mean(b)
    spread = widest(spread_of(a), spread_of(b))
    return {"claim": claim, "gap": gap, "spread": spread_cell(spread), "verdict": verdict(gap, spread)}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (teacher, bits, n): each source's seeds, mean and std, and the verdict of each comparison."""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        key = (r["teacher"], r["w_bits"], r["a_bits"], r["n_calib"])
        cells.setdefault(key, {}).setdefault(r["source"], []).append(r["top1"])
    out = []
    for (teacher, w, a, n), by_source in cells.items():
        stats = {
            s: {"top1": v, "mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else None}
            for s, v in by_source.items()
        }
        checks = {
            f"{x} > {y}": _check(by_source[x], by_source[y], claim)
            for x, y, claim in COMPARISONS
            if x in by_source and y in by_source
        }
        out.append(
            {"teacher": teacher, "w_bits": w, "a_bits": a, "n_calib": n, "sources": stats, "checks": checks}
        )
    return out


def plot(summary: list[dict], path: Path) -> None:
    """One panel per (teacher, n): each source's mean top-1 with its seed std as an error bar, per width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c["teacher"], c["n_calib"]) for c in summary})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (teacher, n) in zip(axes[0], panels, strict=True):
        cells = [c for c in summary if (c["teacher"], c["n_calib"]) == (teacher, n)]
        widths = [f"W{c['w_bits']}A{c['a_bits']}" for c in cells]
        for k, source in enumerate(SOURCES):
            got = [(i, c["sources"][source]) for i, c in enumerate(cells) if source in c["sources"]]
            ax.errorbar(
                [i + 0.1 * (k - 2) for i, _ in got],
                [v["mean"] for _, v in got],
                yerr=[v["std"] or 0.0 for _, v in got],
                fmt="o",
                capsize=3,
                label=source,
            )
        ax.set_xticks(range(len(widths)), widths)
        ax.set_title(f"{teacher}, {n} calibration images")
        ax.set_ylabel("top-1 (%), mean ± std over seeds")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
) -> dict:
    """Run (or read from the cache) every grid point, rewriting ``out_path`` after each one."""
    p = get_profile(profile)
    test = eval_split(p)
    cache = p.work_dir / "pilot"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "profile": p.name,
        "method": method,
        "iters": iters,
        "n_eval": len(test),
        "seeds": list(seeds),
    }
    rows: list[dict] = []
    for n in sizes:
        for teacher in teachers:
            model = load_teacher(teacher)
            calib = {s: calibration_set(model, s, n, p, teacher).images for s in sources}
            for w, a in bits:
                for source in sources:
                    for seed in seeds:
                        run = profile_run(p, teacher, (w, a), source, n, method, iters=iters, seed=seed)
                        row = ptq_run(model, calib[source], test, run, cache)
                        rows.append(
                            {
                                k: row[k]
                                for k in (
                                    "teacher",
                                    "w_bits",
                                    "a_bits",
                                    "source",
                                    "n_calib",
                                    "seed",
                                    "top1",
                                    "seconds",
                                )
                            }
                        )
                        print(
                            f"{teacher} W{w}A{a} n={n} {source:>16} seed {seed}: {row['top1']:.2f}",
                            flush=True,
                        )
                        record = {
                            **settings,
                            "rows": rows,
                            "summary": summarise(rows),
                            "machine": machine_record(),
                        }
                        out_path.write_text(json.dumps(record, indent=1) + "\n")
    record["command"] = "python -m genqlib.bench pilot"
    out_path.write_text(json.dumps(record, indent=1) + "\n")
    plot(record["summary"], out_path.with_suffix(".png"))
    return record


def bench_pilot(out_path: str | Path = DEFAULT_OUT) -> dict:
    """The default grid (``python -m genqlib.bench pilot``); ``python -m genqlib.bench.pilot --help`` narrows it."""
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
    )


if __name__ == "__main__":
    main()
