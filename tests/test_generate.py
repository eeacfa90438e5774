"""Prompts, the SyntheticSet store and generate() on a tiny random-weight StableDiffusionPipeline.

The pipeline is built from configs, saved with ``save_pretrained`` and loaded back with
``StableDiffusionPipeline.from_pretrained`` (through ``load_pipeline``), exactly the paper profile's path.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tiny_pipeline import save_tiny_pipeline

from genqlib.fashion_mnist import CLASS_NAMES
from genqlib.generate import generate, image_seed, load_pipeline, pipeline_id, resolve_classes
from genqlib.prompts import (
    CLIP_TEMPLATE_ADJECTIVES,
    PromptSpec,
    label_prompt,
    mixup_prompt,
    prompt_name,
    style_prompt,
)
from genqlib.store import MANIFEST, TMP_PREFIX, RunMismatchError, SyntheticSet

STEPS = 3
RECORD_FIELDS = {
    "file",
    "index",
    "class_index",
    "class_name",
    "classes",
    "class_weights",
    "prompt",
    "seed",
    "guidance",
    "steps",
    "scheduler",
    "generator",
    "token_file",
}


@pytest.fixture(scope="session")
def pipe_dir(tmp_path_factory):
    """The tiny pipeline, saved once per session."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture
def pipe(pipe_dir):
    """A freshly loaded pipeline (loading takes ~0.1 s; tests may mutate it, e.g. add a token)."""
    return load_pipeline(pipe_dir)


class Recorder:
    """Wraps a pipeline: counts calls and images, keeps the latents it is given, can fail on a chosen call."""

    def __init__(self, pipe, fail_on_call: int | None = None) -> None:
        self._pipe, self.fail_on_call = pipe, fail_on_call
        self.calls, self.images, self.latents = 0, 0, []

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated interruption")
        self.images += len(kwargs["prompt"])
        self.latents.extend(kwargs["latents"].clone())
        return self._pipe(**kwargs)


def pixels(s: SyntheticSet) -> torch.Tensor:
    """The PNGs' 8-bit values."""
    return (s.images() * 255).round().to(torch.int16)


def assert_same_images(a: SyntheticSet, b: SyntheticSet) -> None:
    """Equal up to float rounding of batched kernels: at most one gray level, on at most 0.1% of pixels."""
    pa, pb = pixels(a), pixels(b)
    diff = (pa - pb).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3


# ---------------------------------------------------------------- prompts


def test_prompt_names_are_lowercase_first_alternatives():
    assert prompt_name("T-shirt/top") == "t-shirt"
    assert prompt_name("Ankle boot") == "ankle boot"
    assert prompt_name("tench, Tinca tinca") == "tench"
    assert prompt_name("CD player") == "CD player"
    assert [prompt_name(n) for n in CLASS_NAMES][:3] == ["t-shirt", "trouser", "pullover"]


def test_label_mixup_style_prompt_wording():
    text = label_prompt("T-shirt/top", random.Random(3))
    adjective = re.fullmatch(r"A photo of a (.+) t-shirt", text).group(1)
    assert adjective in CLIP_TEMPLATE_ADJECTIVES
    assert label_prompt("Bag", 7) == label_prompt("Bag", 7)
    assert re.fullmatch(r"A photo of a .+ bag and a coat", mixup_prompt(["Bag", "Coat"], 1))
    assert re.fullmatch(r"A photo of a .+ bag, a coat and a dress", mixup_prompt(["Bag", "Coat", "Dress"], 1))
    assert style_prompt("Sandal", "<s>") == "A photo of a sandal in the style of <s>"
    assert {"nice", "dark", "small", "jpeg corrupted", "black and white"} <= set(CLIP_TEMPLATE_ADJECTIVES)


def test_prompt_spec_is_deterministic_round_robin():
    spec = PromptSpec("mixup", classes=(2, 5, 7), seed=4, mixup_k=3, class_names=CLASS_NAMES)
    items = spec.items(4)
    assert [it.class_index for it in items] == [2, 5, 7] * 4
    assert items == PromptSpec("mixup", classes=(2, 5, 7), seed=4, mixup_k=3, class_names=CLASS_NAMES).items(
        4
    )
    assert items != PromptSpec("mixup", classes=(2, 5, 7), seed=5, mixup_k=3, class_names=CLASS_NAMES).items(
        4
    )
    for it in items:
        assert it.classes[0] == it.class_index and sorted(it.classes) == [2, 5, 7]
        assert sum(it.class_weights) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mixup_k"):
        PromptSpec("mixup", classes=(1, 2), mixup_k=3, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="prompts kind"):
        PromptSpec("fancy", class_names=CLASS_NAMES)


# ---------------------------------------------------------------- generate


