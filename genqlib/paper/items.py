"""The paper's tables and figures in miniature: metrics JSON -> markdown tables with spreads and verdicts.

One module per paper item; each has ``TITLE``, ``PAPER`` (the paper's finding), ``claims(runs)`` (the paper's
directional claims measured, ``common.Claim``) and ``render(runs)`` (markdown). The verdict rule is
defined once, in ``genqlib.paper.verdict``.
"""

from genqlib.paper import fig4, fig5, fig6, table1, table2, table3, table4, table5

ITEMS = (table2, table4, table3, fig4, fig5, fig6, table5, table1)  # the order docs/RESULTS.md shows them in
