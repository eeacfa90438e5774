"""The README's paper-in-miniature tables: right numbers in the right cells, Δs, and notes when unmeasured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genqlib import results


def ptq_row(teacher: str, w: int, source: str, top1: float, method: str = "brecq") -> dict:
    """One notebook-04 result row."""
    return {"teacher": teacher, "w_bits": w, "a_bits": 4, "method": method, "source": source, "top1": top1}


PTQ = {
    "profile": "mini",
    "method": "brecq",
    "n_calib": 1024,
    "iters": 1000,
    "convention": "first/last layer 8-bit",
    "n_eval": 10000,
    "fp": {"resnet": 92.93, "mobilenet": 92.73, "vit": 90.33},
    "rows": [
        ptq_row("resnet", 4, "real", 91.0, method="nearest"),
        ptq_row("resnet", 4, "real", 92.5),
        ptq_row("resnet", 4, "genq", 92.25),
        ptq_row("resnet", 2, "real", 88.0),
        ptq_row("resnet", 2, "noise", 40.0),
        ptq_row("resnet", 2, "genq", 86.754),
        ptq_row("mobilenet", 2, "genq", 80.0),
        ptq_row("vit", 4, "real", 89.0),
        ptq_row("vit", 4, "genq", 88.5),
    ],
}

QAT = {
    "profile": "mini",
    "epochs": 5,
    "n_eval": 10000,
    "convention": "first/last layer 8-bit",
    "fp": {"resnet": 92.93},
    "rows": [
        {"teacher": "resnet", "w_bits": 3, "a_bits": 3, "mode": m, "source": s, "top1": t, "n_images": 1030}
        | {"epochs": 5, "seconds": 100.0, "images_per_s": 51.5}
        for m, s, t in (("ptq_start", "genq", 85.0), ("genq", "genq", 88.0), ("lsq", "real", 89.5))
    ],
}

ABLATIONS = {
    "profile": "mini",
    "method": "genie_m",
    "n_eval": 10000,
    "n_synthetic": {
        "teacher": "resnet",
        "w_bits": 2,
        "a_bits": 4,
        "rows": [{"n": 4096, "top1": 88.0}, {"n": 1024, "top1": 86.0}],
        "real": {"n": 1024, "top1": 87.5},
    },
    "filter_strength": {
        "teacher": "resnet",
        "w_bits": 2,
        "a_bits": 4,
        "n": 1024,
        "rows": [
            {"stage": "energy", "drop": 0.1, "n_generated": 1138, "top1": 85.0},
            {"stage": "energy", "drop": 0.5, "n_generated": 2048, "top1": 86.0},
            {"stage": "bn", "drop": 0.5, "n_generated": 2926, "top1": 87.0},
        ],
    },
    "cross_model": {
        "rows": [
            {"filter_teacher": f, "quant_teacher": q, "w_bits": 2, "a_bits": 4, "top1": t}
            for f, q, t in (("resnet", "resnet", 86.0), ("vit", "resnet", 85.5), ("vit", "mobilenet", 79.0))
        ]
    },
    "data_scarce": None,
    "generation_cost": {
        "rows": [
            {"source": "genq", "seconds_per_1000": 71.2, "bn_distance": 16.33, "n": 1000},
            {"source": "real", "seconds_per_1000": None, "bn_distance": 4.05, "n": 1000},
        ]
    },
}


@pytest.fixture
def figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty figures folder that the results module reads instead of the committed one."""
    monkeypatch.setattr(results, "FIGURES", tmp_path)
    return tmp_path


def write(figures: Path, notebook: str, record: dict) -> None:
    """Write a fabricated metrics.json for one notebook."""
    folder = figures / results.NOTEBOOKS[notebook]
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(record))


def cells(table: str, label: str) -> list[str]:
    """The cells of the markdown row whose first cell is ``label``."""
    for line in table.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if parts[0] == label:
            return parts
    raise AssertionError(f"no row {label!r} in\n{table}")


def header(table: str, first: str) -> list[str]:
    """The header row of the markdown table whose first header cell is ``first``."""
    return cells(table, first)


def test_missing_file_names_the_notebook(figures: Path) -> None:
    for make, nb in ((results.table2, "04"), (results.table3, "05"), (results.table5, "06")):
        assert (
            make() == f"_Not measured yet: run `python -m genqlib.run_notebooks --profile mini --only {nb}`._"
        )


