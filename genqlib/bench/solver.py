"""Table 1's two costs in one run: text-to-image synthesis speed against class fidelity for each sampler and
step count, and BN inversion's time at the step count where its own loss has converged.

Synthesis: which solver makes images fastest while the teachers still recognise them as well as the profile's
default (DDIM, ``gen_steps``) does. Every setting draws the same seeds, so the fidelity differences between
settings are paired. Inversion: one batch optimised for ``INVERSION_ITERS`` Adam steps (ZeroQ's loss and
learning rate, the profile's ``bn_inversion``), its loss kept at every step; it has converged at k steps when
doubling them lowers the loss by less than ``CONVERGED``. ``python -m genqlib.bench solver`` writes
``figures/bench/solver.json`` and ``solver.png`` (fidelity against images per second, one line per sampler).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from genqlib.baselines import bn_inversion
from genqlib.datasets import class_names, run_classes
from genqlib.filters import batchnorm_layers
from genqlib.generate import generate, load_pipeline, use_scheduler
from genqlib.infra.machine import machine_record
from genqlib.metrics import class_fidelity
from genqlib.paper.plots import save
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "solver.json"
SAMPLERS = ("ddim", "dpm", "unipc")  # DDIM (the default), DPM-Solver++ 2M, UniPC: diffusers' fast ODE solvers
STEPS = (5, 8, 10, 15, 20)
INVERSION_ITERS = 2000  # ten times mini's 200 (the profile's bn_inversion); 400 steps still halved the loss
INVERSION_N = 32
CONVERGED = 0.05  # doubling the steps gains less than this fraction of the BN loss


def _one_setting(pipe, p, sampler: str, steps: int, n_per_class: int, teachers: dict) -> dict:
    """Generate the set for one (sampler, steps), timed, and score it under every teacher."""
    use_scheduler(pipe, sampler)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        made = generate(
            pipe,
            list(run_classes(p)),
            n_per_class,
            out=Path(tmp) / "set",
            guidance_scale=p.guidance_scale,
            steps=steps,
            seed=p.seed,
            batch_size=p.gen_batch_size,
            class_names=class_names(p),
            progress=False,
        )
        seconds = time.perf_counter() - start
        images = made.images(size=p.image_size, channels=p.image_channels)
        labels = made.labels
    fidelity = {t: class_fidelity(m, images, labels)["class_fidelity"] for t, m in teachers.items()}
    return {
        "sampler": sampler,
        "steps": steps,
        "images": len(labels),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(labels) / seconds, 2),
        "class_fidelity": fidelity,
        "mean_fidelity": sum(fidelity.values()) / len(fidelity),
    }


def inversion_convergence(
    model, p, iters: int = INVERSION_ITERS, n: int = INVERSION_N, converged: float = CONVERGED
) -> dict:
    """BN inversion of one batch of ``n`` images for ``iters`` Adam steps, its loss at every step: the fewest
    steps k (a power of two times 25) after which doubling to 2k lowers the loss by less than ``converged``
    (None when no such k fits in ``iters``), and the seconds per 1,000 images k steps cost (every step costs the
    same, so the time is prorated from the whole run). Each loss is the mean of 5 steps (Adam at ZeroQ's
    learning rate makes the per-step loss jitter)."""
    bn = p.bn_inversion
    shape = (p.image_channels, p.image_size, p.image_size)
    inv = bn_inversion(model, n, shape, iters=iters, lr=bn.lr, batch_size=n, seed=p.seed, progress=False)
    curve = inv.loss_curve

    def loss_at(k: int) -> float:
        window = curve[max(k - 5, 0) : k]
        return sum(window) / len(window)

    marks = [25 * 2**i for i in range(12) if 25 * 2**i <= len(curve)]
    flat = [k for k in marks if 2 * k <= len(curve) and loss_at(2 * k) >= (1 - converged) * loss_at(k)]
    per_step = inv.seconds / n * 1000 / len(curve)
    return {
        "lr": bn.lr,
        "profile_iters": bn.iters,
        "n": n,
        "iters": iters,
        "converged_within": converged,
        "converged_iters": min(flat) if flat else None,
        "seconds_per_1000_per_step": round(per_step, 3),
        "rows": [
            {"iters": k, "loss": loss_at(k), "seconds_per_1000": round(per_step * k, 1)}
            for k in sorted({*marks, bn.iters, len(curve)})
            if k <= len(curve)
        ],
    }


def _plot(rows: list[dict], reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["steps"])
        ax.plot(
            [r["images_per_s"] for r in mine], [100 * r["mean_fidelity"] for r in mine], "o-", label=sampler
        )
        for r in mine:
            ax.annotate(str(r["steps"]), (r["images_per_s"], 100 * r["mean_fidelity"]), fontsize=7)
    ax.axhline(100 * reference["mean_fidelity"], color="gray", ls="--", label="default (DDIM)")
    ax.set_xlabel("images / s")
    ax.set_ylabel("class fidelity, mean over teachers (%)")
    ax.legend()
    fig.tight_layout()
    save(fig, Path(path).parent, Path(path).stem)  # PNG at print dpi, SVG beside
    plt.close(fig)


def bench_solver(
    out_path: str | Path = DEFAULT_OUT,
    profile: str = "mini",
    n_per_class: int = 30,
    samplers: tuple[str, ...] = SAMPLERS,
    steps: tuple[int, ...] = STEPS,
) -> dict:
    """Images/s and class fidelity (under each of the profile's teachers) for every sampler and step count."""
    p = get_profile(profile)
    pipe = load_pipeline(p.generator)
    teachers = {t: load_teacher(t) for t in p.teachers}
    generate(  # warm-up: the first batch pays for allocation
        pipe,
        [0],
        1,
        out=Path(tempfile.mkdtemp()) / "warm",
        steps=2,
        class_names=class_names(p),
        progress=False,
    )
    rows = []
    for sampler in samplers:
        for k in steps:
            rows.append(_one_setting(pipe, p, sampler, k, n_per_class, teachers))
            r = rows[-1]
            print(
                f"{sampler:>6} {k:>3} steps  {r['images_per_s']:6.2f} img/s  fidelity {r['mean_fidelity']:.3f}",
                flush=True,
            )
    reference = next(r for r in rows if r["sampler"] == "ddim" and r["steps"] == p.gen_steps)
    inversion = {t: inversion_convergence(m, p) for t, m in teachers.items() if batchnorm_layers(m)}
    for t, inv in inversion.items():
        print(
            f"bn inversion, {t}: converged at {inv['converged_iters']} steps (profile: {inv['profile_iters']})"
        )
    record = {
        "profile": p.name,
        "reference": {"sampler": "ddim", "steps": p.gen_steps},
        "n_per_class": n_per_class,
        "batch_size": p.gen_batch_size,
        "guidance_scale": p.guidance_scale,
        "rows": rows,
        "bn_inversion": inversion,
        "machine": machine_record(),
        "command": "python -m genqlib.bench solver",
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    _plot(rows, reference, out_path.with_suffix(".png"))
    return record
