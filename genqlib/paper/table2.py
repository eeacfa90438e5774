"""Table 2: data-free PTQ of the CNN teachers (notebook 04), GenQ against real data and other sources.

Notebook 04's grid lives here too (Table 4's ViT rows come from the same grid): ``calibration_sets`` makes every
teacher's calibration set of each source, ``grid_runs`` lists the runs (nearest rounding once, then every source
at every seed, per teacher and width of the profile's ``ptq`` setting), ``seed_cells`` averages them over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from torch import nn

from genqlib.paper.calibration import Calibration, bn_inversion_sets, calibration_set
from genqlib.paper.common import (
    METHODS,
    Claim,
    Metrics,
    bits,
    cell_claims,
    claims_table,
    group_top1,
    join,
    markdown_table,
    not_measured,
    pct,
    section,
    seeded,
    setting,
)
from genqlib.paper.profiles import Profile
from genqlib.paper.ptq_runs import PTQRun, profile_run, seed_mean
from genqlib.paper.settings import PTQGrid

TITLE = "Table 2: data-free PTQ of CNNs"
PAPER = (
    "with BRECQ or Genie-M, GenQ images land within about 1 point of 1,024 real images (sometimes above) and "
    "beat the other data-free sources; the margin is widest on light models at W2A4."
)
SOURCES = {
    "nearest": "nearest rounding, real data",
    "real": "real data",
    "noise": "Gaussian noise",
    "bn_inversion": "BN inversion",
    "genq_unfiltered": "GenQ, unfiltered",
    "genq": "**GenQ**",
}
CLAIMS = (
    ("GenQ ≥ real data − 1", "genq", "real", 1.0),
    ("GenQ > Gaussian noise", "genq", "noise", 0.0),
    ("GenQ > BN inversion", "genq", "bn_inversion", 0.0),
    ("GenQ > GenQ unfiltered", "genq", "genq_unfiltered", 0.0),
)
HEADLINE = "GenQ ≥ real data − 1"


def source(row: dict) -> str:
    """A row's pivot key: ``nearest`` for the no-reconstruction reference, else its calibration source."""
    return "nearest" if row["method"] == "nearest" else row["source"]


def cnn_rows(m: dict | None) -> list[dict]:
    """Notebook 04's rows of its BatchNorm teachers (``cnn_teachers``, else those calibrated by BN inversion;
    the ViT runs W4A4 only, Table 4)."""
    rows = (m or {}).get("rows") or []
    cnns = set((m or {}).get("cnn_teachers") or {r["teacher"] for r in rows if r["source"] == "bn_inversion"})
    return [r for r in rows if r["teacher"] in cnns]


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The (teacher, bits) columns, in the order the rows ran."""
    return list(dict.fromkeys((r["teacher"], bits(r)) for r in rows))


def claims(runs: Metrics) -> list[Claim]:
    """GenQ against each other calibration source, per teacher and bit width."""
    rows = cnn_rows(runs.get("04"))
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), source(r)))
    return cell_claims(groups, columns(rows), CLAIMS)


def pivot(m: dict, rows: list[dict]) -> str:
    """Rows = calibration source, columns = teacher × bits; cells top-1 (mean ± std over seeds where run)."""
    cols = columns(rows)
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), source(r)))
    body = [["full precision", *(pct(m.get("fp", {}).get(t)) for t, _ in cols)]]
    for key, label in SOURCES.items():
        cells = [groups.get((t, b, key)) for t, b in cols]
        if any(cells):
            name = label if key == "nearest" else f"{METHODS.get(m.get('method'), m.get('method'))}, {label}"
            body.append([name, *(seeded(c) for c in cells)])
    return markdown_table(["calibration", *(f"{t} {b}" for t, b in cols)], body)


def render(runs: Metrics) -> str:
    """Table 2 as markdown: the PTQ pivot and GenQ's claims with verdicts."""
    m = runs.get("04")
    rows = cnn_rows(m)
    if not rows:
        return not_measured(TITLE, "04")
    size = [
        f"{m['n_calib']:,} calibration images" if "n_calib" in m else "",
        f"{m['iters']:,} iterations per block" if "iters" in m else "",
        f"mean ± std over {len(m['seeds'])} reconstruction seeds" if len(m.get("seeds") or []) > 1 else "",
    ]
    return section(
        join(setting(m, METHODS.get(m.get("method"), ""), *size), "Top-1 (%):", pivot(m, rows)),
        claims_table(claims(runs)),
        PAPER,
        "04",
    )


