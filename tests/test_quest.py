"""Generator quantization (genqlib.quest) on the tiny random-weight pipeline: the time-aware activation
quantizer, selective finetuning, and a quantized generator inside generate()."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict

import numpy as np
import pytest
import torch
from tiny_pipeline import save_tiny_pipeline

from genqlib.fashion_mnist import CLASS_NAMES
from genqlib.generate import generate, load_pipeline, pipeline_id
from genqlib.paper.profiles import get_profile, stage_defaults
from genqlib.quant.quantizer import fake_quant
from genqlib.quest import (
    GenQuantConfig,
    TimeAwareActQuantizer,
    TimeClock,
    attention_layers,
    build_generator,
    calibrated_unet,
    finetune,
    model_bits,
    quantize_unet,
    time_layers,
    timestep_group,
    trajectory_inputs,
)
from genqlib.quest.__main__ import parse_args
from genqlib.store import MANIFEST, RUN_FILE, RunMismatchError

CLASSES = [0, 1]
STEPS = 4


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd")))


@pytest.fixture(scope="module")
def calib(pipe):
    return trajectory_inputs(pipe, CLASSES, 2, steps=STEPS, seed=0, class_names=CLASS_NAMES)


@pytest.fixture(scope="module")
def ptq_start(pipe, calib):
    """The plain-PTQ W4A4 UNet both methods start from (tests use copies of it)."""
    return calibrated_unet(pipe.unet, calib, quest_cfg())


@pytest.fixture(scope="module")
def quest_start(pipe, calib, ptq_start):
    """One quest-quantized UNet, calibrated per group, not finetuned (tests finetune copies of it)."""
    return quantize_unet(pipe.unet, calib, quest_cfg(iters_time=0, iters_attn=0), copy.deepcopy(ptq_start))


def quest_cfg(**kw) -> GenQuantConfig:
    base = {"w_bits": 4, "a_bits": 4, "method": "quest", "iters_time": 2, "iters_attn": 2, "batch_size": 8}
    return GenQuantConfig(**{**base, **kw})


def test_config_records_only_the_settings_its_method_uses():
    ptq = GenQuantConfig(method="ptq").record()
    assert "iters_time" not in ptq and "lr" not in ptq and "recon_iters" not in ptq
    assert GenQuantConfig(method="ptq", ptq_recon="brecq").record()["recon_iters"] == 100
    quest = GenQuantConfig(method="quest").record()
    assert quest["iters_time"] == quest["iters_attn"] == 200 and quest["n_groups"] == 4
    assert GenQuantConfig(w_bits=4, a_bits=8, method="quest", text_encoder=True).tag == "quest-W4A8-te"
    with pytest.raises(ValueError, match="method must be one of"):
        GenQuantConfig(method="qat")
    with pytest.raises(ValueError, match="ptq_recon"):
        GenQuantConfig(ptq_recon="adaround")


def test_every_profile_has_comparison_settings_and_the_cli_reads_pairs():
    from genqlib.paper.profiles import PROFILES, paper_smoke_profile
    from genqlib.paper.settings import GeneratorQuant

    for p in [*PROFILES.values(), paper_smoke_profile()]:  # the dict view quest reads is the typed setting
        assert isinstance(p.generator_quant, GeneratorQuant)
        assert stage_defaults(p, "generator_quant") == asdict(p.generator_quant)
    args = parse_args(["--profile", "ci", "--widths", "4,8", "4,4", "--finetune-iters", "3"])
    assert args.widths == ["4,8", "4,4"] and args.finetune_iters == 3 and args.bits == "2,4"


def test_trajectories_hold_the_guidance_batch_at_every_step(calib):
    latents, t, emb = calib
    # 2 classes x 2 prompts, 4 steps, unconditional + conditional rows each
    assert len(latents) == len(t) == len(emb) == 2 * 2 * STEPS * 2
    assert latents.shape[1:] == (4, 8, 8) and emb.shape[1:] == (77, 32)
    assert len(t.unique()) == STEPS


def test_timestep_groups_split_the_training_range():
    assert timestep_group(torch.tensor([0, 249, 250, 999]), 4).tolist() == [0, 0, 1, 3]
    clock = TimeClock(4)
    with pytest.raises(ValueError, match="spans timestep groups"):
        clock.set(torch.tensor([10, 900]))


def test_time_aware_quantizer_uses_the_step_of_the_timestep_it_runs_at():
    clock = TimeClock(4)
    q = TimeAwareActQuantizer(4, clock)
    steps = torch.tensor([0.05, 0.1, 0.2, 0.4])
    q.group_step.data.copy_(steps)
    q.group_signed.fill_(True)
    q.group_calibrated.fill_(True)
    x = torch.randn(3, 16)
    for t, g in ((5, 0), (400, 1), (600, 2), (999, 3)):
        clock.set(torch.tensor([t, t]))
        assert torch.equal(q(x), fake_quant(x, steps[g], 0.0, -8, 7))
    clock.group = None
    with pytest.raises(RuntimeError, match="no timestep group"):
        q(x)


def test_quest_unet_reads_the_timestep_and_calibrates_each_group(quest_start, calib):
    qmodel = copy.deepcopy(quest_start)
    acts = list(qmodel.acts.values())
    assert acts and all(isinstance(q, TimeAwareActQuantizer) for q in acts)
    present = timestep_group(calib[1], 4).unique()
    assert all(bool(q.group_calibrated[present].all()) for q in acts)
    # steps differ between groups somewhere: the groups were calibrated on their own rows
    assert any(len(q.group_step[present].unique()) > 1 for q in acts)
    rows = (calib[0][:2], torch.tensor([900, 900]), calib[2][:2])
    with torch.no_grad():
        qmodel(*rows)
    assert qmodel.clock.group == 3
    # a group's step only acts at its own timesteps
    q = acts[len(acts) // 2]
    with torch.no_grad():
        early = qmodel(calib[0][:2], torch.tensor([10, 10]), calib[2][:2])
        late = qmodel(*rows)
        q.group_step.data[3] *= 50
        assert torch.equal(qmodel(calib[0][:2], torch.tensor([10, 10]), calib[2][:2]), early)
        assert not torch.equal(qmodel(*rows), late)


@pytest.mark.parametrize("stage", ["time", "attention"])
def test_finetuning_changes_only_the_selected_layers(pipe, calib, quest_start, stage):
    cfg = quest_cfg(iters_time=0, iters_attn=0)
    qmodel = copy.deepcopy(quest_start)
    layers = time_layers(qmodel) if stage == "time" else attention_layers(qmodel)
    assert layers
    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    losses = finetune(qmodel, pipe.unet, calib, layers, 5, cfg, cfg.n_groups)
    assert len(losses) == 5 and all(np.isfinite(losses))
    changed = {k for k, v in qmodel.state_dict().items() if not torch.equal(v, before[k])}
    allowed = set()
    for name in layers:
        allowed |= {f"model.{name}.parametrizations.weight.original", f"model.{name}.bias"}
    assert changed and changed <= allowed
    assert all(not p.requires_grad for p in qmodel.parameters())
    assert all(not p.requires_grad for p in pipe.unet.parameters())


def test_quest_finetunes_the_time_then_the_attention_layers_and_nothing_else(pipe, calib, ptq_start):
    cfg = quest_cfg()
    start = copy.deepcopy(ptq_start)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    qmodel = quantize_unet(pipe.unet, calib, cfg, start)
    log = qmodel.finetune_log
    assert [len(log[stage]["losses"]) for stage in ("time", "attention")] == [2, 2]
    after = qmodel.state_dict()
    weights = {k for k in before if k.endswith((".parametrizations.weight.original", ".bias"))}
    changed = {_layer(k) for k in weights if not torch.equal(after[k], before[k])}
    time, attention = set(time_layers(qmodel)), set(attention_layers(qmodel))
    assert changed & time and changed & attention and changed <= time | attention


def _layer(key: str) -> str:
    """The layer path of a quantized model's weight or bias state key."""
    return key.removeprefix("model.").replace(".parametrizations.weight.original", "").removesuffix(".bias")


