"""``quantize(model, QuantConfig(...)) -> QuantModel``: a BN-folded, fake-quantized copy of any classifier.

Steps, each recorded in the model's ``report`` (printed by ``describe()``):

1. deep-copy the model (eval mode) and fold BatchNorm into the convs that feed it (``fold.py``: by data
   flow, each fold verified numerically);
2. group it into reconstruction blocks (``blocks.py``) and find, by one recorded forward pass on an example
   input, the order in which the conv/linear layers run (first and last layer);
3. quantize every conv/linear weight per output channel (``layers.py``: parametrization, so each layer's own
   forward keeps running) and put per-tensor activation quantizers on
   - every layer's input, and
   - the residual paths, as the references do (``QuantConfig.residual``):
     ``"block_output"`` (BRECQ ``quant/quant_block.py``, QDrop ``quant/quant_block.py``: the output of each
     block, after the residual add, is quantized; so is a block input that nothing upstream quantized), or
     ``"block_input"`` (Genie ``reconstruct.py``, ``nn.Identity`` quantized: each block's input is quantized
     once and shared by the shortcut and the layers that read it);
   an activation quantizer that would see a tensor an earlier quantizer already quantized is dropped
   (found in the same recorded pass), so no tensor is quantized twice;
4. the first and last layers, by ``QuantConfig.edges``:
   ``"brecq"`` (default; BRECQ ``quant/quant_model.py::set_first_last_layer_to_8bit``, Genie
   ``reconstruct.py::quantize_model``): the image stays FP, the first layer's weight and the activation
   after it are 8-bit, the last layer's weight and input are 8-bit, the logits stay FP;
   ``"layer"``: the first and last layer's weights and own inputs are 8-bit (the image is quantized).

Weight step sizes are set here; activation step sizes need data (``reconstruct``).
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from genqlib.logits import logits
from genqlib.quant.blocks import find_blocks
from genqlib.quant.equalize import EqualizeResult, equalize
from genqlib.quant.export import export as _export
from genqlib.quant.fold import FoldResult, fold_bn
from genqlib.quant.inputs import Inputs, as_args, call, check_inputs, device_of, rows
from genqlib.quant.layers import (
    INPUT,
    OUTPUT,
    attach_weight,
    hook_act,
    is_quantizable,
    is_quantized,
    site_key,
    site_path,
    weight_quantizer,
)
from genqlib.quant.quantizer import ActQuantizer, WeightQuantizer, check_bits

ENGINE = "2"  # enters every cached run's key: a change that moves numbers bumps it
RESIDUAL_MODES = ("block_output", "block_input")
EDGE_STYLES = ("brecq", "layer")
NOT_QUANTIZED = (  # weight-bearing modules genqlib leaves FP, with the reason
    (nn.modules.conv._ConvTransposeNd, "transposed convolution (not supported)"),
    (nn.MultiheadAttention, "nn.MultiheadAttention's packed in_proj weight is not a conv/linear layer"),
)


@dataclass(frozen=True)
class QuantConfig:
    """Bit widths and placement. ``a_bits=None`` leaves activations FP; ``first_last_bits=None`` means same as
    the rest. ``residual`` and ``edges``: see the module docstring."""

    w_bits: int = 4
    a_bits: int | None = 4
    first_last_bits: int | None = 8
    fold_bn: bool = True
    residual: str = "block_output"
    edges: str = "brecq"
    # cross-layer equalization before quantizing (``equalize.py``; not in the references)
    equalize: bool = False

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "QuantConfig.w_bits")
        if self.a_bits is not None:
            check_bits(self.a_bits, "QuantConfig.a_bits")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "QuantConfig.first_last_bits")
        if self.residual not in RESIDUAL_MODES:
            raise ValueError(f"QuantConfig.residual must be one of {RESIDUAL_MODES}, got {self.residual!r}")
        if self.edges not in EDGE_STYLES:
            raise ValueError(f"QuantConfig.edges must be one of {EDGE_STYLES}, got {self.edges!r}")

    def describe(self) -> str:
        """E.g. 'W4A4, first/last layer 8-bit (brecq), residual block_output'."""
        name = (
            f"W{self.w_bits}A{self.a_bits}" if self.a_bits is not None else f"W{self.w_bits} (FP activations)"
        )
        return f"{name}, {self.convention()}"

    def convention(self) -> str:
        """Everything but the bit widths, e.g. 'first/last layer 8-bit (brecq), residual block_output': what a
        table of several widths prints once."""
        edges = (
            "first/last layer same bits"
            if self.first_last_bits is None
            else f"first/last layer {self.first_last_bits}-bit ({self.edges})"
        )
        return f"{edges}, residual {self.residual}" + (", CLE" if self.equalize else "")


@dataclass
class QuantReport:
    """What ``quantize`` did: every conv/linear layer, BatchNorm, block and activation quantizer accounted for."""

    layers: list[str] = field(default_factory=list)  # quantized, in forward order
    layers_total: int = 0
    weight_bits: dict[str, int] = field(default_factory=dict)
    fold: FoldResult = field(default_factory=FoldResult)
    equalized: EqualizeResult | None = None
    blocks: list[str] = field(default_factory=list)
    split_blocks: list[str] = field(default_factory=list)  # never called as a whole: split into layers
    acts: dict[str, int] = field(default_factory=dict)  # site key ('blocks/0:output') -> bits
    dropped_acts: dict[str, str] = field(default_factory=dict)  # site -> why it was removed
    shared_acts: dict[str, str] = field(default_factory=dict)  # site -> the site whose quantizer it reuses
    fp_modules: dict[str, str] = field(default_factory=dict)  # weight-bearing modules left FP -> why
    input_fp: dict[str, str] = field(default_factory=dict)  # quantized weight, FP input -> why

    def lines(self) -> list[str]:
        first, last = (self.layers[0], self.layers[-1]) if self.layers else ("-", "-")
        out = [
            f"conv/linear layers quantized: {len(self.layers)} of {self.layers_total}",
            f"BatchNorms folded: {len(self.fold.folded)} of {self.fold.total}"
            + (f" (pairs by {self.fold.found_by})" if self.fold.found_by else ""),
            f"blocks: {len(self.blocks)}",
            *_equalize_lines(self),
            f"first layer: {first} (W{self.weight_bits.get(first, '-')}), "
            f"last layer: {last} (W{self.weight_bits.get(last, '-')})",
            f"activation quantizers: {len(self.acts)} "
            f"({', '.join(f'{b}-bit: {n}' for b, n in sorted(Counter(self.acts.values()).items()))})",
        ]
        out += [f"block split into its layers (its forward never runs): {name}" for name in self.split_blocks]
        out += [f"left FP: {name} ({why})" for name, why in {**self.fp_modules, **self.fold.left}.items()]
        out += [f"input FP: {name} ({why})" for name, why in self.input_fp.items()]
        return out


def _equalize_lines(report: QuantReport) -> list[str]:
    eq = report.equalized
    if eq is None:
        return []
    if eq.skipped:
        return [f"equalization not applied: {eq.skipped}"]
    out = [f"equalized layer pairs: {len(eq.pairs)} ({eq.sweeps} sweeps)"]
    return out + [f"ReLU6 replaced by ReLU for equalization: {name}" for name in eq.relu6_replaced]


class QuantModel(nn.Module):
    """A quantized copy of a model: ``model`` (the copy, quantizers attached), ``config``, ``blocks``, ``report``.

    ``forward`` returns the main output tensor (``genqlib.logits``: a classifier's logits, a UNet's sample),
    whatever the wrapped model returns.
    """

    def __init__(
        self, model: nn.Module, config: QuantConfig, report: QuantReport, acts: dict[str, ActQuantizer]
    ) -> None:
        super().__init__()
        self.model = model
        self.acts = nn.ModuleDict(acts)  # site key ('blocks/0:output') -> activation quantizer
        self.config = config
        self.report = report
        self.blocks = report.blocks
        self.layer_names = report.layers
        self.recon_log: list[dict] = []

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return logits(self.model(*args))

    def layers(self) -> dict[str, nn.Module]:
        """The quantized conv/linear layers by module path (relative to ``model``), in forward order."""
        return {name: self.model.get_submodule(name) for name in self.layer_names}

    def block_acts(self, block: str) -> list[ActQuantizer]:
        """The activation quantizers on ``block`` and on modules inside it."""
        inside = []
        for key, q in self.acts.items():
            path, _ = site_path(key)
            if path == block or path.startswith(block + "."):
                inside.append(q)
        return inside

    def act(self, path: str, where: str = INPUT) -> ActQuantizer | None:
        """The activation quantizer on module ``path``'s input or output, if any."""
        key = site_key(path, where)
        return self.acts[key] if key in self.acts else None  # noqa: SIM401 - ModuleDict has no .get

    def layer_bits(self, path: str) -> tuple[int, int | None]:
        """(weight bits, input activation bits or None) of the quantized layer at ``path``."""
        act = self.act(path, INPUT)
        return weight_quantizer(self.model.get_submodule(path)).bits, (act.bits if act is not None else None)

    def set_quant(self, weights: bool = True, acts: bool = True) -> QuantModel:
        """Switch weight and activation quantization on or off (both off = the BN-folded FP model)."""
        for m in self.modules():
            if isinstance(m, WeightQuantizer):
                m.enabled = weights
            elif isinstance(m, ActQuantizer):
                m.enabled = acts
        return self

    def describe(self) -> str:
        """One line to print next to every result, e.g. 'W4A4, first/last layer 8-bit (brecq), ...'."""
        return self.config.describe()

    def summary(self) -> str:
        """The config and the full report, one fact a line."""
        return "\n".join([self.describe(), *self.report.lines()])

    def extra_repr(self) -> str:
        return self.summary()

    export = (
        _export  # qmodel.export(path, example) -> ExportReport: genqlib.quant.export.export on this model
    )


