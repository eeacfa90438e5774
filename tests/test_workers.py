"""The worker grid's processes end with the run that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genqlib.paper.profiles import REPO_ROOT

SCRIPT = """
import os, sys, time
from pathlib import Path

from genqlib.infra.workers import run_all


def sleeper(folder):
    Path(folder, str(os.getpid())).write_text("")
    time.sleep(300)


if __name__ == "__main__":
    run_all(sleeper, [(sys.argv[1],), (sys.argv[1],)], jobs=2)
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="workers follow their parent through Linux's prctl")
def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.Popen([sys.executable, str(tmp_path / "script.py"), str(pids)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # do not leave them behind, whatever the verdict
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed run"
