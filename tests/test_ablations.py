"""GenQ's pool-and-filter policy (pool sizes that survive filtering, balanced filtered sets saved as keyed views)
and notebook 06's analyses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import genqlib.paper.ablation_runs as abl
import genqlib.paper.synthetic_pool as pool_policy
from genqlib.fashion_mnist import Split
from genqlib.filters import keep_count
from genqlib.paper.profiles import get_profile
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


class FakeRuns:
    """Stands in for the cached PTQ run and the calibration sets: records what each point asks for."""

    def __init__(self, monkeypatch):
        self.runs, self.sets = [], []
        monkeypatch.setattr(abl, "ptq_runs", self.ptq_runs)
        monkeypatch.setattr(abl, "spec_set", self.spec_set)
        self.tokens = []
        monkeypatch.setattr(abl, "learn_profile_tokens", lambda *args: self.tokens.append(args))

    def spec_set(self, model, spec, n, profile, teacher, work_dir):
        self.sets.append((teacher, spec, n))
        return type("Calib", (), {"images": torch.rand(n, 1, 28, 28)})()

    def ptq_runs(self, tasks, test, cache_dir):
        self.runs += [t.run for t in tasks]
        machine = {"threads": 1, "cpu": "AMD EPYC", "cpu_kind": "26/2 AVX512"}
        return [
            {
                "top1": 80.0 + t.run.recon.seed,
                "agreement": 0.9,
                "seconds": 1.0,
                "threads": 1,
                "machine": machine,
            }
            for t in tasks
        ]


def setting(tmp_path, seeds=(0, 1, 2)) -> abl.Setting:
    p = get_profile("ci")
    return abl.Setting(p, (2, 2), 64, "brecq", 5, tuple(seeds), test=None, work_dir=tmp_path)


def test_every_point_runs_once_per_seed_under_the_spec_the_pilot_files_it_under(tmp_path, monkeypatch):
    fake = FakeRuns(monkeypatch)
    drops = [(0.0, 0.0), (0.3, 0.3), (0.5, 0.3)]
    res = abl.filter_strength(None, "mobilenet", setting(tmp_path), drops)
    assert [(r.source, r.recon.seed) for r in fake.runs] == [
        (spec, seed) for spec in ("genq_unfiltered", "genq", "genq@0.5,0.3") for seed in (0, 1, 2)
    ]
    assert {(r.quant.w_bits, r.quant.a_bits, r.recon.iters, r.n_calib) for r in fake.runs} == {(2, 2, 5, 64)}
    assert [r["top1"] for r in res["rows"]] == [80.0, 81.0, 82.0] * 3
    assert {(r["threads"], r["machine"]["cpu_kind"]) for r in res["rows"]} == {(1, "26/2 AVX512")}
    generated = {tuple(r["drops"]): r["n_generated"] for r in res["rows"]}
    assert generated[(0.0, 0.0)] == 70  # nothing dropped: 7 per class, the fewest balanced classes holding 64
    per_class = generated[(0.5, 0.3)] // 10  # the fewest that leave 7 per class after both stages
    assert keep_count(keep_count(per_class, 0.5), 0.3) >= 7 > keep_count(keep_count(per_class - 1, 0.5), 0.3)


def test_data_scarce_pairs_each_token_with_the_shots_it_was_learned_from(tmp_path, monkeypatch):
    fake = FakeRuns(monkeypatch)
    s = setting(tmp_path, seeds=(0,))
    res = abl.data_scarce(None, "mobilenet", s, shots=[1, 5])
    assert fake.tokens == [(s.profile, [1, 5], 64, tmp_path)]  # every token first, at once
    assert fake.sets == [
        ("mobilenet", "genq", 64),
        ("mobilenet", "real_shots", 10),
        ("mobilenet", "genq_style@1", 64),
        ("mobilenet", "real_shots", 50),
        ("mobilenet", "genq_style@5", 64),
    ]
    assert [(r["source"], r["k"], r["n"]) for r in res["rows"]] == [
        ("genq_data_free", 0, 64),
        ("real_shots", 1, 10),
        ("genq_data_scarce", 1, 64),
        ("real_shots", 5, 50),
        ("genq_data_scarce", 5, 64),
    ]


def test_cross_model_quantizes_every_teacher_on_every_teachers_filtered_images(tmp_path, monkeypatch):
    fake = FakeRuns(monkeypatch)
    bits_of = {"resnet": (2, 2), "vit": (4, 4)}
    res = abl.cross_model({"resnet": None, "vit": None}, bits_of, setting(tmp_path, seeds=(0,)))
    assert [(r.teacher, r.source, r.quant.w_bits) for r in fake.runs] == [
        ("resnet", "genq", 2),
        ("vit", "genq_by_resnet", 4),
        ("resnet", "genq_by_vit", 2),
        ("vit", "genq", 4),
    ]
    assert [(r["filter_teacher"], r["quant_teacher"]) for r in res["rows"]] == [
        ("resnet", "resnet"),
        ("resnet", "vit"),
        ("vit", "resnet"),
        ("vit", "vit"),
    ]


def test_a_saved_view_is_refiltered_when_the_weights_or_the_images_it_was_made_from_change(tmp_path):
    from genqlib.paper.synthetic_pool import filter_key, filtered_view, saved_view

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


def test_teachers_run_at_their_notebook_04_width_unless_bits_are_given():
    grid = dict(get_profile("mini").ptq.headline)
    s = abl.ablation_setting("mini", test=Split("test", torch.zeros(1, 1, 28, 28), torch.zeros(1)))
    assert s.bits == tuple(get_profile("mini").ablations.bits)
    assert {t: s.bits_for(t) for t in ("resnet", "mobilenet", "vit")} == {
        "resnet": tuple(grid["resnet"]),
        "mobilenet": tuple(grid["mobilenet"]),
        "vit": s.bits,  # no headline: the setting's bits (notebook 06 gives ViTs their own)
    }
    given = abl.ablation_setting("mini", bits=(3, 3), test=s.test)
    assert {given.bits_for(t) for t in ("resnet", "mobilenet")} == {(3, 3)}