def example_input(model: nn.Module) -> torch.Tensor:
    """Two random images in [0, 1] shaped as ``model`` expects, from ``model.input_size`` (C, H, W) or a
    ``transformers`` config (num_channels, image_size); otherwise pass ``example=`` to ``quantize``."""
    size = getattr(model, "input_size", None)
    cfg = getattr(model, "config", None)
    if size is None and cfg is not None and hasattr(cfg, "image_size"):
        side = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        size = (getattr(cfg, "num_channels", 3), side, side)
    if size is None:
        raise ValueError(
            f"quantize needs an example input for {type(model).__name__}: pass example=<a batch of images>"
        )
    return torch.rand((2, *size), generator=torch.Generator().manual_seed(0))


def check_example(model: nn.Module, example: Inputs) -> Inputs:
    """Up to 4 rows of ``example`` on the model's device, checked: finite, and accepted by the model."""
    example = check_inputs(example, "example")
    if not all(torch.isfinite(a).all() for a in as_args(example) if a.is_floating_point()):
        raise ValueError("example holds NaN or infinite values")
    example = rows(example, 0, 4, device_of(model))
    try:
        with torch.no_grad():
            call(model, example)
    except Exception as err:  # noqa: BLE001 - any failure here is the input's shape or type
        shapes = [tuple(a.shape) for a in as_args(example)]
        raise ValueError(f"the model rejects the example input of shape(s) {shapes}: {err}") from err
    return example


