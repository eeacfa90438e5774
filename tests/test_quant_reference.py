"""The engine against the reference repositories' settings (BRECQ, QDrop, Genie): each test pins one setting
that moves numbers (activation grid, edge widths, rounding-regulariser weight, learning rates, stage order),
so a change to it fails here; plus BN folding through traced conv subclasses and attention matmuls."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from bn_helpers import randomise_bn
from torch import fx, nn

from genqlib.quant import QuantConfig, quantize


def smooth(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


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


def test_a_bn_after_a_conv_left_unfolded_warns_and_strict_raises():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.head((self.bn(y) + y).mean((2, 3)))  # the conv output has a second reader

    model = randomise_bn(Shared()).eval()
    with pytest.warns(UserWarning, match="bn: BatchNorm after a conv left unfolded"):
        q = quantize(model, QuantConfig(8, 8), example=smooth(4))
    assert list(q.report.fold.after_conv) == ["bn"]
    with pytest.raises(ValueError, match="strict"):
        quantize(model, QuantConfig(8, 8), example=smooth(4), strict=True)

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
