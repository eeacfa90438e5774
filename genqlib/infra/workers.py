"""Grids of cached runs computed in worker processes of one torch thread each, one worker per CPU.

Each worker sets ``torch.set_num_threads(1)``, so a run's numbers do not depend on the machine's core count or
on how many workers there are: they repeat bit for bit the same run made alone at one thread
(``OMP_NUM_THREADS=1``), which is how the committed results were made, and a cold run on the same kind of CPU
(``machine.cpu_kind``) reproduces them. The
grid still uses every core. On the 2-core machine of the committed results this is about as fast as one run at
a time on both cores, because torch's own threads already scale well there (``python -m genqlib.bench
workers`` times both ways): it is the way to get one-thread rows without leaving cores idle. Workers write
their results to the cache; the caller reads them back from there.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import platform
import signal
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from genqlib.infra.machine import keep_freed_memory
from genqlib.infra.progress import tqdm


def default_jobs() -> int:
    """Worker processes for a grid: ``$GENQ_JOBS``, else the CPUs this process may use."""
    jobs = os.environ.get("GENQ_JOBS")
    if jobs:
        return max(1, int(jobs))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_IN_WORKER = False


def in_worker() -> bool:
    """Whether this process is one of ``run_all``'s workers: their own progress bars would interleave on the
    terminal under ``run_all``'s bar, so long steps inside them run quiet."""
    return _IN_WORKER


def _one_thread() -> None:
    global _IN_WORKER
    _IN_WORKER = True
    torch.set_num_threads(1)
    keep_freed_memory()  # the grid's runs are where tensors churn; import genqlib no longer does this
    _die_with_parent()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> bool:
    """Ask Linux to end this worker when the process that started it dies. A pool's workers otherwise outlive a
    killed notebook kernel or ``kill``-ed run and keep a core busy until their current run is done (minutes).
    Returns whether the request took (False off Linux or without glibc)."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    except (OSError, AttributeError):
        return False


def unpicklable(calls: Sequence[tuple]) -> str | None:
    """None when every argument of ``calls`` pickles (so it can go to a worker process), else why not."""
    for arg in {id(a): a for call in calls for a in call}.values():
        try:
            pickle.dumps(arg)
        except Exception as err:  # noqa: BLE001 - any reason an argument cannot travel
            return f"{type(arg).__name__} does not pickle ({err})"
    return None


def run_all(
    fn: Callable[..., object], calls: Sequence[tuple], jobs: int | None = None, desc: str = "runs"
) -> None:
    """``fn(*call)`` for every call, with a progress bar.

    With ``jobs`` > 1 (default ``default_jobs()``) and more than one call, the calls run in that many spawned
    worker processes of one thread each ("workers"); ``fn`` must be importable and the arguments picklable. With
    ``jobs=1``, one call, or an argument that does not pickle (said in a warning), they run here, one after
    the other, at this process's thread count ("here"). A call that raises stops the grid with its error.
    Workers are spawned, so a script (not a notebook) that calls this needs ``if __name__ == "__main__":``.
    """
    jobs = default_jobs() if jobs is None else jobs
    if not calls:
        return
    why_not = unpicklable(calls) if jobs > 1 and len(calls) > 1 else None
    if why_not:
        warnings.warn(f"{desc}: {len(calls)} run(s) computed in this process: {why_not}", stacklevel=2)
    if jobs == 1 or len(calls) == 1 or why_not:
        for call in tqdm(calls, desc=desc):
            fn(*call)
        return
    workers = min(jobs, len(calls))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = [pool.submit(fn, *call) for call in calls]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} ({workers} workers)"):
            future.result()