def test_same_seed_same_image_whatever_the_batch_size(pipe, tmp_path):
    one, three = Recorder(pipe), Recorder(pipe)
    a = generate(
        one, [0, 3], 3, class_names=CLASS_NAMES, out=tmp_path / "a", steps=STEPS, batch_size=1, progress=False
    )
    b = generate(
        three,
        [0, 3],
        3,
        class_names=CLASS_NAMES,
        out=tmp_path / "b",
        steps=STEPS,
        batch_size=3,
        progress=False,
    )
    assert (one.calls, three.calls) == (6, 2)
    for x, y in zip(one.latents, three.latents, strict=True):
        assert torch.equal(x, y)  # the starting noise is exactly the same
    assert [r["prompt"] for r in a.records] == [r["prompt"] for r in b.records]
    assert [r["seed"] for r in a.records] == [r["seed"] for r in b.records]
    assert_same_images(a, b)
    c = generate(
        pipe,
        [0, 3],
        3,
        class_names=CLASS_NAMES,
        out=tmp_path / "c",
        steps=STEPS,
        batch_size=3,
        progress=False,
    )
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(b.paths, c.paths, strict=True))


def test_manifest_records_every_field(pipe, tmp_path):
    s = generate(
        pipe,
        ["Bag", "T-shirt/top"],
        2,
        class_names=CLASS_NAMES,
        out=tmp_path / "s",
        steps=STEPS,
        guidance_scale=2.0,
        seed=5,
        progress=False,
    )
    assert len(s) == 4 and s.labels.tolist() == [8, 0, 8, 0]
    lines = [json.loads(x) for x in (tmp_path / "s" / MANIFEST).read_text().splitlines()]
    assert lines == s.records
    for i, r in enumerate(s.records):
        assert set(r) == RECORD_FIELDS
        assert r["index"] == i and r["file"] == f"{i:06d}.png" and r["seed"] == image_seed(5, i)
        assert r["class_name"] == CLASS_NAMES[r["class_index"]] and r["classes"] == [r["class_index"]]
        assert r["class_weights"] == [1.0] and prompt_name(r["class_name"]) in r["prompt"]
        assert (r["guidance"], r["steps"], r["scheduler"]) == (2.0, STEPS, "DDIMScheduler")
        assert r["generator"] == pipeline_id(pipe) and r["token_file"] is None
        with Image.open(tmp_path / "s" / r["file"]) as im:
            assert (im.mode, im.size) == ("L", (32, 32))  # the 1-channel VAE gives grayscale PNGs
    assert s.run["key"]["seed"] == 5 and s.run["key"]["classes"] == [8, 0]


def test_mixup_prompts_record_every_class(pipe, tmp_path):
    s = generate(
        pipe,
        [1, 4, 9],
        2,
        class_names=CLASS_NAMES,
        out=tmp_path / "m",
        prompts="mixup",
        steps=STEPS,
        progress=False,
    )
    for r in s.records:
        assert (
            len(r["classes"]) == 2 and r["classes"][0] == r["class_index"] and set(r["classes"]) <= {1, 4, 9}
        )
        assert r["class_weights"] == [0.5, 0.5]
        assert all(prompt_name(CLASS_NAMES[c]) in r["prompt"] for c in r["classes"])
    soft = s.soft_labels()
    assert soft.shape == (6, 10) and torch.allclose(soft.sum(1), torch.ones(6))


def test_resume_after_interruption_ends_with_exactly_the_asked_images(pipe, tmp_path):
    out = tmp_path / "r"
    failing = Recorder(pipe, fail_on_call=3)
    with pytest.raises(RuntimeError, match="simulated"):
        generate(
            failing, [0, 1, 2], 3, class_names=CLASS_NAMES, out=out, steps=STEPS, batch_size=2, progress=False
        )
    assert len(SyntheticSet.open(out)) == 4
    # what a hard kill can leave: a temp file, a PNG without its manifest line, a torn line, a line without PNG
    (out / f"{TMP_PREFIX}999-000004.png").write_bytes(b"half a png")
    Image.new("L", (32, 32)).save(out / "000005.png")
    with open(out / MANIFEST, "a") as f:
        f.write(json.dumps({"file": "000006.png", "index": 6, "class_index": 0}) + "\n" + '{"file": "0000')
    with pytest.warns(UserWarning, match="ignoring 1 torn .* 1 missing or truncated image.*: 000006.png"):
        assert len(SyntheticSet.open(out)) == 4
    resumed = Recorder(pipe)
    s = generate(
        resumed, [0, 1, 2], 3, class_names=CLASS_NAMES, out=out, steps=STEPS, batch_size=2, progress=False
    )
    assert resumed.images == 5 and len(s) == 9 and s.indices == list(range(9))
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([MANIFEST, "run.json"] + [f"{i:06d}.png" for i in range(9)])
    lines = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == list(range(9))
    reference = generate(
        pipe,
        [0, 1, 2],
        3,
        class_names=CLASS_NAMES,
        out=tmp_path / "ref",
        steps=STEPS,
        batch_size=2,
        progress=False,
    )
    assert_same_images(s, reference)


