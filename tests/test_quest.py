"""Generator quantization (genqlib.quest) on the tiny random-weight pipeline: the time-aware activation
quantizer, selective finetuning, and a quantized generator inside generate()."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict

import pytest
import torch
from tiny_pipeline import save_tiny_pipeline

from genqlib.fashion_mnist import CLASS_NAMES
from genqlib.generate import generate, load_pipeline, pipeline_id
from genqlib.paper.generator_quant import parse_args
from genqlib.paper.profiles import get_profile, stage_defaults
from genqlib.quant import fp_weight, weight_quantizer
from genqlib.quest import (
    LR_ACT,
    LR_WEIGHT,
    STAGES,
    GenQuantConfig,
    TimeAwareQuantizer,
    TimeClock,
    build_generator,
    calibrated_unet,
    ff_layers,
    ff_schedule,
    model_bits,
    percentile_grid,
    quantize_unet,
    run_stage,
    stage_acts,
    time_layers,
    time_schedule,
    trajectory_inputs,
)
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
    """The plain-PTQ W4A4 UNet (tests use copies of it)."""
    return calibrated_unet(pipe.unet, calib, GenQuantConfig(w_bits=4, a_bits=4, method="ptq"))


@pytest.fixture(scope="module")
def quest_start(pipe, calib):
    """One quest W4A4 UNet: AdaRound-reconstructed, time-aware quantizers initialised, one step per stage and
    timestep (tests finetune copies of it further)."""
    return quantize_unet(pipe.unet, calib, quest_cfg())


def quest_cfg(**kw) -> GenQuantConfig:
    base = {"w_bits": 4, "a_bits": 4, "method": "quest", "quest_recon_iters": 4, "max_steps": 1}
    return GenQuantConfig(**{**base, **kw})


def test_config_records_only_the_settings_its_method_uses():
    ptq = GenQuantConfig(method="ptq").record()
    assert "max_steps" not in ptq and "sm_bits" not in ptq and "recon_iters" not in ptq
    assert GenQuantConfig(method="ptq", ptq_recon="brecq").record()["recon_iters"] == 100
    quest = GenQuantConfig(method="quest", a_bits=4).record()
    # the reference's settings by default (txt2img.py, README's SD command)
    assert quest["quest_recon_iters"] == 20_000 and quest["quest_recon_batch"] == 4 and quest["sm_bits"] == 16
    assert quest["max_steps"] is None and quest["act_channel_wise"] is True and "ptq_recon" not in quest
    assert GenQuantConfig(method="quest", a_bits=8).act_channel_wise is False
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


def test_clock_maps_each_timestep_to_its_own_quantizer_row():
    clock = TimeClock([1, 251, 501, 751])
    assert clock.set(torch.tensor([501, 501])) == 2
    with pytest.raises(ValueError, match="spans timesteps"):
        clock.set(torch.tensor([1, 751]))
    with pytest.raises(KeyError, match="has no quantizer"):
        clock.set(torch.tensor([600]))


def _grid(x, delta, zero, bits):
    """Oracle: the reference's ActUniformQuantizer forward."""
    return (torch.clamp(torch.round(x / delta) + zero, 0, 2**bits - 1) - zero) * delta


def test_time_aware_quantizer_is_asymmetric_and_uses_its_timesteps_grid():
    clock = TimeClock([1, 501])
    q = TimeAwareQuantizer(4, clock, (3, 16), channel_wise=False, layout="layer")
    q.delta.data.copy_(torch.tensor([0.05, 0.2]))
    q.zero_point.copy_(torch.tensor([3.0, 7.0]))
    q.calibrated.fill_(True)
    x = torch.randn(3, 16)
    for t, i in ((1, 0), (501, 1)):
        clock.set(t)
        assert torch.equal(q(x), _grid(x, q.delta[i], q.zero_point[i], 4))
    clock.index = None
    with pytest.raises(RuntimeError, match="no timestep"):
        q(x)


