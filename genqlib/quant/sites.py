"""Where activation quantizers go, and which of them keep 8 bits at the network's edges.

``place_acts`` puts a quantizer on every layer's input and on each block's input and output (``residual``);
``prune_acts`` runs the model once and drops each quantizer whose tensor is the model's input or logits or is
already quantized upstream, shares one grid among sibling layers reading one tensor (q, k, v), and sets the
edge widths of ``QuantConfig.edges`` (``set_edges``). In every style the first and last layers' weights are
``first_last_bits`` (``quantize``), and:

- ``"brecq"`` (BRECQ ``quant/quant_model.py::set_first_last_layer_to_8bit``): the image stays FP; 8-bit:
  the activation after the first layer (``module_list[0].act_quantizer``) and the output of the penultimate
  layer (``module_list[-2].act_quantizer``), which only takes effect when that layer stands alone: in a
  residual block its output quantizer is disabled (``quant/quant_block.py``, ``disable_act_quant=True``) and
  the block's output keeps the activation width. So MobileNetV2's last 1x1 conv output (the feature map before
  pooling) is 8-bit and ResNet's last block output is not; here, the last block output after the penultimate
  layer runs is 8-bit when that block holds the penultimate layer alone;
- ``"qdrop"`` (QDrop ``qdrop/solver/main_imagenet.py::quantize_model``): the image stays FP; the activation
  after the first layer keeps the activation width (only ``w_list[0]`` is set to 8 bits); the last activation
  quantizer (``a_list[-1]``, the last block's or layer's output: the feature map before pooling) is 8-bit;
- ``"genie"`` (Genie ``reconstruct.py::quantize_model``): the image stays FP (``qconfigs[0]`` ``bit_a``
  None); the second layer's input (``qconfigs[1]``) and the last layer's input (``qconfigs[-1]``) are 8-bit;
  the feature map before pooling is not quantized apart from that (with Genie's ``block_input`` residual);
- ``"layer"``: the first and last layers' own inputs are 8-bit (the image is quantized).

One deviation in all styles: the last layer's input (the pooled feature map) is quantized at 8 bits, which
Genie does and BRECQ/QDrop do not (they quantize layer outputs only, and the fc reads the pooled map).
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
PENULTIMATE = "<penultimate layer runs>"


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
def trace_sites(
    model: nn.Module, sites: Sites, example: Inputs, marks: dict[str, str]
) -> list[tuple[str, int, bool]]:
    """Every activation quantizer in call order as (site key, id of the tensor it sees, whether that is the
    model's input or logits), with a marker event (``marks``: marker -> module path) each time a marked module
    starts; one forward pass with the quantizers switched off, so that each passes its tensor through."""
    events: list[tuple[str, int]] = []
    keep: list[torch.Tensor] = []  # keeps the seen tensors alive so that their ids stay unique

    def record(key: str, t) -> None:
        if isinstance(t, tuple):
            t = t[0] if t else None
        if isinstance(t, torch.Tensor):
            events.append((key, id(t)))
            keep.append(t)

    handles = [
        model.get_submodule(path).register_forward_pre_hook(lambda m, a, k=mark: events.append((k, 0)))
        for mark, path in marks.items()
    ]
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
) -> tuple[dict[str, str], list[str]]:
    """Drop redundant activation quantizers and set the edge widths; returns ({site: why it was dropped},
    the edge decisions as report lines)."""
    first_input = site_key(order[0], INPUT)
    dropped: dict[str, str] = {}
    produced: dict[int, str] = {}  # tensor id -> the site whose quantized tensor every later reader gets
    layer_seen: dict[int, str] = {}  # tensor id -> the first layer-input site that quantizes it
    kept: list[str] = []
    started, after_penultimate = False, None  # kept sites before the penultimate layer first runs
    marks = {FIRST: order[0], **({PENULTIMATE: order[-2]} if len(order) > 1 else {})}
    for key, tensor, at_edge in trace_sites(model, sites, example, marks):
        if key in (FIRST, PENULTIMATE):
            started = started or key == FIRST
            if key == PENULTIMATE and after_penultimate is None:
                after_penultimate = len(kept)
            continue
        if key in dropped or key in kept or key in sites.shared:
            continue
        path, where = site_path(key)
        layer_input = where == INPUT and is_quantizable(model.get_submodule(path))
        if key == first_input and config.edges != "layer":
            why = f"first layer's input: the image stays FP ({config.edges} edges)"
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
    tail = kept[after_penultimate:] if after_penultimate is not None else []
    return dropped, set_edges(model, sites, kept, tail, order, config)


def feature_map_site(tail: list[str], last_input: str) -> str | None:
    """The last block-output site among ``tail`` (the kept sites from the penultimate layer on) before the last
    layer's input: the feature map the last layer's input is pooled from."""
    before = tail[: tail.index(last_input)] if last_input in tail else tail
    outputs = [k for k in before if site_path(k)[1] == OUTPUT]
    return outputs[-1] if outputs else None


def set_edges(
    model: nn.Module, sites: Sites, kept: list[str], tail: list[str], order: list[str], config: QuantConfig
) -> list[str]:
    """Give the edge activations of ``config.edges`` ``first_last_bits`` (module docstring); returns what was
    decided, one report line each."""
    bits, style = config.first_last_bits, config.edges
    if bits is None:
        return [
            f"edges: same width everywhere ({style} placement, image {'quantized' if style == 'layer' else 'FP'})"
        ]
    first_input, last_input = site_key(order[0], INPUT), site_key(order[-1], INPUT)
    feature = feature_map_site(tail, last_input)
    wide: dict[str, str] = {}
    if style == "layer":
        wide[first_input] = "the first layer's input (the image)"
    elif style in ("brecq", "genie") and kept:
        wide[kept[0]] = "the activation after the first layer"
    if feature is not None and style == "qdrop":
        wide[feature] = "the feature map before the last layer; QDrop: the last activation quantizer"
    elif feature is not None and style == "brecq":
        block = site_path(feature)[0]
        alone = [n for n in order if n == block or n.startswith(block + ".")] == [order[-2]]
        if alone:
            wide[feature] = "the feature map before the last layer; BRECQ: the penultimate layer's output"
    wide[last_input] = "the last layer's input"
    lines = [f"edges ({style}): image {'quantized' if style == 'layer' else 'FP'}, first/last layer W{bits}"]
    for key, what in wide.items():
        if key in sites.quantizers:
            sites.quantizers[key].bits = bits
            lines.append(f"edge A{bits}: {key} ({what})")
    if feature is None and style == "genie":
        lines.append("last feature map: FP, only the last layer's input is quantized (genie edges)")
    elif feature is None:
        lines.append("last feature map: no block output quantized between the penultimate and last layers")
    elif feature not in wide:
        reason = {"brecq": "BRECQ: a block's output, not the penultimate layer's own", "genie": "genie edges"}
        lines.append(f"last feature map A{config.a_bits}: {feature} ({reason.get(style, style + ' edges')})")
    return lines