def test_a_truncated_or_damaged_image_is_named_and_regenerated(pipe, tmp_path):
    out = tmp_path / "t"
    kw = {"class_names": CLASS_NAMES, "steps": STEPS, "batch_size": 2, "progress": False}
    reference = generate(pipe, [0, 1], 2, out=tmp_path / "ref", **kw)
    generate(pipe, [0, 1], 2, out=out, **kw)
    whole = (out / "000002.png").read_bytes()
    (out / "000002.png").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    with pytest.warns(UserWarning, match="1 missing or truncated image.*000002.png"):
        opened = SyntheticSet.open(out)
    assert opened.indices == [0, 1, 3]  # counted only what it can read
    resumed = Recorder(pipe)
    s = generate(resumed, [0, 1], 2, out=out, **kw)
    assert resumed.images == 1 and s.indices == [0, 1, 2, 3]
    assert_same_images(s, reference)
    damaged = bytearray((out / "000001.png").read_bytes())
    damaged[40:60] = bytes(20)  # inside the image data; the file still ends in IEND
    (out / "000001.png").write_bytes(bytes(damaged))
    with pytest.raises(OSError, match=r"000001\.png.*synthetic set .*t'"):
        SyntheticSet.open(out).images()


def test_growing_n_per_class_extends_the_run(pipe, tmp_path):
    out = tmp_path / "g"
    small = generate(pipe, [2, 3], 1, class_names=CLASS_NAMES, out=out, steps=STEPS, progress=False)
    counter = Recorder(pipe)
    big = generate(counter, [2, 3], 3, class_names=CLASS_NAMES, out=out, steps=STEPS, progress=False)
    assert counter.images == 4 and len(big) == 6 and big.records[:2] == small.records
    again = generate(pipe, [2, 3], 1, class_names=CLASS_NAMES, out=out, steps=STEPS, progress=False)
    assert again.records == small.records


def test_another_runs_folder_is_refused_then_overwritten(pipe, tmp_path):
    out = tmp_path / "o"
    generate(pipe, [0], 2, class_names=CLASS_NAMES, out=out, steps=STEPS, progress=False)
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RunMismatchError, match=r"another run.*guidance.*overwrite=True"):
        generate(
            pipe, [0], 2, class_names=CLASS_NAMES, out=out, steps=STEPS, guidance_scale=2.0, progress=False
        )
    assert sorted(p.name for p in out.iterdir()) == before
    s = generate(
        pipe,
        [0],
        1,
        class_names=CLASS_NAMES,
        out=out,
        steps=STEPS,
        guidance_scale=2.0,
        overwrite=True,
        progress=False,
    )
    assert len(s) == 1 and s.records[0]["guidance"] == 2.0 and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png"]


def test_bad_inputs_get_clear_errors(pipe, tmp_path):
    with pytest.raises(ValueError, match=r"unknown class 'Hat'.*Ankle boot"):
        generate(pipe, ["Hat"], 1, class_names=CLASS_NAMES, out=tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        generate(
            pipe, [0], 1, class_names=CLASS_NAMES, out=tmp_path / "x", guidance_scale=-1.0, progress=False
        )
    with pytest.raises(ValueError, match="n_per_class"):
        generate(pipe, [0], 0, class_names=CLASS_NAMES, out=tmp_path / "x", progress=False)
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=re.escape(str(a_file))):
        generate(pipe, [0], 1, class_names=CLASS_NAMES, out=a_file, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="not a synthetic set"):
        generate(pipe, [0], 1, class_names=CLASS_NAMES, out=foreign, progress=False)
    with pytest.raises(ValueError, match="token_file"):
        generate(pipe, [0], 1, class_names=CLASS_NAMES, out=tmp_path / "x", prompts="style", progress=False)
    assert not (tmp_path / "x").exists()
    assert resolve_classes(["t-shirt", "ANKLE BOOT", 3], CLASS_NAMES) == [0, 9, 3]


