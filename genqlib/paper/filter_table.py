"""Notebook 02's filter results per teacher (before and after), and the filter benchmark's speed-ups."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.paper.assets import not_measured
from genqlib.paper.common import FIGURES, join, markdown_table

STAGES = {"bn": "BN sensitivity", "patch": "patch entropy"}


def speedups(figures: Path = FIGURES) -> str:
    """Closed-form BN sensitivity against the naive B+1 forward passes, per teacher (``bench filters``)."""
    path = figures / "bench" / "filters.json"
    if not path.exists():
        return ""
    bench = json.loads(path.read_text())
    batch = bench.get("batch_size", 64)
    rows = [[f"`{k}`", f"{v}x"] for k, v in bench["bn_sensitivity_speedup"].items()]
    return markdown_table([f"closed-form BN sensitivity vs naive, B={batch}", "faster by"], rows)


def table(figures: Path = FIGURES) -> str:
    """Rows = teacher: its second stage, images kept, BN distance and class fidelity before → after."""
    path = figures / "02_filter" / "metrics.json"
    if not path.exists():
        return not_measured("filters (notebook 02)", "python -m genqlib.paper.run_notebooks --only 02")
    m = json.loads(path.read_text())
    body = []
    for teacher in ("resnet", "mobilenet", "vit"):
        if teacher in m:
            b, a = m[teacher]["before"], m[teacher]["after"]
            bn = f"{b['bn_distance']:.2f} → {a['bn_distance']:.2f}" if "bn_distance" in b else "no BatchNorm"
            fidelity = f"{100 * b['class_fidelity']:.1f}% → {100 * a['class_fidelity']:.1f}%"
            body.append(
                [f"`{teacher}`", STAGES[m[teacher]["second_stage"]], f"{a['n']} of {b['n']}", bn, fidelity]
            )
    setting = (
        f"Setting: energy drop {m['energy_drop']} · second-stage drop {m['second_drop']} (per class) · "
        f"T = {m['T']} · {m['n_synthetic']} label-prompt images"
    )
    header = [
        "teacher",
        "second stage",
        "images kept",
        "BN distance before → after",
        "class fidelity before → after",
    ]
    return join(setting, markdown_table(header, body), speedups(figures))
