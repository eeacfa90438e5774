"""The ``paper-smoke`` world: the paper profile's kinds of parts at CI size, built from configs (no network).

``ensure_smoke_world(root)`` writes, once (a ``world.json`` marks a finished build; it is built in a temporary
folder and renamed into place):

* ``pipeline/``: a random-weight RGB ``StableDiffusionPipeline`` (CLIP tokenizer and text encoder,
  AutoencoderKL 32x32x3 -> 8x8x4, cross-attention UNet, DDIM), saved with ``save_pretrained``;
* ``hf-resnet/`` and ``hf-vit/``: random-weight ``transformers`` ``ResNetForImageClassification`` and
  ``ViTForImageClassification`` with 1,000 ImageNet labels and a ``preprocessor_config.json`` each (the
  ResNet's is ConvNeXt-style, shorter side to 32 / 0.875 then a 32 crop; the ViT's a plain 32x32 resize);
* ``imagenet/``: ``train/<wnid>/*.JPEG`` (tree layout) and a flat ``val/`` with ``val_labels.txt`` (the other
  layout) for the profile's classes: small random pictures of varied sizes.

The weights are random, so accuracies are chance: the world proves the code path, not the method.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

WORLD_VERSION = 1
PIXELS = 32
TRAIN_PER_CLASS = 8
VAL_PER_CLASS = 4


SMOKE_CLASSES = (1, 207, 409, 817)  # goldfish, golden retriever, analog clock, sports car


def ensure_smoke_world(root: str | Path, classes: Sequence[int] | None = None, seed: int = 0) -> Path:
    """Build the world under ``root`` unless a finished build of this version is there; returns ``root``."""
    root = Path(root)
    marker = root / "world.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == WORLD_VERSION:
        return root
    classes = tuple(SMOKE_CLASSES if classes is None else classes)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smoke-", dir=root.parent))
    try:
        build_pipeline(tmp / "pipeline", classes, seed)
        build_hf_resnet(tmp / "hf-resnet", seed)
        build_hf_vit(tmp / "hf-vit", seed)
        build_imagenet_folder(tmp / "imagenet", classes, seed)
        (tmp / "world.json").write_text(json.dumps({"version": WORLD_VERSION, "classes": classes}) + "\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _prompt_words(classes: Sequence[int]) -> list[str]:
    import re

    from genqlib.imagenet import class_names
    from genqlib.prompts import CLIP_TEMPLATE_ADJECTIVES, prompt_name

    texts = [prompt_name(class_names()[c]) for c in classes]
    texts += [*CLIP_TEMPLATE_ADJECTIVES, "a photo of a in the style of and"]
    return sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())})


def build_pipeline(out: Path, classes: Sequence[int], seed: int = 0) -> Path:
    """A random-weight RGB StableDiffusionPipeline (32x32 pixels, 8x8x4 latents) saved to ``out``."""
    from genqlib.zoo import mini_sd
    from genqlib.zoo.tiny_sd import tiny_pipeline

    tokenizer = mini_sd.build_tokenizer(_prompt_words(classes))
    _, ddim = mini_sd.build_schedulers()
    pipe = tiny_pipeline(tokenizer, channels=3, scheduler=ddim, seed=seed)
    pipe.save_pretrained(out)
    return out


def _labels() -> dict:
    from genqlib.imagenet import class_names

    id2label = dict(enumerate(class_names()))
    return {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
    }


def build_hf_resnet(out: Path, seed: int = 0) -> Path:
    """A small random-weight transformers ResNet (BatchNorm, basic blocks) with ImageNet's 1,000 labels."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    config = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="basic",
        **_labels(),
    )
    model = ResNetForImageClassification(config).eval()
    model.save_pretrained(out)
    processor = {
        "image_processor_type": "ConvNextImageProcessor",
        "size": {"shortest_edge": PIXELS},
        "crop_pct": 0.875,
        "do_resize": True,
        "do_normalize": True,
        "do_rescale": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return out


def build_hf_vit(out: Path, seed: int = 0) -> Path:
    """A small random-weight transformers ViT (LayerNorm, CLS + 16 patch tokens) with 1,000 labels."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=PIXELS,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(),
    )
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(out)
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "size": {"height": PIXELS, "width": PIXELS},
        "do_resize": True,
        "do_normalize": True,
        "do_rescale": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return out


def _picture(rng: np.random.Generator, label: int) -> np.ndarray:
    """A small RGB picture: a class-tinted background with a random rectangle, of a random size."""
    h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
    base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.float64)
    img = base + rng.normal(0, 30, size=(h, w, 3))
    top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[top : top + h // 3, left : left + w // 3] = rng.uniform(0, 255, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


def build_imagenet_folder(
    out: Path, classes: Sequence[int], seed: int = 0, train: int = TRAIN_PER_CLASS, val: int = VAL_PER_CLASS
) -> Path:
    """``train/<wnid>/*.JPEG`` and a flat ``val/`` with ``val_labels.txt`` (``<file> <wnid>``) of ``classes``."""
    from PIL import Image

    from genqlib.imagenet import wnids

    rng = np.random.default_rng(seed)
    lines = []
    for c in classes:
        folder = out / "train" / wnids()[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(train):
            Image.fromarray(_picture(rng, c)).save(folder / f"{wnids()[c]}_{i}.JPEG", quality=90)
    (out / "val").mkdir(parents=True, exist_ok=True)
    k = 0
    for _ in range(val):
        for c in classes:
            k += 1
            name = f"ILSVRC2012_val_{k:08d}.JPEG"
            Image.fromarray(_picture(rng, c)).save(out / "val" / name, quality=90)
            lines.append(f"{name} {wnids()[c]}")
    (out / "val_labels.txt").write_text("\n".join(lines) + "\n")
    return out
