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


def _fake_papermill(monkeypatch, text: str) -> list[str]:
    """papermill.execute_notebook replaced by one that writes ``text`` where it is told to, as papermill does
    (it opens its output path for writing); returns the paths it was given."""
    import papermill

    given: list[str] = []

    def execute_notebook(input_path, output_path, **kwargs):
        given.append(output_path)
        Path(output_path).write_text(text)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return given


def test_a_run_replaces_a_read_only_executed_copy(tmp_path: Path, monkeypatch):
    """The copy is 0o444 (lab.sh makes it so): the run writes a new file and renames it over the old one, so
    the old file is never opened for writing (a new inode; root could write through the mode, a user not)."""
    out = tmp_path / "01_step" / "01_step.ipynb"
    out.parent.mkdir()
    out.write_text("old")
    out.chmod(0o444)
    inode = out.stat().st_ino
    given = _fake_papermill(monkeypatch, "new")
    run_notebooks._execute(Path("01_step.ipynb"), out, {})
    assert out.read_text() == "new" and out.stat().st_ino != inode
    assert given != [str(out)] and sorted(p.name for p in out.parent.iterdir()) == ["01_step.ipynb"]


def test_make_read_only_removes_every_executed_copys_write_bits(tmp_path: Path):
    """What lab.sh runs before JupyterLab opens: every executed copy (mini and ci) loses its write bits, the
    rest is left alone, and a second call changes nothing."""
    from genqlib.paper.executed_copies import make_read_only

    copies = [tmp_path / "01_a" / "01_a.ipynb", tmp_path / "ci" / "04_b" / "04_b.ipynb"]
    other = [tmp_path / "01_a" / "metrics.json", tmp_path / "01_a" / ".ipynb_checkpoints" / "x.ipynb"]
    for path in copies + other:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        path.chmod(0o664)
    for _ in range(2):
        assert make_read_only(tmp_path) == sorted(copies)
        assert [oct(p.stat().st_mode & 0o777) for p in copies] == ["0o444", "0o444"]
        assert [oct(p.stat().st_mode & 0o777) for p in other] == ["0o664", "0o664"]


def test_lab_sh_makes_the_executed_copies_read_only_before_jupyterlab_starts():
    """The step is in scripts/lab.sh, on the repository's figures, before the line that starts the lab."""
    lab = (run_notebooks.REPO_ROOT / "scripts" / "lab.sh").read_text()
    step = lab.index('-m genqlib.paper.executed_copies "$root/figures"')
    assert step < lab.index("exec ") and step > lab.index('running="')


def test_the_labs_contents_manager_keeps_a_file_without_write_bits_read_only(tmp_path: Path):
    """Root's os.access says every file is writable; the lab's manager reads the mode bits: the copy is
    reported read-only to JupyterLab and a save over it is refused, while an ordinary notebook saves."""
    import asyncio

    nbformat = pytest.importorskip("nbformat")
    from tornado import web

    sys.path.insert(0, str(run_notebooks.REPO_ROOT / "scripts"))  # as scripts/lab.sh puts it on the path
    try:
        from lab_contents import ModeBitsFileManager
    finally:
        sys.path.pop(0)

    manager = ModeBitsFileManager(root_dir=str(tmp_path))
    model = {"type": "notebook", "format": "json", "content": nbformat.v4.new_notebook()}
    for name in ("copy.ipynb", "mine.ipynb"):
        asyncio.run(manager.save(model, name))
    (tmp_path / "copy.ipynb").chmod(0o444)
    assert manager.is_writable("copy.ipynb") is False and manager.is_writable("mine.ipynb") is True
    got = asyncio.run(manager.get("copy.ipynb", content=False))
    assert got["writable"] is False
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(manager.save(model, "copy.ipynb"))
    assert refused.value.status_code == 403
    asyncio.run(manager.save(model, "mine.ipynb"))