@pytest.mark.parametrize("bits, channel_wise", [(4, True), (8, False)])
def test_percentile_init_matches_a_brute_force_search(bits, channel_wise):
    """The reference's 'mse' initialisation: among the 0.999/0.9999/0.99999 quantile ranges, the grid of least
    squared error, per channel (dim 1 of a conv input) at 4 bits and per tensor at 8 bits."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 5, 5, generator=gen) * torch.tensor([0.1, 1.0, 10.0]).view(1, 3, 1, 1) + 0.5
    clock = TimeClock([1, 501])
    q = TimeAwareQuantizer(bits, clock, x.shape, channel_wise=channel_wise, layout="layer")
    q.calibrate(x)
    assert q.delta.shape == ((2, 1, 3, 1, 1) if channel_wise else (2,))
    chans = [x[:, c] for c in range(3)] if channel_wise else [x]
    for c, xc in enumerate(chans):
        best = None
        for pct in (0.999, 0.9999, 0.99999):
            hi, lo = torch.quantile(xc.flatten(), pct), torch.quantile(xc.flatten(), 1 - pct)
            delta = (hi - lo) / (2**bits - 1)
            zero = torch.round(-lo / delta)
            err = (xc - _grid(xc, delta, zero, bits)).pow(2).mean()
            best = (err, delta, zero) if best is None or err < best[0] else best
        for i in range(2):  # every timestep starts from the same grid
            got = q.delta[i].flatten()[c if channel_wise else 0]
            assert torch.allclose(got, best[1], rtol=1e-5)
            assert q.zero_point[i].flatten()[c if channel_wise else 0] == best[2]
    d, z = percentile_grid(x.movedim(1, 0).flatten(1), bits)
    assert d.shape == z.shape == (3,)


def test_quest_quantizes_every_layer_input_and_the_attention_matmuls(quest_start):
    qmodel = quest_start
    acts = qmodel.quest_acts
    layers = qmodel.layer_names
    assert all(f"{n.replace('.', '/')}:input" in acts for n in layers)  # to_k/to_v of attn2 included
    attns = {k.rpartition(":")[0] for k in acts if k.endswith(":q")}
    assert attns and all(f"{a}:{w}" in acts for a in attns for w in "qkvw")
    # widths: conv_in and conv_out inputs 8-bit (txt2img.py), softmax output 16-bit (--sm_abit 16)
    assert acts["conv_in:input"].bits == acts["conv_out:input"].bits == 8
    assert {acts[f"{a}:w"].bits for a in attns} == {16}
    assert {
        q.bits for k, q in acts.items() if not k.endswith(":w") and "conv_in" not in k and "conv_out" not in k
    } == {4}
    # 4-bit activations per channel: a conv input per dim 1, a token input per last dim, q per head dim
    conv = acts["down_blocks/0/resnets/0/conv1:input"]
    assert conv.channel_wise and conv.delta.shape[2] > 1 and conv.delta.shape[-1] == 1
    tok = (
        acts[f"{next(iter(attns))}/to_q:input"]
        if False
        else acts[[k for k in acts if k.endswith("ff/net/2:input")][0]]
    )
    assert tok.delta.shape[-1] > 1 and tok.delta.dim() == 4
    assert acts[f"{next(iter(attns))}:q"].delta.shape[-1] > 1
    # all weights at 4 bits, first and last included, rounded by AdaRound block reconstruction
    assert {weight_quantizer(qmodel.model.get_submodule(n)).bits for n in layers} == {4}
    assert all(weight_quantizer(qmodel.model.get_submodule(n)).adaround.mode == "hard" for n in layers)


def test_attention_matmul_inputs_go_through_their_quantizers(calib, quest_start):
    """Each attention's q, k, v and softmax output pass through their quantizers once per call, and the
    processor that applies them computes what diffusers' own does (quantizers off)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from genqlib.quest.sites import attention_modules

    qmodel = copy.deepcopy(quest_start)
    rows = tuple(a[:2] for a in calib)
    seen = {}
    for key, q in qmodel.quest_acts.items():
        if key.rpartition(":")[2] in "qkvw":
            q.register_forward_hook(lambda m, a, o, key=key: seen.setdefault(key, []).append((a[0], o)))
    with torch.no_grad():
        qmodel(*rows)
    attns = attention_modules(qmodel.model)
    assert len(seen) == 4 * len(attns) and all(len(v) == 1 for v in seen.values())
    for key, [(x, out)] in seen.items():
        assert x.dim() == 4 and not torch.equal(x, out)  # (batch, heads, tokens, head dim): quantized
        if key.endswith(":w"):
            assert torch.allclose(x.sum(-1), torch.ones(()), atol=1e-5)  # the softmax output
    for q in qmodel.quest_acts.values():
        q.enabled = False
    with torch.no_grad():
        ours = qmodel(*rows)
        for attn in attns.values():
            attn.set_processor(AttnProcessor2_0())
        theirs = qmodel(*rows)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_quest_size_counts_integer_weights_and_grids_not_the_rounding_variables(pipe, quest_start):
    """AdaRound's V and floors are folded into the integer weights: the size is the 4-bit weights plus biases,
    norms and the per-timestep grids at 32 bits, computed here independently."""
    qmodel = quest_start
    layers = [qmodel.model.get_submodule(n) for n in qmodel.layer_names]
    weights = {id(fp_weight(m)) for m in layers}
    bits = 4 * sum(fp_weight(m).numel() for m in layers)
    plain = sum(p.numel() for p in pipe.unet.parameters()) - sum(fp_weight(m).numel() for m in layers)
    grids = sum(q.delta.numel() + q.zero_point.numel() + 1 for q in qmodel.quest_acts.values())
    wq = sum(weight_quantizer(m).step.numel() + weight_quantizer(m).zero_point.numel() for m in layers)
    assert len(weights) == len(layers)
    assert model_bits(qmodel)["bits"] == bits + 32 * (plain + grids + wq)  # the QuantModel holds the grids
    assert model_bits(qmodel)["params"] == model_bits(pipe.unet)["params"]


