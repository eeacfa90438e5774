"""Which generator made each notebook's committed numbers (from its ``run.json``), flagged when not the
committed one, so a table left over from an older generator says so."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.tables.common import FIGURES, MISSING, NOTEBOOKS, markdown_table


def table(current: str, figures: Path = FIGURES) -> str:
    """Rows = notebook; the generator its run recorded and whether it is ``current`` (the committed one)."""
    body = []
    for number, folder in NOTEBOOKS.items():
        path = figures / folder / "run.json"
        made_by = json.loads(path.read_text()).get("generator") if path.exists() else None
        if made_by is None:
            body.append([number, MISSING, "not recorded"])
        else:
            body.append([number, f"`{made_by}`", "yes" if made_by == current else "**no: re-run it**"])
    return markdown_table(["notebook", "generator", "the committed one"], body)
