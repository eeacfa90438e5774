"""Progress bars that suit where they run: ``tqdm.auto``'s bar (a widget in a notebook, text in a terminal),
and no bar at all in a headless notebook run (papermill), where a widget bar is saved at its first state
(``0%``) and reads as stalled in the executed copy.

A headless run says so with the environment variable ``GENQ_HEADLESS=1`` (``genqlib.paper.run_notebooks``
sets it for the kernels it starts); every genqlib bar is made by ``tqdm`` here, so that one switch turns
them all off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm as _auto_tqdm

HEADLESS_ENV = "GENQ_HEADLESS"


def headless() -> bool:
    """True in a headless notebook run (``GENQ_HEADLESS=1``): nobody watches the bars, and a saved one lies."""
    return os.environ.get(HEADLESS_ENV) == "1"


class tqdm(_auto_tqdm):  # noqa: N801 (a drop-in for tqdm's own class name)
    """``tqdm.auto.tqdm``, disabled in a headless run."""

    def __init__(self, *args, **kwargs) -> None:
        if headless():
            kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@contextmanager
def headless_run() -> Iterator[None]:
    """``GENQ_HEADLESS=1`` for what starts inside (a papermill kernel inherits it), restored after."""
    before = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HEADLESS_ENV, None)
        else:
            os.environ[HEADLESS_ENV] = before
