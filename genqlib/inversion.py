"""Learn a style token from a few real images (textual inversion; GenQ §4.2, data-scarce case).

A placeholder token ``{S}`` is added to the pipeline's tokenizer, its input embedding is initialised from a
real word's, and only that one vector is trained with the diffusion noise-prediction loss (paper eq. 11)

    E_{t ~ U, i ~ U(1, M), eps ~ N(0, I)} || eps - eps_theta(x_{i,t}, t, "A photo of a {C_i} in the style of {S}") ||^2

over (class name, real image) pairs, everything else frozen. The result is saved in diffusers' textual-inversion
format (a safetensors file holding ``{placeholder: vector of shape (dim,)}``), which
``pipe.load_textual_inversion(path)`` loads into any pipeline with the same text encoder, and which
``generate(..., prompts="style", token_file=path)`` uses.

How (and why):

* Only the row is a parameter. The embedding matrix stays frozen; a forward hook on the text encoder's input
  embedding puts the trainable vector at the placeholder's positions. Every other row and every other weight
  of the pipeline is therefore bit-identical after training (the diffusers example instead trains the whole
  matrix and copies the other rows back after each step). The learned row is written into the matrix at the
  end, so the pipeline generates with the token afterwards.
* The trained vector is float32 whatever the pipeline's dtype. With a float16 pipeline (the ``paper``
  profile on a GPU) it is cast to float16 in the hook, the loss is computed in float32, and a
  ``torch.amp.GradScaler`` guards the float16 backward pass against underflow (steps with inf/NaN gradients
  are skipped).
* Pixels go to the VAE exactly as the generator was trained on them (``to_vae_input``); latents are the
  posterior's mean and std, encoded once, and a fresh posterior sample is drawn per step (as the mini
  generator's training does), times ``vae.config.scaling_factor``. No flips or crops: with one shot per class
  an augmentation would become part of the learned "style".
* Noise is added with ``DDPMScheduler.from_config(pipe.scheduler.config)`` (the training schedule of the
  pipeline), t uniform over all training timesteps, lambda(t) = 1 (the "simple" loss); epsilon targets, or
  velocity targets for a v-prediction pipeline.
* Adam (no weight decay) at a constant learning rate; each step draws a batch of shots with replacement
  (i ~ U(1, M) in eq. 11), so a batch repeats the few shots at different noise levels.
* Every random draw of step ``s`` comes from a CPU generator seeded by (seed, s): a run resumed from a
  checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from genqlib.borders import is_border
from genqlib.generate import pipeline_id
from genqlib.infra.atomic import atomic_path
from genqlib.infra.progress import tqdm
from genqlib.infra.result_cache import digest
from genqlib.prompts import DEFAULT_STYLE_TOKEN, style_prompt

FORMAT = 1
INIT_WORD = "photo"  # the word a style token starts from: one token, in every caption, carrying no class
METADATA_KEY = "genqlib_inversion"


@dataclass
class StyleToken:
    """A learned style token: its string, the float32 embedding, the saved file (or None) and how it went."""

    token: str
    embedding: torch.Tensor
    path: Path | None
    losses: list[float]
    seconds: float
    settings: dict = field(default_factory=dict)
    from_cache: bool = False


# ---------------------------------------------------------------- inputs


def vae_geometry(pipe) -> tuple[int, tuple[int, int]]:
    """(channels, (height, width)) of the pixels the pipeline's VAE expects: ``vae.config.in_channels`` and
    the UNet's sample size times ``vae_scale_factor`` (32x32x1 for the mini generator, 512x512x3 for SD v1.5)."""
    sample = pipe.unet.config.sample_size
    sample = (sample, sample) if isinstance(sample, int) else tuple(sample)
    factor = pipe.vae_scale_factor
    return int(pipe.vae.config.in_channels), (sample[0] * factor, sample[1] * factor)


