"""Quantization: ``quantize(model, QuantConfig)`` for any classifier, ``reconstruct(...)`` (PTQ), ``qat(...)``.

Typical use::

    qmodel = quantize(teacher, QuantConfig(w_bits=4, a_bits=4))          # BN folded, W4A4, 8-bit edges
    print(qmodel.summary())                                              # what was quantized, folded, left FP
    reconstruct(qmodel, teacher, calib_images, ReconConfig(method="qdrop", iters=1000))
    qat(qmodel, teacher, train_images, QATConfig(mode="genq", epochs=10))   # GenQ QAT from the PTQ model

LSQ (``QATConfig(mode="lsq")``) trains on LSQ's paper's recipe (``RECIPES["lsq"]``: lr 0.01, cosine, weight
decay by bit width, BatchNorm trained): start it from ``quantize(teacher, QuantConfig(fold_bn=False))`` and a
``reconstruct(..., ReconConfig(method="nearest"))`` calibration.
"""

from genqlib.quant.adaround import AdaRound
from genqlib.quant.config import QuantConfig, reference_for
from genqlib.quant.export import ExportReport, export
from genqlib.quant.fold import FoldResult, fold_bn
from genqlib.quant.layers import fp_weight, is_quantized, weight_quantizer
from genqlib.quant.model import ENGINE, QuantModel, QuantReport, quantize
from genqlib.quant.qat import QATConfig, QATResult, qat
from genqlib.quant.qat_recipe import RECIPES, Recipe
from genqlib.quant.quantizer import ActQuantizer, WeightQuantizer, calibrating
from genqlib.quant.recon_config import METHODS, ReconConfig
from genqlib.quant.reconstruct import reconstruct

__all__ = [
    "ENGINE",
    "ExportReport",
    "METHODS",
    "ActQuantizer",
    "AdaRound",
    "FoldResult",
    "QATConfig",
    "QATResult",
    "QuantConfig",
    "QuantModel",
    "QuantReport",
    "RECIPES",
    "Recipe",
    "ReconConfig",
    "WeightQuantizer",
    "calibrating",
    "export",
    "fold_bn",
    "fp_weight",
    "is_quantized",
    "qat",
    "quantize",
    "reference_for",
    "reconstruct",
    "weight_quantizer",
]