# ---------------------------------------------------------------- notebook 04's grid and record


@dataclass
class PTQMetrics:
    """What notebook 04 writes to ``metrics.json`` and Tables 2 and 4 read back: the keys are these fields."""

    profile: str
    method: str
    n_calib: int
    iters: int
    seeds: list[int]
    cnn_teachers: list[str]  # the teachers with BatchNorm (Table 2); the rest are Table 4's ViTs
    batch_size: int
    lr_round: float
    first_last_bits: int | None
    convention: str
    n_eval: int
    bn_inversion_iters: int
    fp: dict[str, float]
    rows: list[dict]
    cells: list[dict]

    def record(self) -> dict:
        """The JSON object notebook 04 writes (``Notebook.write_metrics``)."""
        return asdict(self)


VIT_BITS = (4, 4)  # a model without BatchNorm (the ViT, Table 4) runs at W4A4 only
VIT_SOURCES = ("real", "genq")  # ... and compares GenQ with real data only


def sources_for(sources: Sequence[str], has_bn: bool) -> list[str]:
    """Every source of ``sources`` for a CNN; real and GenQ only for a model without BatchNorm."""
    return list(sources) if has_bn else [s for s in sources if s in VIT_SOURCES]


def calibration_sets(
    models: Mapping[str, nn.Module],
    has_bn: Mapping[str, bool],
    sources: Sequence[str],
    n_calib: int,
    profile: Profile,
    work_dir,
    bn_inversion_iters: int,
    jobs: int | None = None,
) -> dict[tuple[str, str], Calibration]:
    """Each teacher's calibration set of each of its sources, keyed (teacher, source). BN inversion, the slow
    source, is made for every teacher at once in one-thread workers first; the rest come from the cache."""
    inverted = {name: m for name, m in models.items() if "bn_inversion" in sources_for(sources, has_bn[name])}
    bn_inversion_sets(inverted, n_calib, profile, work_dir, iters=bn_inversion_iters, jobs=jobs)
    calib = {}
    for name, model in models.items():
        for source in sources_for(sources, has_bn[name]):
            options = {"iters": bn_inversion_iters} if source == "bn_inversion" else {}
            calib[name, source] = calibration_set(model, source, n_calib, profile, name, work_dir, **options)
    return calib


def grid_runs(
    profile: Profile,
    grid: PTQGrid,
    teachers: Sequence[str],
    has_bn: Mapping[str, bool],
    sources: Sequence[str],
    method: str,
    first_last_bits: int | None,
) -> list[PTQRun]:
    """Notebook 04's runs of a resolved ``grid`` (``PTQGrid.resolved``): per teacher and width, nearest rounding
    on real data once (no iterations, so nothing for a seed to change), then each source at each seed."""

    def run(teacher: str, bits: tuple[int, int], how: str, source: str, seed: int | None = None) -> PTQRun:
        return profile_run(
            profile, teacher, bits, source, grid.n_calib, how, first_last_bits, grid.iters, seed
        )

    runs = []
    for name in teachers:
        for wa in grid.widths(name) if has_bn[name] else [VIT_BITS]:
            runs.append(run(name, wa, "nearest", "real"))
            runs += [
                run(name, wa, method, s, seed)
                for s in sources_for(sources, has_bn[name])
                for seed in grid.seeds
            ]
    return runs


def seed_cells(rows: Sequence[dict]) -> list[dict]:
    """One cell per (teacher, bits, method, source): the mean and std over its seeds, in the rows' order."""

    def cell(r: dict) -> tuple:
        return (r["teacher"], r["w_bits"], r["a_bits"], r["method"], r["source"])

    return [seed_mean([r for r in rows if cell(r) == key]) for key in dict.fromkeys(map(cell, rows))]