def test_load_pipeline_names_the_bad_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pipeline(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*model_index\.json"):
        load_pipeline(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text("{not json")
    with pytest.raises(OSError, match="broken"):
        load_pipeline(tmp_path / "broken")


def test_load_pipeline_draws_no_loading_bars_and_restores_them(pipe_dir, capsys):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.enable_progress_bar()
    transformers_logging.enable_progress_bar()
    capsys.readouterr()
    load_pipeline(pipe_dir)
    drawn = capsys.readouterr()
    assert "Loading" not in drawn.err + drawn.out
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()


def test_style_prompts_load_the_token_file(pipe, tmp_path):
    import logging

    from transformers.utils import logging as transformers_logging

    token_file = tmp_path / "style.safetensors"
    save_file({"<s>": torch.randn(pipe.text_encoder.config.hidden_size)}, token_file)
    heard: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())
    log = logging.getLogger("transformers.modeling_utils")
    log.addHandler(handler)
    transformers_logging.warning_once.cache_clear()  # said once per process: make it sayable here
    try:
        s = generate(
            pipe,
            [5],
            2,
            class_names=CLASS_NAMES,
            out=tmp_path / "st",
            prompts="style",
            token_file=token_file,
            steps=STEPS,
            progress=False,
        )
    finally:
        log.removeHandler(handler)
    # diffusers grows the embedding with transformers' mean/covariance init, a stderr notice; genqlib hushes it
    assert not [m for m in heard if "new embeddings" in m], heard
    assert [r["prompt"] for r in s.records] == ["A photo of a sandal in the style of <s>"] * 2
    assert all(r["token_file"] == str(token_file) for r in s.records)
    assert len(s.run["key"]["token_sha256"]) == 64
    other = tmp_path / "other.safetensors"
    vector = torch.randn(pipe.text_encoder.config.hidden_size)
    save_file({"<s>": vector}, other)
    generate(
        pipe,
        [5],
        1,
        class_names=CLASS_NAMES,
        out=tmp_path / "st2",
        prompts="style",
        token_file=other,
        steps=STEPS,
        progress=False,
    )
    row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<s>")]
    assert torch.equal(row, vector)  # a known token is re-set from the file the manifest names


# ---------------------------------------------------------------- SyntheticSet


def test_images_resize_and_channel_conversion(pipe, tmp_path):
    gray = generate(pipe, [0, 1], 1, class_names=CLASS_NAMES, out=tmp_path / "g", steps=STEPS, progress=False)
    x = gray.images()
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert torch.equal(gray.images(channels=3), x.repeat(1, 3, 1, 1))
    # 32 -> 28 undoes the generator's 2-pixel training border: a crop, not a resize
    assert torch.equal(gray.images(size=28), x[:, :, 2:30, 2:30])
    assert gray.images(size=16).shape == (2, 1, 16, 16)  # far smaller: resized

    rgb = SyntheticSet.create(tmp_path / "rgb", key={"test": 1})
    arr = np.zeros((30, 40, 3), np.uint8)
    arr[:, :5] = arr[:, -5:] = 255  # a frame that the centre crop to 30x30 removes
    arr[10:20, 15:25] = (200, 100, 50)
    rgb.add(Image.fromarray(arr), {"index": 0, "class_index": 3})
    y = rgb.images()
    assert y.shape == (1, 3, 30, 40)
    luma = 0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]
    assert torch.allclose(rgb.images(channels=1)[:, 0], luma, atol=1e-6)
    small = rgb.images(size=15)
    assert small.shape == (1, 3, 15, 15) and small[..., :, :2].max() == 0  # frame cropped away
    with pytest.raises(ValueError, match="channels"):
        rgb.images(channels=2)


def test_subset_views_round_trip(pipe, tmp_path):
    s = generate(pipe, [0, 1, 2], 2, class_names=CLASS_NAMES, out=tmp_path / "v", steps=STEPS, progress=False)
    keep = s.subset([4, 0, 2], scores=torch.tensor([0.5, 0.25, 0.125]), ratio=0.5)
    assert keep.indices == [4, 0, 2] and len(s) == 6  # a view: the parent is unchanged
    assert torch.equal(keep.images(), s.images()[[4, 0, 2]])
    keep.save_view("kept")
    back = SyntheticSet.open(tmp_path / "v", view="kept")
    assert back.records == keep.records and back.info == {"scores": [0.5, 0.25, 0.125], "ratio": 0.5}
    assert torch.equal(back.labels, keep.labels)
    masked = back.subset(torch.tensor([True, False, True]), stage="bn")
    assert masked.indices == [4, 2] and masked.info["ratio"] == 0.5 and masked.info["stage"] == "bn"
    with pytest.raises(FileNotFoundError, match=r"no view 'missing'.*kept"):
        SyntheticSet.open(tmp_path / "v", view="missing")
    with pytest.raises(ValueError, match="view name"):
        keep.save_view("../escape")


def test_generator_id_ignores_the_model_card_but_not_the_weights(pipe_dir, tmp_path):
    import shutil

    from genqlib.generate import _folder_digest

    folder = tmp_path / "gen"
    shutil.copytree(pipe_dir, folder)
    before = _folder_digest(folder)
    (folder / "README.md").write_text("a model card, edited")
    (folder / "training.json").write_text("{}")
    assert _folder_digest(folder) == before
    weights = next(folder.glob("unet/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert _folder_digest(folder) != before
