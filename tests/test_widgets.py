"""The notebooks' controls without a browser: build each panel, move a control, check what it drew."""

from __future__ import annotations

import base64
import json
import statistics

import pytest
import torch
from matplotlib.container import ErrorbarContainer

from genqlib import load_fashion_mnist, load_teacher
from genqlib.fashion_mnist import CLASS_NAMES
from genqlib.infra.result_cache import cached_json
from genqlib.ui import (
    Panel,
    ablation_explorer,
    ablation_figure,
    cached_ptq_rows,
    filter_explorer,
    mosaic,
    ptq_explorer,
    token_compare,
)

PNG = b"\x89PNG"


def assert_headless_figure(panel: Panel) -> None:
    """The display bundle carries the widget and the current figure as a plain PNG (papermill shows it)."""
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == panel.png
    assert panel.png.startswith(PNG) and panel.image.value == panel.png


@pytest.fixture(scope="module")
def test_images():
    test = load_fashion_mnist("test").subset(80, seed=0)
    return test.images, test.labels


def test_mosaic_tiles_images_in_rows():
    images = torch.rand(5, 1, 4, 4)
    out = mosaic(images, cols=3, pad=1)
    assert out.shape == (2 * 5 + 1, 3 * 5 + 1)
    assert torch.equal(out[1:5, 1:5], images[0, 0])
    assert torch.equal(out[6:10, 6:10], images[4, 0])


def test_filter_explorer_energy_slider_changes_kept_set_and_figure(test_images):
    images, labels = test_images
    panel = filter_explorer(
        {"resnet": load_teacher("resnet")}, images, labels, n_show=8, class_names=CLASS_NAMES
    )
    assert_headless_figure(panel)
    before, png = dict(panel.state), panel.png
    assert before["kept"] == sum(before["kept_per_class"]) < len(images)
    assert "bn_distance" in before and 0 <= before["class_fidelity"] <= 1
    panel.controls["energy_drop"].value = 0.7
    assert panel.state["kept"] < before["kept"] and panel.state["after_energy"] < before["after_energy"]
    assert panel.png != png and panel.draws == 2
    assert f"kept {panel.state['kept']} of 80" in panel.summary.value
    panel.controls["second_drop"].value = 0.0
    assert panel.state["kept"] == panel.state["after_energy"]


def test_filter_explorer_teacher_picker_switches_second_stage(test_images):
    images, labels = test_images
    models = {"resnet": load_teacher("resnet"), "vit": load_teacher("vit")}
    panel = filter_explorer(models, images, labels, n_show=8, class_names=CLASS_NAMES)
    panel.controls["teacher"].value = "vit"
    assert panel.state["teacher"] == "vit" and "bn_distance" not in panel.state


def test_token_compare_redraws_on_seed_and_prompt():
    calls = []

    def sample(prompt: str, seed: int, n: int) -> torch.Tensor:
        calls.append((prompt, seed))
        g = torch.Generator().manual_seed(seed * 1000 + len(prompt))
        return torch.rand(n, 1, 8, 8, generator=g)

    shots, labels = torch.rand(10, 1, 8, 8), torch.arange(10)
    panel = token_compare(sample, shots, labels, token="<S>", n=3, class_names=CLASS_NAMES)
    assert_headless_figure(panel)
    assert panel.state["prompts"]["with token"] == "A photo of a t-shirt in the style of <S>"
    png = panel.png
    panel.controls["seed"].value = 7
    assert panel.png != png and panel.state["seed"] == 7 and ("A photo of a t-shirt", 7) in calls
    panel.controls["plain"].value = "A dark {C}"
    assert panel.state["prompts"]["without token"] == "A dark t-shirt"
    n_calls = len(calls)
    panel.controls["plain"].value = "A photo of a {C}"  # seen before: cached, not sampled again
    assert len(calls) == n_calls


def _row(teacher, w, a, method, source, top1):
    return {
        "teacher": teacher,
        "w_bits": w,
        "a_bits": a,
        "method": method,
        "source": source,
        "n_calib": 4,
        "top1": top1,
        "agreement": top1,
    }