def test_missing_or_null_key_gives_the_note(figures: Path) -> None:
    write(figures, "06", ABLATIONS)
    text = results.fig4()
    assert (
        text.splitlines()[0]
        == "_Not measured yet: run `python -m genqlib.run_notebooks --profile mini --only 03`._"
    )
    assert (
        text.splitlines()[-1]
        == "_Not measured yet: run `python -m genqlib.run_notebooks --profile mini --only 06`._"
    )
    assert "Paper:" not in text  # the finding goes under a measured table only


def test_table2_pivot_cells_and_delta_vs_real(figures: Path) -> None:
    write(figures, "04", PTQ)
    table = results.table2()
    head = header(table, "calibration")
    assert head[1:] == ["resnet W4A4", "resnet W2A4", "mobilenet W2A4"]  # the ViT has no W2A4 rows
    genq = cells(table, "BRECQ, **GenQ**")
    assert genq[head.index("resnet W2A4")] == "86.75 (-1.25)"  # 86.754 - 88.0
    assert genq[head.index("resnet W4A4")] == "92.25 (-0.25)"
    assert genq[head.index("mobilenet W2A4")] == "80.00"  # no real-data run to compare with
    assert cells(table, "BRECQ, real data")[head.index("resnet W2A4")] == "88.00"
    assert cells(table, "full precision")[1:] == ["92.93", "92.93", "92.73"]
    assert cells(table, "nearest rounding, real data")[1] == "91.00 (-1.50)"
    lines = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert lines.index("BRECQ, Gaussian noise") < lines.index("BRECQ, **GenQ**")
    assert "profile `mini`; 10,000 test images; first/last layer 8-bit" in table
    assert "Reproduce: `python -m genqlib.run_notebooks --profile mini --only 04`" in table


def test_table4_vit_deltas(figures: Path) -> None:
    write(figures, "04", PTQ)
    genq = cells(results.table4(), "BRECQ, **GenQ**")
    assert genq[1:] == ["W4A4", "88.50", "-1.83", "-0.50"]


def test_table3_qat_pivot_and_cost(figures: Path) -> None:
    write(figures, "05", QAT)
    table = results.table3()
    assert cells(table, "**GenQ QAT** (offset u)")[1:] == ["GenQ", "88.00 (-1.50)"]
    assert cells(table, "LSQ")[1:] == ["real data", "89.50"]
    assert cells(table, "resnet")[1:] == ["W3A3", "PTQ start (BRECQ)", "1,030", "5", "100", "52"]


def test_tables_2_to_4_report_how_far_a_replicate_moved_each_trained_point(figures: Path) -> None:
    write(figures, "04", PTQ)
    assert "Replicate" not in results.table2()
    replicate = json.loads(json.dumps(PTQ))
    for row in replicate["rows"]:
        row["threads"] = 2
    replicate["rows"][0]["top1"] = 50.0  # nearest rounding: not trained, so not counted
    replicate["rows"][5]["top1"] = 87.254  # resnet W2A4 GenQ: +0.50
    replicate["rows"][4]["top1"] = 39.0  # resnet W2A4 noise: -1.00
    folder = figures / results.NOTEBOOKS["04"] / results.REPLICATE
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(replicate))
    line = next(s for s in results.table2().split("\n\n") if s.startswith("Replicate"))
    assert "on 2 CPU threads," in line  # the committed rows recorded no thread count
    assert (
        "moved these 6 trained points by up to 1.00 (resnet W2A4, Gaussian noise; mean 0.25, median 0.00)"
        in line
    )
    assert "Per column (resnet W4A4 / resnet W2A4 / mobilenet W2A4):" in line
    assert "GenQ − real data -0.25 / -1.25 / – here, -0.25 / -0.75 / – there." in line  # no unfiltered rows
    vit = next(s for s in results.table4().split("\n\n") if s.startswith("Replicate"))
    assert "moved these 2 trained points by up to 0.00" in vit


