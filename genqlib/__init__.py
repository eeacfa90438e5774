"""genqlib: quantize classifiers with filtered text-to-image synthetic calibration data (GenQ).

The method in six calls: ``generate`` synthetic images with a diffusers pipeline (``load_pipeline``),
``filter_set`` them with the full-precision model, ``quantize`` it, ``reconstruct`` (PTQ) or ``qat`` on the kept
images, ``evaluate`` on real test data. ``calibration_set(model, source, n, profile)`` gives the calibration
images of any source in ``SOURCES`` (real, noise, BN inversion, GenQ data-free and data-scarce) by name.
diffusers is imported only when a pipeline is loaded. Importing genqlib raises glibc's malloc thresholds
(``machine.keep_freed_memory``): CPU tensors then reuse freed pages instead of faulting in fresh ones.
"""

from genqlib.calibration import SOURCES, calibration_set
from genqlib.data import load_fashion_mnist
from genqlib.datasets import class_names, eval_split
from genqlib.filters import filter_set
from genqlib.generate import generate, load_pipeline
from genqlib.machine import keep_freed_memory
from genqlib.metrics import evaluate
from genqlib.profiles import get_profile, list_profiles
from genqlib.quant import QATConfig, QuantConfig, ReconConfig, export, qat, quantize, reconstruct
from genqlib.zoo import list_teachers, load_teacher

__all__ = [
    "QATConfig",
    "QuantConfig",
    "ReconConfig",
    "SOURCES",
    "calibration_set",
    "class_names",
    "eval_split",
    "evaluate",
    "export",
    "filter_set",
    "generate",
    "get_profile",
    "list_profiles",
    "list_teachers",
    "load_fashion_mnist",
    "load_pipeline",
    "load_teacher",
    "qat",
    "quantize",
    "reconstruct",
]
__version__ = "0.1.0"

keep_freed_memory()
