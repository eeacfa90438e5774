"""What reproduces bit for bit: one PTQ run (quantize + BRECQ + evaluate) repeated at one CPU thread, then at
more threads. The quantized model's state digest and top-1 of each repeat, and whether they match.

Float reductions in torch's CPU kernels are split across threads, so the order of additions, and with it the
last bits of every sum, depends on the thread count: a run repeats exactly at the same thread count on the same
CPU kind and torch version, and only up to rounding noise (which reconstruction can amplify into a different
rounding decision) at another thread count. Then two committed notebook-04 rows (``COMMITTED``) recomputed
from an empty cache by ``ptq_runs``' one-thread workers, against the top-1 and agreement committed in
``figures/04_ptq/metrics.json``: what a cold ``mini`` run reproduces. ``python -m genqlib.bench repro`` writes
``figures/bench/repro.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from genqlib.datasets import eval_split
from genqlib.infra.machine import machine_record
from genqlib.infra.result_cache import digest
from genqlib.metrics import evaluate
from genqlib.paper.calibration import calibration_set
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.paper.ptq_runs import PTQTask, profile_run, ptq_runs
from genqlib.quant import quantize, reconstruct
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "repro.json"
# committed notebook-04 rows recomputed by ``committed_rows``: (teacher, source, seed), at the width the notebook
# ran the teacher at; sources that cost nothing to rebuild (no generator, no inversion)
COMMITTED = (("resnet", "real", 0), ("mobilenet", "noise", 1))


def repeat_run(
    profile: str = "ci",
    teacher: str = "resnet",
    bits: tuple[int, int] = (2, 2),
    threads: tuple[int, ...] = (1, 1, 2),
) -> dict:
    """The profile's BRECQ run of ``teacher`` on real images, once per entry of ``threads``."""
    p = get_profile(profile)
    model, test = load_teacher(teacher), eval_split(p)
    calib = calibration_set(model, "real", p.calib_size, p, teacher).images
    run = profile_run(p, teacher, bits, "real", p.calib_size, "brecq")
    before = torch.get_num_threads()
    repeats = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            qmodel = reconstruct(quantize(model, run.quant, example=calib[:8]), model, calib, run.recon)
            repeats.append(
                {"threads": n, "state_digest": digest(qmodel), "top1": evaluate(qmodel, test)["top1"]}
            )
    finally:
        torch.set_num_threads(before)
    by_threads: dict[int, set[str]] = {}
    for r in repeats:
        by_threads.setdefault(r["threads"], set()).add(r["state_digest"])
    return {
        "profile": p.name,
        "run": run.fields(),
        "repeats": repeats,
        "same_threads_identical": all(len(d) == 1 for d in by_threads.values()),
        "all_identical": len({r["state_digest"] for r in repeats}) == 1,
        "machine": machine_record(),
    }


def committed_rows(figures: Path = REPO_ROOT / "figures", points=COMMITTED) -> list[dict]:
    """``points`` of the committed notebook-04 rows (each at the first width its teacher ran at) recomputed in
    one-thread workers from an empty cache: the committed and the recomputed top-1 and agreement of each, and
    whether they are identical."""
    m = json.loads((figures / "04_ptq" / "metrics.json").read_text())
    p, test = get_profile(m["profile"]), None
    tasks, committed = [], []
    for teacher, source, seed in points:
        want = (teacher, m["method"], source, seed)
        row = next(
            r for r in m["rows"] if tuple(r[k] for k in ("teacher", "method", "source", "seed")) == want
        )
        model = load_teacher(teacher)
        calib = calibration_set(model, source, m["n_calib"], p, teacher).images
        bits = (row["w_bits"], row["a_bits"])
        run = profile_run(
            p, teacher, bits, source, m["n_calib"], m["method"], m["first_last_bits"], m["iters"], seed
        )
        tasks.append(PTQTask(model, calib, run))
        committed.append(row)
    test = eval_split(p)
    with tempfile.TemporaryDirectory(prefix="genq_repro_") as tmp:
        fresh = ptq_runs(tasks, test, tmp, jobs=2)
    return [
        {
            "teacher": c["teacher"],
            "bits": [c["w_bits"], c["a_bits"]],
            "source": c["source"],
            "seed": c["seed"],
            "committed": [c["top1"], c["agreement"], c["threads"]],
            "recomputed": [f["top1"], f["agreement"], f["threads"]],
            "identical": (c["top1"], c["agreement"]) == (f["top1"], f["agreement"]),
        }
        for c, f in zip(committed, fresh, strict=True)
    ]


def bench_repro(out_path: str | Path = DEFAULT_OUT) -> dict:
    """``repeat_run`` at its defaults and ``committed_rows``, printed and written to ``out_path``."""
    record = repeat_run()
    record["committed_rows"] = committed_rows()
    record["command"] = "python -m genqlib.bench repro"
    Path(out_path).write_text(json.dumps(record, indent=1) + "\n")
    for r in record["repeats"]:
        print(f"{r['threads']} thread(s): top-1 {r['top1']:.2f}, state {r['state_digest'][:12]}")
    print(
        f"same thread count identical: {record['same_threads_identical']}; all identical: {record['all_identical']}"
    )
    for r in record["committed_rows"]:
        print(
            f"committed {r['teacher']} {r['source']} seed {r['seed']}: {r['committed']} -> {r['recomputed']}"
        )
    return record
