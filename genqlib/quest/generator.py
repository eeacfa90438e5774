"""A quantized generator: the UNet (and optionally the text encoder) quantized by plain PTQ or QuEST, wrapped
as a diffusers pipeline whose images carry the quantization config, and cached once built.

``ptq`` (the baseline): ``genqlib.quant``'s quantizers (weights per output channel, activations per tensor,
step sizes from the Lp search) with ``QuantConfig``'s edges: the first layer that runs
(``time_embedding.linear_1``) and the last (``conv_out``) at 8 bits, the UNet's inputs and its output FP;
``ptq_recon="brecq"`` adds a short block reconstruction.

``quest``, as hatchetProject/QuEST's ``txt2img.py`` runs it:

1. every conv/linear weight at ``w_bits`` (``wq_params``: per channel), reconstructed block by block with
   AdaRound and FP activations (``recon_model`` with ``act_quant=False``, ``weight=0.01``, ``b_range=(20, 2)``,
   ``warmup=0.2``, ``iters=cali_iters`` (20,000), batch ``cali_batch_size / 2``), on the calibration rows
   (the FP pipeline's own trajectories);
2. time-aware activation quantizers on every layer input and attention matmul input
   (``genqlib.quest.sites``, ``genqlib.quest.timeaware``), initialised on 8 rows and copied to every timestep;
3. the two finetuning stages (``genqlib.quest.finetune``), which learn the step size of each timestep.

Numbers are simulated ("fake") quantization in float32: nothing here runs a low-bit kernel, so sampling times
measure the cost of simulating quantization on the CPU; ``model_bits`` is what a low-bit deployment would store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from genqlib.infra.atomic import atomic_path
from genqlib.infra.result_cache import digest, entry_path, make_key
from genqlib.quant import (
    ENGINE,
    ActQuantizer,
    QuantModel,
    ReconConfig,
    fp_weight,
    is_quantized,
    quantize,
    reconstruct,
    weight_quantizer,
)
from genqlib.quest.config import GenQuantConfig
from genqlib.quest.finetune import finetune
from genqlib.quest.sites import attach_acts, init_acts
from genqlib.quest.timeaware import TimeAwareQuantizer

QUEST_IMPL = "quest-ref-1"  # enters the cache key of a built quest generator: bump when its numbers move
# txt2img.py recon_model kwargs: weight=0.01, b_range=(20, 2), warmup=0.2 (act_quant=False: FP activations)
QUEST_REG_WEIGHT, QUEST_BETA, QUEST_WARMUP = 0.01, (20.0, 2.0), 0.2

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

CALIB_INIT_ROWS = 256  # rows of the all-timesteps Lp search of plain PTQ (and of the text encoder)


# ---------------------------------------------------------------- quantizing the models


def calibrated_unet(unet: nn.Module, calib: tuple, cfg: GenQuantConfig) -> QuantModel:
    """Plain PTQ: a quantized copy of ``unet`` with every activation step size from the Lp search on the first
    256 rows of ``calib`` (all timesteps together)."""
    qmodel = _unet_structure(unet, calib, cfg)
    init = min(len(calib[0]), CALIB_INIT_ROWS)
    reconstruct(qmodel, unet, calib, ReconConfig(method="nearest", init_size=init, progress=False))
    return qmodel


def quantize_unet(
    unet: nn.Module, calib: tuple, cfg: GenQuantConfig, base: QuantModel | None = None
) -> QuantModel:
    """A quantized copy of ``unet`` calibrated (and, for quest, reconstructed and finetuned) on ``calib``
    (latents, t, emb). ``base`` (ptq only): ``calibrated_unet(unet, calib, cfg)`` already computed (used, not
    copied). The per-stage finetuning logs are kept at ``qmodel.finetune_log``."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        if cfg.method == "quest":
            return quest_unet(unet, calib, cfg)
        qmodel = base if base is not None else calibrated_unet(unet, calib, cfg)
        if cfg.ptq_recon == "brecq":
            recon = ReconConfig(method="brecq", iters=cfg.recon_iters, seed=cfg.seed, progress=False)
            reconstruct(qmodel, unet, calib, recon)
        qmodel.finetune_log = {}
    return qmodel