def to_vae_input(images: torch.Tensor, pipe) -> torch.Tensor:
    """Classifier-size images (N, C, H, W) in [0, 1] -> the VAE's input: its channels and size, in [-1, 1].

    Channels: gray -> RGB repeats, RGB -> gray by BT.601 luminance. Size: when the target is larger by a small
    even margin (at most an eighth of it, e.g. Fashion-MNIST's 28 -> 32) the image is zero-padded in the
    middle, exactly as the mini generator's training padded it (``web_shift.pad_clean``); otherwise it is
    resized bilinearly with antialiasing (e.g. 224 -> 512 for SD v1.5).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    channels, (height, width) = vae_geometry(pipe)
    x = images.float()
    if x.shape[1] != channels:
        x = x.repeat(1, 3, 1, 1) if channels == 3 else _luminance(x)
    dh, dw = height - x.shape[2], width - x.shape[3]
    if (dh, dw) == (0, 0):
        pass
    elif is_border((height, width), tuple(x.shape[2:])):
        x = F.pad(x, (dw // 2, dw // 2, dh // 2, dh // 2))
    else:
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).contiguous()


def _luminance(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _as_shots(shots, class_names: Sequence[str] | None) -> tuple[torch.Tensor, list[str]]:
    """(images (N, C, H, W), class names) from (image, class name) pairs or a Split-like (images + labels)."""
    if hasattr(shots, "images") and hasattr(shots, "labels"):
        if class_names is None:
            raise ValueError(
                "shots given as a Split (images + label indices) need class_names to name the labels"
            )
        images, labels = shots.images, torch.as_tensor(shots.labels).tolist()
        names = [class_names[int(c)] for c in labels]
    else:
        pairs = list(shots)
        if pairs and not all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs):
            raise ValueError("shots must be (image, class name) pairs or a Split (images + labels)")
        images = [img if img.ndim == 3 else img.unsqueeze(0) for img, _ in pairs]
        names = [str(name) for _, name in pairs]
        images = torch.stack(images) if images else torch.zeros(0, 1, 1, 1)
    if len(names) == 0:
        raise ValueError("shots is empty: give at least one (image, class name) pair")
    return images, names


# ---------------------------------------------------------------- the placeholder token


def add_placeholder(pipe, placeholder: str, init_word: str) -> int:
    """Add ``placeholder`` to the tokenizer with an embedding row copied from ``init_word``; return its id."""
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    if placeholder in tokenizer.get_vocab():
        raise ValueError(
            f"placeholder {placeholder!r} is already in the tokenizer's vocabulary; choose another "
            "placeholder or start from a freshly loaded pipeline"
        )
    init_ids = tokenizer.encode(init_word, add_special_tokens=False)
    if len(init_ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(init_ids)
        raise ValueError(f"init_word {init_word!r} must be a single token, but it tokenizes to {pieces}")
    tokenizer.add_tokens(placeholder)
    token_id = tokenizer.convert_tokens_to_ids(placeholder)
    if tokenizer.encode(placeholder, add_special_tokens=False) != [token_id]:
        raise ValueError(f"placeholder {placeholder!r} does not tokenize to one token after adding it")
    rows = text_encoder.get_input_embeddings().weight.shape[0]
    if token_id >= rows:  # never shrink a matrix that has spare rows
        _resize_embeddings(text_encoder, token_id + 1)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_ids[0]]
    return token_id


def _resize_embeddings(text_encoder, n: int) -> None:
    """``resize_token_embeddings`` without transformers' mean/covariance init (the row is set right after)."""
    try:
        text_encoder.resize_token_embeddings(n, mean_resizing=False)
    except TypeError:  # transformers < 4.46 has no mean_resizing
        text_encoder.resize_token_embeddings(n)


def save_style_token(
    path: str | Path, token: str, embedding: torch.Tensor, metadata: dict | None = None
) -> Path:
    """Write ``{token: embedding (dim,)}`` as safetensors (diffusers' textual-inversion format), atomically."""
    path = Path(path)
    meta = {METADATA_KEY: json.dumps(metadata or {})}
    with atomic_path(path) as tmp:
        save_file({token: embedding.detach().float().cpu().reshape(-1).contiguous()}, str(tmp), metadata=meta)
    return path


