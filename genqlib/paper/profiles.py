"""Profiles: one code path at four sizes (``ci``, ``mini``, ``paper``, ``paper-smoke``), every default in one place.

A notebook takes ``profile`` as a papermill parameter and reads its numbers from ``get_profile(name)``;
a cell's own parameters override single fields through ``dataclasses.replace`` (see ``Profile.with_``).
Each profile composes the typed settings of the stages (``genqlib.paper.settings``: notebook 04's PTQ grid,
notebook 05's QAT seeds, BN inversion, style-token inversion, notebook 06's ablations, generator quantization),
each defaulting to the paper's, as ``profile.ptq``, ``profile.ablations``, ...; GenQ's filter drops are
``FILTER_DROPS``.

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

from genqlib.datasets import DataSpec
from genqlib.generate import Sampling
from genqlib.infra.paths import REPO_ROOT
from genqlib.paper.settings import (
    ALL_ANALYSES,
    STAGES,
    Ablations,
    BNInversion,
    GeneratorQuant,
    PTQGrid,
    QATGrid,
    TokenInversion,
    as_dict,
)
from genqlib.zoo import MINI_GENERATOR
from genqlib.zoo.smoke import SMOKE_CLASSES


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
    # the stages' settings (genqlib.paper.settings); each default is the paper's
    bn_inversion: BNInversion = BNInversion()
    token_inversion: TokenInversion = TokenInversion()
    ptq: PTQGrid = PTQGrid()
    qat: QATGrid = QATGrid()
    ablations: Ablations = Ablations()
    generator_quant: GeneratorQuant = GeneratorQuant()

    @property
    def data(self) -> DataSpec:
        """The real data this profile reads (``genqlib.datasets``)."""
        return DataSpec(
            self.dataset, self.image_size, self.classes, self.eval_size, self.imagenet_dir, self.seed
        )

    @property
    def sampling(self) -> Sampling:
        """How this profile samples synthetic sets (``genqlib.generate``)."""
        return Sampling(self.guidance_scale, self.gen_steps, self.seed, self.gen_batch_size)

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
        # ci exercises every code path at the least work (the six notebooks within CI's 10 minutes): one PTQ
        # width and seed; one CNN and one ViT in Table 5, one shot count (4 + 2 runs instead of 9 + 4); for the
        # generator comparison one width, 8 calibration rows (at ci's seed they hold all four timestep groups,
        # so every group is calibrated and finetuned), one finetuning step per stage, 4 reconstruction
        # iterations per block and 200 test images: under a minute of one CPU thread.
        bn_inversion=BNInversion(iters=20),
        token_inversion=TokenInversion(steps=4, batch_size=8),
        ptq=PTQGrid(bits=((2, 2),)),
        ablations=Ablations(
            teacher="mobilenet",
            bits=(2, 2),
            seeds=(0,),
            method="brecq",
            sizes=(16, 64),
            drops=((0.0, 0.0), (0.3, 0.3), (0.7, 0.3), (0.3, 0.7)),
            shots=(1,),
            cost_images=10,
            cross_teachers=("mobilenet", "vit"),
        ),
        generator_quant=GeneratorQuant(
            widths=((4, 4),),
            n_per_class=2,
            calib_per_class=1,
            calib_rows=8,
            iters=1,
            downstream_iters=4,
            downstream_eval=200,
        ),
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
        recon_iters=300,  # notebook 04's setting (ptq below), and so 05's PTQ start
        recon_batch_size=32,
        recon_lr_round=1e-2,
        qat_epochs=5,
        token_inversion=TokenInversion(steps=1000, batch_size=64),
        ptq=PTQGrid(
            bits=((2, 2), (4, 2)),
            headline=(("resnet", (2, 2)), ("mobilenet", (2, 2))),
            n_calib=256,
            iters=300,
            seeds=(0, 1, 2),
        ),
        # Widths where the PTQ start leaves QAT room (>= 3 points below FP, table3.ROOM), chosen from the
        # PTQ starts alone (engine 3, mini run of 2026-12-07): W4A4 leaves 0.0 (resnet) and 0.9 (mobilenet),
        # W3A3 0.8 and 5.7, W2A2 (notebook 04's BRECQ cells) 5.4 and 60: W2A2 for both teachers, and the
        # paper's W3A3 beside it, where mobilenet has room and resnet shows the no-room case.
        qat=QATGrid(bits=((3, 3), (2, 2)), seeds=(0, 1, 2)),
        # mini leaves generator quantization (QuEST) to its own bench, ``python -m genqlib.paper.generator_quant --profile
        # mini`` (figures/bench/quest_mini.json, which notebook 06 shows): about 8 minutes on 2 cores, which
        # would take the whole mini run past its 60 minutes, for one comparison of generators.
        ablations=Ablations(
            teacher="mobilenet",
            bits=(2, 2),
            n_calib=256,
            iters=300,
            method="brecq",
            sizes=(64, 256, 1024),
            analyses=tuple(a for a in ALL_ANALYSES if a != "generator_quant"),
        ),
        # the setting of figures/bench/quest_mini.json (about 8 min on 2 cores in one-thread workers, cached
        # under runs/gen_quant): W4A8 and W4A4 only (W8A8 left out for CPU time), 400 images per generator, 4
        # trajectories per class (at 10 sampler steps that is 800 rows, all kept under the 1,024 cap; the record
        # says how many were used) and 100 finetuning iterations per stage. Deviation: QuEST's reference
        # finetunes 200 + 200 iterations (the paper profile's); the CPU budget halves them.
        generator_quant=GeneratorQuant(
            widths=((4, 8), (4, 4)), n_per_class=40, calib_per_class=4, iters=100, downstream_iters=500
        ),
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
        bn_inversion=BNInversion(iters=4),
        token_inversion=TokenInversion(steps=4, batch_size=4),
        ablations=Ablations(
            seeds=(0, 1),
            sizes=(8, 16),
            drops=((0.0, 0.0), (0.3, 0.3), (0.5, 0.3)),
            shots=(1,),
            cost_images=4,
        ),
        generator_quant=GeneratorQuant(
            widths=((4, 4),), n_per_class=2, calib_per_class=1, calib_rows=16, iters=1
        ),
    )


# GenQ's default filter: drop 30% by energy, then 30% by BN sensitivity (CNNs) or patch entropy (ViTs).
FILTER_DROPS = (0.3, 0.3)


def stage_defaults(profile: str | Profile, stage: str) -> dict:
    """The profile's setting of ``stage`` (one of ``STAGES``) as a plain dict, for callers that read settings
    by key (``genqlib.quest``); the typed setting is ``get_profile(profile).<stage>``. An unknown stage raises,
    naming the known ones."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(STAGES)}")
    return as_dict(getattr(get_profile(profile), stage))


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
