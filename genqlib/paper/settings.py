"""Typed per-stage settings of the paper in miniature: one frozen dataclass per stage, composed by a profile.

Each class's defaults are the paper's setting (or its reference's, cited per field); a profile overrides what
its size needs (``genqlib.paper.profiles``: ``ci``, ``mini``, ``paper-smoke``), so adding a profile is one
``Profile(...)`` with the stages it changes. ``None`` in ``n_calib``/``iters`` means the profile's own
``calib_size``/``recon_iters``; ``resolve`` applies that rule in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

Bits = tuple[int, int]  # (weight bits, activation bits)


@dataclass(frozen=True)
class BNInversion:
    """BN-statistics inversion (ZeroQ, Genie-D): Adam steps per batch and learning rate.

    ZeroQ's 500 and 0.5 (ZeroQ classification/distill_data.py, ``range(500)``, ``Adam(lr=0.5)``); 0.5 on the
    sigmoid logits also beat 0.05-0.2 on the resnet teacher. mini ran 200 steps before; ``python -m genqlib.bench
    solver`` showed the loss still falling fast there (resnet 4.13 at 200, 2.17 at 400, 0.84 at 2,000), which
    judged the baseline before its own objective had settled. The loss still falls after 500 (that bench's
    curve), so 500 is the reference's budget, not a converged one.
    """

    iters: int = 500
    lr: float = 0.5


@dataclass(frozen=True)
class TokenInversion:
    """Style-token (textual inversion) steps, learning rate and batch size.

    paper: GenQ trains 50k iterations (Sec. 5.2); diffusers' textual-inversion example uses an effective
    5e-4 x batch 16 = 8e-3 at 512 px. Batch 8 (not measured here: no SD weights and no GPU in this session;
    lower it if the UNet's activations for the backward pass do not fit). mini: the mini generator
    (6.7M-parameter UNet, 8x8x4 latents) costs 0.3 s per step at batch 64 on 2 idle CPU threads (0.46 s
    measured on 1 thread beside two training jobs), so 1,000 steps take 5-8 min. A 128-dim row fitted to 10-50
    images is a small problem: 1,000 x 64 = 64k (image, noise, t) draws, and Adam at 5e-3 moves each coordinate
    about a quarter of a typical row's std (0.02) per step, so the row can travel far within the budget.
    Notebook 03 plots the loss curve to check that it has flattened. ci: a smoke test (a handful of steps).
    """

    steps: int = 50_000
    lr: float = 5e-3
    batch_size: int = 8


@dataclass(frozen=True)
class PTQGrid:
    """Notebook 04 (Tables 2 and 4): bit widths of the CNN teachers (ViTs run W4A4), calibration images,
    reconstruction iterations per block and seeds. ``headline``: (teacher, bits) pairs, the one width a named
    teacher runs at (others run every width of ``bits``). mini: each teacher at the setting where its
    calibration sources differ beyond seed noise, picked by ``python -m genqlib.bench pilot``
    (figures/bench/pilot.json, "headline"; a test checks that the two agree); the pilot itself holds both widths
    of both teachers. Every cell is a mean over 3 reconstruction seeds. ci: one width and one seed, the same
    code path at half the runs (so the six notebooks stay within CI's 10 minutes)."""

    bits: tuple[Bits, ...] = ((4, 4), (2, 4))
    headline: tuple[tuple[str, Bits], ...] = ()
    n_calib: int | None = None
    iters: int | None = None
    seeds: tuple[int, ...] = (0,)

    def resolved(
        self,
        calib_size: int,
        recon_iters: int,
        bits: Sequence[Sequence[int]] | None = None,
        n_calib: int | None = None,
        iters: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> PTQGrid:
        """The grid a run uses: each given argument replaces its field (``bits`` then holds for every CNN, no
        headline), and the ``None`` of ``n_calib``/``iters`` becomes the profile's ``calib_size``/``recon_iters``."""
        return replace(
            self,
            bits=tuple(tuple(b) for b in bits) if bits is not None else self.bits,
            headline=() if bits is not None else self.headline,
            n_calib=n_calib or self.n_calib or calib_size,
            iters=iters if iters is not None else self.iters if self.iters is not None else recon_iters,
            seeds=tuple(seeds or self.seeds),
        )

    def widths(self, teacher: str) -> list[Bits]:
        """The widths notebook 04 runs a CNN ``teacher`` at: its ``headline`` width if named, else ``bits``."""
        named = dict(self.headline)
        return [tuple(named[teacher])] if teacher in named else [tuple(b) for b in self.bits]


# The analyses notebook 06 can run (Figs. 4-6, Tables 1 and 5, the generator-quantization comparison).
ALL_ANALYSES = (
    "n_synthetic",
    "filter_strength",
    "cross_model",
    "data_scarce",
    "generation_cost",
    "generator_quant",
)
# Fig. 6: no filter, GenQ's default, both stages stronger, and each stage off and strong with the other at 0.3.
FILTER_SWEEP = ((0.0, 0.0), (0.3, 0.3), (0.5, 0.5), (0.0, 0.3), (0.7, 0.3), (0.3, 0.0), (0.3, 0.7))


@dataclass(frozen=True)
class Ablations:
    """Notebook 06 (Figs. 4-6, Tables 1 and 5): every PTQ point at one setting, reconstructed once per seed.

    The paper runs these analyses with Genie-M at W2A4 (the defaults). mini: notebook 04's headline setting for
    the data-sensitive teacher (figures/bench/pilot.json "headline": mobilenet's, computed there; a test checks
    the two agree), BRECQ as in notebook 04, so the points both notebooks (and the pilot) share are measured
    once. ``teacher`` None: the profile's first. ``drops``: Fig. 6's (energy, BN-sensitivity) drop pairs.
    ``shots``: Fig. 4's real images per class. ``cost_images``: Table 1's timed images. ``cross_teachers``:
    Table 5's teachers (None: every teacher of the profile). ``analyses``: which of notebook 06's analyses run.
    """

    teacher: str | None = None
    bits: Bits = (2, 4)
    n_calib: int | None = None
    iters: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    method: str = "genie_m"
    sizes: tuple[int, ...] = (256, 1024, 4096)
    drops: tuple[tuple[float, float], ...] = FILTER_SWEEP
    shots: tuple[int, ...] = (1, 5, 10)
    cost_images: int = 100
    cross_teachers: tuple[str, ...] | None = None
    analyses: tuple[str, ...] = ALL_ANALYSES


@dataclass(frozen=True)
class GeneratorQuant:
    """Generator quantization (``genqlib.quest``): generator widths, images per class of each set, trajectories
    per class and rows kept for calibration, the cap on QuEST's optimizer steps per finetuning stage (AdaRound
    runs 2 iterations per block per step), and the downstream PTQ's reconstruction iterations per block and
    evaluated test images (None: the caller's ``iters`` and the whole test split). The defaults are the paper
    profile's."""

    widths: tuple[Bits, ...] = ((8, 8), (4, 8), (4, 4))
    n_per_class: int = 3
    calib_per_class: int = 2
    calib_rows: int = 1024
    iters: int = 200
    downstream_iters: int | None = None
    downstream_eval: int | None = None


@dataclass(frozen=True)
class QATGrid:
    """Notebook 05 (Table 3): the widths of the grid, and the seeds each QAT row (its PTQ start, GenQ's QAT,
    LSQ) is run with. The paper's Table 3 widths are W4A4 and W3A3; a profile picks widths where its PTQ start
    leaves QAT room (``profiles.py`` says how mini's were chosen)."""

    bits: tuple[Bits, ...] = ((4, 4), (3, 3))
    seeds: tuple[int, ...] = (0,)


STAGES = ("ptq", "qat", "bn_inversion", "token_inversion", "ablations", "generator_quant")


def as_dict(setting: object) -> dict:
    """A stage setting as a plain dict (``headline`` as a mapping), for callers that read settings by key."""
    d = asdict(setting)
    if "headline" in d:
        d["headline"] = dict(d["headline"])
    return d
