"""Table 3: data-free QAT (notebook 05), GenQ's QAT from the PTQ model against LSQ on as many real images.

Notebook 05's grid lives here too: ``training_sets`` gives each teacher its filtered GenQ set and as many real
images, ``grid_units`` the three runs (PTQ start, GenQ's QAT, LSQ) of each teacher, width and seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from genqlib.datasets import real_split
from genqlib.paper.common import (
    MISSING,
    Claim,
    Metrics,
    bits,
    cell_claims,
    claims_table,
    group_top1,
    join,
    markdown_table,
    mean,
    not_measured,
    pct,
    section,
    seeded,
    setting,
    signed,
)
from genqlib.paper.profiles import Profile
from genqlib.paper.qat_runs import QATUnit, genq_training_set, profile_qat_run

TITLE = "Table 3: data-free QAT"
PAPER = (
    "QAT on 0.4M filtered synthetic images gets within about 1 point of LSQ on all 1.2M real images at W4A4 "
    "(above it on MobileNetV2) and leads the other data-free QAT methods, most of all at W3A3."
)
MODES = {"ptq_start": "PTQ start (BRECQ)", "genq": "**GenQ QAT** (offset u)", "lsq": "LSQ"}
DATA = {"genq": "GenQ", "real": "real data"}
CLAIMS = (
    ("GenQ QAT ≥ LSQ − 1", "genq", "lsq", 1.0),
    ("GenQ QAT > its PTQ start", "genq", "ptq_start", 0.0),
)
HEADLINE = "GenQ QAT ≥ LSQ − 1"


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The (teacher, bits) columns, in the order the rows ran."""
    return list(dict.fromkeys((r["teacher"], bits(r)) for r in rows))


def claims(runs: Metrics) -> list[Claim]:
    """GenQ's QAT against LSQ and against the PTQ model it starts from, per teacher and bit width."""
    rows = (runs.get("05") or {}).get("rows") or []
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), r["mode"]))
    return cell_claims(groups, columns(rows), CLAIMS)


def pivot(m: dict) -> str:
    """Rows = QAT mode and its training data, columns = teacher × bits; cells top-1 (mean ± std over seeds)."""
    rows = m["rows"]
    cols = columns(rows)
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), r["mode"]))
    data = {r["mode"]: DATA.get(r["source"], r["source"]) for r in rows}
    body = [["full precision", "", *(pct(m.get("fp", {}).get(t)) for t, _ in cols)]]
    body += [
        [label, data[mode], *(seeded(groups.get((t, b, mode))) for t, b in cols)]
        for mode, label in MODES.items()
        if mode in data
    ]
    body.append(["room: FP − PTQ start", "", *(signed(room(m, groups, t, b)) for t, b in cols)])
    return markdown_table(["mode", "training data", *(f"{t} {b}" for t, b in cols)], body)


ROOM = 3.0  # points of top-1 the PTQ start must lose to FP for QAT to have something to fix


def room(m: dict, groups: dict, teacher: str, width: str) -> float | None:
    """FP top-1 minus the PTQ start's mean: what QAT can win back in this column."""
    fp, start = m.get("fp", {}).get(teacher), mean(groups.get((teacher, width, "ptq_start")))
    return None if fp is None or start is None else fp - start


def cost(rows: list[dict]) -> str:
    """Training images, epochs, wall time and throughput of every QAT run (the paper's cost argument)."""

    def number(value: float | None, fmt: str) -> str:
        return MISSING if value is None else format(value, fmt)

    body = [
        [
            r["teacher"],
            bits(r),
            MODES.get(r["mode"], r["mode"]).replace("*", ""),
            number(r.get("n_images"), ","),
            number(r.get("epochs"), "d"),
            number(r.get("seconds"), ".0f"),
            number(r.get("images_per_s"), ".0f"),
        ]
        for r in rows
    ]
    return markdown_table(["teacher", "bits", "mode", "images", "epochs", "seconds", "images/s"], body)


RECIPE = ("lr", "momentum", "weight_decay", "schedule", "batchnorm")


