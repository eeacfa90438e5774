"""Train the mini text-to-image generator: ``python -m genqlib.zoo.train_generator``.

Stable Diffusion's recipe at Fashion-MNIST size, on the public pool only (train images 50,000-59,999),
seen through the "web" shift of ``genqlib.zoo.web_shift``:
1. the VAE learns to reconstruct shifted 32x32 images (MSE + a small KL term);
2. ``--copies`` shifted copies of the pool are encoded once to latent distributions, each with the
   adjectives that describe its drawn perturbations (``web_shift.describing_words``);
3. the UNet and the text encoder learn noise prediction (SD's epsilon loss, DDPM schedule) from captions
   made of class names and CLIP template adjectives (with probability ``WebShift.p_described`` one that
   describes the image, as alt-text partly does), with 10% empty captions for classifier-free guidance;
   an exponential moving average of their weights is what gets saved.
A checkpoint every 100 UNet steps under ``--workdir``: a stopped run resumes where it was.
The result is written with ``save_pretrained`` and loads with ``StableDiffusionPipeline.from_pretrained``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from torch.nn import functional as F
from transformers import CLIPTokenizer

from genqlib.fashion_mnist import CLASS_NAMES, Split, load_fashion_mnist
from genqlib.infra.atomic import atomic_path
from genqlib.infra.progress import tqdm
from genqlib.prompts import (
    CLIP_TEMPLATE_ADJECTIVES,
    label_prompt,
    mixup_prompt,
    plain_prompt,
    prompt_name,
    style_prompt,
)
from genqlib.zoo import mini_sd
from genqlib.zoo.generators import GENERATORS
from genqlib.zoo.web_shift import (
    SHIFT_WORDS,
    WebShift,
    apply_draw,
    apply_web_shift,
    describing_words,
    draw_shift,
)

VAE_CHECKPOINT_EVERY = 200  # VAE steps between checkpoints (the UNet's: every 100 steps)


@dataclass(frozen=True)
class GeneratorRecipe:
    """Every setting of a generator training run (written to the model card)."""

    # The second generator's VAE (the first's: 4 channels, 1,000 steps, KL 1e-5, no edge term, no holdout; its
    # recipe is in genqlib/zoo/generator/training.json). 16 latent channels at 8x8, as Stable Diffusion 3 moved
    # from 4 to 16 for fine detail: 1,024 numbers for 1,024 pixels, +1% UNet work per image (counted).
    latent_channels: int = 16
    latent_size: int = 8
    vae_steps: int = 3000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    # Stable Diffusion's autoencoder weighs the KL sum by 1e-6 against a reconstruction loss summed over pixels
    # (CompVis/stable-diffusion, ldm/modules/losses/contperceptual.py, LPIPSWithDiscriminator.forward, and
    # configs/autoencoder/autoencoder_kl_32x32x4.yaml: kl_weight 0.000001); this loss is a per-pixel mean over
    # 32x32 pixels, so the same balance is 1e-6 / 1024 ~ 1e-9. The first generator's 1e-5 is 10^4 times
    # stronger: in a 16-channel latent it kept the posterior noise nearly as large as the latents' spread
    # (the model card's VAE designs table, "posterior std / latent spread").
    kl_weight: float = 1e-9
    edge_weight: float = (
        0.5  # edge_loss: the one design that raised PSNR and SSIM at equal budget (model card)
    )
    holdout: int = 500  # the public pool's last 500 images, for the VAE round-trip measurement
    copies: int = 4
    # How latents are scaled for the UNet. "global": one scaling factor, 1 / the latents' std, as Stable
    # Diffusion 1.x (the first two generators). "channel": each channel to mean 0 and std 1, as SDXL's
    # latents_mean/latents_std and SD3's shift_factor do for their wider latents; folded into the VAE
    # (``fold_channel_norm``) so that the saved pipeline stays a stock StableDiffusionPipeline. With KL 1e-9 the
    # 16 channels' means lie between -0.99 and +1.64 and their stds between 0.23 and 1.12 of the global scale:
    # the means hold 60% of the variance the global factor normalizes, and the sampler's pure-noise start
    # never has them.
    latent_norm: str = "global"
    unet_steps: int = 9000
    unet_batch: int = 64
    unet_lr: float = 3e-4
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    seed: int = 0


def caption_words(class_names: tuple[str, ...]) -> list[str]:
    """Every word that the project's prompts can hold: the tokenizer gets one token per word."""
    texts = [label_prompt(c, 0) for c in class_names] + list(CLIP_TEMPLATE_ADJECTIVES)
    texts += [mixup_prompt(class_names[:3], 0), style_prompt(class_names[0])]
    return sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())})


