"""Profiles: one code path at four sizes (``ci``, ``mini``, ``paper``, ``paper-smoke``), every default in one place.

A notebook takes ``profile`` as a papermill parameter and reads its numbers from ``get_profile(name)``;
a cell's own parameters override single fields through ``dataclasses.replace`` (see ``Profile.with_``).
The defaults of single stages (notebook 04's PTQ grid, BN inversion, style-token inversion, notebook 06's
ablations, generator quantization) are tables by profile name below, read through ``stage_defaults``; GenQ's filter drops are ``FILTER_DROPS``.

``paper`` and ``paper-smoke`` run the same code: ``hf:``/``timm:`` classifiers (``genqlib.zoo``), an ImageNet
folder (``genqlib.imagenet``), a StableDiffusionPipeline. Paths of the ``paper`` run come from environment
variables: ``GENQ_IMAGENET`` (the ImageNet folder), ``GENQ_SD`` (a Stable Diffusion folder or hub id; default the
v1.5 hub id) and ``GENQ_PAPER_TEACHERS`` (comma-separated ``hf:``/``timm:`` names). ``paper-smoke`` builds its own
tiny random-weight world (pipeline, classifiers, a folder of JPEGs) under ``$GENQ_SMOKE_DIR`` (default
``runs/paper-smoke-world``) the first time it is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MINI_GENERATOR = Path(__file__).resolve().parent / "zoo" / "generator"


@dataclass(frozen=True)
class Profile:
    """Sizes and sources for one run of the pipeline.

    ``eval_size=None`` means the whole evaluation set. ``allow_download`` is False wherever a run must
    stay offline (``ci``, ``mini``).
    """

    name: str
    dataset: str  # "fashion_mnist" or "imagenet"
    teachers: tuple[str, ...]
    generator: str  # a folder or hub id that StableDiffusionPipeline.from_pretrained accepts
    eval_size: int | None
    image_size: int
    image_channels: int  # what the classifiers take: 1 (Fashion-MNIST) or 3 (ImageNet)
    n_per_class: int  # synthetic images generated per class
    gen_steps: int
    gen_batch_size: int
    guidance_scale: float = 3.5
    calib_size: int = 1024
    recon_iters: int = 20_000
    recon_batch_size: int = 32
    # AdaRound's rounding lr. The paper's 1e-3 suits 20,000 iterations per block; the short mini/ci schedules
    # use 1e-2 so the soft rounding can reach hard 0/1 decisions (chosen from the calibration loss, not test data).
    recon_lr_round: float = 1e-3
    qat_epochs: int = 10
    seed: int = 0
    allow_download: bool = False
    imagenet_dir: str | None = None  # None: $GENQ_IMAGENET (imagenet profiles)
    # class indices the run generates, calibrates and evaluates on (None: every class of the dataset); the
    # classifiers keep their full label space (1,000 ImageNet classes) either way
    classes: tuple[int, ...] | None = None
    # figures/ holds the mini results the README quotes; other profiles write beside them, never over them
    figures_dir: Path = field(default=REPO_ROOT / "figures")
    work_dir: Path = field(default=REPO_ROOT / "runs")  # synthetic sets, caches, checkpoints (not committed)

    def with_(self, **overrides: object) -> Profile:
        """A copy with some fields replaced; unknown field names raise a ValueError naming them."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown profile field(s) {unknown}; known fields: {sorted(known)}")
        return replace(self, **overrides)


SD_V15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# The paper's classifiers from transformers (hub ids; a local folder works too: "hf:/path/to/folder").
# MobileNetV2 and ResNet-18 are timm's ("timm:mobilenetv2_100", "timm:resnet18") where timm imports.
PAPER_TEACHERS = (
    "hf:microsoft/resnet-50",
    "hf:google/vit-base-patch16-224",
    "hf:facebook/deit-base-patch16-224",
    "hf:microsoft/swin-base-patch4-window7-224",
)


