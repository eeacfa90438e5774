"""Notebook 01's prompt playground: type a prompt, see samples (a widget; None without ipywidgets)."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import torch

from genqlib.paper.plots import image_grid


def prompt_playground(sample: Callable[[str, int], torch.Tensor], default: str, n: int = 8):
    """A text box and a button: type a prompt, see ``n`` samples. Returns the widget (None without ipywidgets)."""
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        return None
    text = widgets.Text(value=default, description="prompt", layout=widgets.Layout(width="60%"))
    button = widgets.Button(description="generate")
    output = widgets.Output()

    def on_click(_=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = image_grid([sample(text.value, n)], [text.value[:30]])
            display(fig)
            plt.close(fig)

    button.on_click(on_click)
    return widgets.VBox([widgets.HBox([text, button]), output])