def training_caption(
    class_name: str, rng: random.Random, words: tuple[str, ...] = (), p_described: float = 0.0
) -> str:
    """A caption for a training image: 70% label prompts, 20% plain prompts, 10% the bare class name.

    With probability ``p_described`` a label caption names one of ``words`` (those describing the image's
    shift), half the time as the adjective ("A photo of a dark coat") and half in GenQ's style-prompt form
    ("A photo of a coat in the style of dark"), the phrase Stable Diffusion knew from web captions and that
    a learned style token fills; otherwise its adjective is any CLIP template adjective."""
    draw = rng.random()
    if draw < 0.7:
        if words and rng.random() < p_described:
            word = rng.choice(words)
            if rng.random() < 0.5:
                return style_prompt(class_name, word)
            return label_prompt(class_name, adjective=word)
        return label_prompt(class_name, rng)
    return plain_prompt(class_name) if draw < 0.9 else prompt_name(class_name)


def _clock() -> tuple[float, float]:
    return time.time(), time.process_time()


def _advance(state: dict, step: int, start: tuple[float, float]) -> dict:
    """The stage's progress after ``step`` steps: wall and CPU seconds (this process, all its threads) added
    since ``start``. CPU seconds are the training cost on a shared machine, where wall time also counts
    the other jobs' share."""
    wall, cpu = _clock()
    return {
        "step": step,
        "seconds": state["seconds"] + wall - start[0],
        "cpu_seconds": state.get("cpu_seconds", 0.0) + cpu - start[1],
    }


def held_back(pool: Split, recipe: GeneratorRecipe) -> tuple[Split, Split]:
    """``pool`` split into the images the generator trains on and the last ``recipe.holdout`` ones, held
    back so that the VAE's round trip is measured on public images it never saw."""
    if not 0 <= recipe.holdout < len(pool):
        raise ValueError(
            f"holdout={recipe.holdout} must be in 0..{len(pool) - 1} for a pool of {len(pool)} images"
        )
    n = len(pool) - recipe.holdout
    return Split(pool.name, pool.images[:n], pool.labels[:n]), Split(
        f"{pool.name}-held-back", pool.images[n:], pool.labels[n:]
    )


