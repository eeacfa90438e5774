"""The mini generator's architecture: Stable Diffusion's parts at Fashion-MNIST size.

Same classes as Stable Diffusion v1.5 (CLIPTokenizer, CLIPTextModel, AutoencoderKL, UNet2DConditionModel,
a DDPM/DDIM scheduler), so the saved folder loads with ``StableDiffusionPipeline.from_pretrained``.
Pixels are 32x32x1 (Fashion-MNIST padded by 2 px), latents 8x8xC (the VAE downsamples 4x, as SD's 8x does
at 512 px; C = 4 in the first generator, 16 in the second, as Stable Diffusion 3 moved from 4 to 16) or
16x16xC (2x, an option measured and set aside: about 4x the UNet's work per image). The tokenizer is a small byte-level BPE in CLIP's own format whose merges make every word of the
project's prompts one token (SD's 49,408-token vocabulary cannot be downloaded here and would be mostly unused).
"""

from __future__ import annotations

import json

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

PIXEL_SIZE = 32
LATENT_CHANNELS = 4  # the first mini generator's latents: 8x8x4
LATENT_SIZE = 8
MAX_TOKENS = 32
TEXT_DIM = 128
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Stable Diffusion v1.5's noise schedule (scaled-linear betas, 1,000 training steps).
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-level BPE merges learned (with the ``tokenizers`` trainer) until every word is a single token."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        min_frequency=1,
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(sorted({w.lower() for w in words}), trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(pair.split(" ") if isinstance(pair, str) else pair) for pair in merges]


def build_tokenizer(words: list[str]) -> CLIPTokenizer:
    """A CLIP tokenizer laid out like CLIP's own: bytes, bytes ending a word, merges, then the two specials."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_merges(words)
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A 3-layer CLIP text transformer sized for short class-name captions."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def _vae_widths(latent_size: int) -> tuple[int, ...]:
    """Encoder block widths: diffusers' encoder downsamples 2x after every block but the last, so a
    ``latent_size`` of 8 (32 / 4) takes three blocks and 16 (32 / 2) takes two."""
    widths = {8: (32, 64, 64), 16: (32, 64)}
    if latent_size not in widths:
        raise ValueError(f"latent_size must be one of {sorted(widths)}, got {latent_size}")
    return widths[latent_size]


def build_vae(latent_channels: int = LATENT_CHANNELS, latent_size: int = LATENT_SIZE) -> AutoencoderKL:
    """KL autoencoder, 32x32x1 pixels to ``latent_size`` x ``latent_size`` x ``latent_channels`` latents
    (8x8x4 by default: two downsamplings, the first mini generator's)."""
    widths = _vae_widths(latent_size)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=PIXEL_SIZE,
    )


def build_unet(
    latent_channels: int = LATENT_CHANNELS, latent_size: int = LATENT_SIZE
) -> UNet2DConditionModel:
    """Text-conditioned UNet on the VAE's latents with cross-attention at the two finer levels; the same
    widths whatever the latent shape (more channels cost only the first and last convolutions; a 16x16
    latent costs about 4x per step)."""
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def build_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    """The training scheduler (DDPM) and the default sampler (DDIM) over the same noise schedule."""
    ddpm = DDPMScheduler(**SCHEDULE)
    ddim = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return ddpm, ddim
