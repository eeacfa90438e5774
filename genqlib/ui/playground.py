"""Notebook 01's prompt playground: type a prompt, see samples (a widget; None without ipywidgets).

Like the panels (``genqlib.ui.panel``), its display bundle carries the first samples as a plain
``image/png``, so a headless run and a viewer without widgets show a picture instead of a widget repr."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from genqlib.paper.plots import image_grid


def prompt_playground(
    sample: Callable[[str, int], torch.Tensor], default: str, n: int = 8, first: Figure | None = None
):
    """A text box and a button: type a prompt, see ``n`` samples. ``first``: the figure of ``default``'s
    samples already drawn (else they are drawn now), shown until the button is pressed and kept as the static
    picture. Returns the widget (None without ipywidgets)."""
    try:
        import ipywidgets as widgets
        from IPython.display import Image, display
    except ImportError:
        return None

    class Playground(widgets.VBox):
        png = b""

        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
            bundle["text/plain"] = f"prompt playground: {default!r}, {n} samples"
            return bundle

    hint = widgets.HTML(
        "<b>Try this:</b> change an adjective (dark, close-up, clean) or the garment, then press "
        "<i>generate</i>; the samples use the run's seeds, guidance and steps."
    )
    text = widgets.Text(value=default, description="prompt", layout=widgets.Layout(width="60%"))
    button = widgets.Button(description="generate")
    output = widgets.Output()
    fig = first if first is not None else image_grid([sample(default, n)], [default[:30]])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    with output:
        display(Image(data=buffer.getvalue(), format="png"))

    def on_click(_=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = image_grid([sample(text.value, n)], [text.value[:30]])
            display(fig)
            plt.close(fig)

    button.on_click(on_click)
    box = Playground([hint, widgets.HBox([text, button]), output])
    box.png = buffer.getvalue()
    return box
