"""Cost of reconstruction for each mini teacher: seconds per 1,000 iterations per block, in total and in the
optimisation loop alone, with peak memory; QDrop at W4A4 on real private-set images at a profile's settings.

The total includes each block's fixed costs (caching the block's inputs and outputs, the step-size search);
the loop figure is what the iteration count multiplies. Threads, CPU model and load are recorded with it.

``iteration_split`` answers where one optimisation step's time goes, for the block with the most quantized
layers: gathering the minibatch, the forward pass and loss, the backward pass, the optimiser steps; and, from
the same steps with the block's activation quantizers switched off, their share, and the FP block's forward
alone (the convolutions' floor).
"""

from __future__ import annotations

import copy
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from genqlib.bench import write_record
from genqlib.datasets import real_split
from genqlib.infra.machine import machine_record
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.quant import ENGINE, QuantConfig, QuantModel, ReconConfig, quantize, reconstruct, reference_for
from genqlib.quant.cache import ByteBudget, TensorCache
from genqlib.quant.capture import (
    BlockInputs,
    block_input,
    capture,
    first_tensor,
    input_bypassed,
    recon_loss,
)
from genqlib.quant.layers import INPUT, fp_weight, is_quantized, weight_quantizer
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "ptq.json"
TEACHERS = ("resnet", "mobilenet", "vit")


def _peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ms_per_step(step, n: int) -> float:
    step()  # warm-up: first-call allocations
    start = time.perf_counter()
    for _ in range(n):
        step()
    return round(1000 * (time.perf_counter() - start) / n, 3)


def iteration_split(
    qmodel: QuantModel, fp_model: nn.Module, calib: torch.Tensor, cfg: ReconConfig, n: int = 50
) -> dict:
    """Milliseconds of one optimisation step of ``cfg`` on the block of ``qmodel`` with the most quantized
    layers, by stage, each including the ones before it: ``gather`` the minibatch, ``forward`` and loss,
    ``forward_backward``, ``step`` (Adam too); then ``forward_backward`` with the block's activation quantizers
    off, and the FP block's forward alone. Runs on a copy: ``qmodel`` is left as it was."""
    qmodel = copy.deepcopy(qmodel)
    cfg = cfg.resolved(qmodel.report.architecture)
    name = max(
        qmodel.blocks, key=lambda b: sum(is_quantized(m) for m in qmodel.model.get_submodule(b).modules())
    )
    block = qmodel.model.get_submodule(name)
    with tempfile.TemporaryDirectory(prefix="genq_bench_") as tmp:
        budget = ByteBudget(cfg.max_cache_mb)
        fp_in, y_fp, x_q = (
            BlockInputs(budget, tmp, "fp"),
            TensorCache(budget, tmp, "y"),
            BlockInputs(budget, tmp, "q"),
        )
        capture(fp_model, fp_model.get_submodule(name), calib, fp_in, y_fp)
        capture(qmodel.model, block, calib, x_q, None)
        layers = [m for m in block.modules() if is_quantized(m)]
        rounders = [weight_quantizer(m).start_adaround(fp_weight(m)) for m in layers]
        acts = [a for a in qmodel.block_acts(name) if a.enabled]
        own = qmodel.act(name, INPUT)
        for a in acts:
            a.step.requires_grad_(True)
            a.drop_prob = cfg.drop_prob if cfg.mixes_inputs else 0.0
        params = [r.v for r in rounders] + [a.step for a in acts]
        opt = torch.optim.Adam(params, lr=cfg.lr_round)

        def batch():
            idx = torch.randperm(len(x_q))[: cfg.batch_size]
            return idx, x_q.x[idx], fp_in.x[idx], y_fp[idx]

        def loss():
            idx, xq, xf, y = batch()
            args, kwargs = x_q.extra(idx, xq.device)
            out = first_tensor(block(block_input(cfg, xq, xf, own), *args, **kwargs))
            return recon_loss(out, y) + cfg.reg_weight * sum(r.regularizer(10.0) for r in rounders)

        def backward():
            opt.zero_grad(set_to_none=True)
            loss().backward()

        def full():
            backward()
            opt.step()

        with input_bypassed(own):
            split = {"block": name, "gather": _ms_per_step(batch, n), "forward": _ms_per_step(loss, n)}
            split["forward_backward"] = _ms_per_step(backward, n)
            split["step"] = _ms_per_step(full, n)
            for a in acts:
                a.enabled = False
            split["forward_backward_without_act_quantizers"] = _ms_per_step(backward, n)
            for m in layers:
                weight_quantizer(m).enabled = False
            with torch.no_grad():
                split["fp_block_forward"] = _ms_per_step(loss, n)
    return split


def bench_teacher(teacher: str, calib: torch.Tensor, recon: ReconConfig) -> dict:
    """One QDrop W4A4 reconstruction of ``teacher``: per-block seconds per 1,000 iterations, and where one
    step of its largest block goes (``iteration_split``)."""
    model = load_teacher(teacher)
    start = time.perf_counter()
    config = QuantConfig(w_bits=4, a_bits=4, reference=reference_for(recon.method))
    qmodel = reconstruct(quantize(model, config), model, calib, recon)
    seconds = time.perf_counter() - start
    blocks = [r for r in qmodel.recon_log if "block" in r]
    loop = sum(r["optimise_seconds"] for r in blocks)
    per_k = 1000 / (recon.iters * len(blocks))
    return {
        "config": qmodel.describe(),
        "blocks": len(blocks),
        "seconds": round(seconds, 2),
        "seconds_per_1k_iters_per_block": round(seconds * per_k, 2),
        "loop_seconds_per_1k_iters_per_block": round(loop * per_k, 2),
        "fixed_seconds_per_block": round((seconds - loop) / len(blocks), 2),
        "step_ms": iteration_split(qmodel, model, calib, recon),
    }


def bench_ptq(
    out_path: str | Path = DEFAULT_OUT, profile: str = "mini", iters: int = 300, calib_size: int = 256
) -> dict:
    """Benchmark every teacher (see the module docstring); writes the JSON record to ``out_path``."""
    p = get_profile(profile)
    calib = real_split(p, "train", n=calib_size, seed=p.seed).images
    recon = ReconConfig(
        method="qdrop", iters=iters, batch_size=p.recon_batch_size, seed=p.seed, progress=False
    )
    rss_before = _peak_rss_mib()
    record = {
        "profile": p.name,
        "method": "qdrop",
        "engine": ENGINE,
        "calib_size": calib_size,
        "iters_per_block": iters,
        "batch_size": p.recon_batch_size,
        "teachers": {t: bench_teacher(t, calib, recon) for t in TEACHERS},
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "peak_rss_before_mib": round(rss_before, 1),
        "machine": machine_record(),
    }
    return write_record(out_path, record)