def quest_unet(unet: nn.Module, calib: tuple, cfg: GenQuantConfig) -> QuantModel:
    """QuEST (module docstring): AdaRound weights, time-aware activation quantizers, two finetuning stages."""
    qmodel = quantize(unet, cfg.weight_config(), example=tuple(a[:2] for a in calib))
    recon = ReconConfig(
        method="brecq",
        iters=cfg.quest_recon_iters,
        batch_size=cfg.quest_recon_batch,
        reg_weight=QUEST_REG_WEIGHT,
        beta=QUEST_BETA,
        warmup=QUEST_WARMUP,
        seed=cfg.seed,
        progress=False,
    )
    rows = len(calib[0]) if cfg.quest_recon_rows is None else min(cfg.quest_recon_rows, len(calib[0]))
    pick = torch.randperm(len(calib[0]), generator=torch.Generator().manual_seed(cfg.seed))[:rows]
    reconstruct(qmodel, unet, tuple(a[pick] for a in calib), recon)
    _quest_acts(qmodel, calib, cfg)
    init_acts(qmodel, calib, cfg.seed)
    qmodel.finetune_log = finetune(qmodel, unet, calib, cfg.max_steps, cfg.seed)
    return qmodel


def _quest_acts(qmodel: QuantModel, calib: tuple, cfg: GenQuantConfig) -> None:
    """The time-aware quantizers for the timesteps present in ``calib``."""
    timesteps = sorted(int(t) for t in calib[1].unique())
    attach_acts(qmodel, calib, timesteps, cfg.a_bits, cfg.act_channel_wise, cfg.sm_bits)


def _unet_structure(unet: nn.Module, calib: tuple, cfg: GenQuantConfig) -> QuantModel:
    """The quantized UNet before calibration."""
    return quantize(unet, cfg.quant_config(), example=tuple(a[:2] for a in calib))


def quantize_text_encoder(pipe, prompts: Sequence[str], cfg: GenQuantConfig) -> QuantModel:
    """The pipeline's text encoder quantized like the UNet and calibrated on the token ids of ``prompts``."""
    ids = _token_ids(pipe, prompts)
    qmodel = _text_structure(pipe, ids, cfg)
    recon = ReconConfig(method="nearest", init_size=CALIB_INIT_ROWS, progress=False)
    reconstruct(qmodel, pipe.text_encoder, ids, recon)
    return qmodel


def _text_structure(pipe, ids: torch.Tensor, cfg: GenQuantConfig) -> QuantModel:
    """The quantized text encoder before calibration."""
    return quantize(pipe.text_encoder, cfg.quant_config(), example=ids[:2])


def _token_ids(pipe, prompts: Sequence[str]) -> torch.Tensor:
    tok = pipe.tokenizer
    return tok(
        list(prompts), padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
    ).input_ids


def model_bits(model: nn.Module) -> dict:
    """Weight storage: quantized weights at their bit width, every other parameter and buffer at 32 bits, the
    quantizers' step sizes and zero points (a few per channel or tensor; per timestep for quest) included.
    AdaRound's rounding variables and floors are not stored: they are what the integer weights already hold.
    ``params``: the model's own parameters (quantizer parameters not counted)."""
    from genqlib.quant import AdaRound, WeightQuantizer

    quantized, overhead, rounding, bits = set(), set(), set(), 0
    for m in model.modules():
        if is_quantized(m):
            w = fp_weight(m)
            quantized.add(id(w))
            bits += w.numel() * weight_quantizer(m).bits
        if isinstance(m, (WeightQuantizer, ActQuantizer, TimeAwareQuantizer)):
            overhead |= {id(p) for p in m.parameters()}
        if isinstance(m, AdaRound):
            rounding |= {id(t) for t in (*m.parameters(), *m.buffers())}
    params = sum(p.numel() for p in model.parameters() if id(p) not in overhead)
    other = sum(p.numel() for p in model.parameters() if id(p) not in quantized | rounding)
    other += sum(b.numel() for b in model.buffers() if id(b) not in rounding)
    total = bits + 32 * other
    return {"params": params, "bits": total, "megabytes": total / 8 / 1e6}


# ---------------------------------------------------------------- the generator and its pipeline


class QuantGenerator:
    """A quantized UNet (and text encoder) with its config and the id its images carry: the FP generator's id,
    the config's tag and a digest of the quantized state, so two different builds never share a set."""

    def __init__(self, unet: QuantModel, cfg: GenQuantConfig, base_id: str, text: QuantModel | None = None):
        self.unet, self.cfg, self.base_id, self.text = unet, cfg, base_id, text
        self.digest = digest(*(m for m in (unet, text) if m is not None))[:16]

    @property
    def id(self) -> str:
        return f"{self.base_id}+{self.cfg.tag}@{self.digest}"

    def record(self) -> dict:
        """What ``generate()`` writes into a set's key as ``generator_quant``."""
        return {"base": self.base_id, **self.cfg.record(), "digest": self.digest, "engine": ENGINE}


