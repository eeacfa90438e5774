"""Plain-text tables for consoles and notebook outputs, shared by the library, the paper layer and the UI."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[dict], columns: Sequence[str], floats: str = "{:.2f}") -> str:
    """A plain-text table of ``rows`` (dicts) with the given columns; floats formatted with ``floats``."""

    def cell(value: object) -> str:
        return floats.format(value) if isinstance(value, float) else str(value)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)
