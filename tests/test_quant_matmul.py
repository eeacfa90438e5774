"""Attention matmuls: both inputs of every matmul between two activations (q, k, the softmax output, v) are
quantized, whether a model calls torch.matmul, scaled_dot_product_attention or nn.MultiheadAttention."""

from __future__ import annotations

import warnings

import pytest
import torch
from image_helpers import smooth
from torch import nn

from genqlib.quant import QuantConfig, quantize


def reference_grid(x: torch.Tensor, grid: tuple) -> torch.Tensor:
    """The export contract: step * (clamp(round(x / step) + zero_point, qmin, qmax) - zero_point)."""
    step, zero, qmin, qmax = grid
    return step * (torch.clamp(torch.round(x / step) + zero, qmin, qmax) - zero)


def test_vit_attention_matmul_inputs_are_quantized_as_computed_by_hand():
    import copy

    from genqlib.quant import calibrating
    from genqlib.zoo import build_teacher

    torch.manual_seed(0)
    model = build_teacher("vit").eval()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    q = quantize(model, QuantConfig(8, 4))
    assert q.report.matmuls == {f"blocks.{i}.attn": 2 for i in range(6)}
    assert "attention matmuls quantized: 12 of 12 (inputs q, k, softmax, v)" in q.summary()
    with torch.no_grad():
        assert torch.equal(q.set_quant(False, False)(x), model(x)), "quantizers off: the model's own SDPA"
    q.set_quant(True, True)
    with calibrating(q), torch.no_grad():
        q(x)
    q.set_quant(weights=False, acts=False)
    names = ("matmul0a", "matmul0b", "matmul1a", "matmul1b")
    quantizers = [q.acts[f"blocks/0/attn:{n}"] for n in names]
    for a in quantizers:
        a.enabled = True
    attn = q.model.blocks[0].attn
    tokens = torch.randn(3, 17, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = attn(tokens)
        b, n, d = tokens.shape  # the oracle: the module's math by hand, each matmul input on its grid
        qh, kh, vh = attn.qkv(tokens).reshape(b, n, 3, attn.heads, d // attn.heads).permute(2, 0, 3, 1, 4)
        qa, ka, pa, va = (lambda t, a=a: reference_grid(t, a.grid()) for a in quantizers)
        scores = qa(qh) @ ka(kh.transpose(-2, -1)) / (d // attn.heads) ** 0.5
        expected = attn.proj((pa(scores.softmax(-1)) @ va(vh)).transpose(1, 2).reshape(b, n, d))
    assert torch.allclose(out, expected, atol=1e-5)
    assert quantizers[2].grid()[1] == 0, "the softmax output's asymmetric grid starts at 0"
    copied = copy.deepcopy(q)
    for a in copied.acts.values():
        a.enabled = False
    with torch.no_grad():
        assert not torch.allclose(copied.model.blocks[0].attn(tokens), out), (
            "a copy applies its own quantizers"
        )
        assert torch.equal(attn(tokens), out), "and the original keeps applying its own"


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_transformers_vit_attention_matmuls_are_quantized(attn_implementation):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
        attn_implementation=attn_implementation,
    )
    model = transformers.ViTForImageClassification(config).eval()
    x = smooth(4, size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize(model, QuantConfig(4, 4), example=x)
    assert sum(q.report.matmuls.values()) == 4 and q.report.matmuls_quantized == 4
    assert "attention matmuls quantized: 4 of 4" in q.summary()
    assert len([k for k in q.acts if ":matmul" in k]) == 8


def test_multihead_attention_matmuls_are_quantized_and_other_products_warn():
    from genqlib.quant import calibrating

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.mha, self.head = (
                nn.Linear(8, 8),
                nn.MultiheadAttention(8, 2, batch_first=True),
                nn.Linear(8, 3),
            )

        def forward(self, x):
            h = self.lin(x)
            return self.head(self.mha(h, h, h)[0].mean(1))

    model, x = Wrap().eval(), torch.rand(4, 5, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="in_proj"):
        q = quantize(model, QuantConfig(4, 4), example=x)
    assert q.report.matmuls == {"mha": 2} and "attention matmuls quantized: 2 of 2" in q.summary()
    with calibrating(q), torch.no_grad():
        q(x)
    assert all(bool(q.acts[f"mha:matmul{k}{s}"].calibrated) for k in (0, 1) for s in "ab")

    class Gram(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            h = self.lin(x)
            return torch.einsum("bnd,bmd->bnm", h, h).mean((1, 2))

    with pytest.warns(UserWarning, match="matmul inputs left FP"):
        q = quantize(Gram(), QuantConfig(4, 4), example=x)
    assert "matmul FP: " in q.summary()
