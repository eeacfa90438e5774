"""Every notebook runs headless under papermill with profile=ci, writing into temporary folders.

The notebooks share one work folder (synthetic sets, caches) in the order they are numbered, as a user's
run does; each writes its figures and metrics into its own temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_executed_notebooks import problems

from genqlib.paper.profiles import REPO_ROOT
from genqlib.paper.run_notebooks import list_notebooks, run_notebook

WIDGET = "application/vnd.jupyter.widget-view+json"
PANELS = {"02_filter": 1, "03_token_inversion": 1, "04_ptq": 1, "06_ablations": 1}  # genqlib.ui panels
PANEL_FILES = {
    "02_filter": "explorer",
    "03_token_inversion": "token_compare",
    "04_ptq": "explorer",
    "06_ablations": "explorer",
}


@pytest.mark.notebook
@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_with_ci_profile(path, tmp_path, shared_work_dir):
    out = run_notebook(path, "ci", tmp_path, work_dir=str(shared_work_dir))
    executed = json.loads(out.read_text())
    tags = [c.get("metadata", {}).get("tags", []) for c in executed["cells"]]
    assert any("parameters" in t for t in tags) and any("injected-parameters" in t for t in tags)
    assert problems(executed) == [], "every output shows what it stands for, with no stderr or stalled bar"
    metrics = json.loads((tmp_path / path.stem / "metrics.json").read_text())
    assert metrics, "each notebook writes a non-empty metrics JSON"
    assert list((tmp_path / path.stem).glob("*.png")), "each notebook saves its plots"
    run = json.loads((tmp_path / path.stem / "run.json").read_text())
    assert run["profile"] == "ci" and run["generator"].startswith("generator@") and run["seconds"] > 0
    if path.stem in PANELS:  # each control's default state is a plain figure in the executed copy
        bundles = [o.get("data", {}) for c in executed["cells"] for o in c.get("outputs", [])]
        panels = [b for b in bundles if WIDGET in b and "image/png" in b]
        assert len(panels) == PANELS[path.stem], f"{path.stem}: a widget output with its default figure"
        assert (tmp_path / path.stem / f"{PANEL_FILES[path.stem]}.png").stat().st_size > 0


@pytest.mark.notebook
def test_paper_smoke_profile_runs_all_notebooks_offline(tmp_path):
    """The paper code path end to end (hf: classifiers, an ImageNet folder, a StableDiffusionPipeline) at CI
    size: ``python -m genqlib.paper.run_notebooks --profile paper-smoke``, with the hub switched off."""
    figures, work = tmp_path / "figures", tmp_path / "work"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GENQ_SMOKE_DIR": str(tmp_path / "world"),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "genqlib.paper.run_notebooks", "--profile", "paper-smoke"]
    command += ["--figures-dir", str(figures), "--work-dir", str(work)]
    subprocess.run(command, check=True, env=env, cwd=REPO_ROOT, timeout=1200)
    record = json.loads((figures / "run_times-paper-smoke.json").read_text())
    assert list(record["notebooks"]) == [p.stem for p in list_notebooks()]
    for path in list_notebooks():
        assert json.loads((figures / path.stem / "metrics.json").read_text())
    assert (tmp_path / "world" / "imagenet" / "val_labels.txt").is_file()
