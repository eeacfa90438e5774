"""Stable Diffusion architectures from configs alone (no weights, no network): the one place genqlib spells
out a UNet / AutoencoderKL / CLIP text encoder by widths.

``unet_config`` and ``vae_config`` give diffusers' keyword arguments for any widths (every down block but the
last has cross-attention, the up blocks mirror them, as in Stable Diffusion v1.5); ``tiny_pipeline`` builds
the random-weight 32x32-pixel, 8x8x4-latent pipeline that the tests (1 channel), the ``paper-smoke`` world
(RGB, ``genqlib.zoo.smoke``) and the benchmarks use; ``SD15_UNET`` / ``SD15_VAE`` are Stable Diffusion v1.5's
own sizes (``bench.cost`` counts their FLOPs on the meta device).
"""

from __future__ import annotations

from typing import Any

import torch

TINY_PIXELS = 32  # the tiny pipeline's image side; its latents are TINY_PIXELS // 4


def unet_config(
    widths: tuple[int, ...],
    sample_size: int,
    context_dim: int,
    layers_per_block: int = 1,
    norm_groups: int = 32,
) -> dict[str, Any]:
    """``UNet2DConditionModel`` keyword arguments: a cross-attention block at each width but the last."""
    n = len(widths)
    return dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(widths),
        layers_per_block=layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=context_dim,
        attention_head_dim=8,
        norm_num_groups=norm_groups,
    )


def vae_config(
    widths: tuple[int, ...], channels: int, sample_size: int, layers_per_block: int = 1, norm_groups: int = 32
) -> dict[str, Any]:
    """``AutoencoderKL`` keyword arguments: 4 latent channels, one down/up block per width."""
    n = len(widths)
    return dict(
        in_channels=channels,
        out_channels=channels,
        latent_channels=4,
        block_out_channels=tuple(widths),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_groups,
        sample_size=sample_size,
    )


SD15_UNET = unet_config((320, 640, 1280, 1280), sample_size=64, context_dim=768, layers_per_block=2)
SD15_VAE = vae_config((128, 256, 512, 512), channels=3, sample_size=512, layers_per_block=2)


def tiny_pipeline(tokenizer, channels: int, scheduler, seed: int = 0):
    """A random-weight ``StableDiffusionPipeline`` of ``channels``-channel 32x32 images and 8x8x4 latents
    around ``tokenizer`` and ``scheduler`` (the weights are drawn after ``torch.manual_seed(seed)``, text
    encoder first, then UNet, then VAE: the same seed gives the same pipeline)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        **unet_config((32, 64), sample_size=TINY_PIXELS // 4, context_dim=32, norm_groups=16)
    )
    vae = AutoencoderKL(**vae_config((16, 32, 32), channels, sample_size=TINY_PIXELS, norm_groups=8))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
