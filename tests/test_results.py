"""The results tables: numbers in the right cells, spreads over seeds, and verdicts computed from the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import genqlib.paper.report as report
from genqlib.paper import fig4, fig5, fig6, headline, provenance, run_times, table1, table2, table3, table5
from genqlib.paper.common import NOTEBOOKS, load
from genqlib.paper.verdict import (
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


SEEDS = (0.0, 0.1, -0.1)  # offsets of three seeds around a point's top-1: std 0.1, range 0.2, threshold 0.3
WIDE = (0.0, 0.5, -0.5)  # std 0.5, range 1.0: threshold 1.5


def seeded_rows(top1: float, offsets: tuple[float, ...] = SEEDS, **fields) -> list[dict]:
    """The rows of one analysis point, one per seed: ``top1`` plus that seed's offset."""
    return [{**fields, "seed": s, "top1": top1 + d, "seconds": 10.0} for s, d in enumerate(offsets)]


DROPS = {  # Fig. 6's grid, (energy, BN-sensitivity) drop pair -> mean top-1
    (0.0, 0.0): 70.0,
    (0.3, 0.3): 75.0,
    (0.5, 0.5): 75.1,  # seeds WIDE: within noise of the default
    (0.0, 0.3): 74.0,
    (0.5, 0.3): 75.5,
    (0.7, 0.3): 76.0,
    (0.3, 0.0): 73.0,
    (0.3, 0.5): 76.0,
    (0.3, 0.7): 77.0,
}


def generated(pair: tuple[float, float], n: int = 256) -> int:
    """Images generated to keep ``n`` after both filter stages."""
    return round(n / ((1 - pair[0]) * (1 - pair[1])))


