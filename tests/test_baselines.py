"""Baseline calibration data (real, noise, BN inversion) and the cached PTQ runs of genqlib.paper.ptq_runs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genqlib.paper.ptq_runs as ptq_runs
from genqlib.baselines import bn_inversion, bn_statistics_loss, gaussian_noise, pixel_stats
from genqlib.datasets import DataSpec, real_split
from genqlib.fashion_mnist import Split, load_fashion_mnist
from genqlib.filters import batchnorm_layers, bn_distance
from genqlib.quant import QuantConfig, ReconConfig
from genqlib.zoo import build_teacher
from genqlib.zoo.models import PIXEL_MEAN, PIXEL_STD, ResNet


def random_resnet(seed: int = 0) -> nn.Module:
    """A tiny random-weight ResNet whose BN running statistics come from smooth random images (reachable by
    an inversion, and far from what pixel noise gives)."""
    torch.manual_seed(seed)
    model = ResNet(widths=(8, 16), depth=1)
    smooth = F.interpolate(torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(seed)), size=28)
    for m in batchnorm_layers(model):
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the statistics of exactly this batch
    with torch.no_grad():
        model.train()(smooth)
    return model.eval()


def test_real_data_is_balanced_and_from_the_private_split():
    images = real_split(DataSpec(), "train", n=30, seed=1).images
    private = load_fashion_mnist("private")
    assert images.shape == (30, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    flat = private.images.flatten(1)
    rows = [int((flat == img.flatten()).all(1).nonzero()[0]) for img in images]
    assert torch.bincount(private.labels[rows], minlength=10).tolist() == [3] * 10
    assert torch.equal(real_split(DataSpec(), "train", n=30, seed=1).images, images)


def test_noise_is_standard_normal_after_the_teachers_normalisation():
    x = gaussian_noise(200, (1, 28, 28), seed=3, mean=PIXEL_MEAN, std=PIXEL_STD)
    z = (x - PIXEL_MEAN) / PIXEL_STD
    assert x.shape == (200, 1, 28, 28)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert torch.equal(gaussian_noise(200, (1, 28, 28), seed=3, mean=PIXEL_MEAN, std=PIXEL_STD), x)
    clamped = gaussian_noise(200, (1, 28, 28), seed=3, mean=PIXEL_MEAN, std=PIXEL_STD, clamp=True)
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_bn_statistics_loss_equals_bn_distance():
    model = random_resnet()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    layers, inputs = batchnorm_layers(model), []
    handles = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for m in layers]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    assert bn_statistics_loss(inputs, layers).item() == pytest.approx(bn_distance(model, x), rel=1e-4)


@pytest.mark.parametrize("genie_d", [False, True])
def test_bn_inversion_lowers_the_bn_loss_of_its_start(genie_d):
    model = random_resnet()
    result = bn_inversion(model, 12, (1, 28, 28), iters=15, batch_size=6, genie_d=genie_d, progress=False)
    start = gaussian_noise(12, (1, 28, 28), seed=0, mean=PIXEL_MEAN, std=PIXEL_STD).clamp(
        0, 1
    )  # ZeroQ's start; Genie-D's is its generator's
    assert result.images.shape == (12, 1, 28, 28)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert bn_distance(model, result.images) < 0.5 * bn_distance(model, start)
    assert result.loss_end < 0.5 * result.loss_start and result.seconds > 0
    assert all(p.grad is None for p in model.parameters()), "the model itself is left untouched"


def test_bn_inversion_made_batch_by_batch_is_the_whole_set():
    from genqlib.baselines import join_inversions

    model = random_resnet()
    whole = bn_inversion(model, 10, (1, 28, 28), iters=4, batch_size=4, progress=False)
    parts = [
        bn_inversion(model, 10, (1, 28, 28), iters=4, batch_size=4, progress=False, batches=[b])
        for b in (2, 0, 1)
    ]
    joined = join_inversions(sorted(parts, key=lambda p: p.settings["batches"]))
    assert [len(p.images) for p in parts] == [2, 4, 4]
    assert torch.equal(joined.images, whole.images) and joined.loss_curve == whole.loss_curve
    assert joined.settings == whole.settings and "batches" not in whole.settings
    with pytest.raises(ValueError, match="one random stream"):
        bn_inversion(model, 10, (1, 28, 28), iters=1, batch_size=4, genie_d=True, progress=False, batches=[0])
    with pytest.raises(ValueError, match="indices in 0..2"):
        bn_inversion(model, 10, (1, 28, 28), iters=1, batch_size=4, progress=False, batches=[3])


def test_bn_inversion_names_a_model_without_batchnorm():
    with pytest.raises(ValueError, match="ViT has none"):
        bn_inversion(build_teacher("vit"), 2, (1, 28, 28), iters=1, progress=False)


def test_ptq_run_is_cached_on_disk(tmp_path, monkeypatch):
    calls = []
    real_reconstruct = ptq_runs.reconstruct

    def counting(*args, **kwargs):
        calls.append(1)
        return real_reconstruct(*args, **kwargs)

    monkeypatch.setattr(ptq_runs, "reconstruct", counting)
    model = random_resnet()
    calib = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    test = Split("test", torch.rand(10, 1, 28, 28), torch.arange(10))
    recon = ReconConfig(iters=2, batch_size=4, lr_round=1e-2)
    run = ptq_runs.PTQRun("tiny", "noise", 8, QuantConfig(4, 4), recon)
    first = ptq_runs.ptq_run(model, calib, test, run, tmp_path)
    again = ptq_runs.ptq_run(model, calib, test, run, tmp_path)
    assert len(calls) == 1 and not first["from_cache"] and again["from_cache"]
    assert {k: v for k, v in again.items() if k != "from_cache"} == {
        k: v for k, v in first.items() if k != "from_cache"
    }
    assert {"top1", "agreement", "seconds", "first_last_bits", "w_bits", "iters", "machine"} <= set(first)
    assert first["machine"]["threads"] == torch.get_num_threads()
    ptq_runs.ptq_run(model, calib.flip(0), test, run, tmp_path)  # other images: a new run
    assert len(calls) == 2
    ptq_runs.ptq_run(model, calib, test, replace(run, recon=replace(recon, seed=1)), tmp_path)  # other config
    assert len(calls) == 3


def test_fp_predictions_are_computed_once_per_weights_and_eval_set():
    model, test = random_resnet(), Split("test", torch.rand(10, 1, 28, 28), torch.arange(10))
    passes = []
    model.register_forward_hook(lambda *_: passes.append(1))
    first = ptq_runs.fp_predictions(model, test, "weights-a", "eval-a")
    assert torch.equal(ptq_runs.fp_predictions(model, test, "weights-a", "eval-a"), first)
    assert len(passes) == 1
    ptq_runs.fp_predictions(model, test, "weights-b", "eval-a")
    assert len(passes) == 2 and torch.equal(first, model.eval()(test.images).argmax(1))


def test_inversion_convergence_finds_where_doubling_the_steps_stops_paying():
    from genqlib.bench.solver import inversion_convergence
    from genqlib.paper.profiles import get_profile

    model = random_resnet()
    result = inversion_convergence(model, get_profile("ci"), iters=200, n=8, converged=0.15)
    curve = bn_inversion(model, 8, (1, 28, 28), iters=200, lr=0.5, batch_size=8, progress=False).loss_curve
    assert len(curve) == 200 and curve[0] > 2 * curve[-1], "the same run's loss falls"

    def loss(k: int) -> float:  # the mean of the 5 steps up to k
        return sum(curve[k - 5 : k]) / 5

    k = result["converged_iters"]
    assert k in (25, 50, 100), "an early doubling that gains little, found within 200 steps"
    assert loss(2 * k) >= 0.85 * loss(k)
    assert all(loss(2 * j) < 0.85 * loss(j) for j in (25, 50) if j < k), "and none before it"
    assert [r["iters"] for r in result["rows"]] == [20, 25, 50, 100, 200]  # ci profile runs 20
    assert inversion_convergence(model, get_profile("ci"), iters=40, n=8)["converged_iters"] is None


class Unpicklable(torch.nn.Module):
    """A model defined where a worker process cannot import it from (as in a notebook cell)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.hook = lambda x: x  # a lambda attribute: pickle refuses the module

    def forward(self, x):
        return self.inner(x)