def test_ptq_explorer_pickers_filter_cached_rows_and_compute_only_when_asked():
    rows = [
        _row(t, w, 4, m, s, 50.0 + w + i)
        for i, t in enumerate(["resnet", "mobilenet"])
        for w in (4, 2)
        for m, s in [("nearest", "real"), ("brecq", "real"), ("brecq", "noise")]
    ]
    calib = {(t, s): torch.rand(4, 1, 8, 8) for t in ("resnet", "mobilenet") for s in ("real", "noise")}
    computed = []

    def compute(teacher, w, a, method, source):
        computed.append((teacher, w, a, method, source))
        return _row(teacher, w, a, method, source, 42.0)

    panel = ptq_explorer(rows, calib, fp={"resnet": 90.0, "mobilenet": 89.0}, compute=compute)
    assert_headless_figure(panel)
    assert panel.controls["teacher"].value == "resnet"  # the first with calibration images, not by name
    assert [r["source"] for r in panel.state["table"]] == ["real", "real", "noise"]  # nearest first
    assert {r["w_bits"] for r in panel.state["table"]} == {4}
    png, table = panel.png, panel.state["table"]
    panel.controls["bits_label"].value = "W2A4"
    assert {r["w_bits"] for r in panel.state["table"]} == {2} and panel.png != png
    panel.controls["sources"].value = ("noise",)
    assert [r["source"] for r in panel.state["table"]] == ["real", "noise"]
    assert table != panel.state["table"]
    panel.controls["method"].value = "qdrop"  # nothing cached: listed, not computed
    button = next(w for w in panel.children if "genq-ptq-compute" in w._dom_classes)
    assert computed == [] and len(panel.state["missing"]) == 1 and not button.disabled
    assert button.description == "compute missing (1 run)"  # the rows here are not timed: no estimate
    button.click()
    panel.worker.join(timeout=60)  # "compute missing" runs in a thread: the notebook stays usable
    assert computed == [(panel.state["table"][0]["teacher"], 2, 4, "qdrop", "noise")]
    assert panel.state["missing"] == [] and panel.state["table"][-1]["top1"] == 42.0


def test_ptq_explorer_merges_seeds_into_mean_and_std():
    rows = [_row("resnet", 2, 2, "brecq", "real", v) for v in (80.0, 82.0, 84.0)]
    rows += [_row("resnet", 2, 2, "brecq", "noise", 10.0)]
    panel = ptq_explorer(rows, {("resnet", "real"): torch.rand(4, 1, 8, 8)})
    real, noise = panel.state["table"]
    assert (real["seeds"], real["top1"], real["top1_std"]) == (3, 82.0, 2.0)
    assert (noise["seeds"], noise["top1"], noise["top1_std"]) == (1, 10.0, 0.0)


def test_ptq_explorer_opens_on_a_choice_that_has_runs():
    """Only W2A2 qdrop runs of mobilenet exist (nearest rows at W4A4 too): the explorer opens on them, not on
    the notebook teacher's empty widest bits."""
    rows = [_row("mobilenet", 2, 2, "qdrop", s, 70.0) for s in ("real", "genq")]
    rows += [_row("mobilenet", 4, 4, "nearest", "real", 60.0), _row("resnet", 4, 4, "nearest", "real", 61.0)]
    calib = {(t, "real"): torch.rand(4, 1, 8, 8) for t in ("resnet", "mobilenet")}
    panel = ptq_explorer(rows, calib)
    assert panel.values()["bits_label"] == "W2A2" and panel.controls["teacher"].value == "mobilenet"
    assert panel.controls["method"].value == "qdrop"
    assert [r["source"] for r in panel.state["table"] if r["method"] != "nearest"] == ["real", "genq"]


