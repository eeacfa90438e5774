"""Where the repository is: the root that ``figures/``, ``runs/``, ``notebooks/`` and ``docs/`` hang from."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def relative_to_repo(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (records are committed and cloned elsewhere), else
    as given, resolved."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