def load_style_token(path: str | Path) -> tuple[str, torch.Tensor, dict]:
    """(token, float32 embedding, genqlib metadata) of a file written by ``save_style_token``."""
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        if len(keys) != 1:
            raise ValueError(f"{str(path)!r} holds {len(keys)} tensors; a style token file holds exactly one")
        meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
        return keys[0], f.get_tensor(keys[0]).float().reshape(-1), meta


# ---------------------------------------------------------------- training


class _TrainableRow:
    """Context: the pipeline frozen, a float32 vector standing in for one token's input embedding."""

    def __init__(self, pipe, token_id: int, init: torch.Tensor) -> None:
        self.pipe, self.token_id = pipe, token_id
        device = pipe.text_encoder.get_input_embeddings().weight.device
        self.row = torch.nn.Parameter(init.detach().to(device=device, dtype=torch.float32).clone())

    def __enter__(self) -> torch.nn.Parameter:
        modules = [self.pipe.text_encoder, self.pipe.unet, self.pipe.vae]
        self._flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
        for p, _ in self._flags:
            p.requires_grad_(False)
        embedding = self.pipe.text_encoder.get_input_embeddings()
        self._hook = embedding.register_forward_hook(self._replace)
        return self.row

    def _replace(self, module, args, output: torch.Tensor) -> torch.Tensor:
        mask = (args[0] == self.token_id).unsqueeze(-1)
        return torch.where(mask, self.row.to(output.dtype), output)

    def __exit__(self, *exc) -> None:
        self._hook.remove()
        for p, flag in self._flags:
            p.requires_grad_(flag)


def _prompt_ids(pipe, names: list[str], placeholder: str, token_id: int) -> tuple[torch.Tensor, list[str]]:
    """Token ids of the style prompt of each distinct class (padded as the pipeline pads), and the classes."""
    classes = sorted(set(names), key=names.index)
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        [style_prompt(c, placeholder) for c in classes],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    counts = (ids == token_id).sum(1)
    if not bool((counts == 1).all()):
        bad = [c for c, n in zip(classes, counts.tolist(), strict=True) if n != 1]
        raise ValueError(f"the style prompt of {bad} does not hold the placeholder once (truncated?)")
    return ids, classes


@torch.no_grad()
def _encode_posterior(pipe, pixels: torch.Tensor, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the VAE posterior of each shot (float32, on the VAE's device), in batches."""
    vae = pipe.vae
    means, stds = [], []
    for start in range(0, len(pixels), batch_size):
        x = pixels[start : start + batch_size].to(device=vae.device, dtype=vae.dtype)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))


@dataclass
class _Batch:
    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    shot: torch.Tensor


def _draw(step: int, seed: int, mean: torch.Tensor, std: torch.Tensor, batch_size: int, n_t: int) -> _Batch:
    """The step's shots, posterior samples, noise and timesteps, all from the step's own CPU generator."""
    gen = _step_generator(seed, step)
    shot = torch.randint(0, len(mean), (batch_size,), generator=gen)
    shape = (batch_size, *mean.shape[1:])
    eps_post = torch.randn(shape, generator=gen).to(mean.device)
    noise = torch.randn(shape, generator=gen).to(mean.device)
    t = torch.randint(0, n_t, (batch_size,), generator=gen).to(mean.device)
    idx = shot.to(mean.device)
    return _Batch(mean[idx] + std[idx] * eps_post, noise, t, shot)


