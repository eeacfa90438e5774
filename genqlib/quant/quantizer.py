"""Uniform fake quantizers: per-channel weights (with AdaRound) and per-tensor LSQ activations.

Integer formulation (GenQ eq. 1-2): ``w_int = clip(round(w / s) + z, n, p)`` and ``w_q = s * (w_int - z)``.

- Weights are *asymmetric* per output channel: ``n, p = 0, 2^b - 1`` and a zero point ``z`` per channel,
  as in the paper's eq. 1 and BRECQ's code (the paper's "p = 2^(b-1)" is read as the usual 2^b - 1).
  The range always holds 0, so a zero weight stays exactly zero. At 2 bits an asymmetric grid wastes no
  level on an unused sign, which matters for W2A4.
- Activations are per tensor, on one of two grids (``ActQuantizer.scheme``, chosen by ``QuantConfig.act_grid``):
  ``"asymmetric"``: ``[0, 2^b - 1]`` with a zero point, as BRECQ and QDrop quantize activations
  (``quant/quant_layer.py`` ``UniformAffineQuantizer``, ``symmetric=False``; QDrop ``exp/*/config.yaml``
  ``a_qconfig.symmetric: False``); ``"symmetric"``: no zero point, *unsigned* ``[0, 2^b - 1]`` when the
  calibration tensor has no negative value (after ReLU/ReLU6), *signed* ``[-2^(b-1), 2^(b-1) - 1]`` otherwise,
  as Genie does (``quantizer.py`` ``ActivationQuantizer``). The step size is learnable with LSQ's
  straight-through gradient and gradient scale 1 / sqrt(numel * qmax); the zero point is fixed at
  calibration, as in both references (BRECQ: ``self.zero_point = torch.nn.Parameter(...)`` commented out,
  only ``delta`` is a Parameter; QDrop: ``LSQFakeQuantize`` keeps ``zero_point`` a buffer, its
  ``LSQPlusFakeQuantize`` that learns it is not what its configs use).

Step sizes start at the minimiser of the Lp error (p = 2.4) over clipping ratios of the observed range:
100 ratios 1.00, 0.99, ..., 0.01 for weights (per channel) and symmetric activations (Genie ``init_scale``);
80 ratios 1.00, ..., 0.21 of both ends for asymmetric activations, BRECQ's ``init_quantization_scale``
(``scale_method='mse'``, ``range(80)``). The range always holds 0 (QDrop ``ObserverBase.calculate_qparams``
clamps min to <= 0 and max to >= 0; BRECQ's 'mse' branch does not, which only differs for a tensor whose
values all lie on one side away from 0). Every quantizer has an ``enabled`` switch so one model can run its FP
path (QDrop, tests, debugging).

Export contract: ``grid()`` of either quantizer returns ``(step, zero_point, qmin, qmax)`` such that the
fake-quantized tensor is exactly ``step * (clamp(round(x / step) + zero_point, qmin, qmax) - zero_point)``
(for weights, the integer weights are ``WeightQuantizer.integer(weight)``, AdaRound's rounding included).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from genqlib.quant.adaround import AdaRound

LP_NORM = 2.4
N_CLIP_RATIOS = 100
N_ACT_RATIOS = 80  # BRECQ quant/quant_layer.py init_quantization_scale: for i in range(80), 1 - 0.01 i
ACT_GRIDS = ("asymmetric", "symmetric")
MAX_INIT_ELEMENTS = 1 << 18  # activation step search subsamples bigger tensors (seeded, deterministic)


def check_bits(bits: int, name: str) -> int:
    """``bits`` if it is an integer in 2..8; otherwise a ValueError that names the argument."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"{name} must be an integer bit width in 2..8, got {bits!r}")
    return bits


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer bounds (n, p) of a b-bit grid."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, with an identity (straight-through) gradient."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Same value as ``x``, gradient multiplied by ``scale`` (LSQ's step-size gradient scale)."""
    return (x - x * scale).detach() + x * scale


BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def quantize_mask(drop_prob: float, like: torch.Tensor) -> torch.Tensor:
    """0/1 in ``like``'s dtype and shape: 1 where an element is quantized, 0 where QDrop keeps it at full
    precision (probability ``drop_prob``, one independent draw per element from the global generator).

    At QDrop's ``drop_prob = 0.5`` each element is one bit of a random 32-bit word, so the generator runs once
    per 32 elements where ``rand_like(x) < p`` runs once per element: those draws were the largest cost of a
    reconstruction step with QDrop (17% of a ViT block's step, 10 masks per step). Other probabilities draw
    ``rand_like(x) >= drop_prob`` (the reference's comparison, QDrop ``quant/quant_layer.py``)."""
    if drop_prob == 0.5:
        n = like.numel()
        words = torch.randint(-(2**31), 2**31, ((n + 31) // 32, 1), dtype=torch.int32, device=like.device)
        bits = (words >> BIT_SHIFTS.to(like.device)).bitwise_and_(1)
        return bits.view(-1)[:n].view(like.shape).to(like.dtype)
    return torch.rand_like(like).ge_(drop_prob)


def random_select(prob: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each element from ``a`` with probability ``prob``, else from ``b`` (QDrop's drop): ``torch.where(keep,
    a, b)`` in values and gradients, computed as ``lerp(a, b, mask)`` with ``quantize_mask``'s 0/1 mask (lerp
    is exact at weights 0 and 1, and on the CPU several times faster forward and backward than where)."""
    return torch.lerp(a, b, quantize_mask(prob, b))


class LSQFakeQuant(torch.autograd.Function):
    """``round(clamp(x / s, n, p)) * s`` with LSQ's straight-through gradients, optionally with QDrop's drop
    (``quantize``: a 0/1 mask, 0 keeps the element at full precision), in few passes over ``x``.

    The values are exactly those of the composed form ``lerp(x, round_ste(clamp(x / s, n, p)) * s, quantize)``
    (the same float operations). The gradients are the composed form's, gathered in the forward pass into two
    tensors so that the backward pass reads each once: ``d out / d x`` is 1 inside the clamp range or where
    the element is kept, else 0; ``d out / d s`` is ``round(clamp(x / s)) - x / s`` inside the range and the
    clamp bound outside it, 0 where kept, so the step's gradient is one dot product. They equal autograd's up
    to float summation order (a test compares them). About 3x faster forward and backward than the composed
    form with its drop on the CPU (``python -m genqlib.bench ptq``).

    ``grad_factor`` multiplies the step's gradient (LSQ's gradient scale) in the backward pass, which is what
    ``grad_scale(step, grad_factor)`` outside would do, without changing the step's value in the forward pass.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        step: torch.Tensor,
        n: int,
        p: int,
        grad_factor: float = 1.0,
        quantize: torch.Tensor | None = None,
    ) -> torch.Tensor:
        scaled = x / step
        rounded = torch.clamp(scaled, n, p)
        # a 0/1 float written directly: casting a bool tensor to float is ~10x slower on the CPU
        inside = torch.eq(rounded, scaled, out=torch.empty_like(scaled))
        rounded.round_()
        d_step = torch.sub(rounded, scaled.mul_(inside), out=scaled)  # rounded - inside * x / s
        out = rounded.mul_(step)
        if quantize is not None:
            out = torch.lerp(x, out, quantize)
            d_step.mul_(quantize)
            inside.sub_(1).mul_(quantize).add_(1)  # d out / d x: 1 where kept, else inside
        ctx.save_for_backward(inside, d_step)
        ctx.grad_factor = grad_factor
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        d_x, d_step = ctx.saved_tensors
        grad_x = grad * d_x if ctx.needs_input_grad[0] else None
        grad_step = None
        if ctx.needs_input_grad[1]:
            grad_step = torch.dot(grad.reshape(-1), d_step.reshape(-1)) * ctx.grad_factor
        return grad_x, grad_step, None, None, None, None


def lsq_fake_quant(
    x: torch.Tensor,
    step: torch.Tensor,
    n: int,
    p: int,
    grad_factor: float = 1.0,
    drop_prob: float = 0.0,
) -> torch.Tensor:
    """``round(clamp(x / step, n, p)) * step``, each element kept at full precision with probability
    ``drop_prob`` (QDrop); with gradients (LSQ's straight-through, the step's scaled by ``grad_factor``) when
    grad is enabled. With integer ``n = qmin - z`` and ``p = qmax - z`` this is the zero-point grid
    ``step * (clamp(round(x / step) + z, qmin, qmax) - z)``, value for value."""
    quantize = quantize_mask(drop_prob, x) if drop_prob > 0 else None
    if torch.is_grad_enabled():
        return LSQFakeQuant.apply(x, step, n, p, grad_factor, quantize)
    out = torch.clamp(x / step, n, p).round_().mul_(step)  # the same values, two passes in place
    return out if quantize is None else torch.lerp(x, out, quantize)


def fake_quant(
    x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor | float, n: int, p: int
) -> torch.Tensor:
    """``s * (clip(round(x / s) + z, n, p) - z)``: quantize and dequantize in float (no gradient trick)."""
    return step * (torch.clamp(torch.round(x / step) + zero, n, p) - zero)


def lp_error(x: torch.Tensor, xq: torch.Tensor, p: float = LP_NORM) -> torch.Tensor:
    """Mean |x - xq|^p over the last dimension."""
    return (x - xq).abs().pow(p).mean(-1)


def clip_ratios(n: int = N_CLIP_RATIOS) -> torch.Tensor:
    """Candidate clipping ratios 1.00, 0.99, ... (``n`` of them, step 1/100 for n = 100)."""
    return torch.linspace(1.0, 1.0 / n, n)


def search_asymmetric(
    rows: torch.Tensor,
    bits: int,
    n_ratios: int = N_CLIP_RATIOS,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (step, zero point) of an asymmetric b-bit grid minimising the Lp error over the first
    ``n_ratios`` clipping ratios 1.00, 0.99, ... of both ends of the range (each row's min and max, or
    ``lo``/``hi`` per row when the rows are a subsample); rows are channels."""
    p = 2**bits - 1
    lo = (rows.min(1).values if lo is None else lo).clamp(max=0)
    hi = (rows.max(1).values if hi is None else hi).clamp(min=0)
    best_err = torch.full_like(lo, math.inf)
    best_step, best_zero = torch.ones_like(lo), torch.zeros_like(lo)
    for r in clip_ratios()[:n_ratios]:
        step = ((hi - lo) * r / p).clamp(min=1e-8)
        zero = torch.round(-lo * r / step).clamp(0, p)
        err = lp_error(rows, fake_quant(rows, step[:, None], zero[:, None], 0, p))
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_step = torch.where(better, step, best_step)
        best_zero = torch.where(better, zero, best_zero)
    return best_step, best_zero


def subsample(x: torch.Tensor) -> torch.Tensor:
    """``x`` flattened, or a seeded random subsample of ``MAX_INIT_ELEMENTS`` of its elements when bigger."""
    if x.numel() <= MAX_INIT_ELEMENTS:
        return x.flatten()
    gen = torch.Generator().manual_seed(0)
    return x.flatten()[torch.randint(x.numel(), (MAX_INIT_ELEMENTS,), generator=gen).to(x.device)]


def search_act_asymmetric(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor (step, zero point) of BRECQ's activation grid: ``search_asymmetric`` over ``N_ACT_RATIOS``
    ratios, on the whole range of ``x`` (min and max from every element) and the Lp error on a subsample."""
    step, zero = search_asymmetric(subsample(x)[None], bits, N_ACT_RATIOS, x.min()[None], x.max()[None])
    return step[0], zero[0]


def search_symmetric(x: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Per-tensor step of a zero-point-free b-bit grid minimising the Lp error."""
    n, p = int_range(bits, signed)
    top = x.abs().max()
    x = subsample(x)
    best_err, best_step = math.inf, (top / p).clamp(min=1e-8)
    for r in clip_ratios():
        step = (top * r / p).clamp(min=1e-8)
        err = lp_error(x.flatten(), fake_quant(x.flatten(), step, 0.0, n, p)).item()
        if err < best_err:
            best_err, best_step = err, step
    return best_step


class WeightQuantizer(nn.Module):
    """Per-output-channel asymmetric weight quantizer; nearest rounding until AdaRound is attached.

    ``integer(w)`` is the clipped integer tensor; ``forward(w)`` the fake-quantized weight. With
    ``adaround`` attached the integer is ``floor(w0 / s0) + h(V)`` (soft) or ``+ (V >= 0)`` (hard),
    where ``floor(w0 / s0)`` is frozen when AdaRound starts, so the step may keep learning (Genie-M).

    GenQ's QAT (eq. 13) is one more term: ``add_offset()`` creates ``u`` (zeros), and the integer
    becomes ``floor + hard(V) + round_ste(u / s) + z``; freeze ``w`` and ``V``, train ``u`` (and s)
    with straight-through gradients. At ``u = 0`` the model is exactly the PTQ model.
    """

    def __init__(self, weight: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "w_bits")
        self.enabled = True
        self.adaround: AdaRound | None = None
        self.offset: nn.Parameter | None = None
        step, zero = search_asymmetric(weight.detach().flatten(1), bits)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        self.step = nn.Parameter(step.view(shape), requires_grad=False)
        self.register_buffer("zero_point", zero.view(shape))

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``(step, zero_point, qmin, qmax)``, step and zero point per output channel (shaped like the weight's
        first dim, ones elsewhere): ``forward(w)`` is ``step * (integer(w) - zero_point)``, and with nearest
        rounding ``integer(w)`` is ``clamp(round(w / step) + zero_point, qmin, qmax)``."""
        return self.step.detach(), self.zero_point, 0, self.qmax

    def integer(self, weight: torch.Tensor) -> torch.Tensor:
        """The clipped integer weights ``w_int`` in [0, 2^b - 1] (float dtype, integer values)."""
        w = round_ste(weight / self.step) if self.adaround is None else self.adaround()
        if self.offset is not None:
            w = w + round_ste(self.offset / self.step)
        return torch.clamp(w + self.zero_point, 0, self.qmax)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return self.step * (self.integer(weight) - self.zero_point)

    def start_adaround(self, weight: torch.Tensor) -> AdaRound:
        """Attach learnable soft rounding initialised so that the soft weights equal ``weight``."""
        self.adaround = AdaRound(weight.detach() / self.step.detach())
        return self.adaround

    def add_offset(self, weight: torch.Tensor) -> nn.Parameter:
        """GenQ QAT (eq. 13): a learnable offset ``u`` (zeros, shaped like ``weight``) added after rounding."""
        self.offset = nn.Parameter(torch.zeros_like(weight.detach()))
        return self.offset

    def extra_repr(self) -> str:
        rounding = "nearest" if self.adaround is None else self.adaround.mode
        return f"bits={self.bits}, per-channel asymmetric, rounding={rounding}, enabled={self.enabled}"


class ActQuantizer(nn.Module):
    """Per-tensor activation quantizer with an LSQ-learnable step, on an asymmetric grid with a fixed zero
    point (BRECQ/QDrop) or a symmetric one, unsigned or signed from calibration (Genie): ``scheme``.

    It must be calibrated before use: ``calibrate(x)``, or run the model inside ``calibrating(model)``
    (each quantizer then initialises on the first tensor it sees). ``drop_prob`` > 0 keeps each element
    at full precision with that probability (QDrop); reconstruction sets and resets it.
    """

    def __init__(self, bits: int, scheme: str = "symmetric") -> None:
        super().__init__()
        if scheme not in ACT_GRIDS:
            raise ValueError(f"activation grid must be one of {ACT_GRIDS}, got {scheme!r}")
        self.bits = check_bits(bits, "a_bits")
        self.scheme = scheme
        self.enabled = True
        self.auto_calibrate = False
        self.drop_prob = 0.0
        self.hooked = (
            True  # False: the hook that applies it passes tensors through (reconstruction applies it)
        )
        self.step = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.register_buffer("zero_point", torch.tensor(0.0))  # integer-valued; 0 on a symmetric grid
        self.register_buffer("signed", torch.tensor(False))  # the calibration tensor had a negative value
        self.register_buffer("calibrated", torch.tensor(False))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """The Lp-optimal step (and zero point, on the asymmetric grid) for ``x``; the symmetric grid is signed
        when ``x`` has a negative value."""
        x = x.detach().float()
        self.signed.fill_(bool(x.min() < 0))
        if self.scheme == "asymmetric":
            step, zero = search_act_asymmetric(x, self.bits)
            self.step.copy_(step)
            self.zero_point.copy_(zero)
        else:
            self.step.copy_(search_symmetric(x, self.bits, bool(self.signed)))
            self.zero_point.zero_()
        self.calibrated.fill_(True)

    def qrange(self) -> tuple[int, int]:
        """(qmin, qmax) of the integer grid (before the zero point is subtracted)."""
        if self.scheme == "asymmetric":
            return 0, 2**self.bits - 1
        return int_range(self.bits, bool(self.signed))

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``(step, zero_point, qmin, qmax)``: ``forward(x)`` (no drop) is exactly
        ``step * (clamp(round(x / step) + zero_point, qmin, qmax) - zero_point)``."""
        qmin, qmax = self.qrange()
        return self.step.detach(), self.zero_point, qmin, qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.calibrated:
            if not self.auto_calibrate:
                raise RuntimeError(
                    "activation quantizer is not calibrated: run reconstruct(...) (method='nearest' at "
                    "least) or feed calibration images inside genqlib.quant.calibrating(model)"
                )
            self.calibrate(x)
        qmin, qmax = self.qrange()
        z = int(self.zero_point)
        # with the integer zero point folded into the bounds, one clamp-round-scale pass (LSQFakeQuant)
        grad_factor = 1.0 / math.sqrt(x[0].numel() * qmax)
        return lsq_fake_quant(x, self.step, qmin - z, qmax - z, grad_factor, self.drop_prob)

    def extra_repr(self) -> str:
        if not self.calibrated:
            kind = "uncalibrated"
        elif self.scheme == "asymmetric":
            kind = f"asymmetric, zero point {int(self.zero_point)}"
        else:
            kind = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, enabled={self.enabled}"


@contextmanager
def calibrating(module: nn.Module, quantizers: list[ActQuantizer] | None = None) -> Iterator[nn.Module]:
    """Inside this context each uncalibrated ActQuantizer in ``module`` (or in ``quantizers``) calibrates on
    its first input."""
    if quantizers is None:
        quantizers = [m for m in module.modules() if isinstance(m, ActQuantizer)]
    for q in quantizers:
        q.auto_calibrate = True
    try:
        yield module
    finally:
        for q in quantizers:
            q.auto_calibrate = False
