"""Selection scores and filters: each against its definition (an oracle or a reference library) and behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.special import xlogy
from scipy.stats import gaussian_kde
from torch import nn

from genqlib import filters
from genqlib.filters import (
    FilterResult,
    batchnorm_layers,
    bn_distance,
    bn_sensitivity,
    bn_sensitivity_naive,
    energy,
    filter_pipeline,
    patch_entropy,
    select,
)
from genqlib.zoo import build_teacher


def randomised_cnn(name: str, seed: int = 0) -> nn.Module:
    """A random-weight teacher whose BN running statistics and affine parameters are random too."""
    torch.manual_seed(seed)
    model = build_teacher(name).eval()
    for layer in batchnorm_layers(model):
        layer.running_mean.normal_(0, 0.5)
        layer.running_var.uniform_(0.5, 2.0)
        layer.weight.data.uniform_(0.5, 1.5)
        layer.bias.data.normal_(0, 0.2)
    return model


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------- energy


def test_energy_is_negative_logsumexp_with_temperature():
    logits = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-2.0, 3.0, 0.5]])
    identity = nn.Identity()  # the "model" returns its input as logits
    assert torch.allclose(energy(identity, logits), -torch.logsumexp(logits, 1))
    assert torch.allclose(energy(identity, logits, T=2.0), -2.0 * torch.logsumexp(logits / 2.0, 1))
    assert (
        energy(identity, logits)[0] < energy(identity, logits)[1]
    )  # a confident image is more in-distribution
    assert torch.allclose(energy(identity, logits, T=1e-3), -logits.max(1).values, atol=1e-2)  # T -> 0: -max
    with pytest.raises(ValueError, match="T must be positive"):
        energy(identity, logits, T=0.0)


def test_energy_of_a_teacher_matches_its_logits_in_any_batching():
    model = build_teacher("resnet").eval()
    images = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(energy(model, images, batch_size=3), -torch.logsumexp(logits, 1))


# ---------------------------------------------------------------- BN distance and sensitivity


def test_bn_distance_of_one_layer_is_equation_6():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25]))
    x = torch.randn(5, 3, 4, 4) * 2 + 1
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    expected = (mean - bn.running_mean).norm() + (
        (var + bn.eps).sqrt() - (bn.running_var + bn.eps).sqrt()
    ).norm()
    model = nn.Sequential(bn)
    assert bn_distance(model, x) == pytest.approx(expected.item(), rel=1e-5)
    assert bn_distance(model, x, batch_size=2) == pytest.approx(bn_distance(model, x), rel=1e-12)


def test_bn_distance_is_smallest_for_images_from_the_running_statistics_distribution():
    torch.manual_seed(0)
    model = build_teacher("resnet")
    for layer in batchnorm_layers(model):
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: the running stats become this distribution's
    with torch.no_grad():
        model.train()(torch.rand(256, 1, 28, 28))
    model.eval()
    fresh = bn_distance(model, torch.rand(64, 1, 28, 28))
    shifted = bn_distance(model, torch.rand(64, 1, 28, 28) * 0.5 + 0.5)
    noisy = bn_distance(model, (torch.rand(64, 1, 28, 28) + 0.5 * torch.randn(64, 1, 28, 28)).clamp(0, 1))
    assert fresh < shifted and fresh < noisy
    assert not model.training and no_hooks_left(model)


def test_bn_scores_need_batchnorm_and_leave_no_hooks_behind():
    with pytest.raises(ValueError, match="ViT has none"):
        bn_distance(build_teacher("vit"), torch.rand(2, 1, 28, 28))
    model = build_teacher("resnet").train()
    with pytest.raises(RuntimeError):  # a wrong input shape fails inside the forward pass
        bn_sensitivity(model, torch.rand(4, 3, 28, 28))
    assert model.training and no_hooks_left(model)  # mode restored, hooks removed on the error path


@pytest.mark.parametrize("name", ["resnet", "mobilenet"])
@pytest.mark.parametrize(("n", "batch_size"), [(11, 4), (9, 4), (6, None)])
def test_closed_form_bn_sensitivity_equals_the_naive_oracle(name, n, batch_size):
    model = randomised_cnn(name)
    images = torch.rand(n, 1, 28, 28)
    fast = bn_sensitivity(model, images, batch_size=batch_size)
    slow = bn_sensitivity_naive(model, images, batch_size=batch_size)
    assert fast.shape == (n,) and fast.dtype == torch.float64
    assert slow.abs().max() > 1e-3  # non-trivial scores
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4 * slow.abs().max().item())


def test_bn_sensitivity_batches():
    model = randomised_cnn("resnet", seed=1)
    images = torch.rand(9, 1, 28, 28)
    scores = bn_sensitivity(model, images, batch_size=4)
    # 9 = 4 + 5: the trailing single image joins the previous batch
    torch.testing.assert_close(scores[4:], bn_sensitivity(model, images[4:], batch_size=None))
    torch.testing.assert_close(scores[:4], bn_sensitivity(model, images[:4], batch_size=4))
    assert bn_sensitivity(model, images[:1]).tolist() == [0.0]
    with pytest.raises(ValueError, match="batch_size"):
        bn_sensitivity(model, images, batch_size=1)


# ---------------------------------------------------------------- patch entropy


def scipy_patch_entropy(vit: nn.Module, image: torch.Tensor) -> float:
    """Reference: scipy's Gaussian KDE (Scott) of each block's upper-triangle similarities, trapezoid rule."""
    outputs = []
    handles = [block.register_forward_hook(lambda m, a, o: outputs.append(o)) for block in vit.blocks]
    with torch.no_grad():
        vit(image)
    for handle in handles:
        handle.remove()
    grid = np.linspace(*filters.PATCH_GRID)
    total = 0.0
    for out in outputs:
        tokens = out[0, 1:].double().numpy()
        unit = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
        values = (unit @ unit.T)[np.triu_indices(len(unit), k=1)]
        f = gaussian_kde(values)(grid)
        total += -trapezoid(xlogy(f, f), grid)
    return total


def test_kde_entropy_of_a_gaussian_sample_and_of_identical_values():
    torch.manual_seed(0)
    grid = torch.linspace(*filters.PATCH_GRID)
    n = 20000
    sample = torch.randn(1, n, dtype=torch.float64) * 0.1
    s = sample.std().item()
    # the KDE is near-Gaussian with the sample's variance plus the kernel's (Scott: h = s n^(-1/5))
    variance = s**2 * (n - 1) / n + (s * n**-0.2) ** 2
    assert filters.kde_entropy(sample, grid).item() == pytest.approx(
        0.5 * np.log(2 * np.pi * np.e * variance), abs=2e-3
    )
    floor = (
        filters.MIN_BANDWIDTH_STEPS
        * (filters.PATCH_GRID[1] - filters.PATCH_GRID[0])
        / (filters.PATCH_GRID[2] - 1)
    )
    at_floor = 0.5 * np.log(
        2 * np.pi * np.e * floor**2
    )  # identical values: one kernel at the bandwidth floor
    same = torch.tensor([[0.97] * 50, [0.9705] * 50, [-0.2] * 50])
    torch.testing.assert_close(
        filters.kde_entropy(same, grid), torch.full((3,), at_floor).double(), rtol=2e-3, atol=0
    )


def test_patch_entropy_matches_scipy_and_is_per_image():
    torch.manual_seed(0)
    vit = build_teacher("vit").eval()
    images = torch.rand(3, 1, 28, 28)
    batch = patch_entropy(vit, images)
    for i in (0, 2):
        assert batch[i].item() == pytest.approx(scipy_patch_entropy(vit, images[i : i + 1]), rel=1e-3)
    torch.testing.assert_close(patch_entropy(vit, images, batch_size=2), batch)


class TokenViT(nn.Module):
    """A stand-in transformer fed tokens directly: (B, 1 + N, D) in, same out, through identity blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Identity(), nn.Identity())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks(tokens)


