"""Synthetic calibration images from class-name prompts, with any diffusers text-to-image pipeline.

Seeds: image ``i`` of a run with seed ``s`` draws its initial latents from its own CPU ``torch.Generator``
seeded with ``image_seed(s, i)`` (the first 63 bits of SHA-256 of ``"genq-image:{s}:{i}"``), and that same
generator (continuing its stream) feeds any per-step noise of the scheduler (DDIM with ``eta > 0``, ancestral
samplers): diffusers accepts one generator per batch item. So an image depends on its seed only, never on the
batch size or on which images were generated before it, and latents are drawn on the CPU in float32 and only
then moved to the pipeline's device and dtype (fp16 on CUDA gets the same starting noise as fp32 on CPU).

Images are taken from the pipeline as ``output_type="np"`` (float NHWC in [0, 1]; with a 1-channel VAE the
array has C = 1) and written as 8-bit grayscale ("L") or RGB PNGs with diffusers' own rounding,
``round(x * 255)``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from genqlib.infra.progress import tqdm
from genqlib.prompts import DEFAULT_STYLE_TOKEN, PROMPT_KINDS, PromptItem, PromptSpec, prompt_name
from genqlib.store import SyntheticSet

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def image_seed(seed: int, index: int) -> int:
    """Seed of run image ``index``: 63 bits of SHA-256, so runs with nearby seeds share no image seeds."""
    digest = hashlib.sha256(f"genq-image:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def load_pipeline(
    path_or_id: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    scheduler: str | None = "ddim",
):
    """``StableDiffusionPipeline.from_pretrained`` without safety checker, quiet, with a DDIM scheduler.

    ``scheduler="ddim"`` (default) swaps in ``DDIMScheduler.from_config(pipe.scheduler.config)``: deterministic
    given the latents at eta 0, and what the paper's 20-50 step runs use; other names are in ``SCHEDULERS``,
    ``None`` keeps the saved one. ``device`` defaults to CUDA when available (else the CPU), ``dtype`` to
    float16 on CUDA and float32 elsewhere: Stable Diffusion's scale runs in half precision on a GPU.
    A committed mini generator can be named (``generator-v1``, see ``genqlib.zoo.generators``).
    """
    with _quiet_image_processor_fallback():
        from diffusers import StableDiffusionPipeline
    from diffusers.utils import is_accelerate_available

    from genqlib.zoo.generators import generator_folder

    source = _check_source(generator_folder(path_or_id))
    if device is None:
        device = os.environ.get("GENQ_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    try:
        with _no_loading_bars():
            pipe = StableDiffusionPipeline.from_pretrained(
                source,
                safety_checker=None,
                feature_extractor=None,  # only the safety checker reads it; not loading it keeps Pillow/torchvision out
                requires_safety_checker=False,
                dtype=dtype,
                # diffusers asks for accelerate (and says so at length) whenever it is missing; ask only when it is there
                low_cpu_mem_usage=is_accelerate_available(),
            )
    except Exception as err:  # diffusers raises many kinds; name the source whatever it was
        raise OSError(f"could not load a StableDiffusionPipeline from {source!r}: {err}") from err
    if scheduler is not None:
        use_scheduler(pipe, scheduler)
    if pipe.dtype != dtype:  # diffusers before `dtype=` existed (it was `torch_dtype`) ignores it
        pipe = pipe.to(dtype=dtype)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def use_scheduler(pipe, name: str) -> None:
    """Swap ``pipe``'s scheduler for the one ``SCHEDULERS[name]`` names, built from the current one's config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULERS)} or None")
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)


@contextmanager
def _quiet_image_processor_fallback() -> Iterator[None]:
    """Importing diffusers' pipelines makes transformers warn, once, that its image processors fall back to PIL
    without torchvision. genqlib never uses an image processor (no safety checker, no feature extractor), so
    that one logger is raised to ERROR for the import alone; every other transformers warning is untouched."""
    with _quiet_logger("transformers.utils.import_utils"):
        yield


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """The logger ``name`` at ERROR inside the block, at its own level after."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def _no_loading_bars() -> Iterator[None]:
    """diffusers and transformers draw a progress bar per pipeline and per model they load (a fraction of a
    second for the mini generator), which would print from every worker process that loads it; both libraries'
    bars are off while the pipeline loads and back to what they were after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    were_on = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, on in zip(libraries, were_on, strict=True):
            if on:
                lib.enable_progress_bar()