def recipes(rows: list[dict]) -> str:
    """The optimiser settings each QAT mode trained with, one row per mode and width (``Recipe``: GenQ's
    section 5.3 for GenQ's QAT, LSQ's paper for LSQ); records made before recipes show a dash."""

    def cell(value: object) -> str:
        return MISSING if value is None else format(value, "g") if isinstance(value, float) else str(value)

    seen = {(r["mode"], bits(r)): r for r in rows if r["mode"] != "ptq_start"}
    body = [
        [MODES.get(mode, mode).replace("*", ""), b, *(cell(r.get(k)) for k in RECIPE)]
        for (mode, b), r in seen.items()
    ]
    header = ["mode", "bits", "lr", "momentum", "weight decay", "schedule", "BatchNorm"]
    return markdown_table(header, body)


def render(runs: Metrics) -> str:
    """Table 3 as markdown: the QAT pivot, the claims with verdicts, each run's cost and each mode's recipe."""
    m = runs.get("05")
    if not (m or {}).get("rows"):
        return not_measured(TITLE, "05")
    extra = ", ".join(f"{k} {m[k]}" for k in ("epochs", "loss") if k in m)
    rule = (
        f"A column leaves QAT room when its PTQ start is at least {ROOM:g} points below FP (last row); "
        "where it is not, the QAT claims below have little to resolve."
    )
    body = join(setting(m, extra), "Top-1 (%):", pivot(m), rule, "Cost of each run:", cost(m["rows"]))
    return section(
        join(body, "Training recipe of each mode:", recipes(m["rows"])),
        claims_table(claims(runs)),
        PAPER,
        "05",
    )


# ---------------------------------------------------------------- notebook 05's grid and record


@dataclass
class QATMetrics:
    """What notebook 05 writes to ``metrics.json`` and Table 3 reads back: the keys are these fields."""

    profile: str
    epochs: int
    lr: float | None  # the notebook's override; None: each mode's recipe (rows give what each trained with)
    batch_size: int
    loss: str
    temperature: float
    recon_iters: int
    first_last_bits: int | None
    seeds: list[int]
    convention: str
    n_eval: int
    fp: dict[str, float]
    training_sets: dict[str, dict]
    rows: list[dict]

    def record(self) -> dict:
        """The JSON object notebook 05 writes (``Notebook.write_metrics``)."""
        return asdict(self)


Pair = tuple[torch.Tensor, torch.Tensor]  # (images, targets or labels)


def training_sets(
    models: Mapping[str, nn.Module], profile: Profile, work_dir, n_images: int | None = None
) -> tuple[dict[str, Pair], dict[str, Pair], dict[str, dict]]:
    """(synthetic, real, info) per teacher: GenQ's filtered set (``n_images`` of it, or all that the filter
    keeps) and as many class-balanced real training images, the data LSQ gets."""
    synthetic, real, info = {}, {}, {}
    for name, model in models.items():
        images, targets, info[name] = genq_training_set(model, name, profile, work_dir, n_images)
        synthetic[name] = (images, targets)
        shots = real_split(profile, "train", n=len(images), seed=profile.seed)
        real[name] = (shots.images, shots.labels)
    return synthetic, real, info


def grid_units(
    profile: Profile,
    models: Mapping[str, nn.Module],
    synthetic: Mapping[str, Pair],
    real: Mapping[str, Pair],
    bits: Sequence[tuple[int, int]],
    seeds: Sequence[int],
    first_last_bits: int | None,
    **settings: object,
) -> list[QATUnit]:
    """One unit per (teacher, width, seed): the PTQ start on GenQ images, GenQ's QAT from it, LSQ on real images
    (``settings``: epochs, lr, batch_size, loss, temperature)."""
    units = []
    for name, (w, a), seed in itertools.product(models, bits, seeds):
        n = len(synthetic[name][0])
        start, genq, lsq = (
            profile_qat_run(profile, name, (w, a), mode, source, n, first_last_bits, seed=seed, **settings)
            for mode, source in (("ptq_start", "genq"), ("genq", "genq"), ("lsq", "real"))
        )
        units.append(QATUnit(models[name], synthetic[name], real[name], start, genq, lsq))
    return units