@torch.no_grad()
def forward_order(model: nn.Module, names: list[str], example: Inputs) -> list[str]:
    """The modules ``names`` in the order ``model`` first calls them on ``example`` (uncalled ones dropped)."""
    seen: list[str] = []
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen.append(n)) for n in names
    ]
    try:
        call(model, example)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(seen))


FIRST = "<first layer runs>"


class Sites:
    """The activation quantizers being placed: site key (``layers.site_key``) -> quantizer and hook handle;
    ``shared`` maps a site that reuses another site's quantizer to that site."""

    def __init__(self) -> None:
        self.quantizers: dict[str, ActQuantizer] = {}
        self.handles: dict[str, RemovableHandle] = {}
        self.shared: dict[str, str] = {}

    def add(self, model: nn.Module, path: str, where: str, bits: int) -> None:
        key = site_key(path, where)
        self.quantizers[key] = ActQuantizer(bits)
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
        sites.add(model, name, INPUT, config.a_bits)
    for name in blocks:
        if is_quantizable(model.get_submodule(name)):
            continue
        sites.add(model, name, INPUT, config.a_bits)
        if config.residual == "block_output":
            sites.add(model, name, OUTPUT, config.a_bits)
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


def leftovers(model: nn.Module) -> dict[str, str]:
    """Modules with conv/linear-like weights that stay FP, with the reason."""
    return {
        name: why for name, m in model.named_modules() for kind, why in NOT_QUANTIZED if isinstance(m, kind)
    }


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    example: Inputs | None = None,
    blocks: list[str] | None = None,
    strict: bool = False,
) -> QuantModel:
    """A quantized deep copy of ``model`` (left untouched); see the module docstring.

    ``example``: a few inputs the model accepts (default: random images of ``model.input_size`` or its
    ``transformers`` config). ``blocks``: reconstruction blocks by module path (default: found). ``strict``:
    raise instead of warning when any conv/linear weight or BatchNorm stays FP.
    """
    config = config or QuantConfig()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    qmodel = copy.deepcopy(model).eval()
    if is_quantizable(qmodel):  # a bare layer: give it a parent so hooks and blocks have a home
        qmodel = nn.Sequential(qmodel)
    if not any(is_quantizable(m) for m in qmodel.modules()):
        raise ValueError("model has no conv or linear layer to quantize")
    example = check_example(qmodel, example if example is not None else example_input(model))
    report = QuantReport()
    if config.fold_bn:
        report.fold = fold_bn(qmodel, example)
    if config.equalize:
        report.equalized = equalize(qmodel)
    all_layers = [n for n, m in qmodel.named_modules() if is_quantizable(m)]
    report.layers_total = len(all_layers)
    order = forward_order(qmodel, all_layers, example)
    report.input_fp = {
        n: "its forward is never called (the parent reads .weight directly): weight quantized, input FP"
        for n in all_layers
        if n not in order
    }
    found = _check_blocks(qmodel, blocks) if blocks is not None else find_blocks(qmodel, is_quantizable)
    report.blocks, report.split_blocks = called_blocks(qmodel, found, order, example)
    ends = (order[0], order[-1]) if order else ()
    for name in all_layers:
        bits = config.first_last_bits if (name in ends and config.first_last_bits) else config.w_bits
        attach_weight(qmodel.get_submodule(name), bits)
        report.weight_bits[name] = bits
    report.layers = order + [n for n in all_layers if n not in order]
    acts: dict[str, ActQuantizer] = {}
    if config.a_bits is not None and order:
        sites = place_acts(qmodel, order, report.blocks, config)
        report.dropped_acts = prune_acts(qmodel, sites, example, order, config)
        acts = sites.quantizers
        report.acts = {key: q.bits for key, q in acts.items()}
        report.shared_acts = sites.shared
    report.fp_modules = leftovers(qmodel)
    report.layers_total += len(report.fp_modules)  # transposed convs, attention's packed projections
    _never_silent(report, strict)
    return QuantModel(qmodel, config, report, acts)