def _check_source(path_or_id: str | Path) -> str:
    """A readable local pipeline folder, or a string that can only be a hub id; else a clear error."""
    path, text = Path(path_or_id).expanduser(), str(path_or_id)
    looks_local = path.exists() or isinstance(path_or_id, Path) or text.startswith(("/", ".", "~"))
    looks_local = looks_local or text.count("/") != 1  # hub ids are exactly "owner/name"
    if not looks_local:
        return str(path_or_id)
    if not path.is_dir():
        raise FileNotFoundError(f"generator folder {str(path)!r} does not exist or is not a folder")
    index = path / "model_index.json"
    if not index.is_file() or not os.access(index, os.R_OK):
        raise FileNotFoundError(
            f"generator folder {str(path)!r} has no readable model_index.json: not a diffusers pipeline folder"
        )
    return str(path)


def resolve_classes(classes: Sequence[str | int] | None, class_names: Sequence[str]) -> list[int]:
    """Class indices from names (exact, case-insensitive or prompt form) or indices; unknown -> ValueError."""
    if classes is None:
        return list(range(len(class_names)))
    if isinstance(classes, str | int):
        classes = [classes]
    lookup = {}
    for i, name in enumerate(class_names):
        for form in (name, name.lower(), prompt_name(name)):
            lookup.setdefault(form, i)
    out = []
    for c in classes:
        if isinstance(c, int | np.integer) and not isinstance(c, bool):
            if not 0 <= int(c) < len(class_names):
                raise ValueError(f"class index {c} out of range 0..{len(class_names) - 1}")
            out.append(int(c))
        elif isinstance(c, str) and (c in lookup or c.lower() in lookup):
            out.append(lookup.get(c, lookup.get(c.lower())))
        else:
            raise ValueError(f"unknown class {c!r}; valid class names: {list(class_names)} (or indices)")
    if len(set(out)) != len(out):
        raise ValueError(f"classes lists a class twice: {list(classes)}")
    return out


@dataclass(frozen=True)
class Sampling:
    """How a set is sampled, the settings a run holds fixed across its ``generate`` calls: classifier-free
    ``guidance_scale``, sampler ``steps``, the base ``seed`` of every image's noise and the ``batch_size``."""

    guidance_scale: float = 3.5
    steps: int = 20
    seed: int = 0
    batch_size: int = 16

    def kwargs(self) -> dict:
        """The settings as ``generate``'s keyword arguments."""
        return asdict(self)


def generate(
    pipe,
    classes: Sequence[str | int] | None,
    n_per_class: int,
    *,
    out: str | Path,
    prompts: str = "label",
    guidance_scale: float = 3.5,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 16,
    height: int | None = None,
    width: int | None = None,
    style_token: str | None = None,
    token_file: str | Path | None = None,
    progress: bool = True,
    class_names: Sequence[str],
    mixup_k: int = 2,
    eta: float = 0.0,
    overwrite: bool = False,
    generator_id: str | None = None,
) -> SyntheticSet:
    """Generate ``n_per_class`` images for each class into ``out``; resume a matching run already there.

    ``prompts`` is one of ``PROMPT_KINDS`` (see ``genqlib.prompts``). A folder holding another run's images is
    refused unless ``overwrite=True``. ``token_file`` (style prompts) is a textual-inversion embedding loaded
    into ``pipe`` under ``style_token``. Returns the run's images (a view if ``out`` holds more of them).
    """
    _check_args(n_per_class, guidance_scale, steps, batch_size, prompts, out, eta)
    indices = resolve_classes(classes, class_names)
    style_token = _prepare_style(pipe, prompts, style_token, token_file)
    height, width = _image_size(pipe, height, width)
    spec = PromptSpec(
        prompts,
        classes=tuple(indices),
        seed=seed,
        style_token=style_token or DEFAULT_STYLE_TOKEN,
        mixup_k=mixup_k,
        class_names=tuple(class_names),
    )
    key = _run_key(pipe, spec, guidance_scale, steps, height, width, token_file, eta, generator_id)
    info = {"n_per_class": n_per_class, "dtype": str(_denoiser(pipe).dtype), "device": str(_device(pipe))}
    store = SyntheticSet.create(out, key, info=info, overwrite=overwrite)
    wanted = range(n_per_class * len(indices))
    todo = sorted(set(wanted) - set(store.indices))
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        _generate_batch(pipe, store, spec, key, batch, eta)
    done = SyntheticSet.open(out)
    if len(done) == len(wanted):
        return done
    keep = set(wanted)
    return done.subset(
        [i for i, r in enumerate(done.records) if int(r["index"]) in keep], n_per_class=n_per_class
    )


