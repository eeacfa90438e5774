"""Where QuEST quantizes a UNet's activations, and their initialisation.

As hatchetProject/QuEST does it (``qdiff/quant_model.py``, ``qdiff/quant_layer.py``, ``qdiff/quant_block.py``):

- the input of every conv/linear layer (each ``QuantModule`` quantizes its own input; the cross-attention's
  ``to_k``/``to_v`` read the text embeddings and quantize them too); no quantizer on block outputs;
- the attention matmuls (``cross_attn_forward`` of ``QuantBasicTransformerBlock``): q and k before
  ``q k^T``, the softmax output and v before ``softmax v``. q, k, v at the activation width (per channel of the
  head dim at 4 bits), the softmax output at ``sm_bits`` (``--sm_abit``: 16 in the README's Stable Diffusion
  command, against 8 by default);
- ``conv_in``'s and ``conv_out``'s inputs at 8 bits (``txt2img.py``: "Set the first and last layer to be 8
  bit": ``input_blocks.0.0`` and ``out.2``, the activation quantizers only; their weights stay at the weight
  width).

Deviations, named: the UNet's sinusoidal timestep features enter ``time_embedding.linear_1`` quantized as every
layer input (as the reference's ``time_embed.0``); QDiff's shortcut split (``--split``: the concatenated
skip input of the up blocks' convs gets two quantizers and two weight quantizers) is not reproduced; at 4 bits
the per-channel grids already give each half its own steps, at 8 bits one grid spans both halves.

Initialisation (``txt2img.py``): with weights and activations quantized, the model runs once on 8 random
calibration rows (any timesteps) with the clock pinned to the first timestep; each quantizer initialises on
the first tensor it sees and the result is copied to every timestep. Deviation, named: the SD command's
``--running_stat`` (a momentum min/max over all calibration rows, which at the pinned timestep updates the
first timestep's grid only) is not run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from genqlib.quant import QuantModel
from genqlib.quest.timeaware import TimeAwareQuantizer, TimeClock

EIGHT_BIT_INPUTS = ("conv_in", "conv_out")  # txt2img.py: input_blocks.0.0 and out.2 act quantizers at 8 bits
INIT_ROWS = 8  # txt2img.py: b_size = 8 random calibration rows initialise the activation quantizers
ATTN_SITES = ("q", "k", "v", "w")  # quant_block.py act_quantizer_q/_k/_v and _w (the softmax output)


def site_name(path: str, what: str = "input") -> str:
    """ModuleDict key of a quantizer: module path with '/' for '.', then ':' and what it quantizes."""
    return f"{path.replace('.', '/')}:{what}"


class QuantAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` with the attention matmuls written out and their inputs quantized
    (reference ``cross_attn_forward``): ``quantizers`` maps 'q', 'k', 'v', 'w' to quantizers (None while the
    shapes are probed: ``shapes`` then records each tensor's shape)."""

    def __init__(self) -> None:
        self.quantizers: dict[str, nn.Module] | None = None
        self.shapes: dict[str, tuple[int, ...]] = {}

    def _q(self, what: str, x: torch.Tensor) -> torch.Tensor:
        if self.quantizers is None:
            self.shapes.setdefault(what, tuple(x.shape))
            return x
        return self.quantizers[what](x)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if attention_mask is not None:
            raise NotImplementedError("QuantAttnProcessor: attention masks are not supported")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (
            t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value)
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        scores = self._q("q", query) @ self._q("k", key).transpose(-1, -2) * attn.scale
        probs = F.softmax(scores, dim=-1)
        out = self._q("w", probs) @ self._q("v", value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _quantize_input(quantizer: nn.Module, module: nn.Module, args: tuple) -> tuple | None:
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    return (quantizer(args[0]), *args[1:])


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """diffusers ``Attention`` modules by path (anything with ``to_q``, ``to_k``, ``to_v`` and ``to_out``)."""
    return {
        n: m
        for n, m in model.named_modules()
        if all(hasattr(m, a) for a in ("to_q", "to_k", "to_v", "to_out"))
    }


@torch.no_grad()
def _probe(qmodel: QuantModel, example: tuple) -> dict[str, tuple[int, ...]]:
    """Input shape of every quantized layer on ``example`` (the attention processors record theirs)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, module: nn.Module, args: tuple) -> None:
        shapes.setdefault(name, tuple(args[0].shape))

    handles = [
        qmodel.model.get_submodule(n).register_forward_pre_hook(functools.partial(record, n))
        for n in qmodel.layer_names
    ]
    try:
        qmodel.model(*example, return_dict=False)
    finally:
        for h in handles:
            h.remove()
    return shapes


def attach_acts(
    qmodel: QuantModel, example: tuple, timesteps: list[int], a_bits: int, channel_wise: bool, sm_bits: int
) -> TimeClock:
    """Put time-aware quantizers on every layer input and attention matmul input of ``qmodel`` (a quantized
    UNet, activations not yet quantized) for ``timesteps``; they live in ``qmodel.quest_acts`` (uncalibrated)
    and a UNet pre-hook sets the clock. Returns the clock (also ``qmodel.clock``)."""
    clock = TimeClock(timesteps)
    procs = {}
    for name, attn in attention_modules(qmodel.model).items():
        procs[name] = QuantAttnProcessor()
        attn.set_processor(procs[name])
    layer_shapes = _probe(qmodel, tuple(a[:1] for a in example))
    acts = nn.ModuleDict()
    for name in qmodel.layer_names:
        bits = 8 if name in EIGHT_BIT_INPUTS else a_bits
        q = TimeAwareQuantizer(bits, clock, layer_shapes[name], channel_wise, "layer")
        acts[site_name(name)] = q
        qmodel.model.get_submodule(name).register_forward_pre_hook(functools.partial(_quantize_input, q))
    for name, proc in procs.items():
        proc.quantizers = {}
        for what in ATTN_SITES:
            bits = sm_bits if what == "w" else a_bits
            q = TimeAwareQuantizer(bits, clock, proc.shapes[what], channel_wise, "last")
            acts[site_name(name, what)] = proc.quantizers[what] = q
    qmodel.quest_acts = acts
    qmodel.model.register_forward_pre_hook(clock.hook, with_kwargs=True)
    qmodel.clock = clock
    return clock


@contextlib.contextmanager
def pinned(clock: TimeClock, index: int) -> Iterator[TimeClock]:
    """The clock stays at ``index`` whatever timesteps the UNet is called with (the reference's
    ``set_timestep`` before a mixed-timestep initialisation batch)."""
    clock.index, clock.pinned = index, True
    try:
        yield clock
    finally:
        clock.pinned = False


@torch.no_grad()
def init_acts(qmodel: QuantModel, calib: tuple, seed: int = 0, rows: int = INIT_ROWS) -> None:
    """Initialise every time-aware quantizer on ``rows`` random calibration rows, weights and activations
    quantized, the clock pinned to the first timestep; each timestep gets the same grid (module docstring)."""
    quantizers = list(qmodel.quest_acts.values())
    pick = torch.randperm(len(calib[0]), generator=torch.Generator().manual_seed(seed))[:rows]
    for q in quantizers:
        q.calibrated.fill_(False)
        q.auto_calibrate = True
    try:
        with pinned(qmodel.clock, 0):
            qmodel.model(*(a[pick] for a in calib), return_dict=False)
    finally:
        for q in quantizers:
            q.auto_calibrate = False
