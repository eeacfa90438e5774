"""Where the repository is: the root that ``figures/``, ``runs/``, ``notebooks/`` and ``docs/`` hang from."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
