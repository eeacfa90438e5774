"""The notebooks' controls without a browser: build each panel, move a control, check what it drew."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from genqlib import load_fashion_mnist, load_teacher
from genqlib.cache import cached_json
from genqlib.data import CLASS_NAMES
from genqlib.profiles import REPO_ROOT
from genqlib.widgets import (
    Panel,
    ablation_explorer,
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
    assert computed == [] and len(panel.state["missing"]) == 1 and not panel.children[1].disabled
    panel.children[1].click()
    assert computed == [(panel.state["table"][0]["teacher"], 2, 4, "qdrop", "noise")]
    assert panel.state["missing"] == [] and panel.state["table"][-1]["top1"] == 42.0


def test_ptq_explorer_merges_seeds_into_mean_and_std():
    rows = [_row("resnet", 2, 2, "brecq", "real", v) for v in (80.0, 82.0, 84.0)]
    rows += [_row("resnet", 2, 2, "brecq", "noise", 10.0)]
    panel = ptq_explorer(rows, {("resnet", "real"): torch.rand(4, 1, 8, 8)})
    real, noise = panel.state["table"]
    assert (real["seeds"], real["top1"], real["top1_std"]) == (3, 82.0, 2.0)
    assert (noise["seeds"], noise["top1"], noise["top1_std"]) == (1, 10.0, 0.0)


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


def test_ablation_explorer_picks_analysis_and_teacher():
    results = json.loads((REPO_ROOT / "figures" / "06_ablations" / "metrics.json").read_text())
    panel = ablation_explorer(results)
    assert_headless_figure(panel)
    assert panel.state["analysis"] == "n_synthetic" and panel.state["std"] > 0
    png = panel.png
    panel.controls["analysis"].value = "filter_strength"
    assert set(panel.state["curve"]) == {"energy", "bn"} and panel.png != png
    assert panel.state["points"] == sum(len(v) for v in panel.state["curve"].values())
    panel.controls["teacher"].value = "mobilenet"
    assert panel.state["teacher"] == "mobilenet"
    for analysis in panel.controls["analysis"].options:
        panel.controls["analysis"].value = analysis
        assert "error" not in panel.summary.value, analysis
