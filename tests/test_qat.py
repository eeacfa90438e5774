"""QAT: GenQ's offset starts at the PTQ model and trains only what it should; LSQ gradients; resume; errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from bn_helpers import randomise_bn
from torch import nn

from genqlib.quant import (
    QATConfig,
    QuantConfig,
    ReconConfig,
    fp_weight,
    qat,
    quantize,
    reconstruct,
    weight_quantizer,
)
from genqlib.quant.qat import epoch_order, qat_loss, training_data
from genqlib.quant.quantizer import ActQuantizer
from genqlib.zoo import build_teacher
from genqlib.zoo.models import ResNet


def tiny_resnet(seed: int = 0) -> nn.Module:
    """A two-stage ResNet with non-trivial BatchNorm statistics (so folding has work to do)."""
    torch.manual_seed(seed)
    return randomise_bn(ResNet(widths=(8, 16), depth=1), seed)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def nearest(model: nn.Module, x: torch.Tensor, bits: int = 4):
    """Nearest rounding + calibrated activation steps: LSQ's start."""
    cfg = ReconConfig(method="nearest", iters=0, init_size=64, progress=False)
    return reconstruct(quantize(model, QuantConfig(bits, bits)), model, x, cfg)


def ptq(model: nn.Module, x: torch.Tensor, bits: int = 4):
    """A (short) BRECQ reconstruction: GenQ QAT's start."""
    cfg = ReconConfig(method="brecq", iters=10, batch_size=16, init_size=64, lr_round=1e-2, progress=False)
    return reconstruct(quantize(model, QuantConfig(bits, bits)), model, x, cfg)


def config(mode: str, **kw) -> QATConfig:
    return QATConfig(**{"mode": mode, "epochs": 1, "batch_size": 16, "progress": False, **kw})


def act_steps(qmodel) -> list[torch.Tensor]:
    return [m.step.detach().clone() for m in qmodel.modules() if isinstance(m, ActQuantizer)]


@pytest.fixture(scope="module")
def setup():
    model, x = tiny_resnet(), images(48)
    return model, x, ptq(model, x), nearest(model, x)


