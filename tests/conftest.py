"""Shared fixtures: a fresh data cache per test that touches loader state; one work folder for every notebook
run of the session (papermill's and the browser's), so later runs reuse the synthetic sets and PTQ runs that
earlier ones cached, as a user's do. Browser tests run last, after the notebooks have filled that folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import genqlib.fashion_mnist as data_module


@pytest.fixture
def fresh_data_cache(monkeypatch):
    """Empty the in-process IDX cache so a test sees its own files; restored afterwards."""
    monkeypatch.setattr(data_module, "_CACHE", {})
    return data_module


@pytest.fixture(scope="session")
def shared_work_dir(tmp_path_factory):
    """A fresh folder, or ``$GENQ_TEST_WORK_DIR`` to reuse an earlier session's (e.g. to rerun one browser
    test against the caches a full run left)."""
    if os.environ.get("GENQ_TEST_WORK_DIR"):
        return Path(os.environ["GENQ_TEST_WORK_DIR"])
    return tmp_path_factory.mktemp("work")


def pytest_collection_modifyitems(config, items):
    """Browser tests last: they open notebooks whose expensive steps the papermill runs have cached."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
