"""What every notebook sets up first, in one object: ``nb = Notebook("04_ptq", profile, figures_dir, work_dir)``
gives the profile, the folders, ``nb.save(fig, name)``, ``nb.show(fig, name)`` and ``nb.write_metrics(record)``; ``available_teachers``
and ``format_table`` are the notebooks' shared helpers."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from genqlib.infra.machine import keep_freed_memory
from genqlib.infra.text_table import format_table  # noqa: F401 - notebooks import it from here
from genqlib.paper.plots import save
from genqlib.paper.profiles import Profile, get_profile
from genqlib.zoo import TEACHER_DIR, list_teachers

SCREEN_DPI = 100  # what a notebook shows; the saved PNG has the print resolution (genqlib.paper.plots.save)


class Notebook:
    """One notebook's run: its ``profile`` and the folders its figures (``out_dir``) and caches (``work_dir``)
    go to; ``figures_dir`` and ``work_dir`` None mean the profile's."""

    def __init__(
        self,
        name: str,
        profile: str | Profile,
        figures_dir: str | Path | None = None,
        work_dir: str | Path | None = None,
    ):
        keep_freed_memory()  # a notebook's kernel starts here: let malloc keep freed tensor pages (machine.py)
        self.name: str = name
        self.profile: Profile = get_profile(profile)
        self.out_dir: Path = Path(figures_dir or self.profile.figures_dir) / name
        self.work_dir: Path = Path(work_dir or self.profile.work_dir)

    def __repr__(self) -> str:
        return f"Notebook({self.name!r}, profile={self.profile.name!r}, out_dir={self.out_dir}, work_dir={self.work_dir})"

    def save(self, fig: Figure, name: str) -> Path:
        """``fig`` as ``out_dir/<name>.png``."""
        return save(fig, self.out_dir, name)

    def show(self, fig: Figure, name: str | None = None) -> Path | None:
        """Display ``fig`` as a PNG image (saved first as ``out_dir/<name>.png`` when ``name`` is given) and
        close it. Works for a ``Figure`` that pyplot never made, which ``display(fig)`` would show only as
        ``<Figure size ...>`` text until pyplot's inline backend happens to be loaded."""
        from IPython.display import Image, display

        path = self.save(fig, name) if name else None
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=SCREEN_DPI, bbox_inches="tight")
        display(Image(data=buffer.getvalue(), format="png"))
        plt.close(fig)  # a pyplot figure is released; any other is not pyplot's to close, and this is a no-op
        return path

    def write_metrics(self, record: dict) -> Path:
        """``record`` as ``out_dir/metrics.json``, without the rows' ``from_cache`` flags (how a value was
        obtained this time, not what it is); prints where it went."""
        path = self.out_dir / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_drop_from_cache(record), indent=2) + "\n")
        print(f"wrote {path}")
        return path


def _drop_from_cache(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_from_cache(v) for k, v in value.items() if k != "from_cache"}
    if isinstance(value, list):
        return [_drop_from_cache(v) for v in value]
    return value


def available_teachers(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(usable, missing): mini-world teachers whose committed weights are missing go to ``missing``, which
    is printed when not empty."""
    missing = [n for n in names if n in list_teachers() and not (TEACHER_DIR / f"{n}.safetensors").exists()]
    if missing:
        print(f"skipping teachers without committed weights: {missing}")
    return [n for n in names if n not in missing], missing