def test_quantized_teachers_have_no_batchnorm_left():
    for name in ("resnet", "mobilenet"):
        qmodel = quantize(build_teacher(name).eval(), QuantConfig(4, 4))
        assert not [m for m in qmodel.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_genq_starts_at_the_ptq_model_and_trains_only_u_and_act_steps(setup):
    model, x, start, _ = setup
    qmodel, probe = copy.deepcopy(start), images(8, seed=5)
    with torch.no_grad():
        ptq_out = start(probe)
    seen = []

    def eval_fn(m):
        layers = m.layers().values()
        with torch.no_grad():
            seen.append((m(probe), [weight_quantizer(layer).offset.clone() for layer in layers]))
        return 0.0

    result = qat(qmodel, model, x, config("genq", epochs=2, lr=0.05), eval_fn)
    out0, offsets0 = seen[0]
    assert torch.equal(out0, ptq_out), "u = 0 must give exactly the PTQ model"
    assert all(not u.any() for u in offsets0)
    frozen = [k for k in start.state_dict() if not k.startswith("acts.")]
    before, after = start.state_dict(), qmodel.state_dict()
    for k in frozen:  # weights, biases, V, floor(w/s), weight steps, zero points
        assert torch.equal(before[k], after[k]), k
    assert any(weight_quantizer(layer).offset.abs().sum() > 0 for layer in qmodel.layers().values())
    assert any(not torch.equal(a, b) for a, b in zip(act_steps(start), act_steps(qmodel), strict=True))
    assert not any(p.requires_grad for p in qmodel.parameters()), "frozen again afterwards"
    assert len(result.history) == 2 and result.resumed_from == 0


def test_genq_strict_reading_learns_only_u(setup):
    model, x, start, _ = setup
    qmodel = copy.deepcopy(start)
    qat(qmodel, model, x, config("genq", learn_steps="none", lr=0.05))
    assert all(torch.equal(a, b) for a, b in zip(act_steps(start), act_steps(qmodel), strict=True))


def test_lsq_gradients_are_straight_through_with_lsq_step_scale(setup):
    model, x, _, start = setup
    qmodel, lr = copy.deepcopy(start), 0.01
    qat(qmodel, model, x, config("lsq", lr=lr, momentum=0.0, batch_size=len(x)))  # one SGD step
    ref = copy.deepcopy(start).requires_grad_(True)
    qat_loss(ref(x), model(x).detach(), "kd", 1.0).backward()
    for name, layer in ref.layers().items():
        new = qmodel.layers()[name]
        wq, w = weight_quantizer(layer), fp_weight(layer)
        new_wq, new_w = weight_quantizer(new), fp_weight(new)
        g = 1.0 / math.sqrt(w[0].numel() * wq.qmax)
        torch.testing.assert_close(new_w - w, -lr * w.grad, atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(new_wq.step - wq.step, -lr * g * wq.step.grad, atol=1e-8, rtol=1e-3)
        assert not torch.equal(new_w, w) and not torch.equal(new_wq.step, wq.step)
    assert any(not torch.equal(a, b) for a, b in zip(act_steps(start), act_steps(qmodel), strict=True))


def test_resume_after_interruption_equals_an_uninterrupted_run(setup, tmp_path):
    model, x, _, start = setup
    cfg = config("lsq", epochs=2, lr=0.02, checkpoint_dir=tmp_path)
    straight = copy.deepcopy(start)
    full = qat(straight, model, x, QATConfig(**{**cfg.__dict__, "checkpoint_dir": None}))

    calls = []

    def interrupt(m):
        calls.append(1)
        if len(calls) == 3:  # initial eval, epoch 1, then stop inside epoch 2 (before its checkpoint)
            raise KeyboardInterrupt
        return float(len(calls))

    with pytest.raises(KeyboardInterrupt):
        qat(copy.deepcopy(start), model, x, cfg, interrupt)
    resumed_model = copy.deepcopy(start)
    resumed = qat(resumed_model, model, x, cfg, lambda m: -1.0)
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    assert resumed.initial_eval == 1.0 and resumed.history[0]["eval"] == 2.0
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    with pytest.raises(ValueError, match="lr"):
        qat(copy.deepcopy(start), model, x, QATConfig(**{**cfg.__dict__, "lr": 0.03}))


def test_loss_goes_down_with_kd_and_soft_label_ce(setup):
    model, x, ptq_start, start = setup
    lsq = qat(copy.deepcopy(start), model, x, config("lsq", epochs=4, lr=0.02))
    losses = [h["loss"] for h in lsq.history]
    assert losses[-1] < losses[0]
    soft = torch.softmax(model(x).detach() * 2, 1)
    ce = qat(copy.deepcopy(start), model, (x, soft), config("lsq", epochs=4, lr=0.02, loss="ce"))
    assert ce.history[-1]["loss"] < ce.history[0]["loss"]
    genq = qat(copy.deepcopy(ptq_start), model, x, config("genq", epochs=4, lr=0.05))
    assert genq.history[-1]["loss"] < genq.history[0]["loss"]


def test_data_forms_and_epoch_order():
    x = images(6)
    assert training_data(x)[1] is None
    _, hard = training_data((x, torch.arange(6)))
    assert hard.dtype == torch.long
    _, soft = training_data((x, torch.ones(6, 3)))
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 3))
    assert not torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 4))


def test_bad_values_raise_errors_naming_the_field(setup):
    model, x, ptq_start, start = setup
    for field, value in [
        ("mode", "adam"),
        ("loss", "mse"),
        ("learn_steps", "bias"),
        ("epochs", -1),
        ("lr", 0.0),
        ("batch_size", 0),
        ("temperature", 0),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
    ]:
        with pytest.raises(ValueError, match=f"QATConfig.{field}"):
            QATConfig(**{field: value})
    with pytest.raises(ValueError, match="loss='ce' needs labels"):
        qat(copy.deepcopy(start), model, x, config("lsq", loss="ce"))
    with pytest.raises(ValueError, match="mode='lsq'"):
        qat(copy.deepcopy(ptq_start), model, x, config("lsq"))
    with pytest.raises(ValueError, match="not calibrated"):
        qat(quantize(model, QuantConfig(4, 4)), model, x, config("lsq"))
    with pytest.raises(ValueError, match="labels must have shape"):
        qat(copy.deepcopy(start), model, (x, torch.zeros(3)), config("lsq"))
    with pytest.raises(TypeError, match="data must be"):
        qat(copy.deepcopy(start), model, "images", config("lsq"))