WHERE = {"teacher": "mobilenet", "w_bits": 2, "a_bits": 2}
ABLATIONS = {
    "profile": "mini",
    "method": "brecq",
    "iters": 300,
    "n_calib": 256,
    "seeds": [0, 1, 2],
    "n_eval": 10000,
    "fp": {"mobilenet": 92.73, "resnet": 92.93, "vit": 90.0},
    "teacher": "mobilenet",
    "bits": [2, 2],
    "n_synthetic": {
        **WHERE,
        "rows": [
            row
            for source, n, top1 in (
                ("genq", 64, 70.0),
                ("genq", 256, 72.0),
                ("genq", 1024, 74.0),
                ("real", 64, 71.0),
                ("real", 256, 74.0),
                ("real", 1024, 76.0),
            )
            for row in seeded_rows(top1, source=source, n=n)
        ],
    },
    "filter_strength": {
        **WHERE,
        "n": 256,
        "rows": [
            row
            for pair, top1 in DROPS.items()
            for row in seeded_rows(
                top1,
                WIDE if pair == (0.5, 0.5) else SEEDS,
                drops=list(pair),
                source="genq",
                n_generated=generated(pair),
            )
        ],
    },
    "cross_model": {
        "n": 256,
        "rows": [
            row
            for f, q, top1 in (
                ("resnet", "resnet", 86.0),
                ("vit", "resnet", 85.4),
                ("vit", "vit", 80.0),
                ("resnet", "vit", 79.0),
            )
            for row in seeded_rows(top1, filter_teacher=f, quant_teacher=q, w_bits=2, a_bits=2)
        ],
    },
    "data_scarce": {
        **WHERE,
        "rows": [
            row
            for source, k, n, top1 in (
                ("genq_data_free", 0, 256, 86.4),
                ("real_shots", 1, 10, 70.0),
                ("genq_data_scarce", 1, 256, 86.5),
                ("real_shots", 5, 50, 80.0),
                ("genq_data_scarce", 5, 256, 86.6),
            )
            for row in seeded_rows(top1, source=source, k=k, n=n)
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


def one_seed(record: dict) -> dict:
    """``record`` as a ci run writes it: every point run with seed 0 only."""
    out = json.loads(json.dumps(record))
    for key, part in out.items():
        if isinstance(part, dict) and "rows" in part:
            part["rows"] = [r for r in part["rows"] if r.get("seed", 0) == 0]
        if key == "ptq_rows":
            out[key] = [r for r in part if r["seed"] == 0]
        if key == "seeds" or key == "ptq_setting":
            out[key] = [0] if key == "seeds" else part | {"seeds": [0]}
    return out


def without(record: dict, key: str, drop=lambda row: True) -> dict:
    """``record`` with the rows of analysis ``key`` matching ``drop`` removed (all of them: the analysis)."""
    out = json.loads(json.dumps(record))
    out[key]["rows"] = [r for r in out[key]["rows"] if not drop(r)]
    return out


TOKEN = {  # notebook 03
    "profile": "mini",
    "k_shots": 1,
    "teacher": "mobilenet",
    "learn_seconds": 120.0,
    "label": {"bn_distance": 9.0, "class_fidelity": 0.9},
    "style": {"bn_distance": 8.0, "class_fidelity": 0.95},
    "real": {"bn_distance": 2.0, "class_fidelity": 0.99},
    "ptq_setting": {"bits": [2, 2], "n_calib": 256, "iters": 300, "method": "brecq", "seeds": [0, 1, 2]},
    "ptq_rows": [
        row
        for teacher, source, top1, offsets in (
            ("mobilenet", "genq_data_free", 80.0, SEEDS),
            ("mobilenet", "genq_data_scarce", 81.0, SEEDS),
            ("mobilenet", "real_shots_only", 60.0, SEEDS),
            ("resnet", "genq_data_free", 85.0, (0.0, 1.0, -1.0)),  # std 1: threshold 3
            ("resnet", "genq_data_scarce", 84.0, SEEDS),
        )
        for row in seeded_rows(top1, offsets, teacher=teacher, w_bits=2, a_bits=2, source=source, n=256)
    ],
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
    text = table2.render(runs)
    pivot_real = cells(text, "BRECQ, real data")
    assert pivot_real[1:] == ["92.50", "88.00 ± 0.10"]  # columns resnet W4A4, resnet W2A4
    assert cells(text, "nearest rounding, real data")[1:] == ["91.00", "–"]  # not run at W2A4: a dash
    assert cells(text, "GenQ ≥ real data − 1", "resnet W2A4")[2:] == [
        "-0.50",
        "± 0.10 (range 0.20, 3 seeds)",
        RESOLVED,
    ]
    assert (
        cells(text, "GenQ > Gaussian noise", "resnet W2A4")[-1] == RESOLVED
    )  # noise ran once; genq has seeds
    assert cells(text, "GenQ ≥ real data − 1", "resnet W4A4")[-1] == NO_SPREAD  # one seed each: not judged
    assert cells(text, "GenQ > BN inversion", "resnet W2A4")[2:] == [
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
    for item, nb in (
        (table2, "04"),
        (table3, "05"),
        (table5, "06"),
        (fig5, "06"),
        (fig6, "06"),
        (table1, "06"),
    ):
        text = item.render({})
        assert (
            cells(text, item.TITLE)[1]
            == f"– not measured: run `python -m genqlib.paper.run_notebooks --profile mini --only {nb}`"
        )
    text = fig4.render({"06": ABLATIONS})  # notebook 03 missing, 06 shown
    assert cells(text, "Fig. 4, notebook 03 (style token, sets, PTQ)")[1].startswith("– not measured")
    assert cells(text, "1") == ["1", "70.00 ± 0.10 (n=10)", "86.50 ± 0.10 (n=256)", "–"]
    assert cells(text, "0 (data-free)") == ["0 (data-free)", "–", "–", "86.40 ± 0.10 (n=256)"]


def test_a_skipped_analysis_renders_not_measured_and_the_others_still_render() -> None:
    runs = {"06": {k: v for k, v in ABLATIONS.items() if k != "filter_strength"}}
    assert cells(fig6.render(runs), fig6.TITLE)[1].startswith("– not measured")
    assert fig6.claims(runs) == []
    assert cells(fig5.render(runs), "most GenQ images > fewest", "mobilenet W2A2")[-1] == RESOLVED
    assert "Fig. 6" not in headline.table(runs) and "Fig. 5" in headline.table(runs)
    runs = {"06": without(ABLATIONS, "cross_model")}  # run, but no row came back
    assert cells(table5.render(runs), table5.TITLE)[1].startswith("– not measured")
    old = {"06": ABLATIONS | {"n_synthetic": {**WHERE, "rows": [{"n": 4096, "top1": 88.0}]}}}  # no seeds
    assert cells(fig5.render(old), fig5.TITLE)[1].startswith("– not measured")


def test_fig5_cells_are_mean_and_std_over_seeds() -> None:
    text = fig5.render({"06": ABLATIONS})
    assert "`mobilenet W2A2` · BRECQ · 300 reconstruction iterations per block · 3 seeds" in text
    assert cells(text, "1,024") == ["1,024", "74.00 ± 0.10", "76.00 ± 0.10", "-2.00"]
    assert cells(text, "most GenQ images > fewest", "mobilenet W2A2")[2:] == [
        "+4.00",
        "± 0.10 (range 0.20, 3 seeds)",
        RESOLVED,  # 4.00 > max(3 x 0.10, 0.20)
    ]
    # the most GenQ images against four times fewer real ones: equal means, within the spread
    assert cells(text, "1,024 GenQ > 256 real", "mobilenet W2A2")[2:] == [
        "+0.00",
        "± 0.10 (range 0.20, 3 seeds)",
        WITHIN,
    ]


def test_fig5_compares_with_the_nearest_smaller_real_size_when_a_quarter_was_not_run() -> None:
    runs = {"06": without(ABLATIONS, "n_synthetic", lambda r: (r["source"], r["n"]) == ("real", 256))}
    found = {c.claim: c for c in fig5.claims(runs)}
    assert found["1,024 GenQ > 64 real"].gap == pytest.approx(3.0)
    runs = {"06": without(ABLATIONS, "n_synthetic", lambda r: r["source"] == "real" and r["n"] < 1024)}
    assert [c.claim for c in fig5.claims(runs)] == [fig5.HEADLINE]  # no real size a quarter or less


def test_fig6_one_row_per_drop_pair_and_the_papers_claims() -> None:
    text = fig6.render({"06": ABLATIONS})
    assert "256 calibration images per point" in text
    assert cells(text, "GenQ default") == ["GenQ default", "0.3", "0.3", "522", "75.00 ± 0.10", ""]
    assert cells(text, "no filter") == ["no filter", "0", "0", "256", "70.00 ± 0.10", "-5.00"]
    assert cells(text, "energy sweep", "0.7", "0.3")[3:] == ["1,219", "76.00 ± 0.10", "+1.00"]
    assert cells(text, "both stronger", "0.5", "0.5")[4:] == ["75.10 ± 0.50", "+0.10"]
    found = {c.claim: c for c in fig6.claims({"06": ABLATIONS})}
    assert {c.where for c in found.values()} == {"mobilenet W2A2"}
    energy = found["energy: strongest drop > weakest"]  # 0.7 against 0 with BN at 0.3
    assert energy.gap == pytest.approx(2.0) and verdict(energy.gap, energy.spread) == RESOLVED
    verdicts = {claim: verdict(c.gap, c.spread) for claim, c in found.items()}
    assert verdicts["BN sensitivity: drop 0.5 > drop 0"] == RESOLVED  # 76 against 73
    assert verdicts["BN sensitivity: drop 0.5 > drop 0.7"] == AGAINST  # 76 against 77
    assert verdicts["two-stage default > no filter"] == RESOLVED
    both = found["both stronger (0.5, 0.5) > default"]  # +0.10, the wider spread of the two cells: 1.5
    assert both.spread.std == pytest.approx(0.5) and verdicts[both.claim] == WITHIN
    assert cells(text, "both stronger (0.5, 0.5) > default", "mobilenet W2A2")[-2:] == [
        "± 0.50 (range 1.00, 3 seeds)",
        WITHIN,
    ]


def test_fig6_leaves_out_a_claim_whose_cells_were_not_run() -> None:
    gone = {(0.0, 0.0), (0.5, 0.5), (0.3, 0.7)}
    runs = {"06": without(ABLATIONS, "filter_strength", lambda r: tuple(r["drops"]) in gone)}
    assert [c.claim for c in fig6.claims(runs)] == [
        "energy: strongest drop > weakest",
        "BN sensitivity: drop 0.5 > drop 0",
    ]


def test_table5_cells_are_means_and_each_claim_uses_its_two_cells_spread() -> None:
    text = table5.render({"06": ABLATIONS})
    assert "mean over 3 seeds" in text
    assert cells(text, "`vit`") == ["`vit`", "85.40 (-0.60)", "80.00"]
    assert cells(text, "`resnet`") == ["`resnet`", "86.00", "79.00 (-1.00)"]
    # "A ≥ B − 0.5" judged on gap + 0.5 against max(3 x 0.10, 0.20)
    assert cells(text, table5.HEADLINE, "vit → resnet")[-1] == WITHIN  # -0.10
    assert cells(text, table5.HEADLINE, "resnet → vit")[-1] == AGAINST  # -0.50


def test_a_single_seed_run_shows_values_and_judges_nothing() -> None:
    runs = {"06": one_seed(ABLATIONS), "03": one_seed(TOKEN)}
    text = fig5.render(runs)
    assert cells(text, "1,024") == ["1,024", "74.00", "76.00", "-2.00"] and "· 1 seed" in text
    assert "one seed" in table5.render(runs)
    claims = [c for item in (fig4, fig5, fig6, table5) for c in item.claims(runs)]
    assert len(claims) == 2 * 2 + 2 * 2 + 2 + 5 + 2  # 03: 2 teachers x 2, 06's curve: 2 k x 2
    measured = [c for c in claims if c.gap is not None]  # 03's resnet ran no real-shots-only point
    assert len(measured) == len(claims) - 1
    assert {verdict(c.gap, c.spread, c.margin) for c in measured} == {NO_SPREAD}
    assert fig4.render(runs).count("· 1 seed") == 2  # 03's PTQ line and 06's curve setting


def test_fig4_notebook03_ptq_and_the_curve_claims() -> None:
    text = fig4.render({"03": TOKEN, "06": ABLATIONS})
    assert "PTQ: BRECQ · 256 calibration images · 300 reconstruction iterations per block · 3 seeds" in text
    assert cells(text, "W2A2 PTQ top-1 (%)")[1:] == ["GenQ data-free", "GenQ data-scarce", "real shots only"]
    assert cells(text, "`mobilenet`")[1:] == ["80.00 ± 0.10", "81.00 ± 0.10", "60.00 ± 0.10"]
    assert cells(text, "`resnet`")[1:] == ["85.00 ± 1.00", "84.00 ± 0.10", "–"]
    found = {
        (c.claim, c.where): verdict(c.gap, c.spread) for c in fig4.claims({"03": TOKEN, "06": ABLATIONS})
    }
    assert found[("style token > label prompts", "mobilenet W2A2")] == RESOLVED
    assert found[("style token > the real shots alone", "mobilenet W2A2")] == RESOLVED
    assert found[("style token > label prompts", "resnet W2A2")] == WITHIN  # -1.0 against 3 x 1.0
    assert found[("style token > the real shots alone", "resnet W2A2")] == NOT_MEASURED
    claims = {(c.claim, c.where): c for c in fig4.claims({"06": ABLATIONS})}
    shots = claims[("style token > the real shots alone", "mobilenet W2A2, k = 1")]
    assert shots.gap == pytest.approx(16.5) and verdict(shots.gap, shots.spread) == RESOLVED
    labels = claims[("style token > label prompts", "mobilenet W2A2, k = 5")]  # against data-free, k = 0
    assert labels.gap == pytest.approx(0.2) and verdict(labels.gap, labels.spread) == WITHIN


def test_table1_claims() -> None:
    text = table1.render({"06": ABLATIONS})
    assert cells(text, "GenQ (text-to-image + filter)")[1:] == ["200.0", "9.00 ± 0.50", "1,024"]
    assert cells(text, table1.HEADLINE)[2:] == ["+250.00", "–", NO_SPREAD]
    assert cells(text, "filter lowers BN distance")[2] == "–"  # no unfiltered row: not measured
    assert cells(text, "filter lowers BN distance")[-1] == NOT_MEASURED


def test_table1_names_the_fastest_sampler_that_holds_the_defaults_fidelity(tmp_path: Path) -> None:
    rows = [
        {"sampler": "ddim", "steps": 20, "images_per_s": 8.0, "mean_fidelity": 0.85},
        {"sampler": "dpm", "steps": 5, "images_per_s": 30.0, "mean_fidelity": 0.80},  # fast, loses 5 pt
        {"sampler": "dpm", "steps": 10, "images_per_s": 16.0, "mean_fidelity": 0.845},  # fast, holds
    ]
    inversion = {"n": 64, "iters": 400, "converged_iters": 100, "converged_within": 0.05}
    inversion |= {"profile_iters": 200, "seconds_per_1000_per_step": 2.0}
    inversion |= {"rows": [{"iters": 100, "loss": 2.0}, {"iters": 200, "loss": 1.95}]}
    bench = {"reference": {"sampler": "ddim", "steps": 20}, "rows": rows, "n_per_class": 30, "batch_size": 32}
    bench["profile"] = "ci"  # the step count named is the ci profile's today (20), not the bench's 200
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "solver.json").write_text(
        json.dumps(bench | {"bn_inversion": {"resnet": inversion}})
    )
    runs = load(tmp_path)
    text = table1.solver(runs["bench/solver"])
    assert "dpm at 10 steps, 16.0 images/s against 8.0 for the default (ddim, 20 steps)" in text
    assert "gains less than 5% from 100 steps on (200 s per 1,000 images); the profile runs 20 (40 s" in text
    assert "loss by step 100: 2, 200: 1.95" in text
    assert table1.solver(load(tmp_path / "none")["bench/solver"]) == ""
    # the rendered table quotes the record it is given, not the repository's
    assert text in table1.render(runs | {"06": ABLATIONS})
    assert "Synthesis speed" not in table1.render({"06": ABLATIONS})


def test_table3_pivot_and_claims() -> None:
    rows = [
        {"teacher": "resnet", "w_bits": 3, "a_bits": 3, "mode": m, "source": s, "top1": t, "epochs": 5}
        for m, s, t in (("ptq_start", "genq", 85.0), ("genq", "genq", 88.0), ("lsq", "real", 89.5))
    ]
    text = table3.render({"05": {"fp": {"resnet": 92.93}, "rows": rows}})
    assert cells(text, "LSQ")[1:] == ["real data", "89.50"]
    assert cells(text, "room: FP − PTQ start")[1:] == ["", "+7.93"]  # 92.93 − 85.00
    assert cells(text, "GenQ QAT ≥ LSQ − 1", "resnet W3A3")[2] == "-1.50"
    assert cells(text, "resnet", "W3A3", "LSQ")[3:] == [
        "–",
        "5",
        "–",
        "–",
    ]  # the cost table: unrecorded is a dash


def test_table3_lists_the_recipe_each_mode_trained_with() -> None:
    recipe = {
        "genq": {
            "lr": 1e-3,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "batchnorm": "frozen",
        },
        "lsq": {
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 5e-5,
            "schedule": "cosine",
            "batchnorm": "train",
        },
    }
    rows = [
        {
            "teacher": "resnet",
            "w_bits": 3,
            "a_bits": 3,
            "mode": m,
            "source": s,
            "top1": 88.0,
            **recipe.get(m, {}),
        }
        for m, s in (("ptq_start", "genq"), ("genq", "genq"), ("lsq", "real"))
    ]
    text = table3.render({"05": {"fp": {"resnet": 92.93}, "rows": rows}})
    assert cells(text, "LSQ", "W3A3")[2:] == ["0.01", "0.9", "5e-05", "cosine", "train"]
    assert cells(text, "GenQ QAT (offset u)", "W3A3")[2:] == ["0.001", "0.9", "0", "cosine", "frozen"]
    assert not any(line.startswith("| PTQ start (BRECQ) | W3A3 | ") for line in text.splitlines()[-6:])


def test_headline_takes_each_items_main_claim() -> None:
    text = headline.table({"04": PTQ, "06": ABLATIONS})
    assert cells(text, "Table 2", "GenQ ≥ real data − 1", "resnet W2A4")[-1] == RESOLVED
    assert cells(text, "Fig. 5", "most GenQ images > fewest", "mobilenet W2A2")[-1] == RESOLVED
    assert cells(text, "Fig. 6", "energy: strongest drop > weakest", "mobilenet W2A2")[-1] == RESOLVED
    assert (
        cells(text, "Fig. 4", "style token > the real shots alone", "mobilenet W2A2, k = 1")[-1] == RESOLVED
    )
    assert cells(text, "Table 5", table5.HEADLINE, "resnet → vit")[-1] == AGAINST
    assert "GenQ > Gaussian noise" not in text


def write(figures: Path, notebook: str, record: dict) -> None:
    """A metrics.json for one notebook under ``figures``."""
    folder = figures / NOTEBOOKS[notebook]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(record))


def test_results_page_reads_the_figures_folder(tmp_path: Path) -> None:
    write(tmp_path, "04", PTQ)
    assert load(tmp_path)["04"] == PTQ and load(tmp_path)["05"] is None
    page = report.results_page(tmp_path)
    assert "## Table 2: data-free PTQ of CNNs" in page and "threshold = max(3 × std, range)" in page
    assert cells(page, "GenQ ≥ real data − 1", "resnet W2A4")[2] == "-0.50"
    assert cells(page, table3.TITLE)[1].startswith("– not measured")


def test_generated_blocks_are_replaced_between_their_markers(monkeypatch) -> None:
    monkeypatch.setitem(report.BLOCKS, "headline", lambda: "| fresh |")
    text = "intro\n<!-- headline:start -->\nold\n<!-- headline:end -->\nend"
    assert (
        report.render_blocks(text) == "intro\n<!-- headline:start -->\n| fresh |\n<!-- headline:end -->\nend"
    )


def test_provenance_flags_numbers_from_another_generator(tmp_path: Path) -> None:
    runs = {
        "04_ptq": {"generator": "generator@new", "finished": "2026-12-07T15:00:00+00:00", "engine": "3"},
        "05_qat": {"generator": "generator@old", "finished": "2026-12-03T07:00:00+00:00", "commit": "abc"},
    }
    for notebook, run in runs.items():
        (tmp_path / notebook).mkdir()
        (tmp_path / notebook / "run.json").write_text(json.dumps(run))
    text = provenance.table("generator@new", tmp_path)
    assert cells(text, "04")[1:] == ["2026-12-07", "`generator@new`", "3", "–", "yes"]
    assert cells(text, "05")[3:] == ["–", "`abc`", "**no: re-run it**"]
    assert cells(text, "06")[1:] == ["–", "–", "–", "–", "not recorded"]
    line = provenance.summary("generator@new", tmp_path)
    assert "finished 2026-12-03 to 2026-12-07" in line
    assert "not the committed generator in notebook(s) 05" in line
    assert "engine 3 (not recorded by notebook(s) 05" in line
    assert "the code is now engine" not in provenance.summary("generator@new", tmp_path, engine="3")
    assert "the code is now engine 4" in provenance.summary("generator@new", tmp_path, engine="4")
    assert "Notebook(s) 03, 06 have no committed run." in line
    assert "No notebook run" in provenance.summary("generator@new", tmp_path / "empty")


def test_run_times_per_profile_and_how_each_ran(tmp_path: Path) -> None:
    assert "not measured" in run_times.table(tmp_path)
    record = {"notebooks": {"01_generate": 60.0, "06_ablations": 600.0}, "total_seconds": 660.0}
    (tmp_path / "run_times-mini.json").write_text(
        json.dumps(
            record | {"cpu_count": 2, "threads": "1", "grid_workers": 2, "cold_start": True, "resumed": 1}
        )
    )
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "run_times-ci.json").write_text(
        json.dumps({"notebooks": {"01_generate": 30.0}, "total_seconds": 30.0})
    )
    text = run_times.table(tmp_path)
    assert cells(text, "06_ablations")[1:] == ["–", "10.0"]
    assert cells(text, "**all**")[1:] == ["**0.5**", "**11.0**"]
    assert cells(text, "`mini`")[1:] == ["2", "1", "2", "empty", "1"]
    assert cells(text, "`ci`")[1:] == ["–", "–", "–", "not recorded", "0"]


def test_run_time_sentence_quotes_the_record(tmp_path: Path) -> None:
    assert "not been timed" in run_times.summary("mini", tmp_path)
    machine = {"cpu": "AMD EPYC", "cpu_kind": "26/2 AVX512", "torch": "2.13.0+cpu"}
    record = {
        "notebooks": {"01_generate": 60.0},
        "total_seconds": 3450.0,
        "cpu_count": 2,
        "cold_start": False,
    }
    (tmp_path / "run_times-mini.json").write_text(json.dumps(record | {"machine": machine}))
    text = run_times.summary("mini", tmp_path)
    assert "**57.5 minutes** on 2 CPU cores from a cache that was not empty" in text
    assert "(AMD EPYC, 26/2 AVX512; torch 2.13.0+cpu)" in text


def test_repro_says_whether_repeats_and_recomputed_committed_rows_are_identical(tmp_path: Path) -> None:
    run = {"teacher": "resnet", "w_bits": 2, "a_bits": 2, "method": "brecq", "n_calib": 64, "iters": 20}
    repeats = [
        {"threads": 1, "state_digest": "aa" * 32, "top1": 86.5},
        {"threads": 2, "state_digest": "bb" * 32, "top1": 86.5},
    ]
    record = {"command": "python -m genqlib.bench repro", "profile": "ci", "run": run, "repeats": repeats}
    record |= {"same_threads_identical": True, "all_identical": False, "machine": {"cpu": "X", "torch": "2"}}
    (tmp_path / "bench").mkdir()
    path = tmp_path / "bench" / "repro.json"
    path.write_text(json.dumps(record))
    assert "across thread counts the weights are different." in provenance.repro(tmp_path)
    assert "recomputed" not in provenance.repro(tmp_path)  # an older record without the committed rows
    assert "; X, torch" in provenance.repro(tmp_path)  # no CPU kind recorded
    path.write_text(json.dumps(record | {"machine": {"cpu": "X", "cpu_kind": "26/2 AVX512", "torch": "2"}}))
    assert "; X (26/2 AVX512), torch" in provenance.repro(tmp_path)
    rows = [
        {
            "teacher": "resnet",
            "source": "real",
            "seed": 0,
            "committed": [90.41, 93.8, 1],
            "recomputed": [90.41, 93.8, 1],
            "identical": True,
        },
        {
            "teacher": "mobilenet",
            "source": "noise",
            "seed": 1,
            "committed": [10.0, 9.0, 1],
            "recomputed": [10.2, 9.0, 1],
            "identical": False,
        },
    ]
    path.write_text(json.dumps(record | {"committed_rows": rows}))
    text = provenance.repro(tmp_path)
    assert "resnet real seed 0: 90.41 committed, 90.41 recomputed" in text
    assert (
        "mobilenet noise seed 1: 10.00 committed, 10.20 recomputed): top-1 and agreement **not** identical"
        in text
    )


def test_the_committed_readme_and_docs_are_generated_from_the_committed_figures() -> None:
    """What ``python -m genqlib.paper.report --check`` checks: no generated table was edited by hand or left behind
    by a change to the figures or to the code that renders them."""
    stale = [
        path.name for path, text in report.outputs().items() if not path.exists() or path.read_text() != text
    ]
    assert stale == [], f"run python -m genqlib.paper.report: {stale} out of date"


def test_saved_svgs_are_the_same_bytes_for_the_same_figure(tmp_path: Path) -> None:
    """matplotlib salts its SVG element ids at random per process: two saves of one figure differed in
    every clip-path id, so each run rewrote every committed SVG."""
    import matplotlib.pyplot as plt

    from genqlib.paper.plots import save

    svgs = []
    for run in range(2):
        fig, ax = plt.subplots()
        ax.plot([1, 3, 2])
        ax.set_title("the same figure")
        svgs.append(save(fig, tmp_path / str(run), "f").with_suffix(".svg").read_bytes())
        plt.close(fig)
    assert svgs[0] == svgs[1] and b"clip" in svgs[0]


def test_export_equality_table_reads_the_record_and_names_a_refused_optimizer(tmp_path: Path) -> None:
    from genqlib.paper import assets

    assert "not measured" in assets.export_equality_table(tmp_path)
    run = {"max_rel_error": 0.0123, "top1_agreement": 0.9996}
    rows = [
        {"teacher": "resnet", "bits": 8, "kind": "integer-executable", "integer_layers": 6, "as_written": run,
         "optimized": run},
        {"teacher": "mobilenet", "bits": 4, "kind": "interchange", "integer_layers": 0, "as_written": run,
         "optimized": "[ONNXRuntimeError] ClipQuantFusion"},
    ]  # fmt: skip
    record = {"engine": "4", "iters_per_block": 50, "calib": "256 images", "n_test": 10, "rows": rows}
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "export_equality.json").write_text(json.dumps(record))
    text = assets.export_equality_table(tmp_path)
    assert "Engine 4, QDrop 50 iterations" in text
    assert "| resnet | W8A8 | integer-executable | 6 | 0.012 / 99.96% | 0.012 / 99.96% |" in text
    assert (
        "| mobilenet | W4A4 | interchange | 0 | 0.012 / 99.96% | optimizer fails; runs unoptimized |" in text
    )


def test_export_speed_table_reads_every_run_of_the_record(tmp_path: Path) -> None:
    from genqlib.paper import assets

    assert "not measured" in assets.export_speed_table(tmp_path)
    row = {"teacher": "resnet", "w8a8_integer_layers": 6, "w8a8_float_layers": 10}
    for i, run in enumerate(("torch_fp32", "ort_fp32", "ort_w8a8", "ort_ortquant")):
        row |= {f"{run}_b1_ms": 1.0 + i, f"{run}_b64_ms": 10.0 * (i + 1)}
    row |= {f"bytes_{k}": 1024 * (i + 1) for i, k in enumerate(("fp32", "w8a8", "w4a4", "ortquant"))}
    record = {
        "threads": 2,
        "onnxruntime": "1.x",
        "calib": "nearest",
        "rows": [row],
        "machine": {"load_1min": 0.5},
    }
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "export.json").write_text(json.dumps(record))
    text = assets.export_speed_table(tmp_path)
    assert "2 threads, onnxruntime 1.x, load average 0.5" in text
    assert (
        "| resnet | 1.00 / 10.0 | 2.00 / 20.0 | 3.00 / 30.0 | 4.00 / 40.0 | 1 / 2 / 3 / 4 | 6 / 10 |" in text
    )