def quantized_pipeline(pipe: StableDiffusionPipeline, gen: QuantGenerator) -> StableDiffusionPipeline:
    """A pipeline of ``pipe``'s class sharing its VAE, tokenizer and scheduler, with the quantized UNet (and text
    encoder); ``pipeline_id`` of it is ``gen.id`` and ``generate()`` records ``gen.record()`` in its key."""
    comps = dict(pipe.components)
    comps["unet"] = gen.unet.model
    if gen.text is not None:
        comps["text_encoder"] = gen.text.model
    # as the source was built (load_pipeline: False), so diffusers does not warn about the missing checker
    if "requires_safety_checker" in pipe.config:
        comps["requires_safety_checker"] = pipe.config.requires_safety_checker
    out = type(pipe)(**comps)
    out.register_to_config(_name_or_path=gen.id)
    out.set_progress_bar_config(disable=True)
    out.genq_quant = gen.record()
    out.to(pipe.device)
    return out


def build_generator(
    pipe: StableDiffusionPipeline,
    cfg: GenQuantConfig,
    calib: tuple,
    prompts: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    base: Callable[[], QuantModel] | None = None,
) -> tuple[StableDiffusionPipeline, QuantGenerator, float]:
    """``(quantized pipeline, QuantGenerator, seconds to build)`` for ``cfg``; with ``cache_dir`` the built
    state is saved there (keyed by the FP generator, the config, the calibration data and ENGINE) and reused,
    with the seconds of the build that made it. ``base``: returns a fresh ``calibrated_unet`` for ``cfg``
    (e.g. a copy of one shared by ptq and quest)."""
    from genqlib.generate import pipeline_id

    base_id = pipeline_id(pipe)
    path = _cache_path(cache_dir, base_id, cfg, calib) if cache_dir is not None else None
    if path is not None and path.is_file():
        unet, text, seconds = _load_built(path, pipe, cfg, calib, prompts)
    else:
        start = time.perf_counter()
        unet = quantize_unet(pipe.unet, calib, cfg, base() if base is not None else None)
        text = quantize_text_encoder(pipe, prompts, cfg) if cfg.text_encoder else None
        seconds = time.perf_counter() - start
        if path is not None:
            _save_built(path, unet, text, seconds)
    gen = QuantGenerator(unet, cfg, base_id, text)
    return quantized_pipeline(pipe, gen), gen, seconds


def _cache_path(cache_dir: str | Path, base_id: str, cfg: GenQuantConfig, calib: tuple) -> Path:
    """Where the built state of ``cfg`` on ``calib`` for the FP generator ``base_id`` is cached."""
    key = make_key({**asdict(cfg), "engine": ENGINE, "quest": QUEST_IMPL}, base=base_id, calib=digest(*calib))
    return entry_path(cache_dir, cfg.tag, key, suffix=".pt")


def _load_built(
    path: Path, pipe, cfg: GenQuantConfig, calib: tuple, prompts: Sequence[str]
) -> tuple[QuantModel, QuantModel | None, float]:
    """The cached quantized UNet and text encoder (rebuilt as structures, then their saved state) and the
    seconds their build took."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if cfg.method == "quest":
        unet = quantize(pipe.unet, cfg.weight_config(), example=tuple(a[:2] for a in calib))
        for name in unet.layer_names:  # the hard AdaRound rounding the state holds
            if f"model.{name}.parametrizations.weight.0.adaround.v" in saved["unet"]:
                layer = unet.model.get_submodule(name)
                weight_quantizer(layer).start_adaround(fp_weight(layer)).harden()
        _quest_acts(unet, calib, cfg)
    else:
        unet = _unet_structure(pipe.unet, calib, cfg)
    unet.load_state_dict(saved["unet"])
    unet.finetune_log = saved.get("finetune_log", {})  # caches written before the log was saved have none
    text = None
    if cfg.text_encoder:
        text = _text_structure(pipe, _token_ids(pipe, prompts), cfg)
        text.load_state_dict(saved["text"])
    return unet, text, saved["seconds"]


def _save_built(path: Path, unet: QuantModel, text: QuantModel | None, seconds: float) -> None:
    """Write the built state crash-safe: a stopped build leaves no half-written cache file."""
    state = {"unet": unet.state_dict(), "seconds": seconds, "finetune_log": getattr(unet, "finetune_log", {})}
    if text is not None:
        state["text"] = text.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
