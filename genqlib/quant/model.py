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
   on the grid of ``QuantConfig.act_grid`` (``quantizer.py``); an activation quantizer that would see a
   tensor an earlier quantizer already quantized is dropped (found in the same recorded pass), so no tensor
   is quantized twice (``sites.py``);
4. the first and last layers' weights at ``first_last_bits``, and the edge activations of
   ``QuantConfig.edges`` (BRECQ, QDrop or Genie's, ``sites.py``), each decision a line of the report.

``QuantConfig.reference`` picks residual, edges and grid together (``config.py``).

Weight step sizes are set here; activation step sizes need data (``reconstruct``).
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from genqlib.logits import logits
from genqlib.quant.blocks import architecture, find_blocks
from genqlib.quant.config import QuantConfig
from genqlib.quant.equalize import EqualizeResult, equalize
from genqlib.quant.fold import FoldResult, fold_bn
from genqlib.quant.inputs import Inputs, as_args, call, check_inputs, device_of, rows
from genqlib.quant.layers import (
    INPUT,
    attach_weight,
    is_quantizable,
    is_quantized,
    site_key,
    site_path,
    weight_quantizer,
)
from genqlib.quant.matmul import attach, discover
from genqlib.quant.quantizer import ActQuantizer, WeightQuantizer
from genqlib.quant.sites import place_acts, prune_acts

ENGINE = "4"  # enters every cached run's key: a change that moves numbers bumps it
NOT_QUANTIZED = (  # weight-bearing modules genqlib leaves FP, with the reason
    (nn.modules.conv._ConvTransposeNd, "transposed convolution (not supported)"),
    (nn.MultiheadAttention, "nn.MultiheadAttention's packed in_proj weight is not a conv/linear layer"),
)


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
    edges: list[str] = field(default_factory=list)  # which edge tensors got first_last_bits, and why
    matmuls: dict[str, int] = field(default_factory=dict)  # module -> two-activation matmuls per forward
    matmuls_quantized: int = 0
    matmuls_fp: dict[str, str] = field(default_factory=dict)  # module -> why a product stays FP
    architecture: str | None = None  # "mobilenetv2" (blocks.architecture): its reference settings apply

    def lines(self) -> list[str]:
        first, last = (self.layers[0], self.layers[-1]) if self.layers else ("-", "-")
        out = [
            f"conv/linear layers quantized: {len(self.layers)} of {self.layers_total}",
            f"BatchNorms folded: {len(self.fold.folded)} of {self.fold.total}"
            + (f" (pairs by {self.fold.found_by})" if self.fold.found_by else ""),
            f"blocks: {len(self.blocks)}"
            + (
                f" (architecture {self.architecture}: its reference settings apply)"
                if self.architecture
                else ""
            ),
            *_equalize_lines(self),
            f"first layer: {first} (W{self.weight_bits.get(first, '-')}), "
            f"last layer: {last} (W{self.weight_bits.get(last, '-')})",
            f"activation quantizers: {len(self.acts)} "
            f"({', '.join(f'{b}-bit: {n}' for b, n in sorted(Counter(self.acts.values()).items()))})",
        ]
        out += self.edges
        if self.matmuls or self.matmuls_fp:
            total = sum(self.matmuls.values())
            out.append(
                f"attention matmuls quantized: {self.matmuls_quantized} of {total} (inputs q, k, softmax, v)"
            )
        out += [f"matmul FP: {name} ({why})" for name, why in self.matmuls_fp.items()]
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
        self.recon_config = None  # the ReconConfig reconstruct ran, every default resolved

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
        """One line to print next to every result: the quantizer settings and, once ``reconstruct`` ran, which
        reconstruction, e.g. 'W4A4, brecq conventions: ...; brecq: weights (1000 iters, FP activations), then
        activation steps (250 iters)'."""
        recon = f"; {self.recon_config.describe()}" if self.recon_config is not None else ""
        return self.config.describe() + recon

    def summary(self) -> str:
        """The config and the full report, one fact a line."""
        return "\n".join([self.describe(), *self.report.lines()])

    def extra_repr(self) -> str:
        return self.summary()

    def export(self, path, example: Inputs, **kwargs):
        """This model as an ONNX QDQ file (``genqlib.quant.export.export``); returns its ExportReport."""
        from genqlib.quant.export import export

        return export(self, path, example, **kwargs)


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
    raise instead of warning when any conv/linear weight or input stays FP or a BatchNorm a conv feeds stays
    unfolded.
    """
    config = (config or QuantConfig()).resolved()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    qmodel = copy.deepcopy(model).eval()
    if is_quantizable(qmodel):  # a bare layer: give it a parent so hooks and blocks have a home
        qmodel = nn.Sequential(qmodel)
    if not any(is_quantizable(m) for m in qmodel.modules()):
        raise ValueError("model has no conv or linear layer to quantize")
    example = check_example(qmodel, example if example is not None else example_input(model))
    report = QuantReport(architecture=architecture(qmodel))
    if config.fold_bn:
        report.fold = fold_bn(qmodel, example)
    else:  # kept on purpose (LSQ trains them): listed as left, never a warning
        kept = [n for n, m in qmodel.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        report.fold = FoldResult(left=dict.fromkeys(kept, "QuantConfig.fold_bn=False: kept as a BatchNorm"))
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
    report.matmuls, unseen = discover(qmodel, example)
    report.matmuls_fp = {
        n: f"{k} product(s) of two activations outside matmul/bmm/SDPA" for n, k in unseen.items()
    }
    acts: dict[str, ActQuantizer] = {}
    if config.a_bits is not None and order:
        sites = place_acts(qmodel, order, report.blocks, config)
        report.dropped_acts, report.edges = prune_acts(qmodel, sites, example, order, config)
        acts = sites.quantizers
        report.shared_acts = sites.shared
        acts.update(quantize_matmuls(qmodel, report, config))
        report.acts = {key: q.bits for key, q in acts.items()}
    elif report.matmuls:
        report.matmuls_fp.update({n: "activations FP (a_bits=None)" for n in report.matmuls})
    report.fp_modules = leftovers(qmodel)
    report.layers_total += len(report.fp_modules)  # transposed convs, attention's packed projections
    _never_silent(report, strict)
    return QuantModel(qmodel, config, report, acts)


def quantize_matmuls(model: nn.Module, report: QuantReport, config: QuantConfig) -> dict[str, ActQuantizer]:
    """Per-tensor quantizers on both inputs of every two-activation matmul (``matmul.py``), by site key."""
    acts = {}
    for path, n in report.matmuls.items():
        pairs = []
        for k in range(n):
            pair = (
                ActQuantizer(config.a_bits, config.act_grid),
                ActQuantizer(config.a_bits, config.act_grid),
            )
            acts[site_key(path, f"matmul{k}a")], acts[site_key(path, f"matmul{k}b")] = pair
            pairs.append(pair)
        attach(model, path, pairs)
        report.matmuls_quantized += n
    return acts


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
    problems += [
        f"{n}: BatchNorm after a conv left unfolded ({why})" for n, why in report.fold.after_conv.items()
    ]
    problems += [
        f"{n or 'the model'}: matmul inputs left FP ({why})"
        for n, why in report.matmuls_fp.items()
        if "a_bits" not in why
    ]
    if not problems:
        return
    message = (
        f"quantize left {len(problems)} conv/linear weight(s), input(s), matmul(s) or BatchNorm(s) after a "
        "conv unquantized or unfolded: " + "; ".join(problems[:5])
    )
    if strict:
        raise ValueError(message + " (strict=True)")
    warnings.warn(message, stacklevel=3)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer of ``model`` whose weight genqlib quantizes, by path."""
    return {n: m for n, m in model.named_modules() if is_quantized(m)}