def _check_args(
    n_per_class: int,
    guidance_scale: float,
    steps: int,
    batch_size: int,
    prompts: str,
    out: str | Path,
    eta: float,
) -> None:
    if not isinstance(n_per_class, int | np.integer) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    if guidance_scale < 0:
        raise ValueError(
            f"guidance_scale must be >= 0 (the paper uses 3.5; <= 1 turns guidance off), got {guidance_scale}"
        )
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if prompts not in PROMPT_KINDS:
        raise ValueError(f"unknown prompts kind {prompts!r}; choose one of {list(PROMPT_KINDS)}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if Path(out).exists() and not Path(out).is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is an existing file, not a folder")


def _prepare_style(pipe, prompts: str, style_token: str | None, token_file: str | Path | None) -> str | None:
    """Load ``token_file`` into the pipeline if needed; check that style prompts have a known token."""
    if prompts != "style":
        if style_token is not None or token_file is not None:
            raise ValueError(
                f"style_token/token_file are only used with prompts='style', not prompts={prompts!r}"
            )
        return None
    token = style_token or DEFAULT_STYLE_TOKEN
    known = token in pipe.tokenizer.get_vocab()
    if token_file is None:
        if not known:
            raise ValueError(
                f"style prompts need a learned token: {token!r} is not in the tokenizer; pass token_file= "
                "(a textual-inversion embedding) or load it into the pipeline first"
            )
        return token
    if not Path(token_file).is_file():
        raise FileNotFoundError(f"token_file {str(token_file)!r} does not exist")
    if known:  # set the row again, so the images always come from the file the manifest names
        _set_token_embedding(pipe, token, token_file)
    else:
        # diffusers grows the embedding with transformers' default mean/covariance init, which says so on
        # stderr; the new row is overwritten with the file's vector at once, so that notice is silenced
        with _quiet_logger("transformers.modeling_utils"):
            pipe.load_textual_inversion(str(token_file), token=token)
    return token


