"""GenQ's pool-and-filter policy (pool sizes that survive filtering, balanced filtered sets saved as keyed views)
and notebook 06's analyses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import genqlib.ablations as abl
import genqlib.pool as pool_policy
from genqlib.filters import keep_count
from genqlib.profiles import get_profile
from genqlib.store import SyntheticSet
from genqlib.zoo import build_teacher


@pytest.mark.parametrize("n", [16, 64, 512, 1024, 4096])
@pytest.mark.parametrize("drops", [(r, 0.0) for r in (0.1, 0.3, 0.5, 0.7, 0.9)] + [(0.0, 0.9), (0.3, 0.3)])
def test_pool_per_class_leaves_n_balanced_images_after_filtering(n, drops):
    per_class = pool_policy.pool_per_class(n, drops, n_classes=10)
    kept = keep_count(keep_count(per_class, drops[0]), drops[1])
    assert kept >= math.ceil(n / 10)
    fewer = per_class - 1  # and it is the fewest
    assert keep_count(keep_count(fewer, drops[0]), drops[1]) < math.ceil(n / 10)


def random_pool(folder, per_class: int) -> SyntheticSet:
    """A label-prompt-like set of random 32x32 grey images, classes interleaved as ``generate`` writes them."""
    pool = SyntheticSet.create(folder, key={"test": "pool"})
    rng = np.random.default_rng(0)
    for i in range(per_class * 10):
        image = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8))
        pool.add(image, {"index": i, "class_index": i % 10, "classes": [i % 10]})
    return SyntheticSet.open(folder)


def test_genq_images_are_balanced_and_reused_from_the_saved_view(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_teacher("resnet").eval()
    pool = random_pool(tmp_path / "pool", per_class=8)
    p = get_profile("ci")
    view = pool_policy.genq_view(model, "resnet", p, n=20, drops=(0.3, 0.3), pool=pool)
    images = view.images(size=28, channels=1)
    assert images.shape == (20, 1, 28, 28) and torch.bincount(view.labels).tolist() == [2] * 10
    (name,) = pool.list_views()
    assert name == "genq-resnet-e0.3-s0.3-pc4"  # 4 per class in, two stages of 0.3 out leave 2
    saved = SyntheticSet.open(pool.folder, view=name)
    assert torch.bincount(saved.labels, minlength=10).min() >= 2

    def no_filtering(*args, **kwargs):
        raise AssertionError("the saved view must be reused")

    monkeypatch.setattr(pool_policy, "filter_set", no_filtering)
    again = pool_policy.genq_view(model, "resnet", p, n=20, drops=(0.3, 0.3), pool=pool)
    assert torch.equal(again.images(size=28, channels=1), images)


def test_seed_spread_changes_only_the_seed_and_summarises_each_source(tmp_path, monkeypatch):
    p = get_profile("ci")
    calls = []
    genq = torch.rand(p.calib_size, 1, 28, 28)
    monkeypatch.setattr(abl, "genq", lambda *args, **kwargs: genq)

    def fake_ptq(model, teacher, images, source, bits, profile, method, iters, test, work_dir, seed):
        calls.append((source, images, seed))
        return {"top1": 80.0 + seed + (0.5 if source == "real" else 0.0)}

    monkeypatch.setattr(abl, "_ptq", fake_ptq)
    res = abl.seed_spread(None, "resnet", p, [0, 1, 2], (2, 4), "genie_m", 10, None, tmp_path)
    assert [(source, seed) for source, _, seed in calls] == [
        (s, k) for s in ("genq", "real") for k in (0, 1, 2)
    ]
    genq_sets = [images for source, images, _ in calls if source == "genq"]
    real_sets = [images for source, images, _ in calls if source == "real"]
    assert all(images is genq for images in genq_sets)
    assert all(torch.equal(images, real_sets[0]) for images in real_sets)
    assert res["spread"]["genq"] == {"mean": 81.0, "std": 1.0, "range": 2.0}
    assert res["spread"]["real"]["mean"] == 81.5


def test_a_saved_view_is_refiltered_when_the_weights_or_the_images_it_was_made_from_change(tmp_path):
    from genqlib.pool import filter_key, filtered_view, saved_view

    torch.manual_seed(0)
    model = build_teacher("resnet").eval()
    pool = random_pool(tmp_path / "pool", per_class=8)
    p = get_profile("ci")

    def saved(model, images, drops=(0.3, 0.3), name="genq-resnet"):
        return saved_view(pool, name, filter_key(model, images, p, drops))

    filtered_view(model, pool, p, "genq-resnet")
    assert saved(model, pool) is not None
    assert saved(model, pool, drops=(0.5, 0.3)) is None
    assert saved(model, pool.subset(range(40))) is None  # other images
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    assert saved(model, pool) is None  # other weights
    unkeyed = SyntheticSet.open(pool.folder, view="genq-resnet").subset(range(10))
    unkeyed.info.pop("filter_key")
    unkeyed.save_view("old")  # a view saved without its key is never trusted
    assert saved(model, pool, name="old") is None
