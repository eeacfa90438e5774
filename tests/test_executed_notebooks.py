"""What a learner meets in an executed notebook: every output shows something, and nothing looks broken.

``problems(notebook)`` lists each output that is only a text stand-in for a picture (``<Figure size ...>``)
or a widget (``VBox(children=...``, a widget view without an ``image/png`` fallback), each stderr stream (a
pink box in JupyterLab), and each stale progress bar (a tqdm widget view, or text that shows a bar at 0% /
0 batches and never its end). ``tests/test_notebooks.py`` applies it to every notebook it executes at ``ci``
(the executed copies it already makes, under pytest's temporary folders), so nothing runs twice.

The committed ``figures/<nb>/<nb>.ipynb`` copies (``mini``) are checked too (``test_committed_mini_copies``),
and each must come from its notebook's current code: a copy whose code cells differ is stale (``stale_code``);
``bash scripts/run.sh --only NN`` re-makes it.
"""

from __future__ import annotations

import json
import re

import pytest

from genqlib.paper.profiles import REPO_ROOT
from genqlib.paper.run_notebooks import list_notebooks

WIDGET = "application/vnd.jupyter.widget-view+json"
STAND_IN = re.compile(r"^<(?:matplotlib\.figure\.)?Figure size [^>]*>$|^[A-Z]\w*Box\(children=")
BAR_START = re.compile(r"(?:^|\s)0%\||(?:^|:\s)0(?:batch|it)\b|\s0/\d+ \[")
BAR_END = re.compile(r"100%\||(\d+)/\1 \[")


def _text(value: object) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _last_states(text: str) -> list[str]:
    """What a terminal shows of a stream: per line, the part after the last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def output_problems(output: dict) -> list[str]:
    """The problems of one output (empty when it is fine)."""
    kind = output.get("output_type")
    if kind == "stream":
        text = _text(output.get("text"))
        if output.get("name") == "stderr":
            return [f"stderr: {text.strip()[:120]!r}"]
        stalled = [s for s in _last_states(text) if BAR_START.search(s) and not BAR_END.search(s)]
        return [f"stale progress bar: {s.strip()[:80]!r}" for s in stalled]
    if kind not in ("display_data", "execute_result"):
        return []
    data = output.get("data", {})
    plain = _text(data.get("text/plain")).strip()
    if WIDGET in data and "image/png" not in data:
        what = "progress bar" if BAR_START.search(plain) or "%|" in plain else "widget without a picture"
        return [f"{what}: {plain[:80]!r}"]
    if set(data) <= {"text/plain"} and STAND_IN.search(plain):
        return [f"text instead of a picture: {plain[:80]!r}"]
    return []


def problems(notebook: dict) -> list[str]:
    """Every problem of an executed notebook (its JSON), as ``cell <i>: <what>``."""
    found = []
    for i, cell in enumerate(notebook.get("cells", [])):
        for output in cell.get("outputs", []):
            found += [f"cell {i}: {p}" for p in output_problems(output)]
    return found


def code_cells(notebook: dict) -> list[str]:
    """The source of each code cell, papermill's injected-parameters cell left out."""
    return [
        _text(c.get("source"))
        for c in notebook.get("cells", [])
        if c.get("cell_type") == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]


def stale_code(executed: dict, notebook: dict) -> list[str]:
    """The code cells where an executed copy differs from its notebook (its outputs came from other code)."""
    ran, now = code_cells(executed), code_cells(notebook)
    found = [
        f"code cell {i} changed since the run"
        for i, (a, b) in enumerate(zip(ran, now, strict=False))
        if a != b
    ]
    if len(ran) != len(now):
        found.append(f"{len(ran)} code cells ran, the notebook has {len(now)}")
    return found


# ---------------------------------------------------------------- the check itself, on made-up outputs


def _display(data: dict) -> dict:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _stream(name: str, text: str) -> dict:
    return {"output_type": "stream", "name": name, "text": text}


BAD = {
    "figure repr": _display({"text/plain": "<Figure size 600x340 with 1 Axes>"}),
    "widget repr": _display(
        {"text/plain": "VBox(children=(HBox(children=(Text(value='A photo'", WIDGET: {"model_id": "a"}}
    ),
    "widget repr, no view": _display({"text/plain": "VBox(children=(HBox(children=(Text(value='x'"}),
    "tqdm widget": _display({"text/plain": "energy:   0%|          | 0/40 [00:00<?, ?it/s]", WIDGET: {}}),
    "stderr": _stream("stderr", "[transformers] The new embeddings will be initialized ...\n"),
    "text bar at 0%": _stream("stdout", "generate:   0%|          | 0/21 [00:00<?, ?batch/s]\n"),
    "text bar at 0 batches": _stream("stdout", "generate: 0batch [00:00, ?batch/s]\n"),
}
GOOD = {
    "figure": _display({"image/png": "iVBOR", "text/plain": "<Figure size 600x340 with 1 Axes>"}),
    "panel": _display({"image/png": "iVBOR", "text/plain": "summary", WIDGET: {"model_id": "a"}}),
    "finished text bar": _stream("stdout", "ptq:   0%|  | 0/3 [00:00<?]\rptq: 100%|##| 3/3 [00:01<00:00]\n"),
    "print": _stream("stdout", "teacher resnet: 92.93% top-1, 0% of the images dropped\n"),
    "table": _display({"text/plain": "{'resnet': 92.9}"}),
}


@pytest.mark.parametrize("name", BAD)
def test_problems_finds_each_kind(name):
    notebook = {"cells": [{"cell_type": "code", "outputs": [GOOD["figure"], BAD[name]]}]}
    found = problems(notebook)
    assert len(found) == 1 and found[0].startswith("cell 0: "), found


@pytest.mark.parametrize("name", GOOD)
def test_problems_passes_what_shows(name):
    assert problems({"cells": [{"cell_type": "code", "outputs": [GOOD[name]]}]}) == []


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_committed_mini_copies(path):
    copy = REPO_ROOT / "figures" / path.stem / path.name
    if not copy.exists():
        pytest.skip(f"{copy.relative_to(REPO_ROOT)} is not committed")
    executed = json.loads(copy.read_text())
    assert problems(executed) == []
    assert stale_code(executed, json.loads(path.read_text())) == [], (
        f"re-run it: bash scripts/run.sh --only {path.stem[:2]}"
    )


def test_stale_code_finds_a_changed_or_added_cell():
    def nb(*sources: str, injected: bool = False) -> dict:
        cells = [{"cell_type": "code", "source": src, "metadata": {}} for src in sources]
        if injected:
            cells.insert(
                1,
                {
                    "cell_type": "code",
                    "source": "profile = 'mini'",
                    "metadata": {"tags": ["injected-parameters"]},
                },
            )
        return {"cells": [{"cell_type": "markdown", "source": "# title"}, *cells]}

    source = nb("profile = 'ci'", "x = 1")
    assert stale_code(nb("profile = 'ci'", "x = 1", injected=True), source) == []
    assert stale_code(nb("profile = 'ci'", "x = 2", injected=True), source) == [
        "code cell 1 changed since the run"
    ]
    assert stale_code(nb("profile = 'ci'"), source) == ["1 code cells ran, the notebook has 2"]