def edge_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal and vertical neighbour differences (image gradients).

    MSE alone is minimised by a blurred mean of the plausible details; an L1 term on gradients penalises
    lost edges directly. Stable Diffusion's autoencoder gets its sharpness from L1 + LPIPS + a patch GAN
    (CompVis/latent-diffusion, ldm/modules/losses/contperceptual.py, LPIPSWithDiscriminator); LPIPS needs
    ImageNet weights (not available here, and a teacher would leak private data), so this edge term is the
    deviation that stands in for the perceptual part."""
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    return (dy(recon) - dy(x)).abs().mean() + (dx(recon) - dx(x)).abs().mean()


def train_vae(recipe: GeneratorRecipe, images: torch.Tensor, workdir: Path) -> mini_sd.AutoencoderKL:
    """Stage 1: fit the VAE on freshly shifted public images (MSE + ``edge_weight`` x ``edge_loss`` + a
    small KL term); cached in ``workdir/vae``, with a checkpoint every ``VAE_CHECKPOINT_EVERY`` steps that a stopped run resumes.
    Records its training wall and CPU seconds in ``workdir/vae/seconds.json``."""
    done = workdir / "vae"
    if (done / "config.json").exists():
        return mini_sd.AutoencoderKL.from_pretrained(done)
    torch.manual_seed(recipe.seed)
    vae = mini_sd.build_vae(recipe.latent_channels, recipe.latent_size)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.vae_steps)
    state, ckpt_path = {"step": 0, "seconds": 0.0, "cpu_seconds": 0.0}, workdir / "vae.ckpt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        vae.load_state_dict(ckpt["vae"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        state = {k: ckpt[k] for k in ("step", "seconds", "cpu_seconds") if k in ckpt}
        print(f"resuming VAE training at step {state['step']}")
    bar = tqdm(range(state["step"], recipe.vae_steps), desc="vae", mininterval=5, initial=state["step"])
    start = _clock()
    for step in bar:
        gen = torch.Generator().manual_seed(recipe.seed * 100_000 + 50_000 + step)
        idx = torch.randint(0, len(images), (recipe.vae_batch,), generator=gen)
        x = apply_web_shift(images[idx], gen) * 2 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(recon, x) + recipe.kl_weight * posterior.kl().mean()
        if recipe.edge_weight:
            loss = loss + recipe.edge_weight * edge_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % VAE_CHECKPOINT_EVERY == 0 or step + 1 == recipe.vae_steps:
            state, start = _advance(state, step + 1, start), _clock()
            ckpt = {"vae": vae.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), **state}
            with atomic_path(ckpt_path) as tmp:
                torch.save(ckpt, tmp)
    vae.save_pretrained(done)
    (done / "seconds.json").write_text(json.dumps(state) + "\n")
    return vae


@torch.no_grad()
def encode_pool(vae, images: torch.Tensor, recipe: GeneratorRecipe, workdir: Path) -> dict:
    """Stage 2: latent means/std-devs of ``copies`` shifted copies of the pool, their labels' rows and the
    ``SHIFT_WORDS`` that describe each copy."""
    path = workdir / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    means, stds, rows, words = [], [], [], []
    for _ in tqdm(range(recipe.copies), desc="encode"):
        for start in range(0, len(images), 500):
            batch = images[start : start + 500]
            draw = draw_shift(len(batch), gen)
            dist = vae.encode(apply_draw(batch, draw) * 2 - 1).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
            rows.append(torch.arange(start, start + len(batch)))
            words.append(describing_words(draw))
    cache = {"mean": torch.cat(means), "std": torch.cat(stds), "row": torch.cat(rows)}
    cache["words"] = torch.cat(words)
    cache["scaling_factor"] = torch.tensor(1.0 / cache["mean"].std().item())
    torch.save(cache, path)
    return cache


def latent_affine(cache: dict, recipe: GeneratorRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale), one per latent channel: the UNet learns on ``(latent - shift) * scale``.
    ``recipe.latent_norm`` "global" is SD 1.x's single factor; "channel" standardizes each channel of the
    encoded pool's latent means."""
    means = cache["mean"]
    if recipe.latent_norm == "global":
        channels = means.shape[1]
        return torch.zeros(channels), torch.full((channels,), float(cache["scaling_factor"]))
    if recipe.latent_norm == "channel":
        return means.mean(dim=(0, 2, 3)), 1.0 / means.std(dim=(0, 2, 3))
    raise ValueError(f"latent_norm {recipe.latent_norm!r}: 'global' or 'channel'")


@torch.no_grad()
def fold_channel_norm(vae, shift: torch.Tensor, scale: torch.Tensor) -> None:
    """Make ``vae`` encode to ``(latent - shift) * scale`` and decode from it, by rewriting its 1x1
    ``quant_conv`` (the posterior's mean and log-variance) and ``post_quant_conv``; its ``scaling_factor``
    becomes 1. Round trips are unchanged up to float rounding (tested)."""
    c = len(shift)
    q, post = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] *= scale.view(-1, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - shift) * scale
    q.bias[c:] += 2 * torch.log(scale)  # the posterior's std scales with its mean
    post.bias += post.weight[:, :, 0, 0] @ shift
    post.weight /= scale.view(1, -1, 1, 1)
    vae.register_to_config(scaling_factor=1.0)


def _described(word_rows: torch.Tensor) -> list[tuple[str, ...]]:
    """Each row of a ``describing_words`` matrix as the tuple of words it marks."""
    return [tuple(w for w, on in zip(SHIFT_WORDS, row.tolist(), strict=True) if on) for row in word_rows]


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)


