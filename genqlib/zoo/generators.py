"""The committed mini generators by name, so that an old one stays loadable beside a retrained one.

``generator-v1`` is the first mini generator (8x8x4 latents, VAE trained 1,000 steps), committed in
``genqlib/zoo/generator``; ``generator-v2`` (``genqlib/zoo/generator-v2``) is what ``python -m
genqlib.zoo.train_generator`` trains by default. A retrained generator is committed in a folder of its own (``generator-v2``, ...)
and added to ``GENERATORS``; no folder is ever overwritten, so every generator id (folder name and content
hash, ``genqlib.generate.folder_id``) stays valid and its saved synthetic sets stay resumable.
"""

from __future__ import annotations

from pathlib import Path

ZOO = Path(__file__).resolve().parent
# generator-v2: 8x8x16 latents, VAE with Stable Diffusion's KL balance and an edge term (train_generator's
# recipe), measured against the targets in its model card (genqlib/zoo/generator-v2/README.md).
# generator-v3: generator-v2's VAE and latents, a UNet trained on per-channel standardized latents
# (train_generator --latent-norm channel), the same recipe otherwise.
GENERATORS: dict[str, Path] = {
    "generator-v1": ZOO / "generator",
    "generator-v2": ZOO / "generator-v2",
    "generator-v3": ZOO / "generator-v3",
}


def generator_folder(name_or_path: str | Path) -> str | Path:
    """The folder of a committed generator named in ``GENERATORS``; anything else (a folder, a hub id) is
    returned as given, for ``StableDiffusionPipeline.from_pretrained`` to resolve."""
    if isinstance(name_or_path, str) and name_or_path in GENERATORS:
        folder = GENERATORS[name_or_path]
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"generator {name_or_path!r} is registered at {folder}, which holds none")
        return folder
    return name_or_path


def list_generators() -> list[str]:
    """Names of the committed generators whose folders are present."""
    return [name for name, folder in GENERATORS.items() if (folder / "model_index.json").is_file()]
