"""The executed copies of the notebooks (``figures/<nb>/<nb>.ipynb``, ``figures/ci/<nb>/<nb>.ipynb``) are
results, not work files: ``python -m genqlib.paper.executed_copies`` removes their write bits so that
JupyterLab opens them read-only and a save cannot overwrite a committed run. ``scripts/lab.sh`` runs it each
time it opens the lab, since git does not keep the write bit. ``genqlib.paper.run_notebooks`` still replaces
a read-only copy (it writes a new file and renames it over the old one).
"""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

from genqlib.paper.profiles import REPO_ROOT

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def executed_copies(figures: str | Path) -> list[Path]:
    """Every executed copy under ``figures``: a notebook named after the folder it lies in (checkpoints of
    ``.ipynb_checkpoints`` folders excluded)."""
    return sorted(p for p in Path(figures).rglob("*.ipynb") if p.stem == p.parent.name)


def make_read_only(figures: str | Path) -> list[Path]:
    """Remove the write bits of every executed copy under ``figures`` (idempotent); returns the copies."""
    copies = executed_copies(figures)
    for path in copies:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & WRITE_BITS:
            path.chmod(mode & ~WRITE_BITS)
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("figures", type=Path, nargs="?", default=REPO_ROOT / "figures")
    copies = make_read_only(parser.parse_args().figures)
    print(f"executed copies read-only: {len(copies)}")


if __name__ == "__main__":
    main()
