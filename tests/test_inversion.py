"""Style-token inversion (genqlib.inversion) on the tiny random-weight StableDiffusionPipeline.

The tiny pipeline's tokenizer is character-level, so the init word is a single character ("a").
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_pipeline import save_tiny_pipeline

import genqlib.inversion as inversion
from genqlib.fashion_mnist import CLASS_NAMES, Split
from genqlib.generate import generate, load_pipeline
from genqlib.inversion import learn_style_token, load_style_token, to_vae_input
from genqlib.zoo.web_shift import pad_clean

FAST = {
    "init_word": "a",
    "steps": 4,
    "lr": 0.05,
    "batch_size": 4,
    "progress": False,
    "class_names": CLASS_NAMES,
}


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd_inversion"))


@pytest.fixture
def pipe(pipe_dir):
    return load_pipeline(pipe_dir)


@pytest.fixture(scope="module")
def shots():
    gen = torch.Generator().manual_seed(0)
    return Split("toy", torch.rand(3, 1, 28, 28, generator=gen), torch.tensor([0, 1, 8]))


def _snapshot(pipe) -> dict[str, torch.Tensor]:
    parts = {"unet": pipe.unet, "vae": pipe.vae, "text": pipe.text_encoder}
    return {f"{n}.{k}": v.detach().clone() for n, m in parts.items() for k, v in m.state_dict().items()}


def test_to_vae_input_pads_like_training_and_resizes_for_sd():
    images = torch.rand(2, 1, 28, 28)
    mini = SimpleNamespace(
        unet=SimpleNamespace(config=SimpleNamespace(sample_size=8)),
        vae=SimpleNamespace(config=SimpleNamespace(in_channels=1)),
        vae_scale_factor=4,
    )
    assert torch.equal(to_vae_input(images, mini), pad_clean(images) * 2 - 1)
    sd = SimpleNamespace(
        unet=SimpleNamespace(config=SimpleNamespace(sample_size=64)),
        vae=SimpleNamespace(config=SimpleNamespace(in_channels=3)),
        vae_scale_factor=8,
    )
    x = to_vae_input(images, sd)
    assert x.shape == (2, 3, 512, 512) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])


def _assert_only_new_row_changed(pipe, before: dict[str, torch.Tensor], row: torch.Tensor) -> None:
    """Every weight of ``pipe`` equals ``before`` except the embedding matrix's one new row, which is ``row``."""
    after = _snapshot(pipe)
    assert before.keys() == after.keys()
    weight = pipe.text_encoder.get_input_embeddings().weight
    emb = next(f"text.{k}" for k, v in pipe.text_encoder.named_parameters() if v is weight)
    for name in before:
        if name != emb:
            assert torch.equal(before[name], after[name]), name
    n_old = before[emb].shape[0]
    assert after[emb].shape[0] == n_old + 1 and pipe.tokenizer.convert_tokens_to_ids("<s>") == n_old
    assert torch.equal(after[emb][:n_old], before[emb])
    assert torch.equal(after[emb][n_old], row.to(weight.dtype))


def test_only_the_new_row_changes(pipe, shots):
    before = _snapshot(pipe)
    flags = {id(p): p.requires_grad for p in pipe.unet.parameters()}
    init_row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("a")]
    token = learn_style_token(pipe, shots, **FAST)
    _assert_only_new_row_changed(pipe, before, token.embedding)
    assert not torch.equal(token.embedding, init_row.detach())
    assert len(token.losses) == FAST["steps"] and token.path is None
    assert {id(p): p.requires_grad for p in pipe.unet.parameters()} == flags


def test_saved_file_loads_into_a_fresh_pipeline(pipe, pipe_dir, shots, tmp_path):
    token = learn_style_token(pipe, shots, out=tmp_path / "tok.safetensors", **FAST)
    state = load_file(token.path)
    assert list(state) == ["<s>"] and state["<s>"].shape == (32,)
    fresh = load_pipeline(pipe_dir)
    fresh.load_textual_inversion(str(token.path))
    row = fresh.text_encoder.get_input_embeddings().weight[fresh.tokenizer.convert_tokens_to_ids("<s>")]
    assert torch.equal(row, token.embedding)
    name, vector, meta = load_style_token(token.path)
    assert name == "<s>" and torch.equal(vector, token.embedding) and meta["losses"] == token.losses


def test_errors(pipe, shots):
    with pytest.raises(ValueError, match="'a' is already in the tokenizer"):
        learn_style_token(pipe, shots, placeholder="a", **FAST)
    with pytest.raises(ValueError, match="class_names"):
        learn_style_token(pipe, shots, **{**FAST, "class_names": None})  # label indices need names
    with pytest.raises(ValueError, match="shots"):
        learn_style_token(pipe, [], **FAST)
    with pytest.raises(ValueError, match="shots"):
        learn_style_token(
            pipe, Split("none", torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), **FAST
        )
    with pytest.raises(ValueError, match="init_word 'photo' must be a single token"):
        learn_style_token(pipe, shots, **{**FAST, "init_word": "photo"})
    assert "<s>" not in pipe.tokenizer.get_vocab()  # a failed call leaves the tokenizer alone
    learn_style_token(pipe, shots, **FAST)
    with pytest.raises(ValueError, match="'<s>' is already in the tokenizer"):
        learn_style_token(pipe, shots, **FAST)