def test_compute_button_estimates_its_cost_from_the_timed_runs():
    from genqlib.ui.ptq_panel import _button_label

    rows = [{**_row("resnet", 2, 2, "brecq", "real", 80.0), "seconds": s} for s in (60.0, 120.0, 600.0)]
    missing = [("resnet", 2, 2, "qdrop", s) for s in ("real", "noise", "genq")]
    assert _button_label(missing, rows) == "compute missing (3 runs, about 6 min)"  # median 120 s x 3
    assert _button_label([], rows) == "compute missing"


def test_prompt_playground_carries_its_first_samples_as_a_picture():
    from genqlib.ui.playground import prompt_playground

    calls = []

    def sample(prompt, n):
        calls.append(prompt)
        return torch.rand(n, 1, 8, 8)

    box = prompt_playground(sample, "A photo of a coat", n=3)
    bundle = box._repr_mimebundle_()
    assert calls == ["A photo of a coat"] and base64.b64decode(bundle["image/png"]).startswith(PNG)
    assert "application/vnd.jupyter.widget-view+json" in bundle and "Box(children" not in bundle["text/plain"]


def test_cached_ptq_rows_reads_matching_cache_entries(tmp_path):
    for n in (4, 8):
        key = {
            "teacher": "resnet",
            "w_bits": 4,
            "a_bits": 4,
            "method": "brecq",
            "source": "real",
            "n_calib": n,
        }
        cached_json(tmp_path, f"run{n}", key, lambda key=key: {**key, "top1": 1.0})
    (tmp_path / "broken.json").write_text("{")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable cache file.*broken\.json"):
        assert [r["n_calib"] for r in cached_ptq_rows(tmp_path)] == [4, 8]
    with pytest.warns(UserWarning, match="broken.json"):
        assert [r["n_calib"] for r in cached_ptq_rows(tmp_path, n_calib=8)] == [8]


def _seeds(top1s, **fields) -> list[dict]:
    """One notebook-06 row per seed of one point."""
    return [{**fields, "seed": s, "top1": t, "seconds": 1.0} for s, t in enumerate(top1s)]


DROPS = {  # (energy, BN-sensitivity) -> top-1 per seed
    (0.0, 0.0): (60.0, 61.0, 62.0),
    (0.3, 0.3): (70.0, 71.0, 72.5),
    (0.5, 0.5): (71.0, 71.0, 71.3),
    (0.0, 0.3): (68.0, 69.0, 70.0),
    (0.7, 0.3): (72.0, 73.0, 74.0),
    (0.3, 0.0): (66.0, 66.5, 67.0),
    (0.3, 0.7): (69.0, 71.0, 73.0),
}
ABLATION_RESULTS = {
    "profile": "mini",
    "seeds": [0, 1, 2],
    "teacher": "mobilenet",
    "bits": [2, 2],
    "fp": {"mobilenet": 90.0, "resnet": 92.0},
    "n_synthetic": {
        "teacher": "mobilenet",
        "w_bits": 2,
        "a_bits": 2,
        "rows": [
            *_seeds((70.0, 72.0, 74.0), source="genq", n=64),
            *_seeds((75.0, 76.0, 77.0), source="genq", n=256),
            *_seeds((73.0, 74.0, 78.0), source="real", n=64),
            *_seeds((80.0, 80.5, 81.0), source="real", n=256),
        ],
    },
    "filter_strength": {
        "teacher": "mobilenet",
        "w_bits": 2,
        "a_bits": 2,
        "n": 256,
        "rows": [
            r for p, t in DROPS.items() for r in _seeds(t, drops=list(p), source="genq", n_generated=600)
        ],
    },
    "cross_model": {
        "n": 256,
        "rows": [
            r
            for f, q, t in (
                ("mobilenet", "mobilenet", (70.0, 71.0, 72.0)),
                ("resnet", "mobilenet", (69.0, 70.0, 74.0)),
                ("mobilenet", "resnet", (80.0, 80.0, 83.0)),
                ("resnet", "resnet", (81.0, 82.0, 83.0)),
            )
            for r in _seeds(t, filter_teacher=f, quant_teacher=q, w_bits=2, a_bits=2)
        ],
    },
    "data_scarce": {
        "teacher": "mobilenet",
        "w_bits": 2,
        "a_bits": 2,
        "rows": [
            *_seeds((71.0, 72.0, 73.0), source="genq_data_free", k=0, n=256),
            *_seeds((40.0, 45.0, 50.0), source="real_shots", k=1, n=10),
            *_seeds((72.0, 73.0, 74.5), source="genq_data_scarce", k=1, n=256),
            *_seeds((60.0, 61.0, 62.0), source="real_shots", k=5, n=50),
            *_seeds((74.0, 74.0, 74.6), source="genq_data_scarce", k=5, n=256),
        ],
    },
    "generation_cost": {
        "teacher": "mobilenet",
        "rows": [
            {"source": "genq", "seconds_per_1000": 200.0, "bn_distance": 9.0, "bn_distance_std": 0.5},
            {"source": "bn_inversion", "seconds_per_1000": 450.0, "bn_distance": 5.0},
        ],
    },
}


