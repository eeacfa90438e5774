"""``python -m genqlib.quest --profile mini --teacher mobilenet --widths 4,8 4,4 ...``: notebook 06's generator
quantization comparison from the command line; prints one row per generator and writes ``--out`` (JSON)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from genqlib.quest.compare import COLUMNS, generator_quant


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every default not given here comes from the profile (``paper.settings.GeneratorQuant``)."""
    ap = argparse.ArgumentParser(prog="python -m genqlib.quest", description=__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--teacher", default="mobilenet")
    ap.add_argument("--widths", nargs="+", default=None, help="W,A pairs, e.g. 4,8 4,4")
    ap.add_argument("--bits", default="2,4", help="downstream PTQ widths of the teacher")
    ap.add_argument("--method", default="genie_m", help="downstream PTQ method")
    ap.add_argument(
        "--iters", type=int, default=None, help="downstream iterations per block (default: the profile's)"
    )
    ap.add_argument("--n-per-class", type=int, default=None)
    ap.add_argument("--calib-per-class", type=int, default=None)
    ap.add_argument(
        "--finetune-iters",
        type=int,
        default=None,
        help="QuEST: optimizer steps per finetuning stage at most (the reference's schedule scaled down; "
        "AdaRound runs 2 iterations per block per step); default: the profile's",
    )
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison with the profile's pipeline, teacher, test split and reconstruction iterations."""
    from genqlib.datasets import eval_split
    from genqlib.generate import load_pipeline
    from genqlib.paper.profiles import get_profile
    from genqlib.zoo import load_teacher

    args = parse_args(argv)
    p = get_profile(args.profile)
    widths = [_pair(w) for w in args.widths] if args.widths else None
    res = generator_quant(
        load_pipeline(p.generator),
        load_teacher(args.teacher),
        args.teacher,
        p,
        eval_split(p),
        Path(args.work_dir or p.work_dir),
        _pair(args.bits),
        args.method,
        args.iters or p.recon_iters,
        widths=widths,
        n_per_class=args.n_per_class,
        calib_per_class=args.calib_per_class,
        finetune_iters=args.finetune_iters,
    )
    res.pop("samples")
    res["command"] = shlex.join(["python", "-m", "genqlib.quest", *(sys.argv[1:] if argv is None else argv)])
    print(" ".join(COLUMNS))
    for row in res["rows"]:
        print(" ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


def _pair(text: str) -> tuple[int, ...]:
    """``"4,8"`` -> ``(4, 8)``."""
    return tuple(int(v) for v in text.split(","))


if __name__ == "__main__":
    main()
