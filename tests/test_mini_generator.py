"""The mini generator: its training script end to end at toy size, the web shift, and the committed weights."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

import genqlib.zoo.train_generator as train_generator
from genqlib.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, FILES, Split, load_fashion_mnist
from genqlib.paper.profiles import MINI_GENERATOR
from genqlib.prompts import CLIP_TEMPLATE_ADJECTIVES, PromptSpec
from genqlib.zoo import mini_sd
from genqlib.zoo.web_shift import (
    SHIFT_WORDS,
    WebShift,
    apply_draw,
    apply_web_shift,
    describing_words,
    draw_shift,
    pad_clean,
)

needs_data = pytest.mark.skipif(not (DEBIAN_DIR / FILES["test_labels"]).exists(), reason="no data")


def test_tokenizer_gives_every_prompt_word_one_token():
    tokenizer = mini_sd.build_tokenizer(train_generator.caption_words(CLASS_NAMES))
    for kind in ("label", "mixup", "style", "plain"):
        for item in PromptSpec(kind=kind, class_names=CLASS_NAMES).items(3):
            words = re.findall(r"[a-z]+", item.text.lower())
            ids = tokenizer(item.text).input_ids[1:-1]
            letters = [t for t in tokenizer.convert_ids_to_tokens(ids) if t.replace("</w>", "").isalpha()]
            assert len(letters) == len(words), (item.text, letters)
    assert tokenizer.unk_token_id not in tokenizer("a t-shirt, <s>!").input_ids[1:-1]


def test_web_shift_is_seeded_in_range_and_shifts_the_distribution():
    images = torch.zeros(256, 1, 28, 28)
    images[:, :, 8:20, 8:20] = torch.rand(256, 1, 12, 12)  # an object in the middle, black around it
    a = apply_web_shift(images, torch.Generator().manual_seed(0))
    b = apply_web_shift(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (256, 1, 32, 32)
    assert a.min() >= 0 and a.max() <= 1
    clean = pad_clean(images)
    changed = (a - clean).abs().flatten(1).amax(1) > 1e-3
    expected = 1 - (1 - WebShift().p_affine) * (1 - WebShift().p_flip) * (1 - WebShift().p_tone)
    assert abs(changed.float().mean().item() - expected) < 0.15
    # without tone changes, only the grey backdrop lifts the black border: on about p_background of the images
    no_tone = apply_web_shift(images, torch.Generator().manual_seed(1), WebShift(p_tone=0.0))
    border_lift = (no_tone[:, :, 0, :].mean((1, 2)) > 0.04).float().mean().item()
    assert abs(border_lift - WebShift().p_background) < 0.1


def test_describing_words_match_what_was_drawn():
    images = torch.zeros(512, 1, 28, 28)
    images[:, :, 8:20, 8:20] = 0.6
    draw = draw_shift(len(images), torch.Generator().manual_seed(0))
    shifted, words = apply_draw(images, draw), describing_words(draw)
    col = {w: words[:, i] for i, w in enumerate(SHIFT_WORDS)}
    # "clean" images are the padded originals, up to a mirror image (the object here is symmetric)
    assert col["clean"].any() and torch.allclose(
        shifted[col["clean"]], pad_clean(images)[col["clean"]], atol=1e-5
    )
    assert not (col["clean"] & (col["dark"] | col["bright"] | col["dirty"] | col["cropped"])).any()
    brightest = shifted.flatten(1).amax(1)
    assert brightest[col["dark"]].mean() < 0.55 < brightest[col["bright"]].mean()
    assert (shifted[col["dirty"]][:, :, 0, :] > 0.04).all() and (
        shifted[~col["dirty"]][:, :, 0, :] == 0
    ).all()
    area = (shifted > 0.3).flatten(1).float().sum(1)  # above any backdrop level
    same_tone = ~draw.tone
    small, close = col["small"] & same_tone, col["close-up"] & same_tone
    assert area[small].mean() < area[col["clean"]].mean() < area[close].mean()


def test_training_captions_name_the_drawn_shift_as_often_as_asked():
    rng = random.Random(0)
    captions = [train_generator.training_caption("Coat", rng, ("dark",), 0.5) for _ in range(4000)]
    label = [c for c in captions if c.startswith("A photo of a ") and c != "A photo of a coat"]
    adjective = sum(c == "A photo of a dark coat" for c in label) / len(label)
    style = sum(c == "A photo of a coat in the style of dark" for c in label) / len(label)
    assert abs(adjective - (0.25 + 0.5 / len(CLIP_TEMPLATE_ADJECTIVES))) < 0.04
    assert abs(style - 0.25) < 0.04
    never = [train_generator.training_caption("Coat", rng, ("dark",), 0.0) for _ in range(2000)]
    assert sum(c == "A photo of a dark coat" for c in never) < 0.05 * len(never)


@needs_data
def test_training_script_uses_only_the_public_pool_and_saves_a_loadable_pipeline(tmp_path, monkeypatch):
    asked = []

    def tiny_split(name, download=None):
        asked.append(name)
        full = load_fashion_mnist(name)
        return Split(name, full.images[:40], full.labels[:40])

    monkeypatch.setattr(train_generator, "load_fashion_mnist", tiny_split)
    out = tmp_path / "gen"
    argv = ["--workdir", str(tmp_path / "work"), "--out", str(out), "--vae-steps", "2", "--unet-steps", "2"]
    argv += ["--holdout", "4"]
    train_generator.main([*argv, "--copies", "1"])
    assert asked == ["public"]
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    record = json.loads((out / "training.json").read_text())
    assert record["recipe"]["holdout"] == 4 and "first 36 images" in record["training_data"]
    assert (
        pipe.unet.config.in_channels == record["recipe"]["latent_channels"] == pipe.vae.config.latent_channels
    )
    # resuming a finished run redoes nothing: the checkpoint already holds the last step
    train_generator.main([*argv, "--copies", "1"])
    # per-channel latents: the same work dir's VAE and latents, a new UNet, the scaling folded into the VAE
    argv = ["--workdir", str(tmp_path / "work2"), "--out", str(out.with_name("gen2")), *argv[4:]]
    (tmp_path / "work2").mkdir()
    for part in ("vae", "latents.pt", "tokenizer"):
        src = tmp_path / "work" / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / "work2" / part)
    train_generator.main([*argv, "--copies", "1", "--latent-norm", "channel"])
    channel = StableDiffusionPipeline.from_pretrained(out.with_name("gen2"))
    assert channel.vae.config.scaling_factor == 1.0 != pipe.vae.config.scaling_factor
    assert (
        json.loads((out.with_name("gen2") / "training.json").read_text())["recipe"]["latent_norm"]
        == "channel"
    )


def test_channel_norm_folded_into_the_vae_encodes_standardized_latents_and_decodes_them_back():
    """The folded VAE against the unfolded one: its posterior mean is (mean - shift) * scale, its posterior std
    is std * scale, and decoding the standardized latent gives the unfolded decode of the raw latent."""
    torch.manual_seed(0)
    vae = mini_sd.build_vae(latent_channels=4).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        raw = vae.encode(x).latent_dist
        cache = {"mean": raw.mean + torch.randn(1, 4, 1, 1) * 3, "scaling_factor": torch.tensor(0.5)}
        shift, scale = train_generator.latent_affine(
            cache, train_generator.GeneratorRecipe(latent_norm="channel")
        )
        z = raw.mean
        reference = vae.decode(z).sample
        folded = mini_sd.build_vae(latent_channels=4).eval()
        folded.load_state_dict(vae.state_dict())
        train_generator.fold_channel_norm(folded, shift, scale)
        post = folded.encode(x).latent_dist
        c = lambda v: v.view(1, -1, 1, 1)  # noqa: E731
        torch.testing.assert_close(post.mean, (raw.mean - c(shift)) * c(scale), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(post.std, raw.std * c(scale), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(
            folded.decode((z - c(shift)) * c(scale)).sample, reference, rtol=1e-4, atol=1e-5
        )
    assert folded.config.scaling_factor == 1.0
    standardized = (cache["mean"] - c(shift)) * c(scale)
    torch.testing.assert_close(standardized.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardized.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-5, rtol=0)
    # the global recipe keeps SD 1.x's single factor and leaves the weights alone
    shift, scale = train_generator.latent_affine(cache, train_generator.GeneratorRecipe(latent_norm="global"))
    assert shift.abs().sum() == 0 and torch.all(scale == 0.5)


def test_a_resumed_run_reuses_its_tokenizer_instead_of_rebuilding_it(tmp_path, monkeypatch):
    first = train_generator.work_tokenizer(tmp_path)

    def rebuild(words):
        raise AssertionError("the tokenizer saved in the work dir must be reused")

    monkeypatch.setattr(train_generator.mini_sd, "build_tokenizer", rebuild)
    again = train_generator.work_tokenizer(tmp_path)
    assert again.get_vocab() == first.get_vocab()


committed = pytest.mark.skipif(not (MINI_GENERATOR / "model_index.json").exists(), reason="no generator")


@committed
def test_committed_generator_loads_as_stable_diffusion_and_samples_32px_grayscale():
    pipe = StableDiffusionPipeline.from_pretrained(MINI_GENERATOR)
    pipe.set_progress_bar_config(disable=True)
    size = sum(f.stat().st_size for f in MINI_GENERATOR.rglob("*") if f.is_file())
    assert size <= 40 * 2**20
    out = pipe(["A photo of a dark sandal"] * 2, num_inference_steps=2, output_type="np").images
    assert out.shape == (2, 32, 32, 1) and out.min() >= 0 and out.max() <= 1


def test_the_web_shift_lowers_teacher_accuracy_and_raises_bn_distance():
    from genqlib.zoo import load_teacher
    from genqlib.zoo.shift_audit import audit
    from genqlib.zoo.web_shift import WebShift

    teacher = load_teacher("resnet")
    sample = load_fashion_mnist("public").subset(200, seed=0)
    clean = audit(None, teacher, sample.images, sample.labels)
    shifted = audit(WebShift(), teacher, sample.images, sample.labels)
    assert shifted["top1"] < clean["top1"] - 0.1
    assert shifted["bn_distance"] > 2 * clean["bn_distance"]