def test_ptq_leaves_weights_at_fp_and_sizes_shrink(pipe, calib, ptq_start):
    cfg = GenQuantConfig(w_bits=4, a_bits=4, method="ptq")
    qmodel = quantize_unet(pipe.unet, calib, cfg, copy.deepcopy(ptq_start))
    fp = pipe.unet.state_dict()
    for name in qmodel.layer_names:
        original = qmodel.model.get_submodule(name).parametrizations.weight.original
        assert torch.equal(original, fp[f"{name}.weight"])
    small, full = model_bits(qmodel.model), model_bits(pipe.unet)
    assert small["params"] == full["params"] and small["bits"] < full["bits"] / 4


def test_quantized_generator_generates_deterministically_and_resumes(pipe, calib, quest_start, tmp_path):
    start = lambda: copy.deepcopy(quest_start)  # noqa: E731
    said = logging.Handler()
    said.emit = lambda record: said.records.append(record.getMessage())
    said.records = []
    logging.getLogger("diffusers").addHandler(said)  # diffusers' loggers do not propagate to the root
    try:
        qpipe, gen, _ = build_generator(pipe, quest_cfg(), calib, cache_dir=tmp_path / "cache", base=start)
    finally:
        logging.getLogger("diffusers").removeHandler(said)
    assert not [m for m in said.records if "safety checker" in m]  # the source pipeline's choice carries over
    assert pipeline_id(qpipe) != pipeline_id(pipe) and pipeline_id(qpipe).startswith(pipeline_id(pipe))
    kw = {"steps": STEPS, "seed": 3, "progress": False}
    a = generate(qpipe, CLASSES, 2, class_names=CLASS_NAMES, out=tmp_path / "a", batch_size=4, **kw)
    b = generate(qpipe, CLASSES, 2, class_names=CLASS_NAMES, out=tmp_path / "b", batch_size=1, **kw)
    assert torch.equal(a.images(), b.images())
    generate(qpipe, CLASSES, 1, class_names=CLASS_NAMES, out=tmp_path / "c", batch_size=2, **kw)
    c = generate(qpipe, CLASSES, 2, class_names=CLASS_NAMES, out=tmp_path / "c", batch_size=2, **kw)
    assert torch.equal(a.images(), c.images())
    assert gen.id in (tmp_path / "a" / MANIFEST).read_text()
    key = json.loads((tmp_path / "a" / RUN_FILE).read_text())["key"]
    assert key["generator_quant"]["method"] == "quest" and key["generator_quant"]["w_bits"] == 4
    fp = generate(pipe, CLASSES, 2, class_names=CLASS_NAMES, out=tmp_path / "fp", batch_size=4, **kw)
    assert not torch.equal(fp.images(), a.images())
    with pytest.raises(RunMismatchError):
        generate(pipe, CLASSES, 2, class_names=CLASS_NAMES, out=tmp_path / "a", batch_size=4, **kw)
    # a rebuilt generator (from the cache) is the same generator: the same id, the run resumes
    qpipe2, gen2, _ = build_generator(pipe, quest_cfg(), calib, cache_dir=tmp_path / "cache")
    assert gen2.id == gen.id
    again = generate(qpipe2, CLASSES, 2, class_names=CLASS_NAMES, out=tmp_path / "b", batch_size=4, **kw)
    assert torch.equal(again.images(), a.images())