def test_weights_start_from_adaround_not_nearest_rounding(quest_start):
    changed = 0
    for name in quest_start.layer_names:
        layer = quest_start.model.get_submodule(name)
        wq = weight_quantizer(layer)
        nearest = torch.round(fp_weight(layer) / wq.step)
        changed += int((wq.adaround() != nearest).sum())
    assert changed > 0


def test_schedules_are_the_references_and_scale_to_a_cap():
    ts = [901, 801, 401, 301, 201, 1]
    # post_layer_recon_sd.py pd_optimize_timeembed: 200 at the first timestep, 50 where t > 300, 400 else
    assert time_schedule(ts, None) == {901: 200, 801: 50, 401: 50, 301: 50, 201: 400, 1: 400}
    capped = time_schedule(ts, 150)
    assert sum(capped.values()) <= 150 + len(ts) and min(capped.values()) >= 1
    assert capped[901] > capped[801] and capped[1] > capped[901]
    # pd_optimize_timewise: 20 epochs x 16 steps of 4 rows per timestep
    assert ff_schedule(10, None) == (20, 16) and ff_schedule(10, 100) == (1, 10)
    assert STAGES == ("time", "ff") and LR_WEIGHT == 1e-5 and LR_ACT == {"time": 1e-5, "ff": 1e-4}


def test_stages_train_the_references_layers_in_order(quest_start):
    log = quest_start.finetune_log
    assert list(log) == ["time", "ff"]  # pd_optimize_timeembed, then pd_optimize_timewise
    assert log["time"]["layers"] == time_layers(quest_start)
    assert log["time"]["layers"] and all(n.endswith("time_emb_proj") for n in log["time"]["layers"])
    assert not any(n.startswith("time_embedding") for n in log["time"]["layers"])
    assert log["ff"]["layers"] == ff_layers(quest_start)
    assert {n.rsplit("ff.net.", 1)[1] for n in log["ff"]["layers"]} == {"0.proj", "2"}


