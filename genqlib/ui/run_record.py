"""The small result records an explorer needs, committed beside a notebook's figures.

The 04 and 06 explorers draw results that the run cache under the work dir holds (``runs/<profile>/…``).
A fresh clone has no cache, so each notebook run also writes the rows its explorer shows (numbers only,
never weights) to ``<figures>/<notebook>/explorer_runs.json``; an explorer reads cache ∪ record, the cache
winning on the same key. A record is ``{"key": {...}, "rows"|"results": ...}``: its ``key`` says what the
rows were measured on (e.g. the eval set's digest), and a record made on other settings is not used (with a
warning, never silently).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

from genqlib.infra.atomic import atomic_path

RECORD_NAME = "explorer_runs.json"
FROM_RECORD = "from_record"  # the flag a row read from the committed record carries
DROPPED = ("from_cache", FROM_RECORD, "machine")  # how a value was obtained, not what it is; machine: size


def write_record(path: str | Path, key: Mapping, **payload: object) -> Path:
    """``{"key": key, **payload}`` as JSON at ``path`` (atomic), without the per-row flags and machine
    records; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": dict(key), **_strip(payload)}, indent=1) + "\n")
    return path


def read_record(path: str | Path, key: Mapping) -> dict | None:
    """The record at ``path`` when its key equals ``key``; None when there is none. An unreadable record, or
    one made on other settings, warns (naming the fields that differ) and gives None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        warnings.warn(f"{path}: unreadable result record, not used ({err})", stacklevel=2)
        return None
    want = json.loads(json.dumps(dict(key)))  # tuples as lists, as JSON stores them
    have = record.get("key", {})
    differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if differ:
        warnings.warn(
            f"{path}: a record of other settings ({', '.join(differ)} differ), not used", stacklevel=2
        )
        return None
    return record


def merge_rows(
    cached: Sequence[dict], committed: Sequence[dict], identity: Callable[[dict], Hashable]
) -> list[dict]:
    """``cached`` ∪ ``committed``: a committed row whose ``identity`` a cached row has is left out (the cache
    wins); the others are added with ``from_record`` True."""
    have = {identity(r) for r in cached}
    return [*cached, *({**r, FROM_RECORD: True} for r in committed if identity(r) not in have)]


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list | tuple):
        return [_strip(v) for v in value]
    return value
