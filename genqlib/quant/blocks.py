"""Group a model into reconstruction blocks (BRECQ's unit of optimisation), for any nn.Module tree.

A block is one of, found from the root down (the first rule that matches a module wins, and nothing inside a
block is visited again):

1. a module whose class is a known residual or transformer block (``KNOWN_BLOCKS``: the torchvision/timm,
   ``transformers`` and mini-teacher names of ResNet basic/bottleneck blocks, MobileNetV2 inverted residuals,
   ViT/DeiT/Swin/ConvNeXt layers, stems and patch embeddings);
2. a container holding at most ``MAX_CHAIN`` layers and no known block and no *stack* (an nn.Sequential or
   ModuleList of composite modules, such as a model's ``blocks`` or a ResNet stage): the mini teachers'
   stems, BasicBlocks of models nobody listed, a ``classifier`` Sequential (Genie's ``reconstruct.py``
   groups by class name, BRECQ's ``quant_block.py`` by an explicit table; this rule covers models neither
   lists);
3. any other quantized layer on its own (the per-layer fallback, as in BRECQ's ``layer_reconstruction``).

``blocks=[...]`` in ``quantize`` overrides all of this. Names are module paths; the execution order is
measured at run time.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

IsLayer = Callable[[nn.Module], bool]

KNOWN_BLOCKS = frozenset(
    {
        # torchvision / timm / BRECQ / Genie model files
        "BasicBlock",
        "Bottleneck",
        "InvertedResidual",
        "DepthwiseSeparableConv",
        "ResBottleneckBlock",
        "Block",
        "SwinTransformerBlock",
        "ConvNeXtBlock",
        # transformers
        "ResNetEmbeddings",
        "ResNetBasicLayer",
        "ResNetBottleNeckLayer",
        "MobileNetV2Stem",
        "MobileNetV2InvertedResidual",
        "ViTEmbeddings",
        "ViTLayer",
        "DeiTEmbeddings",
        "DeiTLayer",
        "SwinEmbeddings",
        "SwinLayer",
        "SwinPatchMerging",
        "ConvNextEmbeddings",
        "ConvNextLayer",
        "ConvNextV2Layer",
        # diffusers (the generator's UNet)
        "ResnetBlock2D",
        "BasicTransformerBlock",
        # the mini teachers
        "TransformerBlock",
        "PatchEmbed",
    }
)


MAX_CHAIN = 3  # a container of plain layers (no known block, no stack inside) with more layers is opened


def holds_layer(module: nn.Module, is_layer: IsLayer) -> bool:
    """Whether ``module`` or anything inside it is a layer."""
    return any(is_layer(m) for m in module.modules())


def is_stack(module: nn.Module, is_layer: IsLayer) -> bool:
    """A Sequential/ModuleList of composite modules that hold layers (a stack of blocks, not of layers)."""
    if not isinstance(module, (nn.Sequential, nn.ModuleList)):
        return False
    children = list(module.children())
    return not any(is_layer(c) for c in children) and any(holds_layer(c, is_layer) for c in children)


def is_known(module: nn.Module) -> bool:
    return type(module).__name__ in KNOWN_BLOCKS


def find_blocks(model: nn.Module, is_layer: IsLayer) -> list[str]:
    """Module paths of the reconstruction blocks of ``model``, in registration order."""
    blocks: list[str] = []

    def is_block(child: nn.Module) -> bool:
        if is_layer(child) or is_known(child):
            return True
        inner = list(child.modules())
        if any(is_known(m) or is_stack(m, is_layer) for m in inner):
            return False
        return sum(is_layer(m) for m in inner) <= MAX_CHAIN

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if holds_layer(child, is_layer):
                if is_block(child):
                    blocks.append(f"{prefix}{name}")
                else:
                    visit(child, f"{prefix}{name}.")

    visit(model, "")
    return blocks


# Block classes that mark an architecture family whose reference settings differ (``ReconConfig.resolved``).
INVERTED_RESIDUALS = frozenset({"InvertedResidual", "MobileNetV2InvertedResidual"})  # torchvision, timm,
# BRECQ/QDrop/Genie models/mobilenetv2.py, transformers, and the mini teacher


def architecture(model: nn.Module) -> str | None:
    """``"mobilenetv2"`` when ``model`` is built from MobileNetV2's inverted-residual blocks (by class name),
    else None: the one family for which the references change a reconstruction setting."""
    if any(type(m).__name__ in INVERTED_RESIDUALS for m in model.modules()):
        return "mobilenetv2"
    return None