def test_identical_tokens_have_lower_patch_entropy_than_random_ones():
    torch.manual_seed(0)
    identical = torch.randn(2, 1, 32).expand(2, 17, 32).clone()
    random = torch.randn(2, 17, 32)
    low, high = patch_entropy(TokenViT(), identical), patch_entropy(TokenViT(), random)
    assert torch.isfinite(low).all() and (low.max() < high.min())
    vit = build_teacher("vit").eval()  # a real ViT: flat images give near-identical patch tokens
    flat, noise = torch.full((2, 1, 28, 28), 0.5), torch.rand(2, 1, 28, 28)
    assert patch_entropy(vit, flat).max() < patch_entropy(vit, noise).min()


def test_patch_entropy_refuses_a_cnn():
    with pytest.raises(ValueError, match="block outputs"):
        patch_entropy(build_teacher("resnet"), torch.rand(2, 1, 28, 28))


# ---------------------------------------------------------------- select


def test_select_keeps_the_best_of_each_class():
    classes = torch.arange(30) % 3
    scores = torch.arange(30.0) + 100 * (classes == 2)  # class 2 scores worst everywhere
    kept = select(scores, drop=0.3, classes=classes)
    assert kept.tolist() == sorted(kept.tolist())
    assert torch.bincount(classes[kept]).tolist() == [7, 7, 7]
    for c in range(3):
        members = (classes == c).nonzero().flatten()
        assert set(kept.tolist()) & set(members.tolist()) == set(members[:7].tolist())  # the 7 lowest
    best = select(scores, drop=0.3, classes=classes, higher_is_better=True)
    assert all(set(best[classes[best] == c].tolist()) == set(range(c + 9, 30, 3)) for c in range(3))
    pooled = select(scores, drop=0.3, classes=classes, per_class=False)
    assert len(pooled) == 21 and (classes[pooled] == 2).sum() == 1  # without per_class the set is unbalanced
    assert select(scores, threshold=9.0).tolist() == [0, 1, 3, 4, 6, 7, 9]
    assert select(scores, threshold=120.0, higher_is_better=True).tolist() == [20, 23, 26, 29]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": 1.0}, "drop must be in"),
        ({"drop": -0.1}, "drop must be in"),
        ({"drop": 0.3, "threshold": 1.0}, "exactly one of drop= and threshold="),
        ({}, "exactly one of drop= and threshold="),
        ({"drop": 0.3, "classes": [0, 1]}, "classes has 2 entries"),
    ],
)
def test_select_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select(torch.rand(5), **kwargs)


