"""Execute the notebooks in order, headless, with papermill: ``python -m genqlib.paper.run_notebooks``.

Executed copies go to ``<figures>/<notebook>/<notebook>.ipynb`` beside the figures each notebook writes,
with ``run.json`` (profile, generator id, wall time, finish time), so a result can always be traced to the
generator that made it; a full run (no ``--only``) also writes the wall time of each notebook and of the
whole run to ``<figures>/run_times-<profile>.json``. A full run keeps that record up to date in
``run_times-<profile>.partial.json`` after each notebook, so ``--resume`` after an interruption (a stopped
session, a reboot) runs only the notebooks still missing and adds their times to the same record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from genqlib.infra.atomic import TMP_PREFIX
from genqlib.infra.machine import machine_record
from genqlib.infra.progress import headless_run
from genqlib.infra.workers import default_jobs
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.quant.model import ENGINE

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def list_notebooks() -> list[Path]:
    """The project's notebooks in run order (their names start with the step number)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, profile: str, figures_dir: Path, **parameters: object) -> Path:
    """Run one notebook with papermill; return the executed copy's path.

    The kernel runs headless (``GENQ_HEADLESS=1``: no progress bars, which would be saved at 0%), and the
    folders injected as parameters are written relative to the notebook's folder (the kernel's working
    directory) when they lie inside the repository, so the executed copy names no folder of this machine."""

    out = figures_dir / path.stem / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "figures_dir": str(figures_dir), **parameters}
    params = {k: _portable(v, path.parent) if k.endswith("_dir") else v for k, v in params.items()}
    start = time.perf_counter()
    with headless_run():
        _execute(path, out, params)
    record = {
        "notebook": path.name,
        "profile": profile,
        "generator": generator_label(get_profile(profile).generator),
        "engine": ENGINE,
        "commit": source_commit(),
        "seconds": round(time.perf_counter() - start, 1),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out.parent / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def source_commit() -> str | None:
    """The git commit of the checkout that ran (``+changes`` when tracked files differ from it), or None
    outside a git checkout: with ``engine`` in ``run.json``, it says which code made the figures."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD"], cwd=REPO_ROOT, capture_output=True
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+changes" if dirty else head


def _execute(path: Path, out: Path, params: dict) -> None:
    """Execute ``path`` into a temporary sibling of ``out``, then rename it over ``out``: a read-only executed
    copy (``genqlib.paper.executed_copies``) is replaced, not written through. A failed run replaces it too,
    as before, so its traceback is where the copy was."""
    import papermill

    tmp = out.with_name(f"{TMP_PREFIX}{os.getpid()}-{out.name}")
    try:
        papermill.execute_notebook(
            str(path),
            str(tmp),
            parameters=params,
            kernel_name="python3",
            cwd=str(path.parent),
            progress_bar=False,
            # every kernel start logs a WARNING that papermill's loopback TCP link is unencrypted; the kernel
            # app's errors still print
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    finally:
        if tmp.exists():
            os.replace(tmp, out)


def _portable(folder: object, cwd: Path) -> object:
    """``folder`` (absolute, or relative to this process's directory) relative to ``cwd`` when it lies in the
    repository (e.g. ``../figures``), else absolute."""
    if not isinstance(folder, str | Path):
        return folder
    inside = Path(folder).resolve().is_relative_to(REPO_ROOT.resolve())
    return os.path.relpath(Path(folder).resolve(), cwd.resolve()) if inside else str(Path(folder).resolve())


def generator_label(generator: str | Path) -> str:
    """The generator's id as manifests write it: ``folder@hash`` for a local folder, else the hub id."""
    from genqlib.generate import folder_id

    return folder_id(generator) if Path(generator).is_dir() else str(generator)


def _threads() -> str:
    return os.environ.get("OMP_NUM_THREADS") or "torch default"


def start_record(profile: str, cold: bool) -> dict:
    """The run-time record of a full run before its first notebook: where and how it runs."""
    return {
        "profile": profile,
        "notebooks": {},
        "total_seconds": 0.0,
        "cpu_count": os.cpu_count(),
        "threads": _threads(),
        "grid_workers": default_jobs(),  # PTQ/QAT grids: this many one-thread worker processes
        "cold_start": cold,  # True: nothing cached under the work dir, so every step was computed
        "resumed": 0,  # how many times the run was interrupted and resumed with --resume
        "machine": {**machine_record(), "arch": platform.machine()},
        "command": f"python -m genqlib.paper.run_notebooks --profile {profile}",
    }


def resume_record(partial: Path, profile: str) -> dict:
    """The record of an interrupted full run, checked to continue under the same conditions."""
    record = json.loads(partial.read_text())
    if record["profile"] != profile:
        raise SystemExit(
            f"{partial} is a {record['profile']} run; resume it with --profile {record['profile']}"
        )
    if record["threads"] != _threads():
        raise SystemExit(
            f"{partial} ran with threads {record['threads']} but OMP_NUM_THREADS now gives {_threads()}: "
            "resume under the same setting, so that every notebook's time is comparable"
        )
    return {**record, "resumed": record.get("resumed", 0) + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--figures-dir", type=Path, default=None)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="synthetic sets and caches (default: the profile's)"
    )
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 02")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted full run (skip the notebooks it finished)",
    )
    args = parser.parse_args()
    if args.resume and args.only:
        parser.error("--resume continues a full run; it cannot be combined with --only")
    profile = get_profile(args.profile)
    figures_dir = args.figures_dir or profile.figures_dir
    notebooks = [p for p in list_notebooks() if not args.only or p.name[:2] in args.only]
    if not notebooks:
        print(f"no notebooks in {NOTEBOOK_DIR}")
    partial = figures_dir / f"run_times-{profile.name}.partial.json"
    if args.resume and partial.exists():
        record = resume_record(partial, profile.name)
        print(f"resuming: {', '.join(record['notebooks']) or 'no notebook'} already done")
    else:
        work = args.work_dir or profile.work_dir
        cold = not work.exists() or not any(work.iterdir())
        record = start_record(profile.name, cold)
    for path in notebooks:
        if path.stem in record["notebooks"]:
            continue
        start = time.perf_counter()
        extra = {"work_dir": str(args.work_dir)} if args.work_dir else {}
        out = run_notebook(path, profile.name, figures_dir, **extra)
        record["notebooks"][path.stem] = round(time.perf_counter() - start, 1)
        record["total_seconds"] = round(sum(record["notebooks"].values()), 1)
        print(f"{path.name}: {record['notebooks'][path.stem]:.0f} s -> {out}")
        if not args.only:
            partial.write_text(json.dumps(record, indent=2) + "\n")
    if args.only:  # a partial run is not the end-to-end time; each notebook's run.json has its own
        print(f"total {record['total_seconds'] / 60:.1f} min (partial run, not recorded)")
        return
    times = figures_dir / f"run_times-{profile.name}.json"
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    times.write_text(json.dumps(record, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    print(f"total {record['total_seconds'] / 60:.1f} min -> {times}")


if __name__ == "__main__":
    main()
