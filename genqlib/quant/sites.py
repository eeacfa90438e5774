"""Where activation quantizers go, and which of them keep 8 bits at the network's edges.

``place_acts`` puts a quantizer on every layer's input and on each block's input and output (``residual``);
``prune_acts`` runs the model once and drops each quantizer whose tensor is the model's input or logits or is
already quantized upstream, shares one grid among sibling layers reading one tensor (q, k, v), and sets the
edge widths of ``QuantConfig.edges``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from genqlib.logits import logits
from genqlib.quant.config import QuantConfig
from genqlib.quant.inputs import Inputs, as_args, call
from genqlib.quant.layers import INPUT, OUTPUT, hook_act, is_quantizable, site_key, site_path
from genqlib.quant.quantizer import ActQuantizer

FIRST = "<first layer runs>"


class Sites:
    """The activation quantizers being placed: site key (``layers.site_key``) -> quantizer and hook handle;
    ``shared`` maps a site that reuses another site's quantizer to that site."""

    def __init__(self) -> None:
        self.quantizers: dict[str, ActQuantizer] = {}
        self.handles: dict[str, RemovableHandle] = {}
        self.shared: dict[str, str] = {}

    def add(self, model: nn.Module, path: str, where: str, bits: int, scheme: str) -> None:
        key = site_key(path, where)
        self.quantizers[key] = ActQuantizer(bits, scheme)
        self.handles[key] = hook_act(model.get_submodule(path), where, self.quantizers[key])

    def remove(self, key: str) -> None:
        self.handles.pop(key).remove()
        del self.quantizers[key]

    def share(self, model: nn.Module, key: str, owner: str) -> None:
        """Make site ``key`` apply ``owner``'s quantizer (one grid for one tensor, Genie's shared quantizer)."""
        self.remove(key)
        path, where = site_path(key)
        self.handles[key] = hook_act(model.get_submodule(path), where, self.quantizers[owner])
        self.shared[key] = owner


@torch.no_grad()
def trace_sites(model: nn.Module, sites: Sites, example: Inputs, first: str) -> list[tuple[str, int, bool]]:
    """Every activation quantizer in call order as (site key, id of the tensor it sees, whether that is the
    model's input or logits), with a ``FIRST`` marker when the first layer starts; one forward pass with the
    quantizers switched off, so that each passes its tensor through unchanged."""
    events: list[tuple[str, int]] = []
    keep: list[torch.Tensor] = []  # keeps the seen tensors alive so that their ids stay unique

    def record(key: str, t) -> None:
        if isinstance(t, tuple):
            t = t[0] if t else None
        if isinstance(t, torch.Tensor):
            events.append((key, id(t)))
            keep.append(t)

    handles = [model.get_submodule(first).register_forward_pre_hook(lambda m, a: events.append((FIRST, 0)))]
    for key in sites.quantizers:
        path, where = site_path(key)
        module = model.get_submodule(path)
        if where == INPUT:
            handles.append(
                module.register_forward_pre_hook(lambda m, a, k=key: record(k, a[0] if a else None))
            )
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, k=key: record(k, o)))
    for q in sites.quantizers.values():
        q.enabled = False
    try:
        out = logits(call(model, example))
    finally:
        for h in handles:
            h.remove()
        for q in sites.quantizers.values():
            q.enabled = True
    edge = {id(a) for a in as_args(example)} | {id(out)}
    return [(key, t, t in edge) for key, t in events]


def place_acts(model: nn.Module, order: list[str], blocks: list[str], config: QuantConfig) -> Sites:
    """Attach the activation quantizers of ``config`` (module docstring, steps 3 and 4)."""
    sites = Sites()
    for name in order:
        sites.add(model, name, INPUT, config.a_bits, config.act_grid)
    for name in blocks:
        if is_quantizable(model.get_submodule(name)):
            continue
        sites.add(model, name, INPUT, config.a_bits, config.act_grid)
        if config.residual == "block_output":
            sites.add(model, name, OUTPUT, config.a_bits, config.act_grid)
    return sites


def prune_acts(
    model: nn.Module, sites: Sites, example: Inputs, order: list[str], config: QuantConfig
) -> dict:
    """Drop redundant activation quantizers and set the edge widths; returns {site: why it was dropped}."""
    first, last = order[0], order[-1]
    first_input = site_key(first, INPUT)
    dropped: dict[str, str] = {}
    produced: dict[int, str] = {}  # tensor id -> the site whose quantized tensor every later reader gets
    layer_seen: dict[int, str] = {}  # tensor id -> the first layer-input site that quantizes it
    kept: list[str] = []
    started = False
    for key, tensor, at_edge in trace_sites(model, sites, example, first):
        if key == FIRST:
            started = True
            continue
        if key in dropped or key in kept or key in sites.shared:
            continue
        path, where = site_path(key)
        layer_input = where == INPUT and is_quantizable(model.get_submodule(path))
        if key == first_input and config.edges == "brecq":
            why = "first layer's input: the image stays FP (brecq edges)"
        elif not started and key != first_input:
            why = "runs before the first layer: the image is quantized by the first layer alone, if at all"
        elif at_edge:
            why = "sees the model's input or its logits"
        elif tensor in produced:
            why = f"its tensor is already quantized by {produced[tensor]}"
        elif layer_input and tensor in layer_seen:  # siblings reading one tensor (q, k, v) share a grid
            sites.share(model, key, layer_seen[tensor])
            continue
        else:
            (layer_seen if layer_input else produced)[tensor] = key
            kept.append(key)
            continue
        sites.remove(key)
        dropped[key] = why
    for key in [k for k in sites.quantizers if k not in kept and k not in sites.shared]:
        sites.remove(key)  # never called on the example: nothing to quantize there
        dropped[key] = "never runs on the example input"
    if config.first_last_bits is not None:
        edges = [first_input if config.edges == "layer" else next(iter(kept), None), site_key(last, INPUT)]
        for key in edges:
            if key in sites.quantizers:
                sites.quantizers[key].bits = config.first_last_bits
    return dropped
