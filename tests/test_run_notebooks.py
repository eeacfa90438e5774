"""A full notebook run records its times, and resumes after an interruption where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import genqlib.paper.run_notebooks as run_notebooks


def test_a_full_run_resumes_after_an_interruption_and_records_all_notebooks(tmp_path: Path, monkeypatch):
    names = [f"0{i}_step" for i in range(1, 7)]
    monkeypatch.setattr(run_notebooks, "list_notebooks", lambda: [Path(f"{n}.ipynb") for n in names])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ran: list[str] = []
    stops = ["04_step"]

    def fake_run(path: Path, profile: str, figures_dir: Path) -> Path:
        if path.stem in stops:
            stops.remove(path.stem)
            raise RuntimeError("stopped")  # the session stops inside notebook 04
        ran.append(path.stem)
        return figures_dir / path.name

    monkeypatch.setattr(run_notebooks, "run_notebook", fake_run)
    argv = ["run_notebooks", "--profile", "ci", "--figures-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(RuntimeError, match="stopped"):
        run_notebooks.main()
    partial = json.loads((tmp_path / "run_times-ci.partial.json").read_text())
    assert list(partial["notebooks"]) == names[:3] and not (tmp_path / "run_times-ci.json").exists()

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # other conditions: refused, nothing runs
    monkeypatch.setattr(sys, "argv", [*argv, "--resume"])
    with pytest.raises(SystemExit, match="OMP_NUM_THREADS"):
        run_notebooks.main()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ran.clear()
    run_notebooks.main()
    assert ran == names[3:]  # 04 again (it did not finish), then 05 and 06
    record = json.loads((tmp_path / "run_times-ci.json").read_text())
    assert list(record["notebooks"]) == names and record["resumed"] == 1 and record["threads"] == "2"
    assert record["total_seconds"] == pytest.approx(sum(record["notebooks"].values()))
    assert not (tmp_path / "run_times-ci.partial.json").exists()


def test_injected_folders_are_relative_to_the_notebooks_inside_the_repository(tmp_path: Path):
    notebooks = run_notebooks.NOTEBOOK_DIR
    root = run_notebooks.REPO_ROOT
    assert run_notebooks._portable(str(root / "figures" / "ci"), notebooks) == "../figures/ci"
    assert run_notebooks._portable(str(tmp_path), notebooks) == str(tmp_path.resolve())  # outside: as is
    assert run_notebooks._portable(None, notebooks) is None


def test_headless_runs_make_no_progress_bars(monkeypatch):
    from genqlib.infra.progress import HEADLESS_ENV, headless_run, tqdm

    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    with headless_run():
        assert tqdm(range(3)).disable
    assert HEADLESS_ENV not in run_notebooks.os.environ
    assert not tqdm(range(3), file=sys.stdout).disable


def test_run_records_name_the_commit_and_whether_the_checkout_had_changes(tmp_path: Path, monkeypatch):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    monkeypatch.setattr(run_notebooks, "REPO_ROOT", tmp_path)
    assert run_notebooks.source_commit() is None  # not a checkout
    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD").strip()
    assert run_notebooks.source_commit() == head[:12]
    (tmp_path / "a.txt").write_text("two\n")
    assert run_notebooks.source_commit() == f"{head[:12]}+changes"
