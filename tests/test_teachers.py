"""Teachers: architectures on tiny inputs, and the committed weights against their model cards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genqlib.fashion_mnist import DEBIAN_DIR, FILES, load_fashion_mnist
from genqlib.zoo import TEACHER_DIR, build_teacher, list_teachers, load_teacher, teacher_record
from genqlib.zoo.evaluate import CARD_SUBSET_SEED, CARD_SUBSET_SIZE, top1

TARGETS = {"resnet": 92.0, "mobilenet": 91.0, "vit": 88.0}


def test_registry_matches_targets():
    assert list_teachers() == list(TARGETS)
    with pytest.raises(ValueError, match="resnet"):
        build_teacher("alexnet")


@pytest.mark.parametrize("name", list_teachers())
def test_architecture_shapes_and_building_blocks(name):
    model = build_teacher(name).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    kinds = {type(m) for m in model.modules()}
    assert (nn.BatchNorm2d in kinds) == (name != "vit")
    assert (nn.LayerNorm in kinds) == (name == "vit")
    if name == "mobilenet":
        depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert depthwise and all(m.groups == m.in_channels for m in depthwise)
        assert nn.ReLU6 in kinds


def test_unknown_teacher_without_timm_names_the_choices(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)
    with pytest.raises(ValueError, match=r"unknown teacher 'resnet18'.*timm"):
        load_teacher("resnet18")


committed = pytest.mark.skipif(
    not all((TEACHER_DIR / f"{n}.safetensors").exists() for n in TARGETS), reason="teachers not trained"
)
needs_data = pytest.mark.skipif(not (DEBIAN_DIR / FILES["test_labels"]).exists(), reason="no data")


@committed
@needs_data
@pytest.mark.parametrize("name", list_teachers())
def test_committed_teacher_matches_its_card(name):
    record = teacher_record(name)
    assert record["test_top1"] >= TARGETS[name], "model card below the issue's target"
    model = load_teacher(name)
    assert not model.training
    subset = load_fashion_mnist("test").subset(CARD_SUBSET_SIZE, seed=CARD_SUBSET_SEED)
    assert abs(top1(model, subset) - record["subset_top1"]) <= 0.5
    card = (TEACHER_DIR / f"{name}.md").read_text()
    assert f"{record['test_top1']}%" in card and record["command"] in card
