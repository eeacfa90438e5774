"""The mini world's teacher architectures: small analogues of ResNet, MobileNetV2 and ViT.

All three take Fashion-MNIST images as float tensors in [0, 1] of shape (B, 1, 28, 28) and
normalise inside the model, so every caller (filters, quantizers, generators) feeds the same range.
They are built from standard torch modules only, so generic tools (BN folding, block grouping) apply.
"""

from __future__ import annotations

import torch
from torch import nn

# Fashion-MNIST private-set pixel statistics (train images 0-49,999), rounded.
PIXEL_MEAN = 0.286
PIXEL_STD = 0.353


class Normalize(nn.Module):
    """Affine map from [0, 1] pixels to roughly zero-mean unit-variance inputs."""

    def __init__(self, mean: float = PIXEL_MEAN, std: float = PIXEL_STD) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A bias-free convolution followed by BatchNorm (the pair that BN folding merges)."""
    conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN pairs and an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout, 3)
        )
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Residual CNN with BatchNorm: stem, three stages of basic blocks, global pool, linear head."""

    input_size = (1, 28, 28)  # (C, H, W): what genqlib.quant.example_input builds
    pixel_mean, pixel_std = PIXEL_MEAN, PIXEL_STD  # what Normalize maps to 0 / 1 (baselines.pixel_stats)

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), depth: int = 2, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(Normalize(), *conv_bn(1, widths[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(depth):
                blocks.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


# (expand ratio, output channels, repeats, first stride), as in the MobileNetV2 paper's table.
MOBILENET_SETTINGS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 48, 2, 2), (4, 64, 1, 1))


class MobileNetV2(nn.Module):
    """Inverted-residual depthwise CNN with BatchNorm and ReLU6, MobileNetV2-style, for 28x28 inputs."""

    input_size = (1, 28, 28)  # (C, H, W): what genqlib.quant.example_input builds
    pixel_mean, pixel_std = PIXEL_MEAN, PIXEL_STD  # what Normalize maps to 0 / 1 (baselines.pixel_stats)

    def __init__(self, stem: int = 16, last: int = 192, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(Normalize(), *conv_bn(1, stem), nn.ReLU6(inplace=True))
        blocks: list[nn.Module] = []
        cin = stem
        for expand, cout, repeats, stride in MOBILENET_SETTINGS:
            for j in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if j == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(*conv_bn(cin, last, 1), nn.ReLU6(inplace=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(last, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.last(self.blocks(self.stem(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with explicit qkv and projection Linears (quantizable as-is)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: LayerNorm, attention, LayerNorm, GELU MLP, two residuals."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens, with a CLS token and learned positions prepended."""

    def __init__(self, dim: int, patch: int, image_size: int = 28) -> None:
        super().__init__()
        self.norm = Normalize()
        self.proj = nn.Conv2d(1, dim, patch, patch)
        n_patches = (image_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(self.norm(x)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos


class ViT(nn.Module):
    """Tiny Vision Transformer: 4x4 patches, a CLS token, pre-norm blocks, linear head on CLS."""

    input_size = (1, 28, 28)  # (C, H, W): what genqlib.quant.example_input builds
    pixel_mean, pixel_std = PIXEL_MEAN, PIXEL_STD  # what Normalize maps to 0 / 1 (baselines.pixel_stats)

    def __init__(
        self, dim: int = 64, depth: int = 6, heads: int = 4, mlp_ratio: int = 2, n_classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = PatchEmbed(dim, patch=4)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.stem(x)))[:, 0])


ARCHITECTURES = {"resnet": ResNet, "mobilenet": MobileNetV2, "vit": ViT}