def _expected(values) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values)


def _errorbars(ax) -> dict[str, tuple[list, list, list]]:
    """What each ``errorbar`` on ``ax`` drew, by legend label: x, y of the points and half the bar lengths."""
    drawn = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            line, _, (bars, *_) = container.lines
            halves = [(top[1] - bottom[1]) / 2 for bottom, top in bars.get_segments()]
            drawn[container.get_label()] = (list(line.get_xdata()), list(line.get_ydata()), halves)
    return drawn


def test_ablation_figure_plots_the_mean_and_std_of_each_points_seeds():
    fig, state = ablation_figure(ABLATION_RESULTS, "n_synthetic")
    ax = fig.axes[0]
    by = {}
    for r in ABLATION_RESULTS["n_synthetic"]["rows"]:
        by.setdefault((r["source"], r["n"]), []).append(r["top1"])
    for source, label in (("genq", "GenQ (filtered)"), ("real", "real data")):
        xs, ys, errors = _errorbars(ax)[label]
        assert xs == [64, 256]
        means, stds = zip(*(_expected(by[source, n]) for n in xs), strict=True)
        assert ys == pytest.approx(means) and errors == pytest.approx(stds)
        assert state["curve"][source] == pytest.approx(list(zip(xs, means, stds, strict=True)))
    assert [list(line.get_ydata()) for line in ax.get_lines() if line.get_label() == "FP 90.0"] == [
        [90.0, 90.0]
    ]
    assert ax.get_xscale() == "log" and state["points"] == 4 and state["teacher"] == "mobilenet"
    assert state["summary"] == "n_synthetic for mobilenet W2A2: 4 points, mean ± std over 3 seeds"


def test_ablation_figure_filter_strength_sweeps_each_stage_with_the_other_at_the_default():
    fig, state = ablation_figure(ABLATION_RESULTS, "filter_strength")
    drawn = _errorbars(fig.axes[0])
    xs, ys, errors = drawn["energy swept, BN sensitivity at 0.3"]
    assert xs == [0.0, 0.3, 0.7]
    expected = [_expected(DROPS[e, 0.3]) for e in xs]
    assert ys == pytest.approx([m for m, _ in expected]) and errors == pytest.approx([s for _, s in expected])
    assert drawn["BN sensitivity swept, energy at 0.3"][0] == [0.0, 0.3, 0.7]
    assert drawn["BN sensitivity swept, energy at 0.3"][1] == pytest.approx(
        [statistics.mean(DROPS[0.3, b]) for b in xs]
    )
    assert drawn["no filter (0, 0)"][1] == pytest.approx([61.0])
    _, ys, errors = drawn["both 0.5 (0.5, 0.5)"]
    assert (ys, errors) == (pytest.approx([71.1]), pytest.approx([statistics.stdev(DROPS[0.5, 0.5])]))
    assert set(state["curve"]) == {"energy", "bn", "no filter", "both 0.5"} and state["points"] == 8