def test_ablation_tables(figures: Path) -> None:
    write(figures, "06", ABLATIONS)
    fig5 = results.fig5()
    assert cells(fig5, "4,096")[1:] == ["88.00", "+0.50"]
    assert cells(fig5, "1,024 real images")[1] == "87.50"
    fig6 = results.fig6()
    assert header(fig6, "drop ratio")[1:] == ["0.1", "0.5"]
    assert cells(fig6, "energy score: top-1 (%)")[1:] == ["85.00", "86.00"]
    assert cells(fig6, "BN sensitivity: top-1 (%)")[1:] == ["–", "87.00"]
    assert cells(fig6, "energy score: images generated")[1:] == ["1,138", "2,048"]
    table5 = results.table5()
    assert cells(table5, "`vit`")[1:] == ["85.50 (-0.50)", "79.00"]
    assert cells(table5, "`resnet`")[1:] == ["86.00", "–"]
    table1 = results.table1()
    assert cells(table1, "GenQ (text-to-image + filter)")[1:] == ["71.2", "16.33", "1,000"]
    assert cells(table1, "real")[1:] == ["–", "4.05", "1,000"]
    assert (
        "Here: 1,024 → 4,096 GenQ images moves top-1 86.00 → 88.00 (+2.00); the best is 88.00 at 4,096"
        in fig5
    )
    assert "4,096 GenQ images against 1,024 real: +0.50." in fig5
    assert "energy score, r = 0.1 → 0.5: 85.00 → 86.00, best at r = 0.5 (86.00), span 1.00" in fig6
    assert (
        "Here: filtering with another teacher changes top-1 by -0.50 to -0.50 (mean -0.50) relative to"
        in table5
    )
    assert "Here:" not in table1  # no BN-inversion timing to compare with


def test_table1_compares_genq_time_with_bn_inversion(figures: Path) -> None:
    cost = {
        "threads": 2,
        "rows": [
            {"source": "genq", "seconds_per_1000": 100.0, "bn_distance": 12.0, "n": 1000},
            {"source": "bn_inversion", "seconds_per_1000": 400.0, "bn_distance": 5.0, "n": 1000},
        ],
    }
    write(figures, "06", ABLATIONS | {"generation_cost": cost})
    line = "Here: filtered GenQ images cost 100 s per 1,000 against 400 s for BN inversion on 2 CPU thread(s), 4.0x faster; BN distance 12.00 against 5.00."
    assert line in results.table1()


def test_seed_spread_is_the_noise_floor_of_each_ablation_table(figures: Path) -> None:
    spread = {
        "teacher": "resnet",
        "w_bits": 2,
        "a_bits": 4,
        "rows": [{"source": "genq", "seed": s, "n": 1024, "top1": t} for s, t in ((0, 86.0), (1, 86.5))],
        "spread": {"genq": {"mean": 86.25, "std": 0.35, "range": 0.5}},
    }
    write(figures, "06", ABLATIONS)
    assert "Noise floor" not in results.fig5()
    (figures / results.NOTEBOOKS["06"] / "metrics.json").write_text(
        json.dumps(ABLATIONS | {"seed_spread": spread})
    )
    line = "Noise floor (`resnet` W2A4): the same 1,024 images reconstructed with 2 seeds give top-1 genq 86.25 ± 0.35 (range 0.50)"
    for table in (results.fig5(), results.fig6(), results.table5()):
        assert line in table
    assert "the curve spans 2.00 points against a seed range of 0.50." in results.fig5()


def test_fig4_from_notebook_03(figures: Path) -> None:
    write(
        figures,
        "03",
        {
            "profile": "mini",
            "k_shots": 1,
            "learn_seconds": 120.0,
            "label": {"bn_distance": 29.18, "class_fidelity": 0.598},
            "style": {"bn_distance": 12.5, "class_fidelity": 0.81},
            "real": {"bn_distance": 4.05, "class_fidelity": 0.93},
            "ptq_w2a4": {
                "resnet": {"genq_data_free": 84.0, "genq_data_scarce": 86.5, "real_shots_only": 70.0}
            },
        },
    )
    text = results.fig4()
    assert cells(text, "GenQ style token (data-scarce)")[1:] == ["12.50", "81.0%"]
    assert cells(text, "`resnet`")[1:] == ["84.00", "86.50", "70.00", "+2.50", "+16.50"]
    assert "style token learned in 2.0 min" in text