def work_tokenizer(workdir: Path) -> CLIPTokenizer:
    """The run's tokenizer: built once and saved in ``workdir/tokenizer``, then reloaded on every resume.
    The BPE trainer breaks frequency ties in no fixed order, so rebuilding it could renumber tokens mid-run."""
    folder = workdir / "tokenizer"
    if (folder / "tokenizer_config.json").exists():
        return CLIPTokenizer.from_pretrained(folder)
    tokenizer = mini_sd.build_tokenizer(caption_words(CLASS_NAMES))
    tokenizer.save_pretrained(folder)
    return tokenizer


def train_unet(recipe: GeneratorRecipe, cache: dict, labels: torch.Tensor, workdir: Path) -> tuple:
    """Stage 3: noise prediction on latents, text encoder trained jointly; returns EMA models."""
    torch.manual_seed(recipe.seed)
    tokenizer = work_tokenizer(workdir)
    text_encoder = mini_sd.build_text_encoder(tokenizer)
    unet = mini_sd.build_unet(recipe.latent_channels, recipe.latent_size)
    ddpm, _ = mini_sd.build_schedulers()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.unet_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    state = {"step": 0, "seconds": 0.0, "cpu_seconds": 0.0}
    ckpt_path = workdir / "unet.ckpt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        for name, module in [
            ("unet", unet),
            ("text", text_encoder),
            ("ema_unet", ema_unet),
            ("ema_text", ema_text),
        ]:
            module.load_state_dict(ckpt[name])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        state = {k: ckpt[k] for k in ("step", "seconds", "cpu_seconds") if k in ckpt}
        print(f"resuming UNet training at step {state['step']}")
    shift, scale = (v.view(1, -1, 1, 1) for v in latent_affine(cache, recipe))
    p = WebShift().p_described
    steps = range(state["step"], recipe.unet_steps)
    bar = tqdm(steps, desc="unet", mininterval=5, initial=state["step"], total=recipe.unet_steps)
    start = _clock()
    for step in bar:
        gen = torch.Generator().manual_seed(recipe.seed * 100_000 + step)
        rng = random.Random(recipe.seed * 100_000 + step)
        idx = torch.randint(0, len(cache["mean"]), (recipe.unet_batch,), generator=gen)
        noise_in = torch.randn(cache["mean"][idx].shape, generator=gen)
        latents = (cache["mean"][idx] + cache["std"][idx] * noise_in - shift) * scale
        classes = labels[cache["row"][idx]].tolist()
        captions = [
            "" if rng.random() < recipe.caption_dropout else training_caption(CLASS_NAMES[c], rng, w, p)
            for c, w in zip(classes, _described(cache["words"][idx]), strict=True)
        ]
        tokens = tokenizer(captions, padding="max_length", max_length=mini_sd.MAX_TOKENS, truncation=True)
        context = text_encoder(torch.tensor(tokens.input_ids))[0]
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, ddpm.config.num_train_timesteps, (len(latents),), generator=gen)
        pred = unet(ddpm.add_noise(latents, noise, t), t, context).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_update(ema_unet, unet, recipe.ema_decay)
        ema_update(ema_text, text_encoder, recipe.ema_decay)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 100 == 0 or step + 1 == recipe.unet_steps:
            state, start = _advance(state, step + 1, start), _clock()
            ckpt = {
                "unet": unet.state_dict(),
                "text": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
            }
            ckpt |= {
                "ema_text": ema_text.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                **state,
            }
            with atomic_path(ckpt_path) as tmp:
                torch.save(ckpt, tmp)
    return ema_unet, ema_text, tokenizer, state