class _Objective:
    """Eq. 11 for one batch: noise the latents, run the UNet on the style prompts, MSE to the target."""

    def __init__(self, pipe, ids: torch.Tensor, class_of_shot: torch.Tensor) -> None:
        from diffusers import DDPMScheduler

        self.pipe, self.ids, self.class_of_shot = pipe, ids, class_of_shot
        self.ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
        config = pipe.vae.config
        self.scale = float(config.scaling_factor)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)

    def __call__(self, batch: _Batch) -> torch.Tensor:
        unet, text_encoder = self.pipe.unet, self.pipe.text_encoder
        latents = (batch.latents - self.shift) * self.scale
        noisy = self.ddpm.add_noise(latents, batch.noise, batch.timesteps)
        classes = self.class_of_shot[batch.shot]
        unique, inverse = classes.unique(return_inverse=True)
        context = text_encoder(self.ids[unique].to(text_encoder.device))[0][inverse.to(text_encoder.device)]
        pred = unet(
            noisy.to(unet.dtype), batch.timesteps, encoder_hidden_states=context.to(unet.dtype)
        ).sample
        return F.mse_loss(pred.float(), self._target(latents, batch))

    def _target(self, latents: torch.Tensor, batch: _Batch) -> torch.Tensor:
        kind = self.ddpm.config.prediction_type
        if kind == "epsilon":
            return batch.noise
        if kind == "v_prediction":
            return self.ddpm.get_velocity(latents, batch.noise, batch.timesteps)
        if kind == "sample":
            return latents
        raise ValueError(f"unsupported prediction_type {kind!r} in the pipeline's scheduler config")


def _check_settings(steps: int, lr: float, batch_size: int, checkpoint_every: int) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")


def learn_style_token(
    pipe,
    shots,
    placeholder: str = DEFAULT_STYLE_TOKEN,
    init_word: str = INIT_WORD,
    steps: int = 1000,  # the mini profile's setting (paper.settings.TokenInversion says why; the paper's is 50k)
    lr: float = 5e-3,
    batch_size: int = 64,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    class_names: Sequence[str] | None = None,
    checkpoint_every: int = 100,
) -> StyleToken:
    """Learn ``placeholder``'s embedding from ``shots`` with the diffusion loss; everything else stays frozen.

    ``shots``: (image (C, H, W) in [0, 1], class name) pairs, or a Split-like with ``images`` and ``labels``
    (indices into ``class_names``). ``out``: the token file to write (safetensors); with ``resume``, a file
    there from the same settings, shots and generator is reused without training, and an interrupted run
    continues from ``<out>.ckpt`` (written every ``checkpoint_every`` steps). Afterwards ``pipe`` holds the
    token with the learned row.
    """
    _check_settings(steps, lr, batch_size, checkpoint_every)
    images, names = _as_shots(shots, class_names)
    pixels = to_vae_input(images, pipe)
    key = _run_key(pipe, pixels, names, placeholder, init_word, steps, lr, batch_size, seed)
    out = Path(out) if out is not None else None
    cached = _load_cached(out, key) if (out is not None and resume) else None
    token_id = add_placeholder(pipe, placeholder, init_word)
    if cached is not None:
        _write_row(pipe, token_id, cached.embedding)
        return cached
    weight = pipe.text_encoder.get_input_embeddings().weight
    with _TrainableRow(pipe, token_id, weight[token_id]) as row:
        losses, seconds = _train(pipe, row, pixels, names, key, out, resume, progress, checkpoint_every)
        embedding = row.detach().cpu().clone()
    _write_row(pipe, token_id, embedding)
    meta = {"key": key, "losses": losses, "seconds": seconds}
    path = save_style_token(out, placeholder, embedding, meta) if out is not None else None
    if out is not None:
        _checkpoint_path(out).unlink(missing_ok=True)
    return StyleToken(placeholder, embedding, path, losses, seconds, key)


def _run_key(pipe, pixels, names, placeholder, init_word, steps, lr, batch_size, seed) -> dict:
    """Everything that decides the learned vector; a token file or checkpoint is reused only on a match."""
    return {
        "format": FORMAT,
        "generator": pipeline_id(pipe),
        "placeholder": placeholder,
        "init_word": init_word,
        "steps": int(steps),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "shots": len(names),
        "shots_digest": digest(pixels, list(names))[:16],
        "classes": sorted(set(names)),
    }


