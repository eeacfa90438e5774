"""Notebook 06's helpers: pool sizes that survive filtering, and balanced filtered sets saved as views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import genqlib.ablations as abl
from genqlib.filters import keep_count
from genqlib.profiles import get_profile
from genqlib.store import SyntheticSet
from genqlib.zoo import build_teacher


@pytest.mark.parametrize("n", [16, 64, 512, 1024, 4096])
@pytest.mark.parametrize("drops", [(r, 0.0) for r in (0.1, 0.3, 0.5, 0.7, 0.9)] + [(0.0, 0.9), (0.3, 0.3)])
def test_pool_per_class_leaves_n_balanced_images_after_filtering(n, drops):
    per_class = abl.pool_per_class(n, drops)
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
    images = abl.genq_images(model, "resnet", pool, p, n=20, drops=(0.3, 0.3))
    assert images.shape == (20, 1, 28, 28)
    (view,) = [v for v in pool.list_views() if v.startswith("abl-resnet")]
    saved = SyntheticSet.open(pool.folder, view=view)
    assert torch.bincount(saved.labels, minlength=10).min() >= 2  # 6 per class in, two stages of 0.3 out

    def no_filtering(*args, **kwargs):
        raise AssertionError("the saved view must be reused")

    monkeypatch.setattr(abl, "filter_and_save", no_filtering)
    assert torch.equal(abl.genq_images(model, "resnet", pool, p, n=20, drops=(0.3, 0.3)), images)
