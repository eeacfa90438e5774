"""Where do calibration sources differ beyond seed noise? A grid over teachers, bit widths, calibration sizes,
sources and reconstruction seeds, each point one cached PTQ run (so the grid resumes where it stopped).

For every (teacher, bits, n) the summary gives each source's mean ± std over seeds and, for the comparisons
the paper's tables are about, whether the gap resolves: |gap| > 3 × the larger of the two seed stds. The
headline settings of Tables 2-5 and Figs. 4-6 are picked from this.

``python -m genqlib.bench pilot`` (defaults below) writes ``figures/bench/pilot.json`` after every run and
``pilot.png`` at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from genqlib.datasets import eval_split
from genqlib.experiments import calibration_images, profile_run, ptq_run
from genqlib.machine import machine_record
from genqlib.profiles import REPO_ROOT, get_profile
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
RESOLVE_FACTOR = 3.0  # a gap resolves when it exceeds this many seed stds


def verdict(a: list[float], b: list[float]) -> dict:
    """Mean gap a - b and whether it exceeds RESOLVE_FACTOR × the larger seed std (None with < 2 seeds)."""
    gap = statistics.mean(a) - statistics.mean(b)
    if min(len(a), len(b)) < 2:
        return {"gap": gap, "spread": None, "verdict": "no spread (1 seed)"}
    spread = max(statistics.stdev(a), statistics.stdev(b))
    if abs(gap) <= RESOLVE_FACTOR * spread:
        word = "within noise"
    else:
        word = "resolved (paper's direction)" if gap > 0 else "resolved (against)"
    return {"gap": gap, "spread": spread, "verdict": word}


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
            f"{x} > {y}": {**verdict(by_source[x], by_source[y]), "claim": claim}
            for x, y, claim in COMPARISONS
            if x in by_source and y in by_source
        }
        out.append(
            {"teacher": teacher, "w_bits": w, "a_bits": a, "n_calib": n, "sources": stats, "checks": checks}
        )
    return out


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
            calib = {s: calibration_images(s, teacher, model, p, n).images for s in sources}
            for w, a in bits:
                for source in sources:
                    for seed in seeds:
                        run = replace(
                            profile_run(p, teacher, (w, a), source, n, method), iters=iters, seed=seed
                        )
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
