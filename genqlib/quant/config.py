"""``QuantConfig``: bit widths, and whose conventions place and shape the activation quantizers.

The three references quantize the same network differently at the same nominal width; ``QuantConfig.reference``
picks one reference's conventions as a whole, and each of the three settings it decides can be overridden:

| reference | ``residual`` | ``edges`` | ``act_grid`` |
|---|---|---|---|
| ``"brecq"`` | ``block_output`` (``quant/quant_block.py``) | ``brecq`` (``quant/quant_model.py``) | ``asymmetric`` (``quant/quant_layer.py``) |
| ``"qdrop"`` | ``block_output`` (``qdrop/model/__init__.py``) | ``qdrop`` (``qdrop/solver/main_imagenet.py``) | ``asymmetric`` (``exp/*/config.yaml``) |
| ``"genie"`` | ``block_input`` (``reconstruct.py``, nn.Identity) | ``genie`` (``reconstruct.py``) | ``symmetric`` (``quantizer.py``) |

(BRECQ, QDrop: github.com/yhhhli/BRECQ, github.com/wimh966/QDrop; Genie: github.com/SamsungLabs/Genie.) What
each edge style makes 8-bit is in ``sites.py``. ``reference_for(method)`` is the reference whose conventions go
with a reconstruction method.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from genqlib.quant.quantizer import ACT_GRIDS, check_bits

RESIDUAL_MODES = ("block_output", "block_input")
EDGE_STYLES = ("brecq", "qdrop", "genie", "layer")
REFERENCES = {  # reference -> (residual, edges, act_grid); the table in the module docstring
    "brecq": ("block_output", "brecq", "asymmetric"),
    "qdrop": ("block_output", "qdrop", "asymmetric"),
    "genie": ("block_input", "genie", "symmetric"),
}
METHOD_REFERENCE = {
    "brecq": "brecq",
    "brecq_joint": "brecq",
    "qdrop": "qdrop",
    "genie_m": "genie",
    "nearest": "brecq",
}


def reference_for(method: str) -> str:
    """The reference whose quantizer conventions go with reconstruction ``method`` (``genie_m`` -> genie)."""
    if method not in METHOD_REFERENCE:
        raise ValueError(f"unknown reconstruction method {method!r}: one of {tuple(METHOD_REFERENCE)}")
    return METHOD_REFERENCE[method]


@dataclass(frozen=True)
class QuantConfig:
    """Bit widths and placement. ``a_bits=None`` leaves activations FP; ``first_last_bits=None`` means same as
    the rest. ``reference`` picks the conventions (module docstring); ``residual``, ``edges`` and ``act_grid``
    left at None take that reference's (``resolved()``), a value given overrides it."""

    w_bits: int = 4
    a_bits: int | None = 4
    first_last_bits: int | None = 8
    fold_bn: bool = True
    reference: str = "brecq"
    residual: str | None = None
    edges: str | None = None
    act_grid: str | None = None
    # cross-layer equalization before quantizing (``equalize.py``; not in the references)
    equalize: bool = False

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "QuantConfig.w_bits")
        if self.a_bits is not None:
            check_bits(self.a_bits, "QuantConfig.a_bits")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "QuantConfig.first_last_bits")
        choices = {
            "reference": tuple(REFERENCES),
            "residual": RESIDUAL_MODES,
            "edges": EDGE_STYLES,
            "act_grid": ACT_GRIDS,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"QuantConfig.{name} must be one of {allowed}, got {value!r}")

    def resolved(self) -> QuantConfig:
        """This config with ``residual``, ``edges`` and ``act_grid`` filled from ``reference`` where None."""
        residual, edges, act_grid = REFERENCES[self.reference]
        return replace(
            self,
            residual=self.residual or residual,
            edges=self.edges or edges,
            act_grid=self.act_grid or act_grid,
        )

    def describe(self) -> str:
        """E.g. 'W4A4, brecq conventions: asymmetric activations, first/last layer 8-bit (brecq edges),
        residual block_output'."""
        name = (
            f"W{self.w_bits}A{self.a_bits}" if self.a_bits is not None else f"W{self.w_bits} (FP activations)"
        )
        return f"{name}, {self.convention()}"

    def convention(self) -> str:
        """Everything but the bit widths, e.g. 'brecq conventions: asymmetric activations, first/last layer 8-bit
        (brecq edges), residual block_output': what a table of several widths prints once."""
        cfg = self.resolved()
        edges = (
            "first/last layer same bits"
            if cfg.first_last_bits is None
            else f"first/last layer {cfg.first_last_bits}-bit ({cfg.edges} edges)"
        )
        grid = f"{cfg.act_grid} activations, " if cfg.a_bits is not None else ""
        return f"{cfg.reference} conventions: {grid}{edges}, residual {cfg.residual}" + (
            ", CLE" if cfg.equalize else ""
        )
