"""One rung of the generator ladder: a generator (registered name or folder), its sampler steps and an optional
plain-PTQ width of its UNet, written ``name``, ``name@steps=5``, ``name@w4a4`` or ``name@steps=5@w4a4``.

A rung whose generator is not there (``generator-v2`` before it is trained, a folder without
``model_index.json``) is not an error: ``locate`` says why, and the ladder reports the rung as skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from genqlib.zoo.generators import GENERATORS, generator_folder

# The ladder (#35 item 3): the first mini generator, the retrained one, the retrained one at half of
# mini's 10 sampler steps, and the retrained one with its UNet quantized by plain PTQ at W4A4 (the
# generator-quantization comparison's ``ptq`` method, genqlib.paper.generator_quant).
DEFAULT_RUNGS = ("generator-v1", "generator-v2", "generator-v2@steps=5", "generator-v2@w4a4")
_WIDTH = re.compile(r"w(\d+)a(\d+)")
FORMS = "NAME, NAME@steps=N, NAME@wWaA (e.g. generator-v2@w4a4), or both modifiers"


@dataclass(frozen=True)
class Rung:
    """A generator, its sampler ``steps`` (None: the profile's) and ``quant_bits`` (weight, activation) of a
    plain-PTQ UNet (None: full precision)."""

    generator: str
    steps: int | None = None
    quant_bits: tuple[int, int] | None = None

    @property
    def spec(self) -> str:
        """The rung as the command line writes it (``parse_rung`` reads it back)."""
        parts = [self.generator]
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
        if self.quant_bits is not None:
            parts.append(f"w{self.quant_bits[0]}a{self.quant_bits[1]}")
        return "@".join(parts)

    @property
    def tag(self) -> str:
        """A file-name-safe name: the registered name (or the folder's name and a hash of its path) and the
        modifiers, e.g. ``generator-v2-steps5-w4a4``."""
        name = self.generator
        if name not in GENERATORS:
            path_hash = hashlib.sha256(str(Path(name).resolve()).encode()).hexdigest()[:6]
            name = f"{Path(name).name or 'generator'}-{path_hash}"
        parts = [name]
        if self.steps is not None:
            parts.append(f"steps{self.steps}")
        if self.quant_bits is not None:
            parts.append(f"w{self.quant_bits[0]}a{self.quant_bits[1]}")
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in "-".join(parts))


def parse_rung(text: str) -> Rung:
    """``"generator-v2@steps=5@w4a4"`` -> ``Rung("generator-v2", 5, (4, 4))``. Each modifier at most once;
    anything else raises a ValueError naming the accepted forms."""
    generator, *mods = text.strip().split("@")
    if not generator:
        raise ValueError(f"rung {text!r} names no generator; accepted: {FORMS}")
    steps, bits = None, None
    for mod in mods:
        width = _WIDTH.fullmatch(mod.lower())
        if mod.startswith("steps=") and steps is None:
            value = mod.removeprefix("steps=")
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"rung {text!r}: steps must be a positive integer, got {value!r}")
            steps = int(value)
        elif width and bits is None:
            bits = (int(width[1]), int(width[2]))
            if min(bits) < 2:
                raise ValueError(f"rung {text!r}: widths must be at least 2 bits, got {mod!r}")
        else:
            raise ValueError(f"rung {text!r}: modifier {mod!r} not understood or repeated; accepted: {FORMS}")
    return Rung(generator, steps, bits)


def locate(rung: Rung, allow_download: bool = False) -> tuple[str | Path | None, str | None]:
    """(the generator's folder or hub id, None) when it can be loaded, else (None, why not). A registered name
    must have its folder (``genqlib.zoo.generators``); anything else must be a folder holding
    ``model_index.json``, or, where the profile may download (``allow_download``), a hub id."""
    try:
        found = generator_folder(rung.generator)
    except FileNotFoundError as err:
        return None, f"{err} (not trained or not committed yet)"
    if rung.generator in GENERATORS:
        return found, None
    path = Path(found)
    if (path / "model_index.json").is_file():
        return path, None
    if allow_download and not path.exists():
        return rung.generator, None
    known = ", ".join(sorted(GENERATORS))
    return None, (
        f"{rung.generator!r} is neither a registered generator ({known}) nor a folder holding "
        "model_index.json, and this profile does not download"
    )
