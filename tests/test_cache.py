"""The one content-addressed cache: keys follow every config field and input digest, writes are atomic, and
an interrupted step resumes from its checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from genqlib.infra.atomic import TMP_PREFIX
from genqlib.infra.result_cache import Checkpoint, cached_json, cached_tensors, digest, entry_path, make_key
from genqlib.paper.ptq_runs import PTQRun
from genqlib.quant import QuantConfig, ReconConfig


def test_digest_follows_tensors_modules_and_values():
    x = torch.arange(6.0)
    assert digest(x) == digest(x.clone()) != digest(x.reshape(2, 3)) != digest(x.double())
    model = nn.Linear(2, 2)
    before = digest(model)
    with torch.no_grad():
        model.weight[0, 0] += 1
    assert digest(model) != before
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 2, "b": [1, 2]})


def test_the_key_changes_with_any_config_field_or_input_digest(tmp_path):
    run = PTQRun("resnet", "genq", 64, QuantConfig(4, 4), ReconConfig(iters=20))
    base = entry_path(tmp_path, run.label, make_key(run.config(), calib="a", eval="e"))
    changed = [
        replace(run, quant=replace(run.quant, a_bits=3)),
        replace(run, quant=replace(run.quant, first_last_bits=None)),
        replace(run, recon=replace(run.recon, drop_prob=0.4)),  # a field the flat row does not show
        replace(run, recon=replace(run.recon, seed=1)),
        replace(run, source="real"),
    ]
    paths = {entry_path(tmp_path, r.label, make_key(r.config(), calib="a", eval="e")) for r in changed}
    assert base not in paths and len(paths) == len(changed)
    assert entry_path(tmp_path, run.label, make_key(run.config(), calib="b", eval="e")) != base
    assert entry_path(tmp_path, run.label, make_key(run.config(), calib="a", eval="f")) != base
    quiet = replace(run, recon=replace(run.recon, progress=False))  # a progress bar is not a setting
    assert entry_path(tmp_path, run.label, make_key(quiet.config(), calib="a", eval="e")) == base
    assert json.loads(json.dumps(asdict(run.quant))) == run.config()["quant"]


def test_cached_json_computes_once_and_an_interrupted_write_leaves_nothing(tmp_path):
    key = make_key({"n": 1}, data="x")
    calls = []

    def interrupted():
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_json(tmp_path, "step", key, interrupted)
    path = entry_path(tmp_path, "step", key)
    path.with_name(f"{TMP_PREFIX}123-{path.name}").write_text("{half")  # a write killed mid-file
    assert not path.exists()
    first = cached_json(tmp_path, "step", key, lambda: calls.append(1) or {"top1": 1.5})
    again = cached_json(tmp_path, "step", key, lambda: calls.append(1) or {"top1": 0.0})
    assert (first, again) == ({"top1": 1.5, "from_cache": False}, {"top1": 1.5, "from_cache": True})
    assert len(calls) == 2
    other = cached_json(tmp_path, "step", make_key({"n": 2}, data="x"), lambda: {"top1": 2.0})
    assert other["top1"] == 2.0 and not other["from_cache"]


def test_cached_tensors_stores_tensors_with_their_key_and_metadata(tmp_path):
    key = make_key({"iters": 3}, weights="w")
    made = []

    def compute():
        made.append(1)
        return {"images": torch.rand(2, 1, 4, 4)}, {"seconds": 1.25}

    first, meta, cached = cached_tensors(tmp_path, "inv", key, compute)
    again, meta2, cached2 = cached_tensors(tmp_path, "inv", key, compute)
    assert (cached, cached2, meta, meta2) == (False, True, {"seconds": 1.25}, {"seconds": 1.25})
    assert torch.equal(first["images"], again["images"]) and len(made) == 1


def test_a_checkpoint_resumes_its_own_step_and_refuses_another(tmp_path, monkeypatch):
    key = {"run": "a", "steps": 10}
    ckpt = Checkpoint(tmp_path / "ckpt.pt", key)
    assert ckpt.load() is None
    ckpt.save({"step": 3, "weights": torch.ones(2)})

    def killed(obj, path):  # the process dies half-way through writing the next checkpoint
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save({"step": 4, "weights": torch.zeros(2)})
    monkeypatch.undo()
    resumed = Checkpoint(tmp_path / "ckpt.pt", key).load()  # step 3 is intact, no stray file is left
    assert resumed["step"] == 3 and torch.equal(resumed["weights"], torch.ones(2))
    assert [f.name for f in tmp_path.iterdir()] == ["ckpt.pt"]
    with pytest.raises(ValueError, match=r"another run \(differs in \['steps'\]\)"):
        Checkpoint(tmp_path / "ckpt.pt", {"run": "a", "steps": 20}).load()