def test_ablation_figure_cross_model_bars_and_data_scarce_band():
    fig, state = ablation_figure(ABLATION_RESULTS, "cross_model")
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([71.0, 81.0, 71.0, 82.0])  # filtered by mobilenet, then by resnet
    assert state["curve"]["resnet"][0] == pytest.approx(
        ("mobilenet", 71.0, statistics.stdev((69.0, 70.0, 74.0)))
    )
    assert state["teacher"] == "every teacher" and state["points"] == 4
    fig, state = ablation_figure(ABLATION_RESULTS, "data_scarce")
    drawn = _errorbars(fig.axes[0])
    assert drawn["real shots alone"][:2] == ([1, 5], pytest.approx([45.0, 61.0]))
    assert drawn["real shots alone"][2] == pytest.approx([5.0, 1.0])
    assert state["curve"]["genq_data_free"] == [(0, 72.0, 1.0)] and state["points"] == 5
    assert len(fig.axes[0].patches) == 1  # the data-free ± std band


def test_ablation_figure_with_one_seed_draws_no_spread():
    results = json.loads(json.dumps(ABLATION_RESULTS))
    results["n_synthetic"]["rows"] = [r for r in results["n_synthetic"]["rows"] if r["seed"] == 0]
    fig, state = ablation_figure(results, "n_synthetic")
    assert state["curve"]["genq"] == [(64, 70.0, 0.0), (256, 75.0, 0.0)]
    assert state["summary"].endswith("one seed (no spread)")
    with pytest.raises(ValueError, match="unknown analysis"):
        ablation_figure(results, "seed_spread")


def test_ablation_explorer_picks_an_analysis():
    results = {k: v for k, v in ABLATION_RESULTS.items() if k != "cross_model"}  # an analysis skipped
    panel = ablation_explorer(results)
    assert_headless_figure(panel)
    assert list(panel.controls) == ["analysis"]
    assert panel.controls["analysis"].options == (
        "n_synthetic",
        "filter_strength",
        "data_scarce",
        "generation_cost",
    )
    assert panel.state["analysis"] == "n_synthetic" and panel.state["points"] == 4
    pngs = {panel.png}
    for analysis in panel.controls["analysis"].options[1:]:
        panel.controls["analysis"].value = analysis
        assert "error" not in panel.summary.value, analysis
        assert panel.state["analysis"] == analysis and panel.state["points"] > 0
        pngs.add(panel.png)
    assert len(pngs) == 4
    with pytest.raises(ValueError, match="no 'cross_model'"):
        ablation_figure(results, "cross_model")


def _bars(panel: Panel) -> list[float]:
    """The heights of the accuracy bars the PTQ explorer drew (its first axes)."""
    return [bar.get_height() for bar in panel.figure.axes[0].patches]


def test_ptq_explorer_reads_the_committed_record_when_the_cache_is_empty(tmp_path):
    """A fresh clone has no cache: the record written beside the figures still fills the default figure; a
    cached run of the same identity wins over the record's; a record of another eval set is not used."""
    from genqlib.ui.ptq_panel import explorer_ptq_rows, write_ptq_record

    record = tmp_path / "figures" / "04_ptq" / "explorer_runs.json"
    runs = [{**_row("resnet", 2, 2, "brecq", s, v), "seed": 0} for s, v in (("real", 80.0), ("genq", 70.0))]
    write_ptq_record(record, [{**r, "from_cache": True, "machine": {"cpu": "x"}} for r in runs], eval="d1")
    assert "machine" not in record.read_text() and "from_cache" not in record.read_text()
    calib = {("resnet", "real"): torch.rand(4, 1, 8, 8)}
    rows = explorer_ptq_rows(tmp_path / "cache", record, eval="d1")
    panel = ptq_explorer(rows, calib)
    assert [r["top1"] for r in panel.state["table"]] == [80.0, 70.0]
    assert _bars(panel) == [80.0, 70.0]  # the default figure shows the record's runs
    assert panel.state["summary"].endswith("; 2 of the 2 rows from the committed record")

    key = {**{k: runs[0][k] for k in runs[0] if k not in ("top1", "agreement")}, "eval": "d1"}
    cached_json(tmp_path / "cache", "real", key, lambda: {**runs[0], "top1": 85.0})
    rows = explorer_ptq_rows(tmp_path / "cache", record, eval="d1")
    panel = ptq_explorer(rows, calib)
    assert sorted(_bars(panel)) == [70.0, 85.0]  # the cache wins on the same run
    assert panel.state["summary"].endswith("; 1 of the 2 rows from the committed record")

    with pytest.warns(UserWarning, match="other settings \\(eval differ\\)"):
        assert explorer_ptq_rows(tmp_path / "none", record, eval="d2") == []


