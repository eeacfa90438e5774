"""The paper run's cost model: FLOPs counted on the real architectures, divided by a stated GPU throughput.

``python -m genqlib.bench.cost`` builds Stable Diffusion v1.5's UNet and VAE decoder and the paper's
``transformers`` classifiers from their configs on the ``meta`` device (no weights, no memory, no network),
counts one forward's FLOPs with ``torch.utils.flop_counter``, and prints per notebook: the work (images x
steps x FLOPs) and the time at ``--tflops`` sustained (default 200 TFLOP/s: about 20% of an H100/H200's dense
fp16 peak of 989, what diffusers' SD pipelines reach at batch 32; the fp32 classifier passes are counted at
the same rate, an optimistic choice noted in docs/REPRODUCING.md). Memory: weights + activations of the largest
batch, estimated from parameter counts (fp16 UNet) and the profile's eval set held in RAM as float32.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from genqlib.zoo.tiny_sd import SD15_UNET, SD15_VAE


def _flops(module: torch.nn.Module, *args, **kwargs) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*args, **kwargs)
    return counter.get_total_flops()


def count() -> dict[str, dict]:
    """FLOPs of one forward per image (and parameter counts) of the paper's networks."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    out = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        lat, ctx = torch.zeros(1, 4, 64, 64), torch.zeros(1, 77, 768)
        out["sd15_unet"] = {"flops": _flops(unet, lat, torch.tensor([500]), encoder_hidden_states=ctx)}
        out["sd15_unet"]["params"] = sum(p.numel() for p in unet.parameters())
        vae = AutoencoderKL(**SD15_VAE)
        out["sd15_vae_decode"] = {
            "flops": _flops(vae.decode, lat),
            "params": sum(p.numel() for p in vae.parameters()),
        }
        x = torch.zeros(1, 3, 224, 224)
        for name, model in {
            "resnet50": ResNetForImageClassification(ResNetConfig()),  # the default config is ResNet-50
            "vit_base": ViTForImageClassification(ViTConfig(num_labels=1000)),  # ViT-B/16 (DeiT-B alike)
        }.items():
            out[name] = {"flops": _flops(model, x), "params": sum(p.numel() for p in model.parameters())}
    return out


def estimate(flops: dict[str, dict], tflops: float = 200.0) -> list[dict]:
    """Per-notebook work of the paper profile (defaults of genqlib.paper.profiles)."""
    from genqlib.paper.profiles import FILTER_DROPS, get_profile
    from genqlib.paper.synthetic_pool import pool_per_class

    p = get_profile("paper")
    k = 1000
    unet, vae = flops["sd15_unet"]["flops"], flops["sd15_vae_decode"]["flops"]
    cls = max(flops["resnet50"]["flops"], flops["vit_base"]["flops"])
    per_image = p.gen_steps * 2 * unet + vae  # classifier-free guidance: two UNet passes per step
    n_label = k * max(p.n_per_class, pool_per_class(p.calib_size, FILTER_DROPS, k))
    n_teachers = len(p.teachers)
    n_eval = 50_000
    # reconstruction: iters x batch x (forward + backward ~ 3 forwards) per block, blocks ~ one network
    recon = p.recon_iters * p.recon_batch_size * 3 * cls
    inv, ab = p.token_inversion, p.ablations
    rows = [
        ("01_generate", n_label * per_image + n_label * cls),
        ("02_filter", n_teachers * (n_label * 3 + n_eval) * cls),
        (
            "03_token_inversion",
            inv.steps * inv.batch_size * 3 * unet + 2 * n_label * per_image + 2 * 3 * recon,
        ),
        ("04_ptq", n_teachers * 2 * 6 * (recon + n_eval * cls)),
        ("05_qat", n_teachers * 2 * (recon + p.qat_epochs * p.calib_size * 3 * cls + 3 * n_eval * cls)),
        (
            "06_ablations",
            (len(ab.sizes) + len(ab.drops) + len(ab.seeds) * 3 + 8) * (recon + n_eval * cls)
            + k * max(ab.sizes) // 400 * per_image,
        ),
    ]
    return [{"notebook": n, "pflop": f / 1e15, "hours": f / (tflops * 1e12) / 3600} for n, f in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tflops", type=float, default=200.0, help="sustained TFLOP/s of the GPU")
    args = parser.parse_args()
    flops = count()
    for name, f in flops.items():
        print(f"{name:16s} {f['flops'] / 1e9:9.1f} GFLOP per image  {f['params'] / 1e6:7.1f} M params")
    for row in estimate(flops, args.tflops):
        print(
            f"{row['notebook']:20s} {row['pflop']:10.1f} PFLOP  {row['hours']:6.2f} h at {args.tflops:g} TFLOP/s"
        )


if __name__ == "__main__":
    main()