def test_text_encoder_generator_rebuilds_from_the_cache(pipe, calib, ptq_start, tmp_path):
    cfg = GenQuantConfig(w_bits=4, a_bits=4, method="ptq", text_encoder=True)
    prompts = ["a photo of a cat", "a photo of a dog"]
    start = lambda: copy.deepcopy(ptq_start)  # noqa: E731
    qpipe, gen, _ = build_generator(pipe, cfg, calib, prompts, cache_dir=tmp_path, base=start)
    assert qpipe.text_encoder is gen.text.model and qpipe.text_encoder is not pipe.text_encoder
    assert qpipe.genq_quant["text_encoder"] is True
    _, again, _ = build_generator(pipe, cfg, calib, prompts, cache_dir=tmp_path)
    assert again.id == gen.id
    assert [f.name.split("-")[:3] for f in tmp_path.iterdir()] == [["ptq", "W4A4", "te"]]


def test_ci_calibration_rows_hold_every_timestep_group():
    """The ci comparison keeps few trajectory rows; every timestep group must still be among them, so ci
    exercises the calibration and finetuning of each group."""
    from genqlib.datasets import class_names, run_classes
    from genqlib.quest.compare import _calibration, gq_settings

    p = get_profile("ci")
    calib = _calibration(load_pipeline(p.generator), p, list(run_classes(p)), class_names(p), gq_settings(p))
    assert len(calib[0]) == get_profile("ci").generator_quant.calib_rows
    assert timestep_group(calib[1], GenQuantConfig().n_groups).unique().tolist() == [0, 1, 2, 3]
