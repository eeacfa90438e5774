"""Diagnostics of a mini generator that depend on no downstream (PTQ) result: ``python -m genqlib.bench
generator [--generator NAME_OR_FOLDER] [--vae FOLDER]``.

Generates ``n_per_class`` label-prompt images per class at the profile's defaults (guidance, sampler steps,
seed), measures them against a class-balanced sample of the private split in the teacher's eyes, and the VAE
round trip on the public pool's held-back tail (``genqlib.generator_report``); writes the record to
figures/bench/generator.json and the side-by-side figure beside it. ``--vae`` measures a bare VAE folder
(the first stage of ``python -m genqlib.zoo.train_generator --vae-only``) and generates nothing: how the
VAE designs were compared before one was chosen.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from genqlib.bench import write_record
from genqlib.datasets import class_names, run_classes
from genqlib.generate import folder_id, generate, load_pipeline
from genqlib.generator_quality import (
    detail_summary,
    generator_diagnostics,
    latent_noise,
    vae_fidelity,
    vae_round_trip,
)
from genqlib.generator_report import HELD_BACK, held_back_public, real_private, side_by_side
from genqlib.infra.machine import machine_record
from genqlib.infra.paths import relative_to_repo
from genqlib.paper.plots import save
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.zoo import load_teacher
from genqlib.zoo.generators import generator_folder

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "generator.json"


def _seen_held_back(folder: Path) -> bool | None:
    """Whether the generator trained on the held-back images (its recipe held back fewer), if recorded."""
    record = folder / "training.json"
    if not record.is_file():
        return None
    return json.loads(record.read_text())["recipe"].get("holdout", 0) < HELD_BACK


def sampling_gflop(latent_channels: int, latent_size: int, steps: int, guidance: bool = True) -> dict:
    """Floating-point work of one generated image with the mini UNet on these latents (counted by
    ``torch.utils.flop_counter``, not timed: the shared machine's load does not change it): ``steps`` UNet
    evaluations, doubled by classifier-free guidance, plus one decode by a VAE of that latent shape."""
    from torch.utils.flop_counter import FlopCounterMode

    from genqlib.zoo import mini_sd

    unet = mini_sd.build_unet(latent_channels, latent_size).eval()
    vae = mini_sd.build_vae(latent_channels, latent_size).eval()
    latents = torch.zeros(1, latent_channels, latent_size, latent_size)
    context = torch.zeros(1, mini_sd.MAX_TOKENS, mini_sd.TEXT_DIM)
    with torch.no_grad(), FlopCounterMode(display=False) as unet_count:
        unet(latents, torch.tensor([500]), context)
    with torch.no_grad(), FlopCounterMode(display=False) as decode_count:
        vae.decode(latents)
    unet_gflop, decode_gflop = unet_count.get_total_flops() / 1e9, decode_count.get_total_flops() / 1e9
    evaluations = steps * (2 if guidance else 1)
    return {
        "unet_gflop_per_evaluation": round(unet_gflop, 4),
        "decode_gflop": round(decode_gflop, 4),
        "unet_evaluations": evaluations,
        "gflop_per_image": round(evaluations * unet_gflop + decode_gflop, 3),
    }


def _recipe(vae_folder: Path) -> dict | None:
    """The recipe recorded beside the VAE (``train_generator --vae-only``) or by the pipeline holding it."""
    for record in (vae_folder / "training.json", vae_folder.parent / "training.json"):
        if record.is_file():
            return json.loads(record.read_text())["recipe"]
    return None


def bench_vae(vae_folder: str | Path, out_path: str | Path, profile: str = "mini") -> dict:
    """VAE round-trip fidelity and detail of a bare VAE folder on the held-back public images."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_folder).eval()
    held, _ = held_back_public()
    seconds = Path(vae_folder) / "seconds.json"
    record = {
        "vae": relative_to_repo(Path(vae_folder)),
        "config": {k: vae.config[k] for k in ("latent_channels", "block_out_channels")},
        "latent_shape": list(vae.encode(held[:1].new_zeros(1, 1, 32, 32)).latent_dist.mean.shape[1:]),
        "fidelity": vae_fidelity(vae, held),
        "latent_noise": latent_noise(vae, held),
        "held_back": detail_summary(held),
        "training": json.loads(seconds.read_text()) if seconds.is_file() else None,
        "recipe": _recipe(Path(vae_folder)),
        "machine": machine_record(),
        "command": f"python -m genqlib.bench generator --vae {relative_to_repo(Path(vae_folder))}",
    }
    p = get_profile(profile)
    shape = record["latent_shape"]
    record["sampling_cost"] = {"steps": p.gen_steps, **sampling_gflop(shape[0], shape[1], p.gen_steps)}
    record["round_trip_hf_ratio"] = (
        record["fidelity"]["round_trip_hf_share"] / record["held_back"]["hf_share"]
    )
    return write_record(out_path, record)


def bench_generator(
    out_path: str | Path = DEFAULT_OUT,
    generator: str | Path | None = None,
    vae: str | Path | None = None,
    teacher: str = "resnet",
    n_per_class: int = 100,
    n_real: int = 1000,
    profile: str = "mini",
) -> dict:
    """The generator's diagnostics (``genqlib.generator_quality.generator_diagnostics``) as JSON and figure."""
    if vae is not None:
        return bench_vae(vae, out_path)
    p = get_profile(profile)
    folder = Path(generator_folder(generator or p.generator))
    pipe = load_pipeline(folder)
    names, classes = class_names(p), list(run_classes(p))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        kwargs = {"guidance_scale": p.guidance_scale, "steps": p.gen_steps, "seed": p.seed}
        synthetic = generate(
            pipe, classes, n_per_class, out=Path(tmp), batch_size=p.gen_batch_size, progress=False,
            class_names=names, **kwargs,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        images, labels = synthetic.images(size=28, channels=1), synthetic.labels
    held, held_labels = held_back_public()
    real, real_labels = real_private(n_real, p.seed)
    model = load_teacher(teacher)
    record = generator_diagnostics(
        pipe.vae, model, (images, labels), (real, real_labels), (held, held_labels)
    )
    record |= {
        "generator": folder_id(folder),
        "generator_folder": relative_to_repo(folder),
        "held_back_seen_in_training": _seen_held_back(folder),
        "teacher": teacher,
        "generation": {
            **kwargs,
            "n_per_class": n_per_class,
            "prompts": "label",
            "seconds": round(seconds, 1),
        },
        "n_real": n_real,
        "sampling_cost": sampling_gflop(
            pipe.unet.config.in_channels, pipe.unet.config.sample_size, p.gen_steps
        ),
        "machine": machine_record(),
        "command": "python -m genqlib.bench generator" + (f" --generator {generator}" if generator else ""),
    }
    fig = side_by_side(held, vae_round_trip(pipe.vae, held), images, held_labels, labels, names)
    out_path = Path(out_path).resolve()  # a relative --out is relative to the working folder
    record["figure"] = relative_to_repo(save(fig, out_path.parent, out_path.stem))
    return write_record(out_path, record)