def _held_out_loss(pipe, shots, row: torch.Tensor) -> float:
    """Eq. 11 on fixed draws that training never saw, with ``row`` as the token's embedding."""
    names = ["T-shirt/top", "Trouser", "Bag"]
    token_id = pipe.tokenizer.convert_tokens_to_ids("<s>")
    ids, classes = inversion._prompt_ids(pipe, names, "<s>", token_id)
    objective = inversion._Objective(pipe, ids, torch.arange(3))
    mean, std = inversion._encode_posterior(pipe, to_vae_input(shots.images, pipe))
    with torch.no_grad(), inversion._TrainableRow(pipe, token_id, row):
        return sum(objective(inversion._draw(10_000 + s, 0, mean, std, 32, 1000)).item() for s in range(5))


def test_loss_goes_down_on_held_out_draws(pipe, shots):
    token = learn_style_token(pipe, shots, **{**FAST, "steps": 30, "batch_size": 16})
    init = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("a")].detach()
    assert _held_out_loss(pipe, shots, token.embedding) < _held_out_loss(pipe, shots, init)


def test_resume_matches_an_uninterrupted_run_and_reuses_the_file(pipe_dir, shots, tmp_path, monkeypatch):
    settings = {**FAST, "steps": 6, "checkpoint_every": 2}
    straight = learn_style_token(load_pipeline(pipe_dir), shots, out=tmp_path / "a.safetensors", **settings)
    calls = {"n": 0}
    original = inversion._Objective.__call__

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(inversion._Objective, "__call__", failing)
    out = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        learn_style_token(load_pipeline(pipe_dir), shots, out=out, **settings)
    assert (tmp_path / "b.safetensors.ckpt").is_file() and not out.exists()
    monkeypatch.setattr(inversion._Objective, "__call__", original)
    resumed = learn_style_token(load_pipeline(pipe_dir), shots, out=out, **settings)
    assert torch.equal(resumed.embedding, straight.embedding) and resumed.losses == straight.losses
    assert not (tmp_path / "b.safetensors.ckpt").exists()
    monkeypatch.setattr(inversion, "_train", lambda *a, **k: pytest.fail("should reuse the file"))
    again = load_pipeline(pipe_dir)
    cached = learn_style_token(again, shots, out=out, **settings)
    assert cached.from_cache and torch.equal(cached.embedding, straight.embedding)
    row = again.text_encoder.get_input_embeddings().weight[again.tokenizer.convert_tokens_to_ids("<s>")]
    assert torch.equal(row, straight.embedding)


def test_generate_with_the_token_file(pipe, pipe_dir, shots, tmp_path):
    token = learn_style_token(pipe, shots, out=tmp_path / "tok.safetensors", **FAST)
    for i, target in enumerate([pipe, load_pipeline(pipe_dir)]):  # token known / loaded from the file
        out = tmp_path / f"set{i}"
        synthetic = generate(
            target,
            ["Trouser", "Bag"],
            1,
            class_names=CLASS_NAMES,
            out=out,
            prompts="style",
            token_file=token.path,
            steps=2,
            progress=False,
        )
        assert len(synthetic) == 2
        assert all(r["token_file"] == str(token.path) for r in synthetic.records)
        assert all(r["prompt"].endswith("in the style of <s>") for r in synthetic.records)
        run = json.loads((out / "run.json").read_text())
        assert run["key"]["token_file"] == str(token.path) and run["key"]["token_sha256"]


def test_float16_pipeline_trains_a_float32_row(pipe_dir, shots):
    half = load_pipeline(pipe_dir, dtype=torch.float16)  # CPU float16: slow in general, fine at this size
    before = _snapshot(half)
    token = learn_style_token(half, shots, **FAST)
    assert token.embedding.dtype == torch.float32
    assert half.text_encoder.get_input_embeddings().weight.dtype == torch.float16
    _assert_only_new_row_changed(half, before, token.embedding)


def test_paired_token_loss_compares_two_rows_on_the_same_draws(pipe, shots):
    """Oracle: each row written into the embedding matrix itself (no hook), then eq. 11 on the same draws of
    seed + 1; a learned row is lower than the word it started from, and a row against itself differs by 0."""
    from genqlib.token_loss import paired_token_loss

    token = learn_style_token(pipe, shots, **{**FAST, "steps": 30, "batch_size": 16})
    token_id = pipe.tokenizer.convert_tokens_to_ids("<s>")
    init = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("a")]
    init = init.detach().clone()
    rows = {"initial": init, "learned": token.embedding}
    res = paired_token_loss(pipe, shots, "<s>", rows, n_draws=4, batch_size=8, class_names=CLASS_NAMES)
    names = [CLASS_NAMES[int(c)] for c in shots.labels]
    ids, classes = inversion._prompt_ids(pipe, names, "<s>", token_id)
    objective = inversion._Objective(pipe, ids, torch.tensor([classes.index(n) for n in names]))
    mean, std = inversion._encode_posterior(pipe, to_vae_input(shots.images, pipe))
    for name, row in rows.items():
        inversion._write_row(pipe, token_id, row)
        with torch.no_grad():
            expected = [objective(inversion._draw(i, 1, mean, std, 8, 1000)).item() for i in range(4)]
        assert res["losses"][name] == pytest.approx(expected, rel=1e-5)
    diff = [a - b for a, b in zip(res["losses"]["learned"], res["losses"]["initial"], strict=True)]
    assert res["difference"]["mean"] == pytest.approx(sum(diff) / 4) and res["difference"]["mean"] < 0
    same = paired_token_loss(pipe, shots, "<s>", {"a": init, "b": init}, n_draws=2, class_names=CLASS_NAMES)
    assert same["difference"] == {"mean": 0.0, "std": 0.0, "after_lower": 0.0}
