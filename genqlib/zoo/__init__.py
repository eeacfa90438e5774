"""Models by name: the mini world's teachers (committed safetensors) and, for the paper profiles, ``hf:`` and
``timm:`` ImageNet classifiers (``genqlib.zoo.classifiers``)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from genqlib.zoo.classifiers import is_classifier_name, load_classifier, teacher_tag
from genqlib.zoo.models import ARCHITECTURES

__all__ = ["build_teacher", "list_teachers", "load_teacher", "teacher_record", "teacher_tag"]

TEACHER_DIR = Path(__file__).parent / "teachers"
MINI_GENERATOR = Path(__file__).parent / "generator"  # the committed mini Stable Diffusion (README there)


def list_teachers() -> list[str]:
    """Names of the mini-world teachers."""
    return list(ARCHITECTURES)


def build_teacher(name: str) -> nn.Module:
    """A freshly initialised teacher architecture (random weights)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown teacher {name!r}; choose one of {list_teachers()}")
    return ARCHITECTURES[name]()


def teacher_record(name: str) -> dict:
    """The measured record (accuracies, recipe, training time) written when the teacher was trained."""
    build_teacher(name)  # validates the name
    return json.loads((TEACHER_DIR / f"{name}.json").read_text())


def load_teacher(name: str) -> nn.Module:
    """A trained teacher in eval mode: a mini-world name, or ``hf:<hub id or folder>`` / ``timm:<name>`` (an
    ImageNet classifier wrapped to take [0, 1] images and return logits, see ``genqlib.zoo.classifiers``)."""
    if name in ARCHITECTURES:
        model = build_teacher(name)
        model.load_state_dict(load_file(TEACHER_DIR / f"{name}.safetensors"))
        return model.eval()
    if is_classifier_name(name):
        return load_classifier(name)
    raise ValueError(
        f"unknown teacher {name!r}: mini-world teachers are {list_teachers()}; ImageNet classifiers are named "
        "hf:<hub id or folder> (transformers) or timm:<model name>"
    )
