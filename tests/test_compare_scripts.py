"""scripts/compare_verdicts.py on the committed figures against themselves and against a copy with cells moved."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from genqlib.infra.paths import REPO_ROOT

FIGURES = REPO_ROOT / "figures"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def moved_tree(tmp_path: Path) -> Path:
    """A copy of the committed metrics in which every GenQ PTQ row of notebook 04 gained 30 points of top-1."""
    for path in FIGURES.glob("*/metrics.json"):
        (tmp_path / path.parent.name).mkdir()
        shutil.copy(path, tmp_path / path.parent.name / "metrics.json")
    shutil.copytree(FIGURES / "bench", tmp_path / "bench", ignore=shutil.ignore_patterns("*.png", "*.svg"))
    target = tmp_path / "04_ptq" / "metrics.json"
    m = json.loads(target.read_text())
    for row in m["rows"]:
        if row.get("source") == "genq" and row.get("top1") is not None:
            row["top1"] += 30.0
    target.write_text(json.dumps(m))
    return tmp_path


def test_verdicts_of_a_tree_against_itself_do_not_move_and_a_moved_cell_does(moved_tree: Path) -> None:
    compare = script("compare_verdicts").compare
    rows, moved = compare(FIGURES, FIGURES)
    assert rows and moved == 0
    rows, moved = compare(FIGURES, moved_tree)
    assert moved > 0
    changed = [r for r in rows if r[-1]]
    assert all(r[5] != r[8] for r in changed)
    assert any("GenQ" in r[1] and r[8] == "resolved (paper's direction)" for r in changed)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "scripts").glob("*.py")))
def test_every_script_imports(name: str) -> None:
    """A script that no test runs still imports against today's genqlib (a moved function fails here)."""
    module = script(name)
    assert hasattr(module, "main") or hasattr(module, "ModeBitsFileManager")
