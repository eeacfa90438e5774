"""Generator diagnostics against independent oracles: analytic values, slow reference loops, known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_pipeline import build_tiny_pipeline
from torch import nn

import genqlib.zoo.train_generator as train_generator
from genqlib.bench.__main__ import BENCHES
from genqlib.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, FILES
from genqlib.generator_quality import (
    frechet_distance,
    generator_diagnostics,
    hf_share,
    kid,
    penultimate_features,
    psnr,
    ssim,
    total_variation,
    vae_round_trip,
)
from genqlib.zoo import build_teacher
from genqlib.zoo.generators import GENERATORS, generator_folder

gen = torch.Generator().manual_seed(0)


def test_psnr_of_noise_of_known_power():
    clean = torch.full((3, 1, 28, 28), 0.5)
    signs = torch.randint(0, 2, clean.shape, generator=gen) * 2 - 1
    noisy = clean + 0.1 * signs  # MSE exactly 0.01: 20 dB at range 1
    assert torch.allclose(psnr(noisy, clean), torch.full((3,), 20.0), atol=1e-4)
    assert torch.isinf(psnr(clean, clean)).all()


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM by explicit loops over 11x11 windows with Gaussian weights (sigma 1.5)."""
    coords = np.arange(11) - 5
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_is_one_for_identical_images_and_matches_a_windowed_loop():
    a = torch.rand(2, 1, 28, 28, generator=gen)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    b = (a + 0.2 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    want = _ssim_reference(a[0, 0].double().numpy(), b[0, 0].double().numpy())
    assert ssim(b, a)[0].item() == pytest.approx(want, abs=1e-4)
    assert ssim(b, a)[0].item() < 0.9


def _bins_beyond(size: int, radius: float) -> float:
    """Fraction of the non-DC bins of a size x size FFT beyond ``radius`` cycles/pixel, by counting."""
    freqs = [k / size if k <= size // 2 else (k - size) / size for k in range(size)]
    beyond = sum(1 for fy in freqs for fx in freqs if math.hypot(fx, fy) > radius)
    return beyond / (size * size - 1)


def test_hf_share_of_constant_sinusoids_and_white_noise():
    assert hf_share(torch.full((2, 1, 28, 28), 0.3)).abs().max().item() == 0.0
    x = torch.arange(28.0)
    low = (0.5 + 0.4 * torch.cos(2 * math.pi * x / 28)).expand(28, 28).reshape(1, 1, 28, 28)
    high = (0.5 + 0.4 * torch.cos(2 * math.pi * 7 * x / 28)).expand(28, 28).reshape(1, 1, 28, 28)
    assert hf_share(low).item() == pytest.approx(0.0, abs=1e-9)  # 1/28 cycles/px < 0.125
    assert hf_share(high).item() == pytest.approx(1.0, abs=1e-9)  # 7/28 = 0.25 cycles/px > 0.125
    noise = torch.rand(400, 1, 28, 28, generator=gen)
    expected = _bins_beyond(28, 0.125)
    assert expected == pytest.approx(1 - math.pi / 64, abs=0.01)
    assert hf_share(noise).mean().item() == pytest.approx(expected, abs=0.005)


def test_total_variation_of_constant_and_checkerboard():
    assert total_variation(torch.full((1, 1, 6, 6), 0.7)).item() == 0.0
    board = ((torch.arange(6).view(-1, 1) + torch.arange(6).view(1, -1)) % 2).float().view(1, 1, 6, 6)
    assert total_variation(board).item() == pytest.approx(2.0)


def _kid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, by explicit pair loops."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_pair_loops_is_about_zero_for_one_distribution_and_grows_with_a_shift():
    a, b = torch.randn(12, 5, generator=gen), torch.randn(9, 5, generator=gen) + 0.3
    assert kid(a, b) == pytest.approx(_kid_reference(a.double().numpy(), b.double().numpy()), rel=1e-9)
    same = [kid(torch.randn(300, 8, generator=gen), torch.randn(300, 8, generator=gen)) for _ in range(5)]
    shifted = kid(torch.randn(300, 8, generator=gen), torch.randn(300, 8, generator=gen) + 1.0)
    assert abs(float(np.mean(same))) < 0.05 * shifted
    assert shifted > 0.5


def test_frechet_distance_of_gaussians_with_shifted_means():
    a = torch.randn(20_000, 4, generator=gen)
    b = torch.randn(20_000, 4, generator=gen) + torch.tensor([1.0, 0.0, 2.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0, abs=0.1)  # |mu|^2, same covariance
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    scaled = 2 * torch.randn(20_000, 4, generator=gen)  # Tr(I + 4I - 2 * 2I) = 4
    assert frechet_distance(a, scaled) == pytest.approx(4.0, abs=0.15)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def test_penultimate_features_are_the_heads_input():
    model = _Tiny().eval()
    x = torch.rand(7, 1, 28, 28, generator=gen)
    with torch.no_grad():
        want = model.body(x).flatten(1)
    assert torch.allclose(penultimate_features(model, x, batch_size=3).float(), want, atol=1e-6)
    assert not model.head._forward_hooks


def test_diagnostics_of_a_tiny_pipeline(tmp_path):
    pipe = build_tiny_pipeline(tmp_path)
    images = torch.rand(200, 1, 28, 28, generator=gen)
    labels = torch.arange(200) % 10
    recon = vae_round_trip(pipe.vae, images[:20])
    assert recon.shape == (20, 1, 28, 28) and recon.min() >= 0 and recon.max() <= 1
    teacher = build_teacher("resnet").eval()
    real = (torch.rand(200, 1, 28, 28, generator=gen), labels)
    record = generator_diagnostics(pipe.vae, teacher, (images, labels), real, (images[:20], labels[:20]))
    assert record["vae"]["psnr_db"] < 20  # a random-weight VAE does not reconstruct
    assert record["generated"]["class_fidelity"] == pytest.approx(
        (teacher(images).argmax(1) == labels).float().mean().item()
    )
    assert len(record["generated"]["kid_per_class"]) == 10
    assert record["generated"]["bn_distance"]["batches"] == 2
    assert record["ratios_to_real"]["generated_hf_share"] == pytest.approx(
        hf_share(images).mean().item() / hf_share(real[0]).mean().item()
    )


def test_edge_loss_is_zero_for_the_same_image_and_grows_with_blur():
    x = torch.rand(2, 1, 32, 32, generator=gen)
    blurred = nn.functional.avg_pool2d(x, 3, 1, 1)
    assert train_generator.edge_loss(x, x).item() == 0.0
    assert train_generator.edge_loss(blurred, x).item() > 0.1


def test_a_stopped_vae_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(train_generator, "VAE_CHECKPOINT_EVERY", 2)
    recipe = train_generator.GeneratorRecipe(vae_steps=4, vae_batch=2, latent_channels=8, edge_weight=0.5)
    images = torch.rand(10, 1, 28, 28, generator=gen)
    whole = train_generator.train_vae(recipe, images, tmp_path / "whole")
    calls, shift = [], train_generator.apply_web_shift

    def stop_at_third(x, g):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return shift(x, g)

    monkeypatch.setattr(train_generator, "apply_web_shift", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        train_generator.train_vae(recipe, images, tmp_path / "stopped")
    monkeypatch.setattr(train_generator, "apply_web_shift", shift)
    resumed = train_generator.train_vae(recipe, images, tmp_path / "stopped")
    assert resumed.config.latent_channels == 8
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_generators_are_found_by_name_and_the_bench_is_registered():
    assert generator_folder("generator-v1") == GENERATORS["generator-v1"]
    assert generator_folder("some/folder") == "some/folder"
    assert "generator" in BENCHES


def test_more_latent_channels_cost_the_sampler_little_and_a_finer_latent_much():
    from genqlib.bench.generator import sampling_gflop

    base, wide, fine = sampling_gflop(4, 8, 10), sampling_gflop(16, 8, 10), sampling_gflop(4, 16, 10)
    assert (
        base["unet_evaluations"] == 20 and sampling_gflop(4, 8, 10, guidance=False)["unet_evaluations"] == 10
    )
    assert wide["unet_gflop_per_evaluation"] < 1.02 * base["unet_gflop_per_evaluation"]
    assert fine["unet_gflop_per_evaluation"] > 3 * base["unet_gflop_per_evaluation"]


def test_targets_read_the_records_and_judge_each_bound():
    from genqlib.generator_targets import TARGETS, measured_values

    diagnostics = {
        "vae": {"psnr_db": 31.0},
        "ratios_to_real": {"round_trip_hf_share": 0.85, "generated_hf_share": 0.9},
        "generated": {"class_fidelity": 0.93},
    }
    values = measured_values(
        diagnostics, {"images_per_s": 19.0}, {"vae_cpu_seconds": 60, "unet_cpu_seconds": 120}
    )
    met = {t.key: t.met(values[t.key]) for t in TARGETS}
    assert met == {
        "vae_psnr_db": True,
        "round_trip_hf_ratio": False,  # 15% below real
        "class_fidelity": True,
        "generated_hf_ratio": True,  # 10% below, within 15%
        "images_per_s": False,
        "train_minutes": True,
    }
    assert (
        measured_values(None, None, {"unet_train_seconds": 1, "vae_train_seconds": 1})["train_minutes"]
        is None
    )


class _KnownPosterior(nn.Module):
    """A stand-in VAE whose posterior has means of std-dev 2 and a std-dev of exactly 0.5 everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, x):
        from types import SimpleNamespace

        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        mean = 2 * torch.randn(len(x), 4, 8, 8, generator=torch.Generator().manual_seed(1))
        logvar = torch.full_like(mean, 2 * math.log(0.5))
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(torch.cat([mean, logvar], 1)))


def test_latent_noise_compares_posterior_std_with_the_spread_of_the_means():
    from genqlib.generator_quality import latent_noise

    noise = latent_noise(_KnownPosterior(), torch.rand(500, 1, 28, 28))
    assert noise["posterior_std"] == pytest.approx(0.5, rel=1e-4)
    assert noise["latent_spread"] == pytest.approx(2.0, rel=0.01)
    assert noise["noise_ratio"] == pytest.approx(0.25, rel=0.01)


@pytest.mark.skipif(not (DEBIAN_DIR / FILES["test_labels"]).exists(), reason="no data")
def test_notebook_section_draws_real_round_trip_and_generated_per_class(tmp_path):
    from genqlib.generator_report import generator_section

    pipe = build_tiny_pipeline(tmp_path)
    generated = torch.rand(100, 1, 28, 28, generator=gen)
    labels = torch.arange(100) % 10
    fig, table, record = generator_section(
        pipe, build_teacher("resnet").eval(), generated, labels, CLASS_NAMES, 100
    )
    assert len(fig.axes) == 10 * 9
    assert [ax.get_title() for ax in fig.axes[:9] if ax.get_title()] == [
        "real",
        "VAE round trip",
        "generated",
    ]
    assert "VAE round trip" in table and record["vae"]["n"] == 500
    assert record["real"]["n"] == 100 and record["generated"]["n"] == 100


def test_each_generator_card_reads_its_own_bench_records(tmp_path, monkeypatch):
    """generator-v2's card takes its numbers from ``figures/bench/generator-v2.json`` and ``generate-v2.json``,
    never from the first generator's records, and a record naming another folder counts as not measured."""
    import json

    from genqlib.paper import assets

    folder = GENERATORS["generator-v2"]
    figures = tmp_path / "figures"
    (figures / "bench").mkdir(parents=True)
    classes = list(range(10))
    record = {
        "generator_folder": "genqlib/zoo/generator-v2",
        "teacher": "resnet",
        "command": "python -m genqlib.bench generator --generator generator-v2",
        "vae": {"psnr_db": 31.5},
        "ratios_to_real": {"round_trip_hf_share": 0.95, "generated_hf_share": 0.7},
        "generation": {"guidance_scale": 3.5, "steps": 10},
        "generated": {
            "n": 1000,
            "class_fidelity": 0.915,
            "classes": classes,
            "class_fidelity_per_class": [0.9 + c / 100 for c in classes],
            "bn_distance": {"mean": 9.0, "std": 1.0},
        },
        "real": {"bn_distance": {"mean": 4.0, "std": 0.5, "batch_size": 100}},
    }
    (figures / "bench" / "generator-v2.json").write_text(json.dumps(record))
    (figures / "bench" / "generate-v2.json").write_text(
        json.dumps({"generator_folder": "genqlib/zoo/generator-v2", "images_per_s": 27.0})
    )
    other = {**record, "generator_folder": "genqlib/zoo/generator", "vae": {"psnr_db": 20.0}}
    (figures / "bench" / "generator.json").write_text(json.dumps(other))
    assert assets.bench_record("generator", folder, figures)["vae"]["psnr_db"] == 31.5
    assert assets.bench_record("generate", folder, figures)["images_per_s"] == 27.0
    targets = assets.targets_table(figures, folder)
    assert "| 31.5 | met |" in targets and "| 27 | met |" in targets and "| 0.7 | **not met** |" in targets
    fidelity = assets.fidelity_table(figures, folder)
    assert "| Ankle boot | 99.0% |" in fidelity
    # the first generator's record names its own folder: not read for v2, and v2's not for v1
    assert assets.bench_record("generator", GENERATORS["generator-v1"], figures)["vae"]["psnr_db"] == 20.0
    (figures / "bench" / "generator-v2.json").write_text(json.dumps(other))
    assert assets.bench_record("generator", folder, figures) is None
    assert (
        "not measured"
        in assets.targets_table(figures, folder).split("| VAE round trip PSNR")[1].split("\n")[0]
    )


def test_a_missing_fidelity_record_names_the_command_that_makes_it(tmp_path):
    from genqlib.paper import assets

    assert "run_notebooks --only 01" in assets.fidelity_table(tmp_path, GENERATORS["generator-v1"])
    assert "bench generator --generator generator-v2" in assets.fidelity_table(
        tmp_path, GENERATORS["generator-v2"]
    )
