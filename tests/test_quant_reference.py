"""The engine against the reference repositories' settings (BRECQ, QDrop, Genie): each test pins one setting
that moves numbers (activation grid, edge widths, rounding-regulariser weight, learning rates, stage order),
so a change to it fails here; plus BN folding through traced conv subclasses."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from bn_helpers import randomise_bn
from image_helpers import smooth
from torch import fx, nn

from genqlib.quant import QuantConfig, quantize

# --- BN folding through conv subclasses that fx traces -----------------------------------------------------


class SamePadConv(nn.Conv2d):
    """TensorFlow-style "same" padding in the subclass's own forward, from static sizes (as timm's Conv2dSame
    for even inputs), so that torch.fx traces through it: F.pad, then a functional conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = max(self.kernel_size[0] - self.stride[0], 0)
        x = F.pad(x, [total // 2, total - total // 2, total // 2, total - total // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SameBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = SamePadConv(cin, cout, 3, stride, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = SamePadConv(cout, cout, 3, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(SamePadConv(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class SameResNet(nn.Module):
    """A ResNet-like net whose every conv is a same-padding subclass; fx traces the whole model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = SamePadConv(3, 8, 3, 1, bias=False), nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(SameBlock(8, 8, 1), SameBlock(8, 16, 2))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.layer1(x).mean((2, 3)))


def test_bn_after_a_traced_conv_subclass_folds():
    torch.manual_seed(0)
    model = randomise_bn(SameResNet()).eval()
    x = smooth(4)
    graph = fx.symbolic_trace(model).graph  # the oracle for the failure: fx's default traces through
    assert not any(n.op == "call_module" and "conv" in str(n.target) for n in graph.nodes)
    assert sum(n.op == "call_function" and n.target is F.conv2d for n in graph.nodes) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize(model, QuantConfig(4, 4), example=x)
    bns = sorted(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert sorted(q.report.fold.folded) == bns and len(bns) == 6
    assert q.report.fold.found_by == "torch.fx" and not q.report.fold.left
    assert "BatchNorms folded: 6 of 6 (pairs by torch.fx)" in q.summary()
    with torch.no_grad():
        off = q.set_quant(False, False)(x)
        assert torch.allclose(off, model(x), atol=1e-5)


def test_a_bn_whose_input_is_no_convs_output_is_left_without_a_warning():
    """(A BN after a conv left unfolded warns and strict raises: test_quant_models, the fold-undone test.)"""

    class AfterNorm(nn.Module):  # a BN whose input is no conv's output: not a warning
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x)).mean((2, 3))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize(randomise_bn(AfterNorm()).eval(), QuantConfig(8, 8), example=smooth(4))
    assert q.report.fold.left == {"bn": "input is not the output of a convolution"}


# --- rounding-regulariser weight -------------------------------------------------------------------------


def test_mobilenetv2_rounding_regulariser_weight_is_the_references():
    from genqlib.quant import ReconConfig, reconstruct
    from genqlib.zoo import build_teacher

    # BRECQ README (--arch mobilenetv2 --weight 0.1), QDrop exp/w2a4/mbv2 (weight 0.1) against r18 (0.01);
    # Genie's main.py has one round_weight (1.0) for every model
    for method, resnet, mobilenet in (("brecq", 0.01, 0.1), ("qdrop", 0.01, 0.1), ("genie_m", 1.0, 1.0)):
        assert ReconConfig(method).resolved().reg_weight == resnet
        assert ReconConfig(method).resolved("mobilenetv2").reg_weight == mobilenet
    assert ReconConfig("qdrop", reg_weight=0.5).resolved("mobilenetv2").reg_weight == 0.5
    mobile, resnet = build_teacher("mobilenet"), build_teacher("resnet")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    q = quantize(mobile, QuantConfig(4, 8))
    assert q.report.architecture == "mobilenetv2" and "architecture mobilenetv2" in q.summary()
    assert quantize(resnet).report.architecture is None
    cfg = ReconConfig("qdrop", iters=1, batch_size=4, init_size=8, progress=False)
    assert reconstruct(q, mobile, x, cfg).recon_config.reg_weight == 0.1


# --- activation grids and the export contract --------------------------------------------------------------


def brecq_mse_init(x: torch.Tensor, bits: int) -> tuple[float, float]:
    """BRECQ quant/quant_layer.py UniformAffineQuantizer.init_quantization_scale, scale_method='mse', written
    out as the reference does it (per tensor): 80 ratios shrinking both ends, Lp (p = 2.4) mean."""
    x_max, x_min = x.max().item(), x.min().item()
    best, delta, zero = 1e10, None, None
    for i in range(80):
        new_max, new_min = x_max * (1.0 - i * 0.01), x_min * (1.0 - i * 0.01)
        d = (new_max - new_min) / (2**bits - 1)
        z = round(-new_min / d)
        x_q = (torch.clamp(torch.round(x / d) + z, 0, 2**bits - 1) - z) * d
        score = (x - x_q).abs().pow(2.4).mean().item()
        if score < best:
            best, delta, zero = score, d, z
    return delta, zero


def gelu_data(n: int = 20_000, seed: int = 0) -> torch.Tensor:
    return F.gelu(torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 2)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_asymmetric_activation_grid_is_brecqs_lp_search(bits):
    from genqlib.quant import ActQuantizer

    for x in (gelu_data(), torch.randn(3000, generator=torch.Generator().manual_seed(1)).relu()):
        q = ActQuantizer(bits, "asymmetric")
        q.calibrate(x)
        delta, zero = brecq_mse_init(x, bits)
        assert q.step.item() == pytest.approx(delta, rel=1e-5) and q.zero_point.item() == zero
        assert "zero point" in repr(q)


def test_asymmetric_grid_beats_symmetric_on_gelu_outputs():
    from genqlib.quant import ActQuantizer
    from genqlib.quant.quantizer import lp_error

    x = gelu_data()
    errors = {}
    for scheme in ("asymmetric", "symmetric"):
        q = ActQuantizer(2, scheme)
        q.calibrate(x)
        with torch.no_grad():
            errors[scheme] = lp_error(x, q(x), 2.0).item()
    assert errors["symmetric"] > 2 * errors["asymmetric"]  # 3.79x measured on these 20,000 values


def reference_grid(x: torch.Tensor, grid: tuple) -> torch.Tensor:
    step, zero, qmin, qmax = grid
    return step * (torch.clamp(torch.round(x / step) + zero, qmin, qmax) - zero)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_grid_reproduces_the_activation_fake_quant_exactly(bits):
    from genqlib.quant import ActQuantizer

    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(4, 6, 8, 8, generator=gen) * 2 + 0.3
    for scheme, data in (
        ("asymmetric", x),
        ("symmetric", x),
        ("symmetric", x.relu()),
        ("asymmetric", x.relu()),
    ):
        q = ActQuantizer(bits, scheme)
        q.calibrate(data)
        step, zero, qmin, qmax = q.grid()
        assert isinstance(zero, torch.Tensor) and zero == zero.round() and qmin <= zero <= qmax
        assert "zero_point" in dict(q.named_buffers()) and "zero_point" not in dict(q.named_parameters())
        wide = data * 1.5  # values outside the clipping range too
        with torch.no_grad():
            assert torch.equal(q(wide), reference_grid(wide, q.grid()))
        q.step.requires_grad_(True)
        assert torch.equal(q(wide.clone().requires_grad_(True)).detach(), reference_grid(wide, q.grid()))
    assert ActQuantizer(4, "symmetric").grid()[2:] == (0, 15)


def test_grid_reproduces_the_weight_fake_quant_and_integer_weights():
    from genqlib.quant import WeightQuantizer

    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.2
    q = WeightQuantizer(w, 3)
    step, zero, qmin, qmax = q.grid()
    assert step.shape == zero.shape == (6, 1, 1, 1) and (qmin, qmax) == (0, 7)
    assert torch.equal(q(w), reference_grid(w, q.grid()))
    assert torch.equal(q.integer(w), torch.clamp(torch.round(w / step) + zero, qmin, qmax))
    q.start_adaround(w)
    q.adaround.v.data.normal_(generator=torch.Generator().manual_seed(1))
    q.adaround.harden()
    assert torch.equal(q(w), step * (q.integer(w) - zero))
    assert not torch.equal(q.integer(w), torch.clamp(torch.round(w / step) + zero, qmin, qmax))


def test_fused_lsq_gradient_factor_scales_only_the_step_gradient():
    from genqlib.quant.quantizer import lsq_fake_quant, round_ste

    gen = torch.Generator().manual_seed(3)
    x, grad = torch.randn(2, 8, 5, 5, generator=gen).unbind(0)
    results = []
    for fused in (False, True):
        x_ = (x * 3).requires_grad_(True)
        step = torch.tensor(0.3, requires_grad=True)
        out = (
            lsq_fake_quant(x_, step, -3, 12, 0.25)
            if fused
            else round_ste(torch.clamp(x_ / step, -3, 12)) * step
        )
        out.backward(grad)
        results.append((out.detach(), x_.grad, step.grad if fused else step.grad * 0.25))
    (out_c, gx_c, gs_c), (out_f, gx_f, gs_f) = results
    assert torch.equal(out_c, out_f)
    torch.testing.assert_close(gx_f, gx_c, rtol=1e-6, atol=0)
    torch.testing.assert_close(gs_f, gs_c, rtol=1e-4, atol=1e-6)  # up to summation order


def test_reference_conventions_pick_the_activation_grid():
    from genqlib.quant import reference_for

    # BRECQ/QDrop quantize activations asymmetrically (quant_layer.py, exp/*/config.yaml symmetric: False);
    # Genie's ActivationQuantizer is symmetric (init_scale(..., symmetric=True))
    assert QuantConfig().resolved().act_grid == "asymmetric"
    assert QuantConfig(reference="qdrop").resolved().act_grid == "asymmetric"
    assert QuantConfig(reference="genie").resolved().act_grid == "symmetric"
    assert QuantConfig(reference="genie", act_grid="asymmetric").resolved().act_grid == "asymmetric"
    methods = {"brecq": "brecq", "brecq_joint": "brecq", "qdrop": "qdrop", "genie_m": "genie"}
    assert {m: reference_for(m) for m in methods} == methods
    model = randomise_bn(SameResNet()).eval()
    for reference, scheme in (("brecq", "asymmetric"), ("genie", "symmetric")):
        q = quantize(model, QuantConfig(4, 4, reference=reference), example=smooth(4))
        assert {a.scheme for a in q.acts.values()} == {scheme}
        assert f"{scheme} activations" in q.summary()
    with pytest.raises(ValueError, match="act_grid"):
        QuantConfig(act_grid="log")


# --- edge conventions ------------------------------------------------------------------------------------


def wide_acts(q) -> set[str]:
    return {key for key, bits in q.report.acts.items() if bits == 8}


EDGES = {  # (reference, teacher) -> the activation sites at 8 bits (W4A4 elsewhere)
    # BRECQ set_first_last_layer_to_8bit: the first layer's output; the penultimate layer's output, effective
    # only where that layer stands alone (MobileNetV2's last 1x1 conv), not in ResNet's last residual block
    ("brecq", "resnet"): {"stem:output", "head:input"},
    ("brecq", "mobilenet"): {"stem:output", "last:output", "head:input"},
    ("brecq", "vit"): {"stem:output", "head:input"},
    # QDrop quantize_model: only w_list[0] 8-bit at the start; a_list[-1], the last block's / layer's output
    ("qdrop", "resnet"): {"blocks/5:output", "head:input"},
    ("qdrop", "mobilenet"): {"last:output", "head:input"},
    ("qdrop", "vit"): {"blocks/5:output", "head:input"},
    # Genie quantize_model: qconfigs[1] (the second layer's input) and qconfigs[-1] (the fc input)
    ("genie", "resnet"): {"blocks/0:input", "head:input"},
    ("genie", "mobilenet"): {"blocks/0:input", "head:input"},
}


@pytest.mark.parametrize("reference,teacher", list(EDGES))
def test_edge_activations_follow_each_reference(reference, teacher):
    from genqlib.zoo import build_teacher

    q = quantize(build_teacher(teacher), QuantConfig(4, 4, reference=reference))
    assert wide_acts(q) == EDGES[reference, teacher]
    first, last = q.layer_names[0], q.layer_names[-1]
    assert q.layer_bits(first)[1] is None, "the image stays FP in all three references"
    assert {q.layer_bits(n)[0] for n in (first, last)} == {8}
    assert {q.layer_bits(n)[0] for n in q.layer_names[1:-1]} == {4}
    summary = q.summary()
    assert f"edges ({reference}): image FP, first/last layer W8" in summary
    for key in EDGES[reference, teacher]:
        assert f"edge A8: {key}" in summary
    if (reference, teacher) == ("brecq", "resnet"):
        assert "last feature map A4: blocks/5:output" in summary


def test_edges_on_a_transformers_mobilenet_and_the_layer_style():
    transformers = pytest.importorskip("transformers")
    model = transformers.MobileNetV2ForImageClassification(
        transformers.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=5)
    ).eval()
    x = smooth(2, size=32)
    brecq = quantize(model, QuantConfig(4, 4), example=x)
    assert "mobilenet_v2/conv_1x1:output" in wide_acts(brecq)  # the last 1x1 conv stands alone
    assert brecq.report.architecture == "mobilenetv2"
    layer = quantize(model, QuantConfig(4, 4, edges="layer"), example=x)
    first = layer.layer_names[0]
    assert layer.layer_bits(first) == (8, 8), "layer edges quantize the image at the first layer's input"
    same = quantize(model, QuantConfig(4, 4, first_last_bits=None), example=x)
    assert not wide_acts(same) and "edges: same width everywhere" in same.summary()


# --- BRECQ's two passes and the learning rates -----------------------------------------------------------


def test_reconstruction_settings_are_the_references():
    from genqlib.quant import ReconConfig
    from genqlib.quant.recon_config import ACT_LOSS_P

    brecq = ReconConfig("brecq").resolved()  # BRECQ main_imagenet.py: --lr 4e-4, --iters_a 5000, --p 2.4
    assert (brecq.lr_act, brecq.act_iters, ACT_LOSS_P, brecq.iters) == (4e-4, 5000, 2.4, 20_000)
    assert ReconConfig("brecq", iters=1000).resolved().act_iters == 250
    assert ReconConfig("brecq", act_iters=40).resolved().act_iters == 40
    joint = ReconConfig("brecq_joint").resolved()
    assert (joint.lr_act, joint.act_iters, joint.reg_weight) == (4e-4, None, 0.01)
    qdrop = ReconConfig("qdrop").resolved()  # QDrop exp/*/config.yaml scale_lr 4.0e-5, drop_prob 0.5
    assert (qdrop.lr_act, qdrop.drop_prob, qdrop.reg_weight) == (4e-5, 0.5, 0.01)
    genie = ReconConfig("genie_m").resolved()  # Genie reconstruct.py lr_a_scale, lr_w_scale; main.py
    assert (genie.lr_act, genie.lr_weight_step, genie.reg_weight) == (4e-5, 1e-4, 1.0)
    for method in ("brecq", "brecq_joint", "qdrop", "genie_m"):  # Adam's default at the paper's 20,000
        assert ReconConfig(method).resolved().lr_round == 1e-3
    assert ReconConfig("brecq", iters=1000).describe() == (
        "brecq: weights (1000 iters, FP activations), then activation steps (250 iters)"
    )


def test_brecq_learns_rounding_with_fp_activations_then_activation_steps(monkeypatch):
    from genqlib.quant import ActQuantizer, ReconConfig, reconstruct
    from genqlib.quant import brecq as brecq_module
    from genqlib.quant.layers import weight_quantizer

    torch.manual_seed(0)
    model = randomise_bn(SameResNet()).eval()
    x = smooth(48)
    q = quantize(model, QuantConfig(4, 4), example=x)
    seen = {}
    pass_ = brecq_module.activation_pass

    def activation_pass(qmodel, *args):
        acts = [m for m in qmodel.modules() if isinstance(m, ActQuantizer)]
        seen["calibrated_before"] = any(bool(a.calibrated) for a in acts)
        seen["hard_before"] = all(
            weight_quantizer(m).adaround.mode == "hard" for m in qmodel.layers().values()
        )
        seen["enabled"] = all(a.enabled for a in acts)
        return pass_(qmodel, *args)

    learn = brecq_module.learn_steps

    def learn_steps(block, acts, *args):
        before = [(a.step.item(), a.zero_point.item()) for a in acts]
        learn(block, acts, *args)
        seen.setdefault("moves", []).extend(
            (b, (a.step.item(), a.zero_point.item())) for b, a in zip(before, acts, strict=True)
        )

    recon_module = importlib.import_module("genqlib.quant.reconstruct")  # the package's name is the function
    monkeypatch.setattr(recon_module, "activation_pass", activation_pass)
    monkeypatch.setattr(brecq_module, "learn_steps", learn_steps)
    cfg = ReconConfig(
        "brecq", iters=12, act_iters=6, batch_size=8, init_size=16, lr_round=1e-2, progress=False
    )
    reconstruct(q, model, x, cfg)
    stages = [r["stage"] for r in q.recon_log]
    n = len(q.blocks)
    assert stages == ["weights"] * n + ["activations"] * n, (
        "every block's rounding before any activation step"
    )
    assert not seen["calibrated_before"] and seen["hard_before"] and seen["enabled"]
    assert all(bool(a.calibrated) for a in q.acts.values())
    steps_moved = [after[0] != before[0] for before, after in seen["moves"]]
    assert any(steps_moved) and all(after[1] == before[1] for before, after in seen["moves"]), (
        "the steps learn, the zero points stay where calibration put them (BRECQ, QDrop)"
    )
    assert "then activation steps (6 iters)" in q.describe()
    joint = reconstruct(quantize(model, QuantConfig(4, 4), example=x), model, x, replace_method(cfg))
    assert {r["stage"] for r in joint.recon_log} == {
        "joint"
    } and "brecq_joint: weights and" in joint.describe()


def replace_method(cfg):
    from dataclasses import replace

    return replace(cfg, method="brecq_joint", act_iters=None)