def called_blocks(
    model: nn.Module, blocks: list[str], layers: list[str], example: Inputs
) -> tuple[list[str], list[str]]:
    """``blocks`` with each one whose own forward never runs (its parent iterates over its children, as
    ``transformers``' ConvNeXt does with a Sequential) replaced by the called layers inside it; and those."""
    called = set(forward_order(model, blocks, example))
    out, split = [], []
    for name in blocks:
        if name in called:
            out.append(name)
        else:
            split.append(name)
            out += [n for n in layers if n == name or n.startswith(name + ".")]
    return out, split


def _check_blocks(model: nn.Module, blocks: list[str]) -> list[str]:
    for name in blocks:
        try:
            model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"blocks: the model has no module {name!r}") from err
    return list(blocks)


def _never_silent(report: QuantReport, strict: bool) -> None:
    problems = [f"{n}: {why}" for n, why in {**report.fp_modules, **report.input_fp}.items()]
    if not problems:
        return
    message = f"quantize left {len(problems)} conv/linear weight(s) or input(s) FP: " + "; ".join(
        problems[:5]
    )
    if strict:
        raise ValueError(message + " (strict=True)")
    warnings.warn(message, stacklevel=3)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer of ``model`` whose weight genqlib quantizes, by path."""
    return {n: m for n, m in model.named_modules() if is_quantized(m)}