def test_qat_runs_cache_rows_and_the_ptq_start(setup, tmp_path):
    from genqlib.fashion_mnist import Split
    from genqlib.paper.qat_runs import QATRun, ptq_start, qat_run

    model, x, _, _ = setup
    test = Split("test", images(40, seed=3), torch.arange(40) % 10)
    configs = dict(
        quant=QuantConfig(4, 4),
        recon=ReconConfig(iters=5, batch_size=16, lr_round=1e-2),
        qat=QATConfig(epochs=1, lr=0.01, batch_size=16, loss="kd", temperature=1.0),
    )
    run = QATRun("tiny", "ptq_start", "genq", len(x), **configs)
    first, row = ptq_start(model, x, test, run, tmp_path)
    again, cached = ptq_start(model, x, test, run, tmp_path)
    assert not row["from_cache"] and cached["from_cache"] and cached["top1"] == row["top1"]
    with torch.no_grad():
        assert torch.equal(first(x), again(x)), "the stored PTQ start reloads exactly"
    genq = QATRun("tiny", "genq", "genq", len(x), **configs)
    rows = [qat_run(model, lambda: first, x, test, genq, tmp_path) for _ in range(2)]
    assert [r["from_cache"] for r in rows] == [False, True] and rows[0]["top1"] == rows[1]["top1"]
    assert len(rows[0]["curve"]["top1"]) == 2 and rows[0]["curve"]["top1"][0] == row["top1"]
    assert row["threads"] == rows[0]["threads"] == torch.get_num_threads()  # what a replicate is compared on
    assert rows[0]["machine"]["threads"] == torch.get_num_threads() and "torch" in row["machine"]
    assert {"recon_iters", "batch_size", "first_last_bits"} <= set(row) and "lr" not in row
    assert {"recon_iters", "epochs", "lr", "loss"} <= set(rows[0])


def test_qat_curves_score_a_fixed_subset_and_the_row_every_test_image(setup, tmp_path, monkeypatch):
    import genqlib.paper.qat_runs as qr
    from genqlib.fashion_mnist import Split

    model, x, _, _ = setup
    test = Split("test", images(40, seed=3), torch.arange(40) % 10)
    monkeypatch.setattr(qr, "CURVE_EVAL", 20)
    subset = qr.curve_split(test)
    assert len(subset) == 20 and torch.bincount(subset.labels).tolist() == [2] * 10
    configs = dict(
        quant=QuantConfig(4, 4),
        recon=ReconConfig(iters=5, batch_size=16, lr_round=1e-2),
        qat=QATConfig(epochs=2, lr=0.01, batch_size=16, loss="kd", temperature=1.0),
    )
    start, _ = qr.ptq_start(
        model, x, test, qr.QATRun("tiny", "ptq_start", "genq", len(x), **configs), tmp_path
    )
    run = qr.QATRun("tiny", "genq", "genq", len(x), **configs)
    row = qr.qat_run(model, lambda: start, x, test, run, tmp_path)
    trained = copy.deepcopy(start)  # oracle: the same training, every epoch scored on all 40 images
    result = qat(trained, model, x, run.qat_config(), qr.scorer(model, test))
    assert (row["n_eval"], row["curve"]["n_eval"], len(row["curve"]["top1"])) == (40, 20, 3)
    assert (row["top1"], row["agreement"]) == (result.final_eval["top1"], result.final_eval["agreement"])
    assert row["curve"]["top1"][-1] == qr.scorer(model, subset)(trained)["top1"]


def test_qat_grid_in_workers_repeats_the_one_thread_units_bit_for_bit(setup, tmp_path):
    from genqlib.fashion_mnist import Split
    from genqlib.paper.qat_runs import QATRun, QATUnit, qat_grid, unit_rows

    model, x, _, _ = setup
    test = Split("test", images(40, seed=3), torch.arange(40) % 10)
    data = (x, torch.arange(len(x)) % 10)
    configs = dict(quant=QuantConfig(4, 4), recon=ReconConfig(iters=5, batch_size=16, lr_round=1e-2))

    def unit(seed: int) -> QATUnit:
        train = QATConfig(epochs=1, lr=0.01, batch_size=16, seed=seed)
        runs = [
            QATRun("tiny", mode, src, len(x), **configs, qat=train)
            for mode, src in (("ptq_start", "genq"), ("genq", "genq"), ("lsq", "real"))
        ]
        return QATUnit(model, data, data, *runs)

    units = [unit(0), unit(1)]
    rows = qat_grid(units, test, tmp_path / "workers", jobs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        oracle = [row for u in units for row in unit_rows(u, test, tmp_path / "here")]
    finally:
        torch.set_num_threads(threads)
    assert [r["mode"] for r in rows] == ["ptq_start", "genq", "lsq"] * 2
    assert [r["threads"] for r in rows] == [1] * 6 and not any(r["from_cache"] for r in rows)
    assert [r["curve"] for r in rows] == [r["curve"] for r in oracle]  # every epoch's top-1 and agreement
    assert all(r["from_cache"] for r in qat_grid(units, test, tmp_path / "workers", jobs=2))
