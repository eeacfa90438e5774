"""A tiny random-weight StableDiffusionPipeline built only from configs (no downloads), for fast tests.

Same architecture family and geometry as the mini generator: 1-channel 32x32 pixels, an AutoencoderKL that
downsamples 4x to 8x8x4 latents, a cross-attention UNet2DConditionModel, a CLIPTextModel and a CLIPTokenizer
whose byte-level vocabulary is every single character (with and without the ``</w>`` word-end suffix) and no
merges, so any prompt tokenises character by character.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DDIMScheduler, StableDiffusionPipeline
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer

from genqlib.zoo.tiny_sd import tiny_pipeline

MAX_LENGTH = 77  # CLIP's context length; cheap at hidden size 32


def write_char_vocab(folder: Path) -> Path:
    """Write vocab.json + merges.txt of a character-level CLIP BPE (byte-level alphabet, no merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = sorted(ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for ch in chars:
            vocab.setdefault(ch + suffix, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def build_tiny_pipeline(workdir: Path, seed: int = 0) -> StableDiffusionPipeline:
    """Random-weight components from configs (``genqlib.zoo.tiny_sd``), 1-channel images, around the
    character-level tokenizer and a scaled-linear DDIM (not saved)."""
    tokenizer = CLIPTokenizer.from_pretrained(
        write_char_vocab(workdir / "vocab"), model_max_length=MAX_LENGTH
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return tiny_pipeline(tokenizer, channels=1, scheduler=scheduler, seed=seed)


def save_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it to ``folder/pipeline``; returns that folder."""
    folder = Path(folder)
    pipe = build_tiny_pipeline(folder, seed)
    out = folder / "pipeline"
    pipe.save_pretrained(out)
    return out
