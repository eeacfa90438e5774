"""genqlib: quantize classifiers with filtered text-to-image synthetic calibration data (GenQ).

The method in six calls: ``generate`` synthetic images with a diffusers pipeline (``load_pipeline``),
``filter_set`` them with the full-precision model, ``quantize`` it, ``reconstruct`` (PTQ) or ``qat`` on the kept
images, ``evaluate`` on real test data. ``calibration_set(model, source, n, profile)`` gives the calibration
images of any source in ``SOURCES`` (real, noise, BN inversion, GenQ data-free and data-scarce) by name.

Layers (docs/SETUP.md, "Layout"): the library is the top-level modules with ``zoo/``, ``quant/`` and
``quest/``; ``genqlib.infra`` lies beneath it; the paper in miniature (``genqlib.paper``: profiles, run grids,
one module per paper item) and the notebooks' UI (``genqlib.ui``) sit above it. The names below are loaded on
first use (``generate`` at once: see below), and ``import genqlib`` changes nothing in the process (malloc
tuning, ``infra.machine.keep_freed_memory``, runs where the workers and the notebooks start).
"""

from __future__ import annotations

import importlib
from typing import Any

# ``generate`` is both a function and the module that defines it: imported here, the function wins the name
# ``genqlib.generate`` (a lazy export would be replaced by the module the first time anything imports it).
from genqlib.generate import generate as generate

_EXPORTS = {
    "QATConfig": "genqlib.quant",
    "QuantConfig": "genqlib.quant",
    "ReconConfig": "genqlib.quant",
    "qat": "genqlib.quant",
    "quantize": "genqlib.quant",
    "reconstruct": "genqlib.quant",
    "export": "genqlib.quant",
    "SOURCES": "genqlib.paper.calibration",
    "calibration_set": "genqlib.paper.calibration",
    "load_fashion_mnist": "genqlib.fashion_mnist",
    "filter_set": "genqlib.filters",
    "load_pipeline": "genqlib.generate",
    "keep_freed_memory": "genqlib.infra.machine",
    "evaluate": "genqlib.metrics",
    "get_profile": "genqlib.paper.profiles",
    "list_profiles": "genqlib.paper.profiles",
    "list_teachers": "genqlib.zoo",
    "load_teacher": "genqlib.zoo",
}

__all__ = sorted([*_EXPORTS, "class_names", "eval_split", "generate"])


def class_names(profile: Any) -> tuple[str, ...]:
    """Every class name of a profile's dataset; ``profile`` is a name, a profile or a ``datasets.DataSpec``."""
    from genqlib import datasets

    return datasets.class_names(_data(profile))


def eval_split(profile: Any):
    """A profile's evaluation set (``datasets.eval_split``); ``profile`` is a name, a profile or a DataSpec."""
    from genqlib import datasets

    return datasets.eval_split(_data(profile))


def _data(profile: Any) -> Any:
    """A profile name resolved to its profile (the library's functions take the profile or its DataSpec)."""
    if isinstance(profile, str):
        from genqlib.paper.profiles import get_profile

        return get_profile(profile)
    return profile


__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Load an exported name from the module that defines it, on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genqlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