def test_fig4_replicate_pairs_notebook_03_rows_by_teacher_and_source(figures: Path) -> None:
    def scarce(top1: dict[str, float], threads: int | None = None) -> dict:
        rows = [
            {"teacher": "resnet", "w_bits": 2, "a_bits": 4, "method": "brecq", "source": s, "top1": t}
            | ({"threads": threads} if threads else {})
            for s, t in top1.items()
        ]
        ptq = {"resnet": {"genq_data_free": 84.0, "genq_data_scarce": 86.5, "real_shots_only": 70.0}}
        return {
            "label": {"bn_distance": 29.18, "class_fidelity": 0.6},
            "ptq_w2a4": ptq,
            "ptq_w2a4_rows": {"resnet": rows},
        }

    write(figures, "03", scarce({"genq": 84.0, "genq_data_scarce": 86.5, "real_shots_only": 70.0}))
    folder = figures / results.NOTEBOOKS["03"] / results.REPLICATE
    folder.mkdir()
    replicate = scarce({"genq": 84.5, "genq_data_scarce": 86.0, "real_shots_only": 70.0}, threads=2)
    (folder / "metrics.json").write_text(json.dumps(replicate))
    line = next(s for s in results.fig4().split("\n\n") if s.startswith("Replicate"))
    assert "moved these 3 trained points by up to 0.50 (resnet W2A4, GenQ; mean 0.33, median 0.50)" in line
    assert (
        "data-scarce − data-free +2.50 here, +1.50 there; data-scarce − real shots +16.50 here, +16.00 there."
        in line
    )


def test_fig4_curve_from_notebook_06(figures: Path) -> None:
    rows = [
        {"source": "real_shots", "k": 1, "n": 10, "top1": 70.0},
        {"source": "genq_data_scarce", "k": 1, "n": 1024, "top1": 86.5},
        {"source": "genq_data_free", "k": 0, "n": 1024, "top1": 84.0},
    ]
    write(
        figures,
        "06",
        ABLATIONS | {"data_scarce": {"teacher": "resnet", "w_bits": 2, "a_bits": 4, "rows": rows}},
    )
    text = results.fig4()
    assert cells(text, "1")[1:] == ["70.00 (n=10)", "86.50 (n=1,024)", "–"]
    assert cells(text, "0 (data-free)")[1:] == ["–", "–", "84.00 (n=1,024)"]
    assert "--only 06`._" not in text
    here = "Here: with k = 1, the style token gives 86.50, +16.50 against those real shots alone and +2.50 against"
    assert here + " data-free GenQ; the real shots alone peak at k = 1 (70.00)." in text


def test_each_table_names_the_generator_behind_its_numbers_and_flags_an_old_one(figures, monkeypatch):
    import genqlib.run_notebooks as run_notebooks

    monkeypatch.setattr(run_notebooks, "generator_label", lambda folder: "generator@new")
    for notebook, made_by in (("04_ptq", "generator@new"), ("05_qat", "generator@old")):
        (figures / notebook).mkdir(exist_ok=True)
        (figures / notebook / "run.json").write_text(json.dumps({"generator": made_by}))
    line = results.provenance("04", "05", "06")
    assert "notebook 04: `generator@new`, the committed generator" in line
    assert "notebook 05: `generator@old`, **not** the committed `generator@new`: re-run it" in line
    assert "notebook 06: generator not recorded" in line


def test_run_times_table_reads_each_profile_and_says_how_it_ran(tmp_path: Path, monkeypatch) -> None:
    import genqlib.report as report

    monkeypatch.setattr(report, "FIGURES", tmp_path)
    assert "No full run recorded yet" in report.run_times_table()
    record = {"notebooks": {"01_generate": 60.0, "06_ablations": 600.0}, "total_seconds": 660.0}
    (tmp_path / "run_times-mini.json").write_text(
        json.dumps(record | {"cpu_count": 2, "threads": "1", "cold_start": True})
    )
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "run_times-ci.json").write_text(
        json.dumps({"notebooks": {"01_generate": 30.0}, "total_seconds": 30.0})
    )
    table = report.run_times_table()
    assert cells(table, "06_ablations")[1:] == ["–", "10.0"]
    assert cells(table, "**all six**")[1:] == ["**0.5**", "**11.0**"]
    assert "`mini`: 2 CPU cores, threads 1, from an empty cache" in table
    assert "`ci`: cache state not recorded;" in table
    (tmp_path / "run_times-mini.json").write_text(json.dumps(record | {"resumed": 1}))
    assert "resumed 1x after an interruption" in report.run_times_table()