@pytest.mark.parametrize("stage", ["time", "ff"])
def test_a_stage_moves_its_layers_by_its_lr_and_one_timesteps_steps_only(pipe, calib, quest_start, stage):
    """One Adam step from a fresh optimizer moves every parameter with a gradient by about its lr: the weights
    of the stage's layers by 1e-5, the step sizes of the stage's quantizers at one timestep by 1e-5 (time) or
    1e-4 (ff); nothing else moves, no other timestep's step size moves."""
    qmodel = copy.deepcopy(quest_start)
    t = int(calib[1].max())
    one = tuple(a[calib[1] == t] for a in calib)
    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    log = run_stage(qmodel, pipe.unet, one, stage, max_steps=1)
    assert log["steps"] == {t: 1}
    after = qmodel.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    layers = time_layers(qmodel) if stage == "time" else ff_layers(qmodel)
    weights = {f"model.{n}.parametrizations.weight.original" for n in layers} | {
        f"model.{n}.bias" for n in layers
    }
    acts = {
        f"quest_acts.{k}.delta"
        for k, q in qmodel.quest_acts.items()
        if any(q is a for a in stage_acts(qmodel, stage))
    }
    assert changed & weights and changed & acts
    bases = {k for k in changed if k.endswith("adaround.base")}  # the baked floor may move with the weight
    assert changed - bases <= weights | acts
    moved_w = max((after[k] - before[k]).abs().max().item() for k in weights)
    assert moved_w == pytest.approx(LR_WEIGHT, rel=1e-2)
    row = qmodel.clock.index_of[t]
    moved_a = 0.0
    for k in acts:
        d = (after[k] - before[k]).abs()
        assert d[torch.arange(len(d)) != row].max() == 0  # other timesteps untouched
        moved_a = max(moved_a, d[row].max().item())
    assert moved_a == pytest.approx(LR_ACT[stage], rel=1e-2)


def test_ptq_leaves_weights_at_fp_and_sizes_shrink(pipe, calib, ptq_start):
    cfg = GenQuantConfig(w_bits=4, a_bits=4, method="ptq")
    qmodel = quantize_unet(pipe.unet, calib, cfg, copy.deepcopy(ptq_start))
    fp = pipe.unet.state_dict()
    for name in qmodel.layer_names:
        original = qmodel.model.get_submodule(name).parametrizations.weight.original
        assert torch.equal(original, fp[f"{name}.weight"])
    small, full = model_bits(qmodel.model), model_bits(pipe.unet)
    assert small["params"] == full["params"] and small["bits"] < full["bits"] / 4


def test_quantized_generator_generates_deterministically_and_resumes(pipe, calib, tmp_path):
    said = logging.Handler()
    said.emit = lambda record: said.records.append(record.getMessage())
    said.records = []
    logging.getLogger("diffusers").addHandler(said)  # diffusers' loggers do not propagate to the root
    try:
        qpipe, gen, _ = build_generator(pipe, quest_cfg(), calib, cache_dir=tmp_path / "cache")
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
    assert gen2.id == gen.id and gen2.unet.finetune_log == gen.unet.finetune_log
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


def test_ci_calibration_rows_hold_several_timesteps():
    """The ci comparison keeps few trajectory rows; they still span several timesteps, so ci exercises the
    per-timestep quantizers and the finetuning schedule."""
    from genqlib.datasets import class_names, run_classes
    from genqlib.paper.generator_quant import _calibration, gq_settings

    p = get_profile("ci")
    calib = _calibration(load_pipeline(p.generator), p, list(run_classes(p)), class_names(p), gq_settings(p))
    assert len(calib[0]) == get_profile("ci").generator_quant.calib_rows
    assert len(calib[1].unique()) > 1
