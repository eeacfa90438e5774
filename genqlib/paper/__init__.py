"""The paper in miniature, built on the genqlib library: profiles and their typed per-stage settings, the run
grids, one module per paper item (``table1`` ... ``table5``, ``fig4`` ... ``fig6``, ``pilot``) with its table,
claims and plot, and the tools that run the notebooks and regenerate docs/RESULTS.md.

The library below never imports this package; the notebooks' UI (``genqlib.ui``) reads it.
"""