def _paper_from_env(profile: Profile) -> Profile:
    """The ``paper`` profile with ``GENQ_SD``, ``GENQ_PAPER_TEACHERS`` and ``GENQ_IMAGENET`` applied."""
    teachers = os.environ.get("GENQ_PAPER_TEACHERS")
    return profile.with_(
        generator=os.environ.get("GENQ_SD") or profile.generator,
        teachers=tuple(t.strip() for t in teachers.split(",") if t.strip()) if teachers else profile.teachers,
        imagenet_dir=os.environ.get("GENQ_IMAGENET") or profile.imagenet_dir,
    )


PROFILES = {
    "ci": Profile(
        name="ci",
        dataset="fashion_mnist",
        teachers=("resnet", "mobilenet", "vit"),
        generator=str(MINI_GENERATOR),
        eval_size=1000,
        image_size=28,
        image_channels=1,
        n_per_class=4,
        gen_steps=4,
        gen_batch_size=20,
        calib_size=64,
        recon_iters=20,
        recon_batch_size=16,
        recon_lr_round=1e-2,
        qat_epochs=1,
        figures_dir=REPO_ROOT / "figures" / "ci",
    ),
    "mini": Profile(
        name="mini",
        dataset="fashion_mnist",
        teachers=("resnet", "mobilenet", "vit"),
        generator=str(MINI_GENERATOR),
        eval_size=None,
        image_size=28,
        image_channels=1,
        n_per_class=210,  # 2,100 images: after the default 0.3/0.3 filter (keeps 49%) still >= 1,024 per teacher
        # DDIM at 10 steps: about the class fidelity of 20 steps on the same seeds (figures/bench/solver.json) at
        # twice the images per second; the pilot at 20 steps (figures/bench/pilot-steps20.json) shows what the
        # steps change downstream. The paper names no step count; the paper profile keeps 50.
        gen_steps=10,
        gen_batch_size=100,
        calib_size=1024,
        recon_iters=300,  # notebook 04's setting (genqlib.profiles.PTQ), and so 05's PTQ start
        recon_batch_size=32,
        recon_lr_round=1e-2,
        qat_epochs=5,
    ),
    "paper": Profile(
        name="paper",
        dataset="imagenet",
        teachers=PAPER_TEACHERS,
        generator=SD_V15,
        eval_size=None,  # the 50,000 val images: 39 GB of float32 at 256 px, see docs/REPRODUCING.md
        image_size=256,  # the stored canvas; each classifier resizes and crops it its own way (224 inputs)
        image_channels=3,
        n_per_class=3,  # 3,000 images: after the 0.3/0.3 filter (keeps 49%) >= 1,024 (GenQ generates 2x)
        gen_steps=50,
        gen_batch_size=32,
        calib_size=1024,
        recon_iters=20_000,
        recon_batch_size=32,
        qat_epochs=10,
        allow_download=True,
        figures_dir=REPO_ROOT / "figures" / "paper",
    ),
}
SMOKE_CLASSES = (1, 207, 409, 817)  # goldfish, golden retriever, analog clock, sports car


def smoke_root() -> Path:
    """Where ``paper-smoke`` keeps its built world: ``$GENQ_SMOKE_DIR`` or ``runs/paper-smoke-world``."""
    return Path(os.environ.get("GENQ_SMOKE_DIR") or REPO_ROOT / "runs" / "paper-smoke-world")


def paper_smoke_profile() -> Profile:
    """The paper code path at CI size: a tiny random-weight RGB StableDiffusionPipeline, small random-weight
    ``transformers`` ResNet and ViT (``hf:`` folders), an ImageNet-style folder of JPEGs; 4 of the 1,000
    classes. Everything is built from configs by ``genqlib.zoo.smoke`` (no network)."""
    root = smoke_root()
    return Profile(
        name="paper-smoke",
        dataset="imagenet",
        teachers=(f"hf:{root / 'hf-resnet'}", f"hf:{root / 'hf-vit'}"),
        generator=str(root / "pipeline"),
        eval_size=None,
        image_size=32,
        image_channels=3,
        n_per_class=8,
        gen_steps=2,
        gen_batch_size=32,
        calib_size=16,
        recon_iters=4,
        recon_batch_size=8,
        recon_lr_round=1e-2,
        qat_epochs=1,
        imagenet_dir=str(root / "imagenet"),
        classes=SMOKE_CLASSES,
        figures_dir=REPO_ROOT / "figures" / "paper-smoke",
        work_dir=REPO_ROOT / "runs" / "paper-smoke",
    )