def _load_cached(out: Path, key: dict) -> StyleToken | None:
    """The token stored at ``out`` if it was learned with exactly ``key``; else None (it will be retrained)."""
    if not out.is_file():
        return None
    try:
        token, embedding, meta = load_style_token(out)
    except Exception as err:  # unreadable or foreign file: retrain and replace it
        print(f"{out}: cannot reuse ({err}); learning the token again")
        return None
    if meta.get("key") != key:
        print(f"{out}: learned with other settings, shots or generator; learning the token again")
        return None
    return StyleToken(token, embedding, out, meta["losses"], meta["seconds"], key, from_cache=True)


def _write_row(pipe, token_id: int, embedding: torch.Tensor) -> None:
    weight = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = embedding.to(device=weight.device, dtype=weight.dtype)


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _train(
    pipe, row, pixels, names, key, out, resume, progress, checkpoint_every
) -> tuple[list[float], float]:
    """The optimisation loop (checkpointed to ``<out>.ckpt``, resumed from it when ``resume``); returns the
    per-step losses and the seconds spent (over all sessions of a resumed run)."""
    token_id = pipe.tokenizer.convert_tokens_to_ids(key["placeholder"])
    ids, classes = _prompt_ids(pipe, names, key["placeholder"], token_id)
    class_of_shot = torch.tensor([classes.index(n) for n in names])
    objective = _Objective(pipe, ids, class_of_shot)
    mean, std = _encode_posterior(pipe, pixels)
    opt = torch.optim.Adam([row], lr=key["lr"])
    fp16 = torch.float16 in (pipe.unet.dtype, pipe.text_encoder.dtype)
    scaler = torch.amp.GradScaler(row.device.type, enabled=fp16)
    state = _resume(out if resume else None, key, row, opt, scaler)
    n_t = objective.ddpm.config.num_train_timesteps
    bar = tqdm(
        range(state["step"], key["steps"]),
        desc="style token",
        initial=state["step"],
        total=key["steps"],
        disable=not progress,
        mininterval=2,
    )
    start = time.perf_counter()
    for step in bar:
        loss = objective(_draw(step, key["seed"], mean, std, key["batch_size"], n_t))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        state["losses"].append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if out is not None and ((step + 1) % checkpoint_every == 0 and step + 1 < key["steps"]):
            state["seconds"] += time.perf_counter() - start
            start = time.perf_counter()
            _save_checkpoint(out, key, row, opt, scaler, step + 1, state)
    return state["losses"], state["seconds"] + time.perf_counter() - start


def _save_checkpoint(out: Path, key, row, opt, scaler, step: int, state: dict) -> None:
    path = _checkpoint_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": json.dumps(key, sort_keys=True),
        "row": row.detach().cpu(),
        "opt": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "losses": list(state["losses"]),
        "seconds": state["seconds"],
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _resume(out: Path | None, key: dict, row, opt, scaler) -> dict:
    """Load ``<out>.ckpt`` into the row, optimizer and scaler when it belongs to this run; the loop's state."""
    fresh = {"step": 0, "losses": [], "seconds": 0.0}
    if out is None or not _checkpoint_path(out).is_file():
        return fresh
    ckpt = torch.load(_checkpoint_path(out), map_location="cpu", weights_only=True)
    if ckpt.get("key") != json.dumps(key, sort_keys=True):
        print(f"{_checkpoint_path(out)}: from other settings; starting the token from scratch")
        return fresh
    with torch.no_grad():
        row.copy_(ckpt["row"].to(row))
    opt.load_state_dict(ckpt["opt"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    print(f"resuming the style token at step {ckpt['step']} of {key['steps']}")
    return {"step": int(ckpt["step"]), "losses": list(ckpt["losses"]), "seconds": float(ckpt["seconds"])}
