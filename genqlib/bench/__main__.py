"""``python -m genqlib.bench {generate,generator,solver,filters,ptq,equalize,pilot,repro,workers,export}``: run one benchmark, print and write its JSON."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

BENCHES = {
    "generate": ("genqlib.bench.generate", "bench_generate"),
    "generator": ("genqlib.bench.generator", "bench_generator"),
    "solver": ("genqlib.bench.solver", "bench_solver"),
    "filters": ("genqlib.bench.filter_speed", "bench_filters"),
    "ptq": ("genqlib.bench.ptq", "bench_ptq"),
    "equalize": ("genqlib.bench.equalize", "bench_equalize"),
    "pilot": ("genqlib.paper.pilot", "bench_pilot"),
    "repro": ("genqlib.bench.repro", "bench_repro"),
    "workers": ("genqlib.bench.workers", "bench_workers"),
    "export": ("genqlib.bench.export", "bench_export"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default figures/bench/NAME.json; with --generator, NAME-vN.json for generator-vN)",
    )
    parser.add_argument(
        "--generator", default=None, help="generator and generate benches: a committed name or a folder"
    )
    parser.add_argument("--vae", default=None, help="generator bench: measure this bare VAE folder only")
    args = parser.parse_args()
    from genqlib.infra.machine import keep_freed_memory

    keep_freed_memory()  # benchmarks time the runs as the workers and notebooks make them
    module, function = BENCHES[args.name]
    run = getattr(importlib.import_module(module), function)
    kwargs = {"out_path": args.out} if args.out else {}
    if args.generator is not None and args.name in ("generator", "generate") and not args.out:
        from genqlib.paper.assets import bench_record_path
        from genqlib.zoo.generators import generator_folder

        # each generator's record where its model card reads it: generator-v2.json for generator-v2, ...
        kwargs["out_path"] = bench_record_path(args.name, Path(generator_folder(args.generator)))
    takes = {
        "generator": ("generator", "generate"),
        "vae": ("generator",),
    }  # option: the benches that take it
    for option, benches in takes.items():
        if getattr(args, option) is not None:
            if args.name not in benches:
                parser.error(f"--{option} is an option of the {' and '.join(benches)} bench(es) only")
            kwargs[option] = getattr(args, option)
    run(**kwargs)


if __name__ == "__main__":
    main()