# GenQ's default filter: drop 30% by energy, then 30% by BN sensitivity (CNNs) or patch entropy (ViTs).
FILTER_DROPS = (0.3, 0.3)

# BN-inversion Adam steps per batch and learning rate: ZeroQ's 500 and 0.5 (ZeroQ
# classification/distill_data.py, ``range(500)``, ``Adam(lr=0.5)``); 0.5 on the sigmoid logits also beat
# 0.05-0.2 on the resnet teacher. mini ran 200 steps before; ``python -m genqlib.bench solver`` showed the loss
# still falling fast there (resnet 4.13 at 200, 2.17 at 400, 0.84 at 2,000), which judged the baseline before its
# own objective had settled. The loss still falls after 500 (that bench's curve), so 500 is the reference's
# budget, not a converged one.
BN_INVERSION = {
    "ci": {"iters": 20, "lr": 0.5},
    "mini": {"iters": 500, "lr": 0.5},
    "paper": {"iters": 500, "lr": 0.5},
    "paper-smoke": {"iters": 4, "lr": 0.5},
}

# Style-token (textual inversion) steps, learning rate and batch size.
# ci: a smoke test (a handful of steps).
# mini: the mini generator (6.7M-parameter UNet, 8x8x4 latents) costs 0.3 s per step at batch 64 on 2 idle
#   CPU threads (0.46 s measured on 1 thread beside two training jobs), so 1,000 steps take 5-8 min. A 128-dim
#   row fitted to 10-50 images is a small problem: 1,000 x 64 = 64k (image, noise, t) draws, and Adam at
#   5e-3 moves each coordinate about a quarter of a typical row's std (0.02) per step, so the row can travel
#   far within the budget. Notebook 03 plots the loss curve to check that it has flattened.
# paper: GenQ trains 50k iterations (Sec. 5.2); diffusers' textual-inversion example uses an effective
#   5e-4 x batch 16 = 8e-3 at 512 px. Batch 8 (not measured here: no SD weights and no GPU in this session;
#   lower it if the UNet's activations for the backward pass do not fit).
TOKEN_INVERSION: dict[str, dict[str, float | int]] = {
    "ci": {"steps": 4, "lr": 5e-3, "batch_size": 8},
    "mini": {"steps": 1000, "lr": 5e-3, "batch_size": 64},
    "paper": {"steps": 50_000, "lr": 5e-3, "batch_size": 8},
    "paper-smoke": {"steps": 4, "lr": 5e-3, "batch_size": 4},
}

# Notebook 04 (Tables 2 and 4): bit widths of the CNN teachers (ViTs run W4A4), calibration images,
# reconstruction iterations per block and seeds. ``headline``: the one width a named teacher runs at (others run
# every width of ``bits``). mini: each teacher at the setting where its calibration sources differ beyond seed
# noise, picked by ``python -m genqlib.bench pilot`` (figures/bench/pilot.json, "headline"; a test checks that
# the two agree); the pilot itself holds both widths of both teachers. Every cell is a mean over 3
# reconstruction seeds. ci: one width and one seed, the same code path at half the runs (so the six notebooks
# stay within CI's 10 minutes).
PTQ: dict[str, dict] = {
    "ci": {"bits": [(2, 2)], "headline": {}, "n_calib": None, "iters": None, "seeds": [0]},
    "mini": {
        "bits": [(2, 2), (4, 2)],
        "headline": {"resnet": (2, 2), "mobilenet": (2, 2)},
        "n_calib": 256,
        "iters": 300,
        "seeds": [0, 1, 2],
    },
    "paper-smoke": {"bits": [(4, 4), (2, 4)], "headline": {}, "n_calib": None, "iters": None, "seeds": [0]},
    "paper": {"bits": [(4, 4), (2, 4)], "headline": {}, "n_calib": None, "iters": None, "seeds": [0]},
}


