"""The generator ladder (genqlib.paper.generator_ladder): the rung parser, a missing generator reported as
skipped, a ladder end to end on the tiny random-weight pipeline at cheap settings, and its verdicts on
hand-built records."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_pipeline import save_tiny_pipeline

import genqlib.paper.generator_rung as rung_module
import genqlib.paper.ptq_runs as ptq_module
from genqlib.datasets import class_names, eval_split, run_classes
from genqlib.generate import load_pipeline, pipeline_id
from genqlib.paper import generator_ladder as gl
from genqlib.paper import ladder_verdicts as lv
from genqlib.paper.calibration import calibration_set
from genqlib.paper.generator_quant import _Builder, _calibration, _generators, gq_settings
from genqlib.paper.generator_rung import Rung, locate, parse_rung
from genqlib.paper.profiles import get_profile
from genqlib.paper.synthetic_pool import first_per_class
from genqlib.paper.verdict import AGAINST, RESOLVED, WITHIN
from genqlib.zoo import load_teacher

# ---------------------------------------------------------------- the rung parser


@pytest.mark.parametrize(
    ("text", "rung"),
    [
        ("generator-v1", Rung("generator-v1")),
        ("generator-v2@steps=5", Rung("generator-v2", 5)),
        ("generator-v2@w4a4", Rung("generator-v2", None, (4, 4))),
        ("generator-v2@W4A8@steps=3", Rung("generator-v2", 3, (4, 8))),
        ("/some/folder@steps=12", Rung("/some/folder", 12)),
    ],
)
def test_rung_parser_reads_each_form_and_writes_it_back(text, rung):
    assert parse_rung(text) == rung
    assert parse_rung(rung.spec) == rung  # the spec round-trips, modifiers in one order


@pytest.mark.parametrize(
    "text", ["", "@steps=5", "g@steps=0", "g@steps=x", "g@w4a4@w2a2", "g@steps=2@steps=3", "g@fast", "g@w1a4"]
)
def test_rung_parser_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="rung"):
        parse_rung(text)


def test_rung_tags_are_file_names_and_differ_between_rungs():
    rungs = [parse_rung(t) for t in gl.DEFAULT_RUNGS] + [Rung("/a/gen"), Rung("/b/gen")]
    tags = [r.tag for r in rungs]
    assert len(set(tags)) == len(tags)
    assert all("/" not in t and "@" not in t and "=" not in t for t in tags)


def test_a_missing_generator_is_located_as_missing_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(rung_module.GENERATORS, "ghost", tmp_path / "ghost")
    folder, why = locate(Rung("ghost"))
    assert folder is None and "ghost" in why and "holds none" in why
    folder, why = locate(Rung(str(tmp_path / "nowhere")))
    assert folder is None and "model_index.json" in why and "does not download" in why
    assert locate(Rung("generator-v1"))[1] is None  # the committed first generator is always there


# ---------------------------------------------------------------- end to end, cheap


def refuse_compute(*args, **kwargs):
    raise AssertionError("this run must come from the cache")


def test_a_two_rung_ladder_runs_end_to_end_and_reuses_notebook_04s_rows(tmp_path, monkeypatch):
    tiny = save_tiny_pipeline(tmp_path / "tiny")
    # the profile's own generator is the tiny one, so its rung is "notebook 04's GenQ"
    p = get_profile("ci").with_(generator=str(tiny), work_dir=tmp_path / "work")
    test = eval_split(p).subset(100, seed=0)
    s = gl.ladder_setting(p, seeds=(0,), n_calib=20, iters=2, test=test)  # one seed: 8 runs, a test's time
    monkeypatch.setitem(rung_module.GENERATORS, "ghost", tmp_path / "ghost")
    rungs = [str(tiny), f"{tiny}@steps=2", "ghost"]
    with pytest.warns(UserWarning, match="ghost skipped"):
        record = gl.run_ladder(rungs, s, jobs=1)

    by_spec = {r["rung"]: r for r in record["rungs"]}
    assert by_spec["ghost"]["status"] == "skipped" and "holds none" in by_spec["ghost"]["reason"]
    own, fewer = by_spec[str(tiny)], by_spec[f"{tiny}@steps=2"]
    assert own["notebook_04_rows"] and not fewer["notebook_04_rows"] and fewer["steps"] == 2
    for entry in (own, fewer):
        for cell in entry["top1"].values():
            assert cell["n"] == 1 and cell["seeds"] == [0] and len(cell["values"]) == 1
        assert 0.0 <= entry["metrics"]["class_fidelity"] <= 1.0 and entry["metrics"]["bn_distance"] > 0
    assert fewer["pool"] != own["pool"]
    assert {c["n"] for c in record["baselines"].values()} == {1}

    # the metrics against an independent computation: the teacher's argmax on the images the pool holds
    model = load_teacher(s.teacher)
    from genqlib.store import SyntheticSet

    pool = SyntheticSet.open(fewer["pool"])
    images = pool.images(size=p.image_size, channels=p.image_channels)
    with torch.no_grad():
        hits = (model.eval()(images).argmax(1) == pool.labels).float().mean().item()
    assert fewer["metrics"]["class_fidelity"] == pytest.approx(hits)

    # real, BN inversion and the profile rung's GenQ are notebook 04's runs: same cache keys, not recomputed
    monkeypatch.setattr(ptq_module, "_run_ptq", refuse_compute)
    for source in ("real", "bn_inversion", "genq", "genq_unfiltered"):
        options = {"iters": s.bn_inversion_iters} if source == "bn_inversion" else {}
        images = calibration_set(model, source, s.n_calib, p, s.teacher, s.work_dir, **options).images
        row = ptq_module.ptq_run(model, images, test, s.run(source, 0), s.work_dir / "ptq")
        cell = record["baselines"][source] if source in gl.BASELINES else own["top1"][source]
        assert row["top1"] == cell["values"][0]
    assert len(list((s.work_dir / "ladder" / "ptq").glob("*.json"))) == 2  # the other rung's 2 sources
    again = gl.run_ladder(rungs[:2], s, jobs=1)  # a rerun reads every run back
    cells = [c for r in again["rungs"] for c in r["top1"].values()] + list(again["baselines"].values())
    assert all(c["from_cache"] == 1 for c in cells)
    assert [r["top1"]["genq"]["values"] for r in again["rungs"]] == [
        own["top1"]["genq"]["values"],
        fewer["top1"]["genq"]["values"],
    ]

    # the record is written with its verdicts (two rungs: judged, here without spread) and its plot
    gl.write_record(record, tmp_path / "fig" / "ladder.json", "the command")
    written = json.loads((tmp_path / "fig" / "ladder.json").read_text())
    assert written["command"] == "the command" and written["rungs"][2]["status"] == "skipped"
    for question in ("crossing", "filter"):
        assert written["verdicts"][question]["answer"] not in (lv.TOO_FEW, None)
    assert written["verdicts"]["crossing"]["answer"] == lv.NOT_JUDGED  # one seed: no spread to judge by
    png = tmp_path / "fig" / "ladder.png"
    assert written["figure"] == str(png) and png.is_file() and png.with_suffix(".svg").is_file()
    # and each measured rung's first image per class, one row per rung, read back from its pool
    samples = gl.rung_samples(record)
    assert sorted(samples) == sorted([str(tiny), f"{tiny}@steps=2"])
    first = pool.subset(first_per_class(pool.labels, len(pool.labels.unique()))).images()
    torch.testing.assert_close(samples[f"{tiny}@steps=2"], first, rtol=0, atol=0)
    grid = tmp_path / "fig" / "ladder-samples.png"
    assert written["samples_figure"] == str(grid) and grid.is_file()


# ---------------------------------------------------------------- verdicts on hand-built records


def cell(*values: float) -> dict:
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
    return {"mean": mean, "std": std, "n": len(values), "values": list(values)}


def rung(name: str, fidelity: float, genq: tuple, unfiltered: tuple) -> dict:
    return {
        "rung": name,
        "status": "measured",
        "metrics": {"class_fidelity": fidelity},
        "top1": {"genq": cell(*genq), "genq_unfiltered": cell(*unfiltered)},
    }


def record(*rungs: dict, bn=(60.0, 60.2, 59.8)) -> dict:
    return {"rungs": list(rungs), "baselines": {"bn_inversion": cell(*bn), "real": cell(70.0, 70.1, 69.9)}}


def test_genq_crosses_bn_inversion_when_only_the_better_generators_beat_it():
    r = record(
        rung("worst", 0.5, (50.0, 50.2, 49.8), (45.0, 45.1, 44.9)),
        rung("best", 0.9, (65.0, 65.2, 64.8), (64.0, 64.1, 63.9)),
        rung("middle", 0.7, (58.0, 58.2, 57.8), (55.0, 55.1, 54.9)),
    )
    v = lv.crossing_verdict(r)
    assert v["answer"] == lv.CROSSES and "above from best" in v["detail"] and "up to middle" in v["detail"]
    assert [c.where.split()[0] for c in lv.crossing_claims(r)] == ["worst", "middle", "best"]  # by fidelity


def test_genq_does_not_cross_when_the_best_generator_stays_below_or_within_noise():
    below = record(
        rung("a", 0.5, (50, 50.2, 49.8), (49, 49.1, 48.9)), rung("b", 0.9, (55, 55.2, 54.8), (54, 54, 54))
    )
    assert lv.crossing_verdict(below)["answer"] == lv.BELOW
    noisy = record(
        rung("a", 0.5, (50, 50.2, 49.8), (49, 49, 49)), rung("b", 0.9, (60.3, 60.1, 60.2), (54, 54, 54))
    )
    v = lv.crossing_verdict(noisy)
    assert v["answer"] == lv.BELOW and WITHIN in v["detail"]
    above = record(
        rung("a", 0.5, (62, 62.2, 61.8), (61, 61, 61)), rung("b", 0.9, (66, 66.2, 65.8), (65, 65, 65))
    )
    assert lv.crossing_verdict(above)["answer"] == lv.ABOVE


def test_the_filter_gain_verdict_resolves_each_way_and_within_noise():
    grows = record(
        rung("bad", 0.4, (55, 55.2, 54.8), (45, 45.2, 44.8)),
        rung("good", 0.9, (66, 66.2, 65.8), (65, 65.2, 64.8)),
    )
    assert lv.filter_verdict(grows)["answer"] == RESOLVED  # gain 10 at the worst rung, 1 at the best
    shrinks = record(
        rung("bad", 0.4, (55, 55.2, 54.8), (54, 54.2, 53.8)),
        rung("good", 0.9, (66, 66.2, 65.8), (56, 56.2, 55.8)),
    )
    assert lv.filter_verdict(shrinks)["answer"] == AGAINST
    level = record(
        rung("bad", 0.4, (55, 56, 54), (54, 55, 53)), rung("good", 0.9, (66, 67, 65), (64.5, 65.5, 63.5))
    )
    assert lv.filter_verdict(level)["answer"] == WITHIN  # gains 1 and 1.5 against a range of 2


def test_a_verdict_with_fewer_than_two_measured_rungs_says_so_instead_of_claiming():
    skipped = {"rung": "generator-v2", "status": "skipped", "reason": "not trained yet"}
    r = record(rung("only", 0.5, (50, 50.2, 49.8), (45, 45, 45)), skipped)
    for v in (lv.crossing_verdict(r), lv.filter_verdict(r)):
        assert v["answer"] == lv.TOO_FEW and "generator-v2 (not trained yet)" in v["detail"]
    assert [c.claim for c in lv.filter_claims(r)] == ["GenQ filtered > unfiltered"]  # no worst-vs-best claim
    one_seed = record(rung("a", 0.5, (50,), (45,)), rung("b", 0.9, (65,), (60,)), bn=(60.0,))
    assert lv.crossing_verdict(one_seed)["answer"] == lv.NOT_JUDGED


def test_a_quantized_rung_is_the_generator_quantization_comparisons_ptq_generator(tmp_path):
    pipe = load_pipeline(save_tiny_pipeline(tmp_path / "tiny"))
    p = get_profile("ci")
    gpipe, facts = gl.quantized_pipeline(pipe, parse_rung("tiny@w4a4"), p, tmp_path / "work")
    cfg = facts["config"]
    assert (cfg["method"], cfg["w_bits"], cfg["a_bits"]) == ("ptq", 4, 4)
    assert gpipe.genq_quant["base"] == pipeline_id(pipe) and pipeline_id(gpipe) != pipeline_id(pipe)
    # the comparison's own builder, on its own calibration rows, finds the same generator in the shared cache
    s = gq_settings(p, widths=[(4, 4)])
    ((_, _, theirs_cfg),) = list(_generators(s, ("ptq",), False, p.seed, (4, 4)))
    calib = _calibration(pipe, p, list(run_classes(p)), class_names(p), s)
    theirs, _ = _Builder(pipe, calib, [], tmp_path / "work" / "gen_quant").build(theirs_cfg)
    assert pipeline_id(theirs) == pipeline_id(gpipe)
    assert len(list((tmp_path / "work" / "gen_quant").glob("*.pt"))) == 1