def test_ptq_explorer_without_cache_or_record_says_no_runs(tmp_path):
    from genqlib.ui.ptq_panel import explorer_ptq_rows

    rows = explorer_ptq_rows(tmp_path / "cache", tmp_path / "explorer_runs.json", eval="d1")
    panel = ptq_explorer(rows, {("resnet", "real"): torch.rand(4, 1, 8, 8)})
    assert rows == [] and _bars(panel) == [] and panel.state["summary"].startswith("no runs")
    assert_headless_figure(panel)


def test_ablation_explorer_shows_the_committed_record_and_this_runs_analyses_win(tmp_path):
    from genqlib.ui.ablation_panel import read_ablation_record, write_ablation_record

    path = tmp_path / "explorer_runs.json"
    write_ablation_record(path, {**ABLATION_RESULTS, "profile": "ci"}, profile="ci", n_eval=10)
    committed = read_ablation_record(path, profile="ci", n_eval=10)
    assert "profile" not in committed and set(committed) >= {"fp", "n_synthetic", "cross_model"}
    panel = ablation_explorer({"fp": {}}, committed=committed)  # nothing computed in this run
    n_rows = sum(len(ABLATION_RESULTS[a]["rows"]) for a in panel.controls["analysis"].options)
    assert panel.state["analysis"] == "n_synthetic" and panel.state["points"] == 4
    assert panel.state["summary"].split("; ")[-1].startswith(f"{n_rows} rows from the committed record")
    mine = {"fp": ABLATION_RESULTS["fp"], "n_synthetic": ABLATION_RESULTS["n_synthetic"]}
    panel = ablation_explorer(mine, committed=committed)
    n_rows -= len(ABLATION_RESULTS["n_synthetic"]["rows"])
    assert f"; {n_rows} rows from the committed record (filter_strength" in panel.state["summary"]
    with pytest.warns(UserWarning, match="n_eval differ"):
        assert read_ablation_record(path, profile="ci", n_eval=20) == {}


def test_ablation_explorer_without_runs_or_record_says_no_runs(tmp_path):
    from genqlib.ui.ablation_panel import read_ablation_record

    panel = ablation_explorer(
        {"fp": {}}, committed=read_ablation_record(tmp_path / "none.json", profile="ci")
    )
    assert panel.state["summary"].startswith("no runs") and panel.state["points"] == 0
    assert_headless_figure(panel)


def test_the_figure_check_fails_on_an_empty_axis_and_passes_each_default_figure():
    """tests/figure_check.py's check, as the browser test applies it to the executed copies: an empty axis
    (title, labels, FP line; and 04's 'no runs' state beside its calibration images) fails it, a figure with
    runs passes it."""
    from figure_check import shows_data
    from matplotlib.figure import Figure

    from genqlib.ui.panel import figure_png

    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    ax.axhline(90.0, color="k", linestyle="--", label="FP 90.0")
    ax.set(title="resnet W4A4 brecq", ylabel="top-1 (%)", ylim=(0, 100))
    empty = figure_png(fig)
    assert not any(shows_data(empty, kind) for kind in ("ptq", "token"))
    calib = {("resnet", "real"): torch.rand(4, 1, 8, 8)}
    assert not shows_data(ptq_explorer([], calib, fp={"resnet": 90.0}).png, "ptq")
    assert not shows_data(ablation_explorer({"fp": {}}).png, "ablation")
    rows = [_row("resnet", 2, 2, "brecq", s, v) for s, v in (("real", 80.0), ("genq", 70.0))]
    assert shows_data(ptq_explorer(rows, calib, fp={"resnet": 90.0}).png, "ptq")
    assert shows_data(ablation_explorer(ABLATION_RESULTS).png, "ablation")