def ptq_widths(grid: dict, teacher: str) -> list[tuple[int, int]]:
    """The (weight, activation) widths notebook 04 runs a CNN ``teacher`` at: its ``headline`` width where the
    grid names one, else every width of ``bits``."""
    if teacher in grid.get("headline", {}):
        return [tuple(grid["headline"][teacher])]
    return [tuple(b) for b in grid["bits"]]


# Notebook 06 (Figs. 4-6, Tables 1 and 5): every PTQ point at one setting, reconstructed once per seed.
# mini: notebook 04's headline setting for the data-sensitive teacher (figures/bench/pilot.json "headline":
# mobilenet's, computed there; a test checks the two agree), BRECQ as in notebook 04,
# so the points both notebooks (and the pilot) share are measured once. The paper runs these analyses with Genie-M at W2A4
# (``paper`` keeps that). ``n_calib``/``iters`` None: the profile's calib_size/recon_iters. ``drops``: Fig. 6's
# (energy, BN-sensitivity) drop pairs, each stage swept with the other at GenQ's default 0.3, plus no filter
# and both stages stronger. ``shots``: Fig. 4's real images per class. ``cost_images``: Table 1's timed images.
# ``cross_teachers``: Table 5's teachers (None: every teacher of the profile). ci runs one CNN and one ViT, one
# shot count and so 4 + 2 runs instead of 9 + 4, the same code paths (to keep the six notebooks within CI's
# 10 minutes).
# ``analyses``: which of notebook 06's analyses run. mini leaves generator quantization (QuEST) to its own
# bench, ``python -m genqlib.quest --profile mini`` (figures/bench/quest_mini.json, which the notebook shows):
# about 8 minutes on 2 cores, which would take the whole mini run past its 60 minutes, for one comparison of
# generators.
ALL_ANALYSES = (
    "n_synthetic",
    "filter_strength",
    "cross_model",
    "data_scarce",
    "generation_cost",
    "generator_quant",
)
# Fig. 6: no filter, GenQ's default, both stages stronger, and each stage off and strong with the other at 0.3.
_SWEEP = [
    (0.0, 0.0),
    (0.3, 0.3),
    (0.5, 0.5),
    (0.0, 0.3),
    (0.7, 0.3),
    (0.3, 0.0),
    (0.3, 0.7),
]
ABLATIONS: dict[str, dict] = {
    "ci": {
        "teacher": "mobilenet",
        "bits": (2, 2),
        "n_calib": None,
        "iters": None,
        "seeds": [0],
        "method": "brecq",
        "sizes": [16, 64],
        "drops": [(0.0, 0.0), (0.3, 0.3), (0.7, 0.3), (0.3, 0.7)],
        "shots": [1],
        "cost_images": 10,
        "cross_teachers": ("mobilenet", "vit"),
        "analyses": ALL_ANALYSES,
    },
    "mini": {
        "teacher": "mobilenet",
        "bits": (2, 2),
        "n_calib": 256,
        "iters": 300,
        "seeds": [0, 1, 2],
        "method": "brecq",
        "sizes": [64, 256, 1024],
        "drops": _SWEEP,
        "shots": [1, 5, 10],
        "cost_images": 100,
        "cross_teachers": None,
        "analyses": tuple(a for a in ALL_ANALYSES if a != "generator_quant"),
    },
    "paper-smoke": {
        "teacher": None,
        "bits": (2, 4),
        "n_calib": None,
        "iters": None,
        "seeds": [0, 1],
        "method": "genie_m",
        "sizes": [8, 16],
        "drops": [(0.0, 0.0), (0.3, 0.3), (0.5, 0.3)],
        "shots": [1],
        "cost_images": 4,
        "cross_teachers": None,
        "analyses": ALL_ANALYSES,
    },
    "paper": {
        "teacher": None,
        "bits": (2, 4),
        "n_calib": None,
        "iters": None,
        "seeds": [0, 1, 2],
        "method": "genie_m",
        "sizes": [256, 1024, 4096],
        "drops": _SWEEP,
        "shots": [1, 5, 10],
        "cost_images": 100,
        "cross_teachers": None,
        "analyses": ALL_ANALYSES,
    },
}

