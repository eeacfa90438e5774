"""The README's headline table: each paper item's main claim, its measured gap, spread and verdict."""

from __future__ import annotations

from genqlib.paper.common import Metrics, markdown_table, signed
from genqlib.paper.items import ITEMS
from genqlib.paper.verdict import spread_cell, verdict


def table(runs: Metrics) -> str:
    """One row per measured setting of each item's ``HEADLINE`` claim (the full claims: docs/RESULTS.md)."""
    body = [
        [
            item.TITLE.split(":")[0],
            c.claim,
            c.where,
            signed(c.gap),
            spread_cell(c.spread),
            verdict(c.gap, c.spread, c.margin),
        ]
        for item in ITEMS
        for c in item.claims(runs)
        if c.claim == item.HEADLINE
    ]
    return markdown_table(["paper item", "claim", "where", "gap", "seed spread", "verdict"], body)