def build_pipeline(
    vae, unet, text_encoder, tokenizer, shift: torch.Tensor, scale: torch.Tensor
) -> StableDiffusionPipeline:
    """Assemble the trained parts into a Stable Diffusion pipeline with the DDIM sampler; the latents'
    ``latent_affine`` goes into the VAE's config (one factor) or its weights (one per channel)."""
    if bool((shift == 0).all() and (scale == scale[0]).all()):
        vae.register_to_config(scaling_factor=float(scale[0]))
    else:
        fold_channel_norm(vae, shift, scale)
    _, ddim = mini_sd.build_schedulers()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def train_generator(
    recipe: GeneratorRecipe,
    pool: Split,
    workdir: Path,
    out: Path,
    note: str = "",
    vae_only: bool = False,
    command: str = "python -m genqlib.zoo.train_generator",
) -> dict:
    """Run the three stages on ``pool`` (the public split, less its ``holdout`` last images), save the
    pipeline to ``out``, return the record. ``vae_only`` stops after stage 1 (the VAE in ``workdir/vae``):
    what comparing VAE designs needs."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train, held = held_back(pool, recipe)
    vae = train_vae(recipe, train.images, workdir).eval()
    vae_state = json.loads((workdir / "vae" / "seconds.json").read_text())
    vae_seconds = vae_state["seconds"]
    # Written in both modes, so that the VAE bench can read the recipe of a VAE whose UNet is still training.
    vae_record = {
        "recipe": asdict(recipe),
        "vae_train_seconds": round(vae_seconds, 1),
        "vae": str(workdir / "vae"),
        "threads_last_run": torch.get_num_threads(),
    }
    (workdir / "vae" / "training.json").write_text(json.dumps(vae_record, indent=2) + "\n")
    if vae_only:
        return vae_record
    cache = encode_pool(vae, train.images, recipe, workdir)
    unet, text_encoder, tokenizer, unet_state = train_unet(recipe, cache, train.labels, workdir)
    pipe = build_pipeline(vae, unet.eval(), text_encoder.eval(), tokenizer, *latent_affine(cache, recipe))
    pipe.save_pretrained(out, safe_serialization=True)
    record = {
        "recipe": asdict(recipe),
        "web_shift": WebShift().describe(),
        "training_data": f"Fashion-MNIST {pool.name} split, its first {len(train)} images only",
        "held_back": f"the {pool.name} split's last {len(held)} images (VAE round-trip measurement)",
        "parameters": {
            name: sum(p.numel() for p in part.parameters())
            for name, part in [("unet", unet), ("vae", vae), ("text_encoder", text_encoder)]
        },
        "vocab_size": len(tokenizer),
        "vae_train_seconds": round(vae_seconds, 1),
        "unet_train_seconds": round(unet_state["seconds"], 1),
        "vae_cpu_seconds": round(vae_state.get("cpu_seconds", float("nan")), 1),
        "unet_cpu_seconds": round(unet_state.get("cpu_seconds", float("nan")), 1),
        "wall_seconds_last_run": round(time.time() - started, 1),
        "threads_last_run": torch.get_num_threads(),
        "note": note,
        "torch": torch.__version__,
        "command": command,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


OVERRIDES = {
    "vae_steps": int,
    "vae_batch": int,
    "unet_steps": int,
    "copies": int,
    "latent_channels": int,
    "latent_size": int,
    "edge_weight": float,
    "kl_weight": float,
    "holdout": int,
    "latent_norm": str,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/generator"))
    parser.add_argument("--out", type=Path, default=GENERATORS["generator-v2"])
    parser.add_argument(
        "--note", default="", help="free text for the record (e.g. how the machine was shared)"
    )
    parser.add_argument("--vae-only", action="store_true", help="train the VAE (stage 1) only")
    for field, kind in OVERRIDES.items():
        parser.add_argument(
            f"--{field.replace('_', '-')}", type=kind, default=None, help="override the recipe"
        )
    args = parser.parse_args(argv)
    overrides = {f: getattr(args, f) for f in OVERRIDES if getattr(args, f) is not None}
    recipe = GeneratorRecipe(**{**asdict(GeneratorRecipe()), **overrides})
    pool = load_fashion_mnist("public")
    # the record's command: the recipe options as given (folders and the free-text note left out)
    options = [f"--{f.replace('_', '-')} {v}" for f, v in overrides.items()]
    command = " ".join(
        ["python -m genqlib.zoo.train_generator", *options, *(["--vae-only"] if args.vae_only else [])]
    )
    record = train_generator(recipe, pool, args.workdir, args.out, args.note, args.vae_only, command)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