def test_ptq_runs_in_worker_processes_repeat_the_one_thread_runs_bit_for_bit(tmp_path):
    model = random_resnet()
    calib = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    test = Split(
        "test", torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(2)), torch.arange(200) % 10
    )
    runs = [
        ptq_runs.PTQRun(
            "tiny", "noise", 8, QuantConfig(2, 2), ReconConfig(iters=3, batch_size=4, lr_round=1e-2, seed=s)
        )
        for s in (0, 1)
    ]
    tasks = [ptq_runs.PTQTask(model, calib, r) for r in [*runs, runs[0]]]  # the repeat is computed once
    rows = ptq_runs.ptq_runs(tasks, test, tmp_path / "workers", jobs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        oracle = [ptq_runs.ptq_run(model, calib, test, r, tmp_path / "here") for r in runs]
    finally:
        torch.set_num_threads(threads)
    assert [r["threads"] for r in rows] == [1, 1, 1]
    assert [r["from_cache"] for r in rows] == [False, False, True]
    assert [(r["top1"], r["agreement"]) for r in rows] == [
        (r["top1"], r["agreement"]) for r in [*oracle, oracle[0]]
    ]
    assert len(list((tmp_path / "workers").glob("*.json"))) == 2
    again = ptq_runs.ptq_runs(tasks, test, tmp_path / "workers", jobs=2)
    assert all(r["from_cache"] for r in again)


def test_ptq_runs_say_when_a_model_cannot_go_to_a_worker_and_compute_it_here(tmp_path):
    model = Unpicklable(random_resnet())
    calib = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    test = Split("test", torch.rand(10, 1, 28, 28), torch.arange(10))
    recon = ReconConfig(iters=2, batch_size=4, lr_round=1e-2)
    runs = [ptq_runs.PTQRun("tiny", "noise", 8, QuantConfig(4, 4), replace(recon, seed=s)) for s in (0, 1)]
    tasks = [ptq_runs.PTQTask(model, calib, r) for r in runs]
    with pytest.warns(UserWarning, match="2 run.s. computed in this process: PTQTask does not pickle"):
        rows = ptq_runs.ptq_runs(tasks, test, tmp_path, jobs=2)
    assert [(r["from_cache"], r["threads"]) for r in rows] == [(False, torch.get_num_threads())] * 2


def test_pixel_stats_come_from_the_model_and_are_never_guessed():
    assert pixel_stats(random_resnet()) == (PIXEL_MEAN, PIXEL_STD)  # the mini teachers carry their own
    with pytest.raises(ValueError, match="pixel_mean"):
        pixel_stats(torch.nn.Linear(4, 2))
