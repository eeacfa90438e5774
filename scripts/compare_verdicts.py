"""Every paper claim of two figures trees side by side: python scripts/compare_verdicts.py BEFORE AFTER [--md F].

For each item of docs/RESULTS.md (``genqlib.paper.items.ITEMS``), each claim measured in either tree: the gap,
its seed spread and the verdict before and after, and whether the verdict moved. The claims are computed by the
same code that writes docs/RESULTS.md, from each tree's ``metrics.json`` and bench records, so two runs of
different engines or generators compare cell by cell. ``--md F`` also writes the table as Markdown to F.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genqlib.paper.common import load, markdown_table, signed
from genqlib.paper.items import ITEMS
from genqlib.paper.verdict import spread_cell, verdict


def claims_of(figures: Path) -> dict[tuple[str, str, str], tuple[str, str, str]]:
    """{(item, claim, where): (gap, spread, verdict)} of one figures tree."""
    runs = load(figures)
    found = {}
    for item in ITEMS:
        for c in item.claims(runs):
            found[(item.TITLE.split(":")[0], c.claim, c.where)] = (
                signed(c.gap),
                spread_cell(c.spread),
                verdict(c.gap, c.spread, c.margin),
            )
    return found


def compare(before: Path, after: Path) -> tuple[list[list[str]], int]:
    """Rows (item, claim, where, gap/spread/verdict before and after, moved) and how many verdicts moved."""
    old, new = claims_of(before), claims_of(after)
    missing = ("–", "–", "not in this tree")
    rows, moved = [], 0
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, missing), new.get(key, missing)
        changed = a[2] != b[2]
        moved += changed
        rows.append([*key, a[0], a[1], a[2], b[0], b[1], b[2], "**moved**" if changed else ""])
    return rows, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--md", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    rows, moved = compare(args.before, args.after)
    head = ["item", "claim", "where", "gap before", "spread before", "verdict before"]
    head += ["gap after", "spread after", "verdict after", ""]
    table = markdown_table(head, rows)
    print(table)
    print(f"\n{moved} of {len(rows)} verdicts moved")
    if args.md:
        args.md.write_text(f"{table}\n\n{moved} of {len(rows)} verdicts moved\n")


if __name__ == "__main__":
    main()
