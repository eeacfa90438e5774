"""Benchmarks that print numbers and write JSON under figures/bench/: ``python -m genqlib.bench NAME``."""

from __future__ import annotations

import json
from pathlib import Path


def write_record(out_path: str | Path, record: dict) -> dict:
    """Write a benchmark's JSON record to ``out_path`` (folders made as needed), print it, and return it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record