def _ladder_rung(spec: str, fidelity: float, genq: tuple, unfiltered: tuple) -> dict:
    def cell(values: tuple) -> dict:
        return {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values),
            "n": len(values),
            "values": list(values),
        }

    metrics = {
        "class_fidelity": fidelity,
        "bn_distance": 30 - 10 * fidelity,
        "hf_share_ratio": 0.8,
        "kid": 1 - fidelity,
    }
    return {
        "rung": spec,
        "tag": spec.replace("@", "-").replace("=", ""),
        "status": "measured",
        "metrics": metrics,
        "top1": {"genq": cell(genq), "genq_unfiltered": cell(unfiltered)},
    }


LADDER = {
    "settings": {"profile": "mini", "teacher": "resnet", "w_bits": 2, "a_bits": 2, "method": "brecq"}
    | {"n_calib": 256, "iters": 300, "seeds": [0, 1, 2]},
    "baselines": {
        "real": {"mean": 87.5, "std": 0.4, "n": 3, "values": [87.1, 87.5, 87.9]},
        "bn_inversion": {"mean": 85.8, "std": 0.2, "n": 3, "values": [85.6, 85.8, 86.0]},
    },
    "rungs": [
        _ladder_rung("generator-v1", 0.85, (86.1, 86.3, 86.5), (82.0, 83.0, 84.0)),
        _ladder_rung("generator-v2@steps=5", 0.33, (81.0, 83.0, 85.0), (84.0, 84.5, 85.0)),
        {"rung": "generator-v9", "tag": "generator-v9", "status": "skipped", "reason": "no folder"},
    ],
}


def test_ladder_explorer_opens_on_the_best_generator_and_rings_the_one_picked():
    from figure_check import shows_data

    from genqlib.ui import ladder_explorer

    panel = ladder_explorer(LADDER)
    assert_headless_figure(panel)
    assert panel.controls["generator"].options == ("generator-v1", "generator-v2@steps=5")  # measured only
    assert panel.state["rung"] == "generator-v1" and "class fidelity 85.0%" in panel.state["summary"]
    assert (
        "GenQ 86.30 ± 0.20" in panel.state["summary"]
        and "BN inversion 85.80 ± 0.20" in panel.state["summary"]
    )

    def ringed(panel) -> list[tuple[float, float]]:  # the open circles drawn around the picked rung's points
        ax = panel.figure.axes[0]
        return [tuple(line.get_xydata()[0]) for line in ax.lines if line.get_markerfacecolor() == "none"]

    assert ringed(panel) == [(0.85, 86.3), (0.85, 83.0)]
    first = panel.png
    panel.controls["generator"].value = "generator-v2@steps=5"
    assert panel.state["rung"] == "generator-v2@steps=5" and panel.png != first
    assert ringed(panel) == [(0.33, 83.0), (0.33, 84.5)]
    assert shows_data(panel.png, "ablation")


def test_ladder_explorer_without_a_record_names_the_command_that_makes_one(tmp_path):
    from genqlib.paper.ladder_verdicts import read_ladder_record
    from genqlib.ui.ladder_panel import ladder_explorer

    assert read_ladder_record(tmp_path / "missing.json") is None
    panel = ladder_explorer(None, command="python -m genqlib.paper.generator_ladder")
    assert (
        panel.state["rung"] is None and "python -m genqlib.paper.generator_ladder" in panel.state["summary"]
    )
