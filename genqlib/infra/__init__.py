"""Infrastructure beneath the library and the paper: the content-addressed result cache (``result_cache``),
worker processes for run grids (``workers``), the machine record (``machine``) and atomic writes (``atomic``).

Nothing here knows about GenQ, a profile or a paper item; every other layer may use it.
"""
