"""The notebooks' shared set-up object: folders from the profile or the parameters, figures and metrics."""

from __future__ import annotations

import json

from matplotlib.figure import Figure

from genqlib.paper.profiles import get_profile
from genqlib.ui.context import Notebook, format_table


def test_folders_default_to_the_profile_and_follow_the_parameters(tmp_path):
    nb = Notebook("04_ptq", "ci")
    assert nb.profile == get_profile("ci")
    assert (
        nb.out_dir == get_profile("ci").figures_dir / "04_ptq" and nb.work_dir == get_profile("ci").work_dir
    )
    nb = Notebook("04_ptq", "ci", figures_dir=str(tmp_path / "fig"), work_dir=tmp_path / "work")
    assert (nb.out_dir, nb.work_dir) == (tmp_path / "fig" / "04_ptq", tmp_path / "work")


def test_save_and_write_metrics(tmp_path):
    nb = Notebook("05_qat", "ci", figures_dir=tmp_path)
    assert nb.save(Figure(), "curve").is_file()
    rows = [{"top1": 90.0, "from_cache": True, "curve": {"top1": [1.0]}}]
    path = nb.write_metrics({"profile": "ci", "rows": rows, "nested": {"a": [{"from_cache": False, "b": 1}]}})
    assert json.loads(path.read_text()) == {
        "profile": "ci",
        "rows": [{"top1": 90.0, "curve": {"top1": [1.0]}}],
        "nested": {"a": [{"b": 1}]},
    }
    assert rows[0]["from_cache"], "the caller's rows are left as they were"


def test_format_table_aligns_columns():
    table = format_table([{"a": 1.234, "b": "x"}, {"a": 10.0}], ["a", "b"])
    assert table.splitlines() == ["a      b", "-----  -", "1.23   x", "10.00   "]


def test_show_displays_a_figure_pyplot_did_not_make_as_png(tmp_path, monkeypatch):
    """``display(Figure())`` is only ``<Figure size ...>`` text until pyplot's inline backend is loaded;
    ``nb.show`` hands the front end the PNG itself, and saves the PNG (150 dpi) and SVG beside it."""
    import IPython.display
    from PIL import Image

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    nb = Notebook("06_ablations", "ci", figures_dir=tmp_path)
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1])
    path = nb.show(fig, "curve")
    (bundle,) = [obj._repr_mimebundle_() for obj in shown]
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["image/png"][:4] == b"\x89PNG" or str(data["image/png"]).startswith("iVBOR")
    assert path.is_file() and path.with_suffix(".svg").is_file()
    assert Image.open(path).info["dpi"][0] >= 149
