"""The calibration-source registry: every source gives n images of the profile's shape; a wrong name or a
source that returns the wrong count raises."""

from __future__ import annotations

import pytest
import torch

from genqlib import SOURCES, calibration_set
from genqlib.paper.calibration import Calibration
from genqlib.paper.profiles import get_profile
from genqlib.zoo import load_teacher

N = 20  # two real shots per class for real_shots; a pool of 4 per class for the filtered sources


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("calibration")


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_returns_n_images_of_the_profile_shape(source, work_dir):
    p = get_profile("ci")
    model = load_teacher("resnet")
    calib = calibration_set(model, source, N, p, teacher="resnet", work_dir=work_dir)
    assert calib.source == source
    assert calib.images.shape == (N, p.image_channels, p.image_size, p.image_size)
    assert calib.images.dtype == torch.float32 and torch.isfinite(calib.images).all()
    again = calibration_set(model, source, N, p, teacher="resnet", work_dir=work_dir)
    assert torch.equal(again.images, calib.images), "a source is deterministic given the profile's seed"


def test_genq_keeps_a_balanced_filtered_subset_of_the_same_pool(work_dir):
    p, model = get_profile("ci"), load_teacher("resnet")
    genq = calibration_set(model, "genq", N, p, "resnet", work_dir)
    assert genq.info["view"] == "genq-resnet-e0.3-s0.3-pc4"  # pool_per_class(20, (0.3, 0.3), 10) == 4
    unfiltered = calibration_set(model, "genq_unfiltered", N, p, "resnet", work_dir)
    assert genq.info["folder"] == unfiltered.info["folder"]


def test_an_unknown_source_raises_with_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown calibration source 'jpeg'.*'genq'.*'real'"):
        calibration_set(None, "jpeg", 4, "ci")


def test_a_source_returning_another_count_raises(monkeypatch):
    monkeypatch.setitem(
        SOURCES, "short", lambda request: Calibration("short", torch.zeros(request.n - 1, 1, 28, 28))
    )
    with pytest.raises(RuntimeError, match="returned 3 images, 4 were asked for"):
        calibration_set(torch.nn.Linear(1, 1), "short", 4, "ci")


def test_real_shots_needs_whole_shots_per_class():
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        calibration_set(torch.nn.Linear(1, 1), "real_shots", 15, "ci")


def test_bn_inversion_sets_made_batch_by_batch_in_workers_are_the_whole_set_made_here_at_one_thread(
    tmp_path, capfd
):
    from genqlib.baselines import BN_BATCH_SIZE, bn_inversion
    from genqlib.paper.calibration import bn_inversion_sets
    from genqlib.paper.profiles import get_profile

    n, p = BN_BATCH_SIZE + 2, get_profile("ci")  # two batches per set: 128 images and 2
    models = {name: load_teacher(name) for name in ("resnet", "mobilenet")}
    capfd.readouterr()
    bn_inversion_sets(models, n, p, tmp_path / "workers", iters=3, jobs=2)
    assert "bn inversion:" not in capfd.readouterr().err  # workers' own bars would interleave on the terminal
    batches = sorted(f.name for f in (tmp_path / "workers" / "bn_inversion" / "batches").iterdir())
    assert [b.split("-")[0] for b in batches] == ["mobilenet", "mobilenet", "resnet", "resnet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, model in models.items():
            loaded = calibration_set(model, "bn_inversion", n, p, name, tmp_path / "workers", iters=3)
            lr = p.bn_inversion.lr
            whole = bn_inversion(model, n, (1, 28, 28), iters=3, lr=lr, seed=p.seed, progress=False)
            assert torch.equal(loaded.images, whole.images)
            assert loaded.info["loss"] == [whole.loss_start, whole.loss_end]
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path / "workers" / "bn_inversion"
    stamp = {f: f.stat().st_mtime_ns for f in folder.rglob("*.safetensors")}
    assert len(stamp) == 6  # four batches, two joined sets
    bn_inversion_sets(models, n, p, tmp_path / "workers", iters=3, jobs=2)  # all cached: nothing is redone
    assert {f: f.stat().st_mtime_ns for f in folder.rglob("*.safetensors")} == stamp


def test_style_tokens_learned_in_workers_are_the_ones_learned_here_at_one_thread(tmp_path, capfd):
    from safetensors.torch import load_file

    from genqlib.paper.style_token import (
        learn_profile_token,
        learn_profile_tokens,
        style_per_class,
        token_path,
        token_settings,
    )

    capfd.readouterr()
    learn_profile_tokens(
        "ci", [1, 2], 10, tmp_path / "workers", jobs=2
    )  # sets that a 10-image calibration needs
    err = capfd.readouterr().err.replace("style tokens", "")
    assert "style token" not in err and "generat" not in err  # workers' own bars would interleave
    settings = token_settings("ci")
    files = [token_path("ci", k, settings, "photo", tmp_path / "workers") for k in (1, 2)]
    sets = sorted(p.name for p in (tmp_path / "workers" / "synthetic").iterdir())
    assert len(sets) == 2 and all(
        len(list((tmp_path / "workers" / "synthetic" / s).glob("*.png"))) == 10 * style_per_class("ci", 10)
        for s in sets
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k, file in zip((1, 2), files, strict=True):
            here = learn_profile_token("ci", k, tmp_path / "here")
            assert torch.equal(here.embedding, next(iter(load_file(file).values())))
    finally:
        torch.set_num_threads(threads)
    stamp = {p: p.stat().st_mtime_ns for p in files}
    learn_profile_tokens("ci", [1, 2], 10, tmp_path / "workers", jobs=2)  # all cached: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in files} == stamp
