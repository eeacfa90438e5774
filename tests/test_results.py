"""The results tables: numbers in the right cells, spreads over seeds, and verdicts computed from the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import genqlib.report as report
from genqlib.tables import fig4, fig5, fig6, headline, provenance, run_times, table1, table2, table3, table5
from genqlib.tables.common import NOTEBOOKS, REPLICATE, load
from genqlib.tables.verdict import (
    AGAINST,
    NO_SPREAD,
    NOT_MEASURED,
    RESOLVED,
    WITHIN,
    Spread,
    spread_of,
    verdict,
)


def cells(table: str, *first: str) -> list[str]:
    """The cells of the markdown row whose first cells are ``first``."""
    for line in table.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if parts[: len(first)] == list(first):
            return parts
    raise AssertionError(f"no row {first!r} in\n{table}")


def ptq_row(teacher: str, w: int, source: str, top1: float, seed: int = 0, method: str = "brecq") -> dict:
    """One notebook-04 result row."""
    return {
        "teacher": teacher,
        "w_bits": w,
        "a_bits": 4,
        "method": method,
        "source": source,
        "seed": seed,
        "top1": top1,
    }


PTQ = {
    "profile": "mini",
    "method": "brecq",
    "n_eval": 10000,
    "fp": {"resnet": 92.93},
    "cnn_teachers": ["resnet"],
    "rows": [
        ptq_row("resnet", 4, "real", 91.0, method="nearest"),
        *(ptq_row("resnet", 2, "real", 88.0 + d, seed=s) for s, d in enumerate((0.0, 0.1, -0.1))),
        *(ptq_row("resnet", 2, "genq", 87.5 + d, seed=s) for s, d in enumerate((0.0, 0.1, -0.1))),
        ptq_row("resnet", 2, "noise", 40.0),
        ptq_row("resnet", 4, "real", 92.5),
        ptq_row("resnet", 4, "genq", 92.25),
    ],
}


def seed_spread(teacher: str, genq: tuple[float, ...]) -> dict:
    """A notebook-06 ``seed_spread`` record: the same images reconstructed with one seed per value."""
    rows = [{"source": "genq", "seed": s, "n": 1024, "top1": t} for s, t in enumerate(genq)]
    return {"teacher": teacher, "w_bits": 2, "a_bits": 4, "rows": rows}


ABLATIONS = {
    "profile": "mini",
    "method": "genie_m",
    "seed_spread": seed_spread("resnet", (86.0, 86.1, 85.9)),  # std 0.1, range 0.2: threshold 0.3
    "n_synthetic": {
        "teacher": "resnet",
        "w_bits": 2,
        "a_bits": 4,
        "rows": [{"n": 4096, "top1": 88.0}, {"n": 256, "top1": 86.0}],
        "real": {"n": 1024, "top1": 87.9},
    },
    "filter_strength": {
        "teacher": "resnet",
        "w_bits": 2,
        "a_bits": 4,
        "n": 512,
        "rows": [
            {"stage": "energy", "drop": 0.1, "n_generated": 580, "top1": 87.0},
            {"stage": "energy", "drop": 0.9, "n_generated": 5160, "top1": 85.0},
            {"stage": "bn", "drop": 0.5, "n_generated": 1040, "top1": 86.0},
        ],
    },
    "cross_model": {
        "rows": [
            {"filter_teacher": f, "quant_teacher": q, "w_bits": 2, "a_bits": 4, "top1": t}
            for f, q, t in (
                ("resnet", "resnet", 86.0),
                ("vit", "resnet", 85.4),
                ("vit", "vit", 80.0),
                ("resnet", "vit", 79.0),
            )
        ]
    },
    "data_scarce": {
        "teacher": "resnet",
        "w_bits": 2,
        "a_bits": 4,
        "rows": [
            {"source": "real_shots", "k": 1, "n": 10, "top1": 70.0},
            {"source": "genq_data_scarce", "k": 1, "n": 1024, "top1": 86.5},
            {"source": "genq_data_free", "k": 0, "n": 1024, "top1": 86.4},
        ],
    },
    "generation_cost": {
        "threads": 1,
        "rows": [
            {
                "source": "genq",
                "seconds_per_1000": 200.0,
                "bn_distance": 9.0,
                "bn_distance_std": 0.5,
                "n": 1024,
            },
            {"source": "bn_inversion", "seconds_per_1000": 450.0, "bn_distance": 5.0, "n": 1024},
        ],
    },
}


def test_the_verdict_rule_from_numbers() -> None:
    spread = Spread(mean=90.0, std=0.1, range=0.2, n_seeds=3)  # threshold max(3 x 0.1, 0.2) = 0.3
    assert verdict(1.0, spread) == RESOLVED  # a gap 10x the std
    assert verdict(0.25, spread) == WITHIN  # inside the range of three seeds
    assert verdict(-0.31, spread) == AGAINST  # the other way, beyond the threshold
    assert verdict(-0.8, spread, margin=1.0) == WITHIN  # "A >= B - 1" judged on gap + 1 = 0.2
    assert verdict(-0.5, spread, margin=1.0) == RESOLVED
    wide = Spread(mean=90.0, std=0.01, range=0.5, n_seeds=3)
    assert verdict(0.4, wide) == WITHIN  # the range rules when it exceeds three stds
    assert verdict(5.0, None) == NO_SPREAD and verdict(None, spread) == NOT_MEASURED


def test_spread_over_seeds() -> None:
    s = spread_of([86.0, 86.1, 85.9])
    assert (s.mean, s.std, s.range, s.n_seeds) == (
        pytest.approx(86.0),
        pytest.approx(0.1),
        pytest.approx(0.2),
        3,
    )
    assert spread_of([86.0]) is None


def test_table2_shows_mean_and_std_over_seeds_and_judges_each_claim() -> None:
    runs = {"04": PTQ}
    text = table2.render(runs, {})
    pivot_real = cells(text, "BRECQ, real data")
    assert pivot_real[1:] == ["92.50", "88.00 ± 0.10"]  # columns resnet W4A4, resnet W2A4
    assert cells(text, "nearest rounding, real data")[1:] == ["91.00", "–"]  # not run at W2A4: a dash
    assert cells(text, "GenQ ≥ real data − 1", "resnet W2A4")[2:] == [
        "-0.50",
        "–",
        "± 0.10 (range 0.20, 3 seeds)",
        RESOLVED,
    ]
    assert (
        cells(text, "GenQ > Gaussian noise", "resnet W2A4")[-1] == RESOLVED
    )  # noise ran once; genq has seeds
    assert cells(text, "GenQ ≥ real data − 1", "resnet W4A4")[-1] == NO_SPREAD  # one seed each: not judged
    assert cells(text, "GenQ > BN inversion", "resnet W2A4")[2:] == [
        "–",
        "–",
        "± 0.10 (range 0.20, 3 seeds)",
        NOT_MEASURED,
    ]


def test_a_claim_against_the_paper_reads_against() -> None:
    rows = [
        ptq_row("resnet", 2, s, t + d, seed=i)
        for s, t in (("genq", 86.0), ("noise", 88.0))
        for i, d in enumerate((0, 0.1, -0.1))
    ]
    claim = next(
        c
        for c in table2.claims({"04": {"rows": rows, "cnn_teachers": ["resnet"]}})
        if c.claim == "GenQ > Gaussian noise"
    )
    assert claim.gap == pytest.approx(-2.0) and verdict(claim.gap, claim.spread) == AGAINST


def test_missing_metrics_are_a_not_measured_row_naming_the_command() -> None:
    for item, nb in ((table2, "04"), (table3, "05"), (table5, "06"), (fig5, "06"), (table1, "06")):
        text = item.render({}, {})
        assert (
            cells(text, item.TITLE)[1]
            == f"– not measured: run `python -m genqlib.run_notebooks --profile mini --only {nb}`"
        )
    assert "not measured" in fig4.render({"06": ABLATIONS}, {})  # notebook 03 missing, 06 shown
    assert "| 1 | 70.00 (n=10) |" in fig4.render({"06": ABLATIONS}, {})


def test_the_replicate_run_fills_its_own_gap_column() -> None:
    replicate = json.loads(json.dumps(ABLATIONS))
    replicate["n_synthetic"]["rows"][0]["top1"] = 86.1  # most images: +0.10 over the fewest there
    text = fig5.render({"06": ABLATIONS}, {"06": replicate})
    assert cells(text, "most GenQ images > fewest", "resnet W2A4")[2:] == [
        "+2.00",
        "+0.10",
        "± 0.10 (range 0.20, 3 seeds)",
        RESOLVED,
    ]
    assert cells(text, "4,096 GenQ > 1,024 real", "resnet W2A4")[2:4] == ["+0.10", "-1.80"]
    assert cells(text, "4,096 GenQ > 1,024 real", "resnet W2A4")[-1] == WITHIN
    assert cells(text, "resnet W2A4", "genq")[2:] == ["3", "86.00 ± 0.10", "0.20"]  # the seed-spread table


def test_fig6_energy_and_bn_sensitivity_claims() -> None:
    found = {(c.claim, c.where): verdict(c.gap, c.spread) for c in fig6.claims({"06": ABLATIONS})}
    assert found[("energy: strongest drop > weakest", "resnet W2A4")] == AGAINST  # 85.0 vs 87.0
    assert "BN sensitivity: drop 0.5 > drop 0.1" not in {
        c for c, _ in found
    }  # one BN point: nothing to compare


def test_each_more_teacher_uses_its_own_seed_spread() -> None:
    mobilenet = {
        "seed_spread": seed_spread("mobilenet", (80.0, 81.0)),  # std 0.71, range 1.0: threshold 2.12
        "n_synthetic": ABLATIONS["n_synthetic"] | {"teacher": "mobilenet"},
    }
    text = fig5.render({"06": ABLATIONS | {"by_teacher": {"mobilenet": mobilenet}}}, {})
    assert cells(text, "most GenQ images > fewest", "resnet W2A4")[-1] == RESOLVED
    assert cells(text, "most GenQ images > fewest", "mobilenet W2A4")[-1] == WITHIN


def test_table5_judges_off_diagonal_cells_with_the_quantized_teachers_spread() -> None:
    text = table5.render({"06": ABLATIONS}, {})
    assert cells(text, "`vit`")[1] == "85.40 (-0.60)"
    assert cells(text, "filtered by another ≥ by itself − 0.5", "vit → resnet")[-1] == WITHIN  # -0.1 vs 0.3
    assert (
        cells(text, "filtered by another ≥ by itself − 0.5", "resnet → vit")[-1] == NO_SPREAD
    )  # vit: 1 seed


def test_fig4_and_table1_claims() -> None:
    found = {(c.claim, c.where): c for c in fig4.claims({"06": ABLATIONS})}
    shots = found[("style token > the real shots alone", "resnet W2A4, k = 1")]
    assert shots.gap == pytest.approx(16.5) and verdict(shots.gap, shots.spread) == RESOLVED
    text = table1.render({"06": ABLATIONS}, {})
    assert cells(text, "GenQ (text-to-image + filter)")[1:] == ["200.0", "9.00 ± 0.50", "1,024"]
    assert cells(text, table1.HEADLINE)[2:] == ["+250.00", "–", "–", NO_SPREAD]
    assert cells(text, "filter lowers BN distance")[2] == "–"  # no unfiltered row: not measured
    assert cells(text, "filter lowers BN distance")[-1] == NOT_MEASURED


def test_table3_pivot_and_claims() -> None:
    rows = [
        {"teacher": "resnet", "w_bits": 3, "a_bits": 3, "mode": m, "source": s, "top1": t, "epochs": 5}
        for m, s, t in (("ptq_start", "genq", 85.0), ("genq", "genq", 88.0), ("lsq", "real", 89.5))
    ]
    text = table3.render({"05": {"fp": {"resnet": 92.93}, "rows": rows}}, {})
    assert cells(text, "LSQ")[1:] == ["real data", "89.50"]
    assert cells(text, "GenQ QAT ≥ LSQ − 1", "resnet W3A3")[2] == "-1.50"
    assert cells(text, "resnet", "W3A3", "LSQ")[3:] == [
        "–",
        "5",
        "–",
        "–",
    ]  # the cost table: unrecorded is a dash


def test_headline_takes_each_items_main_claim() -> None:
    text = headline.table({"04": PTQ, "06": ABLATIONS})
    assert cells(text, "Table 2", "GenQ ≥ real data − 1", "resnet W2A4")[-1] == RESOLVED
    assert cells(text, "Fig. 5", "most GenQ images > fewest", "resnet W2A4")[-1] == RESOLVED
    assert "GenQ > Gaussian noise" not in text


def write(figures: Path, notebook: str, record: dict, replicate: bool = False) -> None:
    """A metrics.json for one notebook (or its replicate) under ``figures``."""
    folder = figures / NOTEBOOKS[notebook] / (REPLICATE if replicate else "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(record))


def test_results_page_reads_the_figures_folder(tmp_path: Path) -> None:
    write(tmp_path, "04", PTQ)
    write(tmp_path, "04", PTQ, replicate=True)
    assert load(tmp_path)["04"] == PTQ and load(tmp_path)["05"] is None
    page = report.results_page(tmp_path)
    assert "## Table 2: data-free PTQ of CNNs" in page and "threshold = max(3 × std, range)" in page
    assert cells(page, "GenQ ≥ real data − 1", "resnet W2A4")[3] == "-0.50"  # the replicate's gap column
    assert cells(page, table3.TITLE)[1].startswith("– not measured")


def test_generated_blocks_are_replaced_between_their_markers(monkeypatch) -> None:
    monkeypatch.setitem(report.BLOCKS, "headline", lambda: "| fresh |")
    text = "intro\n<!-- headline:start -->\nold\n<!-- headline:end -->\nend"
    assert (
        report.render_blocks(text) == "intro\n<!-- headline:start -->\n| fresh |\n<!-- headline:end -->\nend"
    )


def test_provenance_flags_numbers_from_another_generator(tmp_path: Path) -> None:
    for notebook, made_by in (("04_ptq", "generator@new"), ("05_qat", "generator@old")):
        (tmp_path / notebook).mkdir()
        (tmp_path / notebook / "run.json").write_text(json.dumps({"generator": made_by}))
    text = provenance.table("generator@new", tmp_path)
    assert cells(text, "04")[2] == "yes" and cells(text, "05")[2] == "**no: re-run it**"
    assert cells(text, "06")[1:] == ["–", "not recorded"]


def test_run_times_per_profile_and_how_each_ran(tmp_path: Path) -> None:
    assert "not measured" in run_times.table(tmp_path)
    record = {"notebooks": {"01_generate": 60.0, "06_ablations": 600.0}, "total_seconds": 660.0}
    (tmp_path / "run_times-mini.json").write_text(
        json.dumps(record | {"cpu_count": 2, "threads": "1", "cold_start": True, "resumed": 1})
    )
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "run_times-ci.json").write_text(
        json.dumps({"notebooks": {"01_generate": 30.0}, "total_seconds": 30.0})
    )
    text = run_times.table(tmp_path)
    assert cells(text, "06_ablations")[1:] == ["–", "10.0"]
    assert cells(text, "**all**")[1:] == ["**0.5**", "**11.0**"]
    assert cells(text, "`mini`")[1:] == ["2", "1", "empty", "1"]
    assert cells(text, "`ci`")[1:] == ["–", "–", "not recorded", "0"]
