"""The quantization engine on models nobody here wrote: `transformers` architectures built offline from small
configs (random weights), a torchvision-style ResNet, a model whose convs are a "same"-padding subclass of
nn.Conv2d, and nn.MultiheadAttention. Each must be quantized whole, folded, blocked by its residual and
transformer blocks, equal to FP with the quantizers off, and close to FP at W8A8 after reconstruction."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from bn_helpers import randomise_bn
from image_helpers import smooth
from torch import nn

from genqlib.logits import logits
from genqlib.quant import QuantConfig, ReconConfig, quantize, reconstruct, weight_quantizer
from genqlib.quant.quantizer import ActQuantizer
from genqlib.quant.reconstruct import block_input

transformers = pytest.importorskip("transformers")

SIZE = 32


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Real-looking inputs at this module's SIZE (``image_helpers.smooth``)."""
    return smooth(n, size=SIZE, seed=seed)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, as written there: attributes and a functional add."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TorchvisionResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Conv2dSame(nn.Conv2d):
    """TensorFlow-style "same" padding computed in forward (as timm's Conv2dSame); counts its calls."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Conv2dSame.calls += 1
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        ph = max((math.ceil(ih / self.stride[0]) - 1) * self.stride[0] + kh - ih, 0)
        pw = max((math.ceil(iw / self.stride[1]) - 1) * self.stride[1] + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SameNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(Conv2dSame(3, 8, 3, 2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(Conv2dSame(8, 8, 3, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dw(self.stem(x)).mean((2, 3)))


def hf(kind: str) -> nn.Module:
    t = transformers
    configs = {
        "resnet_basic": lambda: t.ResNetForImageClassification(
            t.ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic", num_labels=5
            )
        ),
        "resnet_bottleneck": lambda: t.ResNetForImageClassification(
            t.ResNetConfig(
                embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", num_labels=5
            )
        ),
        "mobilenet_v2": lambda: t.MobileNetV2ForImageClassification(
            t.MobileNetV2Config(depth_multiplier=0.35, image_size=SIZE, num_labels=5)
        ),
        "vit": lambda: t.ViTForImageClassification(
            t.ViTConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=SIZE,
                patch_size=8,
                num_labels=5,
            )
        ),
        "swin": lambda: t.SwinForImageClassification(
            t.SwinConfig(
                image_size=SIZE,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                num_heads=[2, 2],
                window_size=4,
                num_labels=5,
            )
        ),
        "convnext": lambda: t.ConvNextForImageClassification(
            t.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, image_size=SIZE)
        ),
    }
    return configs[kind]()


# model name -> (builder, expected reconstruction blocks)
MODELS = {
    "hf_resnet_basic": (
        lambda: hf("resnet_basic"),
        ["resnet.embedder", "resnet.encoder.stages.0.layers.0", "resnet.encoder.stages.1.layers.0"]
        + ["resnet.encoder.stages.1.layers.1", "classifier"],
    ),
    "hf_resnet_bottleneck": (
        lambda: hf("resnet_bottleneck"),
        [
            "resnet.embedder",
            "resnet.encoder.stages.0.layers.0",
            "resnet.encoder.stages.1.layers.0",
            "classifier",
        ],
    ),
    "hf_mobilenet_v2": (
        lambda: hf("mobilenet_v2"),
        ["mobilenet_v2.conv_stem"]
        + [f"mobilenet_v2.layer.{i}" for i in range(16)]
        + ["mobilenet_v2.conv_1x1", "classifier"],
    ),
    "hf_vit": (lambda: hf("vit"), ["vit.embeddings", "vit.layers.0", "vit.layers.1", "classifier"]),
    "hf_swin": (
        lambda: hf("swin"),
        ["swin.embeddings", "swin.encoder.layers.0.blocks.0", "swin.encoder.layers.0.downsample"]
        + ["swin.encoder.layers.1.blocks.0", "classifier"],
    ),
    "hf_convnext": (
        lambda: hf("convnext"),
        ["convnext.embeddings", "convnext.encoder.stages.0.layers.0"]
        + [
            "convnext.encoder.stages.1.downsampling_layer.1",
            "convnext.encoder.stages.1.layers.0",
            "classifier",
        ],
    ),
    "torchvision_resnet": (
        TorchvisionResNet,
        ["conv1", "layer1.0", "layer1.1", "layer2.0", "fc"],
    ),
    "same_padding": (SameNet, ["stem", "dw", "head"]),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(MODELS[name][0]()).eval()


def conv_linear(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("name", list(MODELS))
def test_any_model_is_quantized_whole_folded_and_blocked(name):
    model, x = build(name), smooth_images(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left FP, so quantize must not warn
        q = quantize(model, QuantConfig(4, 4), example=x)
    report = q.report
    assert sorted(report.layers) == sorted(conv_linear(model)) and report.layers_total == len(report.layers)
    assert sorted(report.fold.folded) == sorted(batchnorms(model)) and not report.fold.left
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    assert q.blocks == MODELS[name][1]
    assert f"conv/linear layers quantized: {len(report.layers)} of {len(report.layers)}" in q.summary()
    with torch.no_grad():
        fp = logits(model(x))
        off = q.set_quant(weights=False, acts=False)(x)
    assert isinstance(off, torch.Tensor)
    assert (off - fp).abs().max() <= 1e-5 * max(1.0, fp.abs().max().item())


@pytest.mark.parametrize("name", list(MODELS))
def test_w8a8_reconstruction_stays_close_to_fp(name):
    model, calib, test = build(name), smooth_images(32), smooth_images(16, seed=1)
    q = reconstruct(
        quantize(model, QuantConfig(8, 8), example=calib),
        model,
        calib,
        ReconConfig(method="qdrop", iters=20, batch_size=8, init_size=32, progress=False),
    )
    with torch.no_grad():
        fp, out = logits(model(test)), q(test)
    # The random tiny ViT's logits barely depend on the image (std across images 0.005 against a mean |logit|
    # of 0.1), and its residual stream is quantized per tensor, as in the references: 0.055 measured.
    tolerance = 0.08 if name == "hf_vit" else 0.05
    assert ((out - fp).norm() / fp.norm()).item() < tolerance


def test_residual_paths_are_quantized_as_the_references_do():
    model, x = build("torchvision_resnet"), smooth_images(4)
    out_q = quantize(model, QuantConfig(4, 4), example=x)
    # BRECQ/QDrop: every residual block's output (after add + ReLU) is quantized, and the tensor that enters
    # layer1.0's identity shortcut is quantized once (at 8 bits: the activation after the first layer), never
    # left FP; layer1.1 and layer2.0 read layer1's quantized outputs.
    for block in ("layer1.0", "layer1.1", "layer2.0"):
        assert out_q.act(block, "output") is not None
    assert out_q.act("layer1.0", "input").bits == 8
    assert out_q.act("layer1.1", "input") is None and out_q.act("layer2.0", "input") is None
    assert out_q.act("layer1.0.conv1") is None, "its input is the already quantized block input"
    in_q = quantize(model, QuantConfig(4, 4, residual="block_input"), example=x)
    # Genie: each block's input (shared by the shortcut and the first conv) is quantized once.
    for block in ("layer1.0", "layer1.1", "layer2.0"):
        assert in_q.act(block, "input") is not None and in_q.act(block, "output") is None
    assert in_q.act("layer2.0.downsample.0") is None
    assert "residual block_input" in in_q.describe()


def test_subclass_forward_keeps_running_with_quantized_weights():
    model, x = build("same_padding"), smooth_images(4)
    q = reconstruct(quantize(model, QuantConfig(2, 8), example=x), model, x, ReconConfig("nearest", 0))
    before = Conv2dSame.calls
    with torch.no_grad():
        w2 = q(x)
        q.set_quant(weights=False)
        w_fp = q(x)
    assert Conv2dSame.calls - before == 4, "the subclass's own forward runs (twice per pass)"
    assert not torch.allclose(w2, w_fp), "its forward computes with the quantized weight"
    q.set_quant()
    dw = q.model.dw[0]
    for channel in dw.weight.detach().flatten(1):  # what its forward reads: at most 2^2 levels a channel
        assert channel.unique().numel() <= 4
    assert weight_quantizer(q.model.stem[0]).bits == 8 and weight_quantizer(dw).bits == 2


def test_modules_left_fp_are_reported_warned_and_refused_when_strict():
    model = nn.Sequential(nn.Linear(8, 8), nn.MultiheadAttention(8, 2, batch_first=True))

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x):
            h = self.inner[0](x)
            return self.inner[1](h, h, h)[0].mean(1)

    x = torch.rand(4, 3, 8)
    with pytest.warns(UserWarning, match="in_proj"):
        q = quantize(Wrap(), QuantConfig(4, 4), example=x)
    assert "inner.1" in q.report.fp_modules and "inner.1.out_proj" in q.report.input_fp
    assert "left FP: inner.1" in q.summary() and "conv/linear layers quantized: 2 of 3" in q.summary()
    with pytest.raises(ValueError, match="strict"):
        quantize(Wrap(), QuantConfig(4, 4), example=x, strict=True)


def test_a_fold_that_changes_the_output_is_undone_and_reported():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.head((self.bn(y) + y).mean((2, 3)))  # the conv output has a second reader

    model = randomise_bn(Shared()).eval()
    with pytest.warns(UserWarning, match="bn: BatchNorm after a conv left unfolded"):
        q = quantize(model, QuantConfig(8, 8), example=smooth_images(4))
    assert "bn" in q.report.fold.left and not q.report.fold.folded
    assert list(q.report.fold.after_conv) == ["bn"]
    with torch.no_grad():
        q.set_quant(False, False)
        assert torch.allclose(q(smooth_images(4)), model(smooth_images(4)), atol=1e-6)
    with pytest.raises(ValueError, match="strict"):
        quantize(model, QuantConfig(8, 8), example=smooth_images(4), strict=True)


def test_qdrop_mixes_after_quantizing_and_genie_before():
    gen = torch.Generator().manual_seed(0)
    x_q, x_fp = torch.randn(2, 4, 16, 16, generator=gen).unbind(0)
    quantizer = ActQuantizer(3)
    quantizer.calibrate(x_q)
    with torch.no_grad():
        q_of_q, q_of_fp = quantizer(x_q), quantizer(x_fp)
    torch.manual_seed(0)
    qdrop = block_input(ReconConfig("qdrop"), x_q, x_fp, quantizer)
    from_q, from_fp = qdrop == q_of_q, qdrop == x_fp
    assert (from_q | from_fp).all() and 0.3 < from_q.float().mean() < 0.7
    assert not (qdrop == x_q)[~from_q].any(), "QDrop never feeds the unquantized quantized-model input"
    quantizer.drop_prob = 0.5  # genie_m: the block's input quantizer drops again (Genie's double drop)
    torch.manual_seed(0)
    genie = block_input(ReconConfig("genie_m"), x_q, x_fp, quantizer)
    raw_q = genie == x_q
    assert raw_q.any(), "Genie's mix lets the raw quantized-model input through"
    assert (raw_q | (genie == x_fp) | (genie == q_of_q) | (genie == q_of_fp)).all()


def test_method_defaults_follow_the_references_and_the_iteration_count():
    assert ReconConfig("brecq").resolved().lr_act == 4e-4
    assert ReconConfig("qdrop").resolved().lr_act == ReconConfig("genie_m").resolved().lr_act == 4e-5
    assert (
        ReconConfig("qdrop").resolved().reg_weight == 0.01
        and ReconConfig("genie_m").resolved().reg_weight == 1.0
    )
    assert ReconConfig(iters=20_000).resolved().lr_round == 1e-3
    assert ReconConfig(iters=1_000).resolved().lr_round == 1e-2
    assert 1e-3 < ReconConfig(iters=5_000).resolved().lr_round < 1e-2
    assert ReconConfig(iters=1_000, lr_round=3e-3).resolved().lr_round == 3e-3


def test_bad_calibration_input_is_refused_before_anything_changes():
    model = build("torchvision_resnet")
    q = quantize(model, QuantConfig(4, 4), example=smooth_images(2))
    state = {k: v.clone() for k, v in q.state_dict().items()}
    bad = smooth_images(8)
    bad[3, 0, 0, 0] = float("nan")
    cfg = ReconConfig("qdrop", iters=2, progress=False)
    with pytest.raises(ValueError, match="calib_images.*NaN"):
        reconstruct(q, model, bad, cfg)
    with pytest.raises(ValueError, match="calib_images"):
        reconstruct(q, model, torch.rand(8, 1, 32, 32), cfg)  # 1 channel for a 3-channel model
    with pytest.raises(ValueError, match="at least 2"):
        reconstruct(q, model, smooth_images(1), cfg)
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="example"):
        quantize(model, QuantConfig(4, 4), example=torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="example"):
        quantize(model, QuantConfig(4, 4))  # no input_size, no transformers config: say what to pass
    with pytest.raises(ValueError, match="residual"):
        QuantConfig(residual="sideways")


@pytest.mark.parametrize("name", ["hf_resnet_basic", "hf_vit"])
def test_a_grid_of_runs_on_a_transformers_model_repeats_in_one_thread_workers(name, tmp_path):
    from genqlib.fashion_mnist import Split
    from genqlib.paper.ptq_runs import PTQRun, PTQTask, ptq_run, ptq_runs

    model = build(name)
    calib, test = smooth_images(16), Split("test", smooth_images(40, seed=5), torch.arange(40) % 5)
    runs = [
        PTQRun(
            name, "smooth", 16, QuantConfig(4, 4), ReconConfig(iters=4, batch_size=8, lr_round=1e-2, seed=s)
        )
        for s in (0, 1)
    ]
    rows = ptq_runs([PTQTask(model, calib, r) for r in runs], test, tmp_path / "workers", jobs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        oracle = [ptq_run(model, calib, test, r, tmp_path / "here") for r in runs]
    finally:
        torch.set_num_threads(threads)
    assert [r["threads"] for r in rows] == [1, 1] and not any(r["from_cache"] for r in rows)
    assert [(r["top1"], r["agreement"]) for r in rows] == [(r["top1"], r["agreement"]) for r in oracle]
