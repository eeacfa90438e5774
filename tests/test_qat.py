"""QAT: GenQ's offset starts at the PTQ model and trains only what it should; LSQ gradients; resume; errors."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from bn_helpers import randomise_bn
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

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


def nearest(model: nn.Module, x: torch.Tensor, bits: int = 4, fold_bn: bool = False):
    """Nearest rounding + calibrated activation steps: LSQ's start (BatchNorms kept, as LSQ trains them)."""
    cfg = ReconConfig(method="nearest", iters=0, init_size=64, progress=False)
    return reconstruct(quantize(model, QuantConfig(bits, bits, fold_bn=fold_bn)), model, x, cfg)


def ptq(model: nn.Module, x: torch.Tensor, bits: int = 4):
    """A (short) BRECQ reconstruction: GenQ QAT's start."""
    cfg = ReconConfig(method="brecq", iters=10, batch_size=16, init_size=64, lr_round=1e-2, progress=False)
    return reconstruct(quantize(model, QuantConfig(bits, bits)), model, x, cfg)


def config(mode: str, **kw) -> QATConfig:
    return QATConfig(**{"mode": mode, "epochs": 1, "batch_size": 16, "progress": False, **kw})


def bns(qmodel) -> dict[str, nn.Module]:
    return {n: m for n, m in qmodel.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


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
    qmodel, lr, wd = copy.deepcopy(start), 0.01, 1e-4  # LSQ's recipe at 4 bits (momentum off: one plain step)
    qat(qmodel, model, x, config("lsq", momentum=0.0, batch_size=len(x)))  # one SGD step
    ref = copy.deepcopy(start).train().requires_grad_(True)  # LSQ trains BatchNorm in train mode
    qat_loss(ref(x), model(x).detach(), "kd", 1.0).backward()
    for name, layer in ref.layers().items():
        new = qmodel.layers()[name]
        wq, w = weight_quantizer(layer), fp_weight(layer)
        new_wq, new_w = weight_quantizer(new), fp_weight(new)
        g = 1.0 / math.sqrt(w[0].numel() * wq.qmax)
        torch.testing.assert_close(new_w - w, -lr * (w.grad + wd * w), atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(new_wq.step - wq.step, -lr * g * wq.step.grad, atol=1e-8, rtol=1e-3)
        assert not torch.equal(new_w, w) and not torch.equal(new_wq.step, wq.step)
    for (name, bn), new_bn in zip(
        bns(ref).items(), bns(qmodel).values(), strict=True
    ):  # no decay on BN's affine
        torch.testing.assert_close(new_bn.weight - bn.weight, -lr * bn.weight.grad, atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(new_bn.running_mean, bn.running_mean, msg=name)
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
        ("batchnorm", "eval"),
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
    recon = ReconConfig(iters=5, batch_size=16, lr_round=1e-2)

    def unit(seed: int) -> QATUnit:
        train = QATConfig(epochs=1, lr=0.01, batch_size=16, seed=seed)
        runs = [  # LSQ keeps its BatchNorms and trains them
            QATRun("tiny", mode, src, len(x), QuantConfig(4, 4, fold_bn=mode != "lsq"), recon, train)
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


# ---------------------------------------------------------------- LSQ's recipe, as its paper runs it

# (setting, value): LSQ (Esser et al. 2020) section 3: SGD momentum 0.9, cosine decay without restarts, lr 0.01
# at 2-4 bits; section 3.1: weight decay 1e-4, halved at 3 bits, quartered at 2; BatchNorm kept and trained.
LSQ_PAPER = [
    ("lr", 0.01),
    ("momentum", 0.9),
    ("schedule", "cosine"),
    ("batchnorm", "train"),
    ("weight_decay@8", 1e-4),
    ("weight_decay@4", 1e-4),
    ("weight_decay@3", 0.5e-4),
    ("weight_decay@2", 0.25e-4),
]
GENQ_PAPER = [("lr", 1e-3), ("momentum", 0.9), ("schedule", "cosine"), ("batchnorm", "frozen")]
GENQ_PAPER += [("weight_decay@4", 0.0), ("weight_decay@2", 0.0)]


def recipe_value(mode: str, setting: str):
    name, _, bits = setting.partition("@")
    return getattr(QATConfig(mode=mode).recipe(int(bits or 4)), name)


@pytest.mark.parametrize(("setting", "value"), LSQ_PAPER)
def test_lsq_recipe_is_lsq_papers(setting, value):
    assert recipe_value("lsq", setting) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(("setting", "value"), GENQ_PAPER)
def test_genq_recipe_stays_genqs(setting, value):
    assert recipe_value("genq", setting) == pytest.approx(value, rel=1e-12)


def test_given_settings_override_the_recipe():
    r = QATConfig(mode="lsq", lr=0.02, momentum=0.5, weight_decay=0.0, batchnorm="frozen").recipe(2)
    assert (r.lr, r.momentum, r.weight_decay, r.batchnorm) == (0.02, 0.5, 0.0, "frozen")


def test_lsq_follows_a_cosine_from_001_with_its_momentum_and_weight_decay(setup):
    """The lr, momentum and weight decay the optimiser actually uses at each step, against the closed form
    lr_k = 0.01 * (1 + cos(pi k / K)) / 2 over all K steps (3 epochs of 3 batches)."""
    model, x, _, start = setup
    seen = []

    def record(optimizer, args, kwargs):
        groups = {g["name"]: g for g in optimizer.param_groups}
        seen.append(
            (groups["weights"]["lr"], groups["weights"]["momentum"], groups["weights"]["weight_decay"])
        )
        seen[-1] += (groups["vectors"]["weight_decay"], groups["steps"]["weight_decay"])

    handle = register_optimizer_step_pre_hook(record)
    try:
        result = qat(copy.deepcopy(start), model, x, config("lsq", epochs=3))
    finally:
        handle.remove()
    k_total = 3 * math.ceil(len(x) / 16)
    expected = [0.01 * (1 + math.cos(math.pi * k / k_total)) / 2 for k in range(k_total)]
    assert [s[0] for s in seen] == pytest.approx(expected, rel=1e-9)
    assert {s[1:] for s in seen} == {(0.9, 1e-4, 0.0, 0.0)}
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result.recipe["lr"] == 0.01 and result.recipe["batchnorm"] == "train"


def test_lsq_keeps_batchnorm_and_trains_it_in_train_mode(setup):
    model, x, _, start = setup
    qmodel, modes = copy.deepcopy(start), []
    assert len(bns(qmodel)) == len(bns(model)) > 0, "LSQ's start keeps every BatchNorm"
    hook = next(iter(bns(qmodel).values())).register_forward_pre_hook(lambda m, a: modes.append(m.training))
    evals = []
    qat(qmodel, model, x, config("lsq", epochs=2), lambda m: evals.append(m.training))
    hook.remove()
    steps = 2 * math.ceil(len(x) / 16)
    assert modes.count(True) == steps and not any(evals), "train mode for steps, eval mode for evaluation"
    assert not qmodel.training
    for (name, before), after in zip(bns(start).items(), bns(qmodel).values(), strict=True):
        assert not torch.equal(before.running_mean, after.running_mean), f"{name}: running statistics"
        assert not torch.equal(before.weight, after.weight), f"{name}: affine weight learned"
        assert after.num_batches_tracked == before.num_batches_tracked + steps


def test_genq_runs_frozen_and_lsq_on_a_folded_model_warns(setup):
    model, x, ptq_start, _ = setup
    qmodel, modes = copy.deepcopy(ptq_start), []
    layer = next(iter(qmodel.layers().values()))
    hook = layer.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    qat(qmodel, model, x, config("genq"))
    hook.remove()
    assert modes and not any(modes), "GenQ's QAT trains in eval mode (BN folded)"
    with pytest.warns(UserWarning, match="fold_bn=False"):
        qat(nearest(model, x, fold_bn=True), model, x, config("lsq"))


def test_unfolded_batchnorm_is_reported_kept_without_a_warning():
    model = tiny_resnet()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qmodel = quantize(model, QuantConfig(4, 4, fold_bn=False))
    assert len(bns(qmodel)) == len(bns(model)) and "fold_bn=False" in qmodel.summary()


def test_profile_runs_give_lsq_its_recipe_and_unfolded_batchnorm():
    from genqlib.paper.qat_runs import profile_qat_run

    lsq = profile_qat_run("ci", "resnet", (3, 3), "lsq", "real", 16)
    genq = profile_qat_run("ci", "resnet", (3, 3), "genq", "genq", 16)
    assert not lsq.quant.fold_bn and genq.quant.fold_bn
    row = lsq.fields()
    assert (row["lr"], row["momentum"], row["weight_decay"], row["batchnorm"]) == (0.01, 0.9, 0.5e-4, "train")
    assert (genq.fields()["lr"], genq.fields()["weight_decay"]) == (1e-3, 0.0)
    assert lsq.config()["qat"]["recipe"]["lr"] == 0.01


def test_every_lsq_deviation_is_named_in_the_docs_and_notebook_05():
    import json
    from pathlib import Path

    from genqlib.quant.qat_recipe import LSQ_DEVIATIONS

    root = Path(__file__).resolve().parents[1]
    cells = json.loads((root / "notebooks/05_qat.ipynb").read_text())["cells"]
    notebook = " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for name, text in (
        ("docs/QUANTIZATION.md", (root / "docs/QUANTIZATION.md").read_text()),
        ("05", notebook),
    ):
        flat = " ".join(text.split())
        missing = [d for d in LSQ_DEVIATIONS if " ".join(d.split()) not in flat]
        assert not missing, f"{name} does not name: {missing}"


def test_lsq_trains_the_batchnorms_of_a_transformers_resnet():
    """LSQ's recipe on a model nobody here wrote (a transformers ResNet from its config): its BatchNorms stay
    unfolded, train in train mode (running statistics and affine weights move) and the model ends in eval."""
    from test_quant_models import SIZE, hf

    model = randomise_bn(hf("resnet_basic").eval(), 0)
    x = torch.rand(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    cfg = ReconConfig(method="nearest", iters=0, init_size=32, progress=False)
    start = reconstruct(quantize(model, QuantConfig(4, 4, fold_bn=False), example=x[:4]), model, x, cfg)
    assert len(bns(start)) == len(bns(model)) > 0
    qmodel = copy.deepcopy(start)
    result = qat(qmodel, model, x, config("lsq", epochs=1))
    steps = math.ceil(len(x) / 16)
    assert result.recipe["batchnorm"] == "train" and not qmodel.training
    for (name, before), after in zip(bns(start).items(), bns(qmodel).values(), strict=True):
        assert not torch.equal(before.running_mean, after.running_mean), f"{name}: running statistics"
        assert not torch.equal(before.weight, after.weight), f"{name}: affine weight learned"
        assert after.num_batches_tracked == before.num_batches_tracked + steps