# Generator quantization (``genqlib.quest``): generator widths, images per class of each set, trajectories per
# class and rows kept for calibration, QuEST's finetuning iterations per stage, and the downstream PTQ's
# reconstruction iterations per block and evaluated test images (None: the caller's ``iters`` and the whole
# test split). ``ci`` and ``paper-smoke`` only exercise the code paths: ci keeps one
# width, 8 calibration rows (at ci's seed they hold all four timestep groups, so every group is calibrated
# and finetuned), one finetuning step per stage, 4 reconstruction iterations per block and 200 test images:
# under a minute of one CPU thread. mini is the setting of ``figures/bench/quest_mini.json`` (about 8 min on
# 2 cores in one-thread workers, cached under runs/gen_quant): W4A8 and W4A4 only (W8A8 left out for CPU time),
# 400 images per generator, 4 trajectories per class (at 10 sampler steps that is 800 rows, all kept under the
# 1,024 cap; the record says how many were used) and 100 finetuning iterations per stage. Deviation: QuEST's
# reference finetunes 200 + 200 iterations (``GenQuantConfig``'s default, the paper profile); the CPU budget
# halves them.
GENERATOR_QUANT: dict[str, dict] = {
    "ci": {
        "widths": [(4, 4)],
        "n_per_class": 2,
        "calib_per_class": 1,
        "calib_rows": 8,
        "iters": 1,
        "downstream_iters": 4,
        "downstream_eval": 200,
    },
    "paper-smoke": {
        "widths": [(4, 4)],
        "n_per_class": 2,
        "calib_per_class": 1,
        "calib_rows": 16,
        "iters": 1,
        "downstream_iters": None,
        "downstream_eval": None,
    },
    "mini": {
        "widths": [(4, 8), (4, 4)],
        "n_per_class": 40,
        "calib_per_class": 4,
        "calib_rows": 1024,
        "iters": 100,
        "downstream_iters": 500,
        "downstream_eval": None,
    },
    "paper": {
        "widths": [(8, 8), (4, 8), (4, 4)],
        "n_per_class": 3,
        "calib_per_class": 2,
        "calib_rows": 1024,
        "iters": 200,
        "downstream_iters": None,
        "downstream_eval": None,
    },
}
# Notebook 05 (Table 3): the seeds each QAT row (its PTQ start, GenQ's QAT, LSQ) is run with.
QAT: dict[str, dict] = {
    "ci": {"seeds": [0]},
    "mini": {"seeds": [0, 1, 2]},
    "paper-smoke": {"seeds": [0]},
    "paper": {"seeds": [0]},
}
STAGES = {
    "ptq": PTQ,
    "qat": QAT,
    "bn_inversion": BN_INVERSION,
    "token_inversion": TOKEN_INVERSION,
    "ablations": ABLATIONS,
    "generator_quant": GENERATOR_QUANT,
}


def stage_defaults(profile: str | Profile, stage: str) -> dict:
    """A copy of the defaults of ``stage`` (one of ``STAGES``) for ``profile``; an unknown stage or a profile
    without defaults raises, naming the known ones."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(STAGES)}")
    name = getattr(profile, "name", profile)
    if name not in STAGES[stage]:
        raise ValueError(f"no {stage} defaults for profile {name!r}; known: {sorted(STAGES[stage])}")
    return dict(STAGES[stage][name])


def list_profiles() -> list[str]:
    """Names of the built-in profiles."""
    return [*PROFILES, "paper-smoke"]


def get_profile(name: str | Profile, **overrides: object) -> Profile:
    """The profile called ``name`` (or a Profile passed through), with optional field overrides."""
    if isinstance(name, Profile):
        profile = name
    elif name == "paper-smoke":
        profile = paper_smoke_profile()
        from genqlib.zoo.smoke import ensure_smoke_world

        ensure_smoke_world(smoke_root())
    elif name == "paper":
        profile = _paper_from_env(PROFILES[name])
    elif name in PROFILES:
        profile = PROFILES[name]
    else:
        raise ValueError(f"unknown profile {name!r}; choose one of {list_profiles()}")
    return profile.with_(**overrides) if overrides else profile
