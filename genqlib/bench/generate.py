"""Generation throughput of a mini generator (the profile's, or ``--generator``) at the mini defaults."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from genqlib.bench import write_record
from genqlib.datasets import class_names, run_classes
from genqlib.generate import generate, load_pipeline
from genqlib.infra.machine import machine_record
from genqlib.infra.paths import relative_to_repo
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.zoo.generators import generator_folder

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "generate.json"


def bench_generate(
    out_path: str | Path = DEFAULT_OUT,
    n_per_class: int = 20,
    profile: str = "mini",
    generator: str | Path | None = None,
) -> dict:
    """Images/s and peak resident memory for ``n_per_class`` label-prompt images of every class, made by
    ``generator`` (a committed name or a folder; default the profile's).

    Timing starts after the pipeline is loaded (and after a one-batch warm-up); ``peak_mem_mb`` is the
    process's peak resident set size, model weights included.
    """
    p = get_profile(profile)
    folder = Path(generator_folder(generator or p.generator))
    pipe = load_pipeline(folder)
    with tempfile.TemporaryDirectory() as tmp:
        generate(
            pipe,
            list(run_classes(p)),
            1,
            out=Path(tmp) / "warm",
            steps=p.gen_steps,
            batch_size=p.gen_batch_size,
            progress=False,
            class_names=class_names(p),
        )
        start = time.perf_counter()
        images = generate(
            pipe,
            list(run_classes(p)),
            n_per_class,
            out=Path(tmp) / "run",
            guidance_scale=p.guidance_scale,
            steps=p.gen_steps,
            batch_size=p.gen_batch_size,
            seed=p.seed,
            class_names=class_names(p),
        )
        seconds = time.perf_counter() - start
    record = {
        "profile": p.name,
        "generator_folder": relative_to_repo(folder),
        "images": len(images),
        "batch_size": p.gen_batch_size,
        "steps": p.gen_steps,
        "guidance_scale": p.guidance_scale,
        "seconds": round(seconds, 2),
        "images_per_s": round(len(images) / seconds, 2),
        "seconds_per_1000_images": round(1000 * seconds / len(images), 1),
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine_record(),
        "command": "python -m genqlib.bench generate" + (f" --generator {generator}" if generator else ""),
    }
    return write_record(out_path, record)
