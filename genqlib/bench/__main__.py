"""``python -m genqlib.bench {generate,solver,filters,ptq,equalize,pilot,repro,workers,export}``: run one benchmark, print and write its JSON."""

from __future__ import annotations

import argparse
import importlib

BENCHES = {
    "generate": ("genqlib.bench.generate", "bench_generate"),
    "solver": ("genqlib.bench.solver", "bench_solver"),
    "filters": ("genqlib.bench.filters", "bench_filters"),
    "ptq": ("genqlib.bench.ptq", "bench_ptq"),
    "equalize": ("genqlib.bench.equalize", "bench_equalize"),
    "pilot": ("genqlib.bench.pilot", "bench_pilot"),
    "repro": ("genqlib.bench.repro", "bench_repro"),
    "workers": ("genqlib.bench.workers", "bench_workers"),
    "export": ("genqlib.bench.export", "bench_export"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument("--out", default=None, help="JSON path (default figures/bench/NAME.json)")
    args = parser.parse_args()
    module, function = BENCHES[args.name]
    run = getattr(importlib.import_module(module), function)
    run(**({"out_path": args.out} if args.out else {}))


if __name__ == "__main__":
    main()