# ---------------------------------------------------------------- pipeline


def test_pipeline_on_a_vit_uses_patch_entropy():
    torch.manual_seed(0)
    vit = build_teacher("vit").eval()
    images, classes = torch.rand(20, 1, 28, 28), torch.arange(20) % 2
    result = filter_pipeline(vit, images, classes)
    assert isinstance(result, FilterResult) and result.settings["second"] == "patch"
    assert set(result.scores) == {"energy", "patch_entropy"}
    scored = ~result.scores["patch_entropy"].isnan()
    assert scored.sum() == result.settings["n_after_energy"] == 14  # 10 per class, drop 3
    assert torch.bincount(classes[result.kept]).tolist() == [5, 5]  # then 7 per class, drop 2
    assert scored[result.kept].all()
    for c in (0, 1):  # the kept ones have the highest entropy among their class's survivors
        pool = (scored & (classes == c)).nonzero().flatten()
        top = pool[result.scores["patch_entropy"][pool].argsort(descending=True)[:5]]
        assert set(top.tolist()) == set(result.kept[classes[result.kept] == c].tolist())
    with pytest.raises(ValueError, match="second='bn' needs BatchNorm layers, but ViT has none"):
        filter_pipeline(vit, images, classes, second="bn")


def test_pipeline_on_a_cnn_uses_bn_sensitivity_in_seeded_batches():
    model = randomised_cnn("resnet")
    images, classes = torch.rand(24, 1, 28, 28), torch.arange(24) // 12  # class-sorted, like a generated set
    result = filter_pipeline(model, images, classes, batch_size=8)
    assert result.settings["second"] == "bn" and set(result.scores) == {"energy", "bn_sensitivity"}
    assert torch.bincount(classes[result.kept]).tolist() == [6, 6]  # 12 -> 8 -> 6 per class
    again = filter_pipeline(model, images, classes, batch_size=8)
    assert torch.equal(again.kept, result.kept)
    other_seed = filter_pipeline(model, images, classes, batch_size=8, seed=1)
    scored = ~result.scores["bn_sensitivity"].isnan()
    assert not torch.equal(
        other_seed.scores["bn_sensitivity"][scored], result.scores["bn_sensitivity"][scored]
    )


def _transformers_mobilenet() -> nn.Module:
    import transformers

    config = transformers.MobileNetV2Config(
        depth_multiplier=0.35, image_size=32, num_labels=5, num_channels=1
    )
    return transformers.MobileNetV2ForImageClassification(config)


@pytest.mark.parametrize(
    "make", [lambda: build_teacher("resnet"), _transformers_mobilenet], ids=["mini", "hf"]
)
def test_scoring_and_predictions_put_back_each_modules_own_mode(make):
    """A model whose parts are in different modes (a frozen BN backbone in eval under a head in training) comes
    back from the filters' scores and from ``metrics.predictions`` with every module in its own mode and the
    BN running statistics untouched: the mini ResNet and a ``transformers`` MobileNetV2 built from a config."""
    from genqlib.metrics import predictions

    model = make().train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:3]
    assert len(frozen) == 3
    for layer in frozen:
        layer.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    assert len(set(modes.values())) == 2  # the test needs a mixed model
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    images = torch.rand(8, 1, 32, 32)
    grad_seen = []
    hook = model.register_forward_hook(lambda *_: grad_seen.append(torch.is_grad_enabled()))
    energy(model, images)
    bn_sensitivity(model, images, batch_size=4)
    predictions(model, images)
    hook.remove()
    assert grad_seen and not any(grad_seen)  # scoring and predictions build no autograd graph
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