def _set_token_embedding(pipe, token: str, token_file: str | Path) -> None:
    """Overwrite a known token's input embedding with the one vector in ``token_file`` (diffusers format)."""
    if str(token_file).endswith(".safetensors"):
        state = load_file(str(token_file))
    else:
        state = torch.load(token_file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "string_to_param" in state:  # A1111 format
        state = state["string_to_param"]["*"]
    vector = next(iter(state.values())) if isinstance(state, dict) and len(state) == 1 else state
    if not isinstance(vector, torch.Tensor) or vector.reshape(-1, vector.shape[-1]).shape[0] != 1:
        raise ValueError(f"token_file {str(token_file)!r} must hold one embedding vector for {token!r}")
    weight = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[pipe.tokenizer.convert_tokens_to_ids(token)] = vector.reshape(-1).to(weight)


def _image_size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    """Height and width (defaults: the UNet's sample size times the VAE scale factor), checked."""
    sample = _denoiser(pipe).config.sample_size
    sample = (sample, sample) if isinstance(sample, int) else tuple(sample)
    factor = pipe.vae_scale_factor
    height = height or sample[0] * factor
    width = width or sample[1] * factor
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % factor:
            raise ValueError(
                f"{name} must be a positive multiple of the VAE scale factor {factor}, got {value}"
            )
    return height, width


def _run_key(pipe, spec: PromptSpec, guidance, steps, height, width, token_file, eta, generator_id) -> dict:
    """Every setting that decides the pixels; a folder holds images of exactly one key. A quantized generator
    (``genqlib.quest.quantized_pipeline``) adds its quantization config as ``generator_quant``."""
    key = {
        "generator": generator_id or pipeline_id(pipe),
        "scheduler": type(pipe.scheduler).__name__,
        "prompts": spec.kind,
        "guidance": float(guidance),
        "steps": int(steps),
        "seed": int(spec.seed),
        "eta": float(eta),
        "height": int(height),
        "width": int(width),
        "classes": list(spec.classes),
        "class_names": list(spec.class_names),
        "mixup_k": spec.mixup_k if spec.kind == "mixup" else None,
        "style_token": spec.style_token if spec.kind == "style" else None,
        "token_file": str(token_file) if token_file is not None else None,
        "token_sha256": _sha256(token_file) if token_file is not None else None,
    }
    quant = getattr(pipe, "genq_quant", None)
    if quant is not None:  # only then: the keys of FP runs, and so their saved sets, stay as they were
        key["generator_quant"] = quant
    return key


def pipeline_id(pipe) -> str:
    """What the manifest calls the generator: ``<folder>@<content hash>`` for a local folder, else its hub id.

    Hashing the folder's model files (weights and configs; about a second per GB) keeps a retrained generator
    from resuming an old run, and lets a moved checkout resume its own.
    """
    name = getattr(pipe, "name_or_path", None)
    if name and Path(name).is_dir():
        return folder_id(name)
    return str(name or type(pipe).__name__)


def folder_id(folder: str | Path) -> str:
    """``<folder name>@<content hash>`` of a saved pipeline folder: ``pipeline_id`` without loading it."""
    return f"{Path(folder).name}@{_folder_digest(Path(folder))}"


def _model_files(folder: Path) -> list[Path]:
    """What defines a saved pipeline: ``model_index.json`` and the component folders' files. Top-level
    documents (a model card, a training record) are left out, so editing them keeps the generator's id."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(p for p in files if p.parent != folder or p.name == "model_index.json")


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in _model_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _denoiser(pipe) -> torch.nn.Module:
    """The pipeline's denoising network (``unet``, or ``transformer`` in DiT pipelines)."""
    net = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if net is None:
        raise TypeError(
            f"{type(pipe).__name__} has neither a unet nor a transformer: not a text-to-image pipeline"
        )
    return net


def _device(pipe) -> torch.device:
    return getattr(pipe, "_execution_device", None) or pipe.device


def _generate_batch(
    pipe, store: SyntheticSet, spec: PromptSpec, key: dict, batch: list[int], eta: float
) -> None:
    """Run the pipeline once on a batch of run indices and store each image with its record."""
    items = [spec.item(i) for i in batch]
    seeds = [image_seed(spec.seed, i) for i in batch]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    denoiser = _denoiser(pipe)
    shape = (
        denoiser.config.in_channels,
        key["height"] // pipe.vae_scale_factor,
        key["width"] // pipe.vae_scale_factor,
    )
    latents = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
    latents = latents.to(device=_device(pipe), dtype=denoiser.dtype)
    kwargs = {"eta": eta} if eta else {}
    result = pipe(
        prompt=[it.text for it in items],
        height=key["height"],
        width=key["width"],
        num_inference_steps=key["steps"],
        guidance_scale=key["guidance"],
        latents=latents,
        generator=generators,
        output_type="np",
        **kwargs,
    )
    for index, item, s, image in zip(batch, items, seeds, _to_pil(result.images), strict=True):
        store.add(image, _record(index, item, s, key, spec))


def _to_pil(images) -> list[Image.Image]:
    """Pipeline output (NHWC float array in [0, 1], or PIL images) -> 8-bit 'L' or 'RGB' PIL images."""
    if isinstance(images, list) and images and isinstance(images[0], Image.Image):
        return [im if im.mode in ("L", "RGB") else im.convert("RGB") for im in images]
    arr = np.asarray(images if not isinstance(images, torch.Tensor) else images.float().cpu().numpy())
    arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W, 1 or 3) from the pipeline, got {arr.shape}")
    if arr.shape[-1] == 1:
        return [Image.fromarray(a[:, :, 0]) for a in arr]
    return [Image.fromarray(a) for a in arr]


def _record(index: int, item: PromptItem, seed: int, key: dict, spec: PromptSpec) -> dict:
    return {
        "index": index,
        "class_index": item.class_index,
        "class_name": spec.class_names[item.class_index],
        "classes": list(item.classes),
        "class_weights": list(item.class_weights),
        "prompt": item.text,
        "seed": seed,
        "guidance": key["guidance"],
        "steps": key["steps"],
        "scheduler": key["scheduler"],
        "generator": key["generator"],
        "token_file": key["token_file"],
    }