def test_a_full_run_resumes_after_an_interruption_and_records_all_notebooks(tmp_path: Path, monkeypatch):
    import sys

    import genqlib.run_notebooks as run_notebooks

    names = [f"0{i}_step" for i in range(1, 7)]
    monkeypatch.setattr(run_notebooks, "list_notebooks", lambda: [Path(f"{n}.ipynb") for n in names])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ran: list[str] = []
    stops = ["04_step"]

    def fake_run(path: Path, profile: str, figures_dir: Path) -> Path:
        if path.stem in stops:
            stops.remove(path.stem)
            raise RuntimeError("stopped")  # the session stops inside notebook 04
        ran.append(path.stem)
        return figures_dir / path.name

    monkeypatch.setattr(run_notebooks, "run_notebook", fake_run)
    argv = ["run_notebooks", "--profile", "ci", "--figures-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(RuntimeError, match="stopped"):
        run_notebooks.main()
    partial = json.loads((tmp_path / "run_times-ci.partial.json").read_text())
    assert list(partial["notebooks"]) == names[:3] and not (tmp_path / "run_times-ci.json").exists()

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # other conditions: refused, nothing runs
    monkeypatch.setattr(sys, "argv", [*argv, "--resume"])
    with pytest.raises(SystemExit, match="OMP_NUM_THREADS"):
        run_notebooks.main()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ran.clear()
    run_notebooks.main()
    assert ran == names[3:]  # 04 again (it did not finish), then 05 and 06
    record = json.loads((tmp_path / "run_times-ci.json").read_text())
    assert list(record["notebooks"]) == names and record["resumed"] == 1 and record["threads"] == "2"
    assert record["total_seconds"] == pytest.approx(sum(record["notebooks"].values()))
    assert not (tmp_path / "run_times-ci.partial.json").exists()


def test_figs_5_and_6_repeat_for_each_more_teacher_with_its_own_noise_floor(figures: Path) -> None:
    mobilenet = {
        "n_synthetic": ABLATIONS["n_synthetic"] | {"teacher": "mobilenet"},
        "filter_strength": ABLATIONS["filter_strength"] | {"teacher": "mobilenet"},
        "seed_spread": {
            "teacher": "mobilenet",
            "w_bits": 2,
            "a_bits": 4,
            "rows": [{"source": "genq", "seed": s, "n": 1024, "top1": 80.0 + s} for s in (0, 1)],
            "spread": {"genq": {"mean": 80.5, "std": 0.71, "range": 1.0}},
        },
    }
    write(figures, "06", ABLATIONS | {"by_teacher": {"mobilenet": mobilenet}})
    fig5, fig6 = results.fig5(), results.fig6()
    for table in (fig5, fig6):
        assert "`resnet` W2A4" in table and "`mobilenet` W2A4" in table
        assert table.count("Paper:") == 1
        assert "Noise floor (`mobilenet` W2A4)" in table
    assert fig5.count("| 4,096 | 88.00 | +0.50 |") == 2
    assert "the curve spans 2.00 points against a seed range of 1.00." in fig5


def test_a_replicate_run_reports_how_far_each_point_moved(figures: Path) -> None:
    write(figures, "06", ABLATIONS | {"generation_cost": {"threads": 1, "rows": []}})
    assert "Replicate" not in results.fig5()
    replicate = json.loads(json.dumps(ABLATIONS))  # a deep copy with two points moved
    replicate["n_synthetic"]["rows"][0]["top1"] = 88.4  # 4,096 images: +0.40
    replicate["n_synthetic"]["real"]["top1"] = 87.4  # the real line: -0.10
    replicate["generation_cost"] = {"threads": 2, "rows": []}
    folder = figures / results.NOTEBOOKS["06"] / results.REPLICATE
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(replicate))
    line = next(s for s in results.fig5().split("\n\n") if s.startswith("Replicate"))
    assert "on 2 CPU threads instead of 1" in line
    assert "moved these 3 points by up to 0.40 (mean 0.17)" in line
    assert "in that run 1,024 → 4,096 GenQ images moves top-1 86.00 → 88.40" in line
