"""The notebooks' controls: each is a ``Panel`` of ipywidgets over one matplotlib figure.

A panel draws its default state when it is built. Displayed in JupyterLab (or any front end with the
widget manager) it is live: moving a control redraws the figure and the summary line below it. Its display
bundle also carries the current figure as a plain ``image/png``, so a headless run (papermill) and any
viewer without widgets (the executed copy on disk, nbviewer) show the default state as an ordinary figure.

Every panel keeps what it drew last in ``panel.state`` (numbers) and ``panel.png`` (the figure), so tests
can build one, set a control's ``value`` and check that the output changed, without a browser.

Panels here: ``filter_explorer`` (02), ``token_compare`` (03), ``ptq_explorer`` (04),
``ablation_explorer`` and ``ladder_explorer`` (06).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.paper.plots import save

# ---------------------------------------------------------------- the panel


class Panel(widgets.VBox):
    """Controls, a figure and a one-line summary; ``draw(**values) -> (Figure, state dict)`` makes the figure.

    The summary shows ``state["summary"]`` (plain text; escaped). Errors in a live redraw are shown in the
    summary instead of being lost in the kernel log; the first draw raises them. ``hint``: one line above the
    controls that says what to try first (plain text; escaped).
    """

    def __init__(
        self,
        controls: Mapping[str, widgets.Widget],
        draw: Callable[..., tuple[Figure, dict]],
        extra: Sequence[widgets.Widget] = (),
        name: str = "panel",
        hint: str = "",
    ) -> None:
        self.controls = dict(controls)
        self.draw = draw
        self.name = name
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.summary = widgets.HTML()
        self.image.add_class("genq-figure")
        self.summary.add_class("genq-summary")
        self.png = b""
        self.figure: Figure | None = None
        self.state: dict = {}
        self.draws = 0
        row = widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        self.hint = widgets.HTML(f"<b>Try this:</b> {html.escape(hint)}" if hint else "")
        self.hint.add_class("genq-hint")
        super().__init__([self.hint, row, *extra, self.summary, self.image])
        self.add_class(f"genq-{name}")
        for key, control in self.controls.items():
            control.add_class(f"genq-{name}-{key}")
            control.observe(self._changed, names="value")
        self.update()

    def values(self) -> dict:
        """The controls' current values, by name."""
        return {key: control.value for key, control in self.controls.items()}

    def update(self) -> None:
        """Redraw with the current values (a live front end calls this on every change)."""
        fig, state = self.draw(**self.values())
        self.figure = fig
        self.png = figure_png(fig)
        self.state = state
        self.draws += 1
        self.image.value = self.png
        self.summary.value = self._summary_html(state)

    def _summary_html(self, state: dict) -> str:
        text = html.escape(str(state.get("summary", "")))
        return f'<span class="genq-draw" data-draw="{self.draws}">{text}</span>'

    def _changed(self, _change=None) -> None:
        self.summary.value = '<span class="genq-busy">updating…</span>'
        try:
            self.update()
        except Exception as err:  # a live callback has nowhere else to report
            self.summary.value = f'<span class="genq-error">error: {html.escape(repr(err))}</span>'

    def save(self, folder: str | Path, name: str | None = None) -> Path:
        """Write the current figure as ``folder/name.png`` and ``.svg`` (default name: the panel's), at the
        resolution every saved figure has (``genqlib.paper.plots.save``)."""
        return save(self.figure, Path(folder), name or self.name)

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        bundle["text/plain"] = str(self.state.get("summary", self.name))
        return bundle


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (the figure is not shown or kept by pyplot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def mosaic(images: torch.Tensor, cols: int, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] tiled ``cols`` wide into one (H', W') or (H', W', 3) array for imshow."""
    n, c, h, w = images.shape if len(images) else (0, 1, 1, 1)
    rows = max(1, math.ceil(n / cols))
    out = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), fill)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[:, top : top + h, left : left + w] = images[i].clamp(0, 1)
    return out[0] if c == 1 else out[:3].permute(1, 2, 0)


def show_images(ax, images: torch.Tensor, cols: int, title: str) -> None:
    ax.imshow(mosaic(images, cols).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def slider(
    value: float, low: float, high: float, step: float, description: str, percent: bool = False
) -> widgets.FloatSlider:
    """A slider wide enough to aim with (760 pixels, a track of about 400 beside a long description);
    ``percent`` shows a fraction as ``30%``."""
    return widgets.FloatSlider(
        value=value,
        min=low,
        max=high,
        step=step,
        description=description,
        continuous_update=False,
        readout_format=".0%" if percent else ".2f",
        style={"description_width": "initial"},
        layout=widgets.Layout(width="760px"),
    )
