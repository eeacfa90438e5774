"""The committed models' records as tables: teachers, the mini generator, its class fidelity and web shift."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.infra.paths import REPO_ROOT, relative_to_repo
from genqlib.paper.common import FIGURES, MISSING, markdown_table
from genqlib.paper.profiles import MINI_GENERATOR
from genqlib.zoo import TEACHER_DIR, list_teachers, teacher_record


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def bench_record_path(kind: str, folder: Path, figures: Path = FIGURES) -> Path:
    """Where the ``kind`` bench writes its record of the generator in ``folder`` (``bench_record`` reads it)."""
    return figures / "bench" / f"{kind}{Path(folder).name.removeprefix('generator')}.json"


def bench_record(kind: str, folder: Path = MINI_GENERATOR, figures: Path = FIGURES) -> dict | None:
    """The ``kind`` bench record ("generator": quality diagnostics, "generate": synthesis speed) of the
    generator in ``folder``: ``figures/bench/generator.json`` for ``genqlib/zoo/generator`` (generator-v1),
    ``generator-v2.json`` for ``genqlib/zoo/generator-v2``, ...; None when there is none, or when the record
    names another generator folder."""
    record = _load(bench_record_path(kind, folder, figures))
    made_with = (record or {}).get("generator_folder")
    if made_with and (REPO_ROOT / made_with).resolve() != folder.resolve():
        return None
    return record


def generator_name(folder: Path) -> str:
    """The committed name of a generator folder (``generator-v1``, ...), else the folder's name."""
    from genqlib.zoo.generators import GENERATORS

    return next((n for n, f in GENERATORS.items() if f.resolve() == folder.resolve()), folder.name)


def not_measured(what: str, command: str) -> str:
    """The row shown in place of a record that does not exist yet."""
    return markdown_table(["record", "status"], [[what, f"{MISSING} not measured: `{command}`"]])


def teachers_table() -> str:
    """Teacher accuracies and training times from genqlib/zoo/teachers/*.json."""
    body = []
    for name in list_teachers():
        if not (TEACHER_DIR / f"{name}.json").exists():
            body.append(
                [
                    f"`{name}`",
                    MISSING,
                    MISSING,
                    "not trained",
                    MISSING,
                    f"`python -m genqlib.zoo.train_teacher {name}`",
                ]
            )
            continue
        r = teacher_record(name)
        body.append(
            [
                f"`{name}`",
                r["architecture"],
                f"{r['parameters']:,}",
                f"{r['test_top1']}%",
                f"{r['train_seconds'] / 60:.1f} min ({r['train_threads']})",
                f"`{r['command']}`; `{r['evaluate_command']}`",
            ]
        )
    header = ["teacher", "architecture", "parameters", "test top-1", "training time (threads)", "reproduce"]
    return markdown_table(header, body)


def generator_table(figures: Path = FIGURES, folder: Path = MINI_GENERATOR) -> str:
    """A generator's measured numbers (training record; class fidelity and BN distance from notebook 01 for the
    profile's generator, else from the generator bench; the generation benchmark)."""
    training = _load(folder / "training.json")
    if training is None:
        return not_measured("the mini generator", "python -m genqlib.zoo.train_generator")
    fidelity = _fidelity_record(figures, folder)
    speed = bench_record("generate", folder, figures)
    r = training["recipe"]
    params = sum(training["parameters"].values())
    body = [
        ["size", f"{params / 1e6:.1f} M parameters (UNet {training['parameters']['unet'] / 1e6:.1f} M)", ""],
        [
            "training",
            f"VAE {r['vae_steps']} steps, UNet {r['unet_steps']} steps at batch {r['unet_batch']}; "
            f"UNet stage {training['unet_train_seconds'] / 60:.0f} min of CPU wall time (see the card's note)",
            f"`{training['command']}`",
        ],
    ]
    if fidelity:
        bn = fidelity["bn_distance"]
        body += [
            [
                f"class fidelity (`{fidelity['teacher']}`, {fidelity['n_eval']} images, guidance "
                f"{fidelity['guidance_scale']}, {fidelity['steps']} steps)",
                f"{100 * fidelity['class_fidelity']:.1f}%",
                fidelity["source"],
            ],
            [
                f"BN distance, synthetic vs real (batches of {bn['real']['batch_size']})",
                f"{bn['synthetic']['mean']:.2f} ± {bn['synthetic']['std']:.2f} vs "
                f"{bn['real']['mean']:.2f} ± {bn['real']['std']:.2f}",
                fidelity["source"],
            ],
        ]
    if speed:
        body.append(
            [
                f"sampling speed (batch {speed['batch_size']}, {speed['steps']} steps, guidance {speed['guidance_scale']})",
                f"{speed['images_per_s']} images/s, peak {speed['peak_mem_mb']:.0f} MB",
                f"`{speed['command']}`",
            ]
        )
    return markdown_table(["what", "measured", "reproduce"], body)


def _fidelity_record(figures: Path, folder: Path) -> dict | None:
    """Class fidelity, per class and BN distance of a generator's unfiltered label-prompt images, in notebook
    01's form: notebook 01's own record for the profile's generator, else read from the generator bench."""
    if folder.resolve() == MINI_GENERATOR.resolve():
        record = _load(figures / "01_generate" / "metrics.json")
        return None if record is None else {**record, "source": "notebook 01"}
    bench = bench_record("generator", folder, figures)
    if bench is None:
        return None
    from genqlib.fashion_mnist import CLASS_NAMES

    gen, gen_cfg = bench["generated"], bench["generation"]
    return {
        "teacher": bench["teacher"],
        "n_eval": gen["n"],
        "guidance_scale": gen_cfg["guidance_scale"],
        "steps": gen_cfg["steps"],
        "class_fidelity": gen["class_fidelity"],
        "class_fidelity_per_class": {
            CLASS_NAMES[c]: f for c, f in zip(gen["classes"], gen["class_fidelity_per_class"], strict=True)
        },
        "bn_distance": {"synthetic": gen["bn_distance"], "real": bench["real"]["bn_distance"]},
        "source": f"`{bench['command']}`",
    }


def fidelity_table(figures: Path = FIGURES, folder: Path = MINI_GENERATOR) -> str:
    """Per-class class fidelity of a generator's unfiltered label-prompt set (``_fidelity_record``)."""
    fidelity = _fidelity_record(figures, folder)
    if fidelity is None:
        command = (
            "python -m genqlib.paper.run_notebooks --only 01"
            if folder.resolve() == MINI_GENERATOR.resolve()
            else f"python -m genqlib.bench generator --generator {generator_name(folder)}"
        )
        return not_measured("class fidelity per class", command)
    rows = [[name, f"{100 * v:.1f}%"] for name, v in fidelity["class_fidelity_per_class"].items()]
    return markdown_table(["class", "fidelity"], rows)


def web_shift_table(figures: Path = FIGURES) -> str:
    """Teacher top-1 and BN distance of the public pool through the web shift and its variants (shift audit)."""
    audit = _load(figures / "web_shift" / "metrics.json")
    if audit is None:
        return not_measured("web shift audit", "python -m genqlib.zoo.shift_audit")
    rows = [
        [name.replace("_", " "), f"{100 * r['top1']:.1f}%", f"{r['bn_distance']:.2f}"]
        for name, r in audit["rows"].items()
    ]
    return markdown_table(
        ["public images seen through", f"`{audit['teacher']}` top-1", "BN distance (batches of 100)"], rows
    )


def _fmt(value: float | None, unit: str = "") -> str:
    return MISSING if value is None else f"{value:.3g}{unit}"


def targets_table(figures: Path = FIGURES, folder: Path = MINI_GENERATOR) -> str:
    """The generator's quality targets (``genqlib.generator_targets``), its measured values and whether each
    is met, from the generator bench record (when it measured this folder), the generation bench and the
    training record."""
    from genqlib.generator_targets import TARGETS, measured_values

    values = measured_values(
        bench_record("generator", folder, figures),
        bench_record("generate", folder, figures),
        _load(folder / "training.json"),
    )
    verdicts = {True: "met", False: "**not met**", None: f"{MISSING} not measured"}
    rows = [[t.what, t.describe(), _fmt(values[t.key]), verdicts[t.met(values[t.key])]] for t in TARGETS]
    return markdown_table(["target", "bound", "measured", "verdict"], rows)


def diagnostics_table(figures: Path = FIGURES, folder: Path = MINI_GENERATOR) -> str:
    """Real, VAE round trip and generated images side by side in numbers (``python -m genqlib.bench generator``)."""
    from genqlib.generator_report import TABLE_COLUMNS, diagnostics_rows

    record = bench_record("generator", folder, figures)
    if record is None:
        return not_measured("generator diagnostics", "python -m genqlib.bench generator")
    rows = [
        [_fmt(row.get(c)) if c != "set" else row[c] for c in TABLE_COLUMNS]
        for row in diagnostics_rows(record)
    ]
    return markdown_table(list(TABLE_COLUMNS), rows)


def per_class_diagnostics_table(figures: Path = FIGURES, folder: Path = MINI_GENERATOR) -> str:
    """Per class: class fidelity and KID of the generated images (generator bench), beside the real sample's KID
    against the held-back public images of that class (the noise floor)."""
    from genqlib.fashion_mnist import CLASS_NAMES

    record = bench_record("generator", folder, figures)
    if record is None:
        return not_measured("per-class generator diagnostics", "python -m genqlib.bench generator")
    gen, real = record["generated"], record["real"]
    rows = [
        [CLASS_NAMES[c], f"{100 * f:.1f}%", f"{k:.3f}", f"{floor:.3f}"]
        for c, f, k, floor in zip(
            gen["classes"],
            gen["class_fidelity_per_class"],
            gen["kid_per_class"],
            real["kid_per_class"],
            strict=True,
        )
    ]
    return markdown_table(
        ["class", "class fidelity", "KID generated vs real", "KID real vs held-back real"], rows
    )


def _steps_from_training(training: dict) -> str:
    """VAE steps as the training clock recorded them, for a record made before its recipe was written."""
    return f"{training['step']} x {MISSING}" if training else MISSING


def vae_options_table(figures: Path = FIGURES) -> str:
    """The VAE designs measured before a new generator's was chosen (``figures/bench/vae-options/*.json``)."""
    records = sorted((figures / "bench" / "vae-options").glob("*.json"))
    if not records:
        return not_measured("VAE design options", "python -m genqlib.bench generator --vae FOLDER")
    rows = []
    for path in records:
        r = json.loads(path.read_text())
        training, recipe = r.get("training") or {}, r.get("recipe") or {}
        per_step = f"{training['seconds'] / training['step']:.2f}" if training else MISSING
        rows.append(
            [
                path.stem,
                "{1}x{2}x{0}".format(*r["latent_shape"]),
                f"{recipe['vae_steps']} x {recipe['vae_batch']}"
                if recipe
                else _steps_from_training(training),
                f"{recipe['kl_weight']:g}" if recipe else MISSING,
                f"{recipe.get('edge_weight', 0):g}" if recipe else MISSING,
                f"{r['fidelity']['psnr_db']:.2f}",
                f"{r['fidelity']['ssim']:.3f}",
                f"{r['round_trip_hf_ratio']:.3f}",
                f"{r['latent_noise']['noise_ratio']:.2f}" if "latent_noise" in r else MISSING,
                per_step,
                f"{r['sampling_cost']['gflop_per_image']:.2f}",
            ]
        )
    head = [
        "option",
        "latent",
        "VAE steps x batch",
        "KL weight",
        "edge weight",
        "PSNR dB",
        "SSIM",
        "HF share / real's",
        "posterior std / latent spread",
    ]
    return markdown_table([*head, "s per VAE step", "GFLOP per image (10 steps, CFG)"], rows)


def generator_card(figures: Path = FIGURES, folder: Path = MINI_GENERATOR) -> str:
    """A committed generator's model card, from its training record and the measured JSON."""
    training = _load(folder / "training.json") or {}
    name, where = generator_name(folder), relative_to_repo(folder)
    shift = "\n".join(f"| `{k}` | {v} |" for k, v in training.get("web_shift", {}).items())
    recipe = training.get("recipe", {})
    size = recipe.get("latent_size", 8)
    latent = f"{size}x{size}x{recipe.get('latent_channels', 4)}"
    return f"""# The mini generator `{name}` (Stable Diffusion architecture, Fashion-MNIST size)

Loads with `StableDiffusionPipeline.from_pretrained("{where}")`, the call that loads Stable Diffusion v1.5;
`genqlib.generate.load_pipeline("{name}")` swaps in DDIM sampling and turns off the safety checker.

- **Training data:** {training.get("training_data", "?")}: never the private split (the teachers' data) nor
  the test split.
- **Architecture:** CLIPTokenizer (byte-level BPE, {training.get("vocab_size", "?")} tokens, every prompt word
  one token) + CLIPTextModel (3 layers, width 128) + AutoencoderKL (32x32x1 pixels to {latent} latents) +
  UNet2DConditionModel (cross-attention at 8x8 and 4x4); parameters: {training.get("parameters")}.
- **Recipe:** {training.get("recipe")}; Stable Diffusion v1.5's noise schedule (scaled-linear betas
  0.00085-0.012, 1,000 steps), epsilon loss, 10% empty captions for classifier-free guidance, EMA weights saved.
- **Training time:** UNet stage {training.get("unet_train_seconds", 0) / 60:.0f} min of CPU wall time. {training.get("note", "")}
- **Reproduce:** `{training.get("command", "python -m genqlib.zoo.train_generator")}`.

## The "web" shift (how its training images differ from the private set)

Each training image is the 28x28 Fashion-MNIST image padded to 32x32, then shifted per image with these
probabilities and ranges (`genqlib/zoo/web_shift.py`): geometry (rotation, scale, translation), an
occasional close crop, a mirror image, an exposure change (gain and gamma, so the black background stays
black) and an occasional grey backdrop. With probability `p_described` a label caption's adjective names
what was drawn, as web alt-text sometimes does: "clean"/"good" (no change but a mirror), "close-up"/
"cropped", "small"/"large", "dark"/"bright", "dirty" (the backdrop), half the time in GenQ's style-prompt
form ("A photo of a coat in the style of dark"); otherwise it is any CLIP template adjective. This gives the
text encoder directions that steer the shift, and the "in the style of" slot a learned style token fills.

| setting | value |
|---|---|
{shift}

## Measured

{generator_table(figures, folder)}

Class fidelity per class:

{fidelity_table(figures, folder)}

## Quality targets (fixed before any downstream comparison of a new generator)

Stable Diffusion's VAE is close to lossless at its resolution and its images are sharp; its gap to ImageNet is
style and framing, not blur. A mini generator is a fair analogue when it meets these targets
(`genqlib/generator_targets.py`), measured by `python -m genqlib.bench generator` (held-back public images,
1,000 generated images at the mini defaults, the `resnet` teacher), `python -m genqlib.bench generate` and the
training record:

{targets_table(figures, folder)}

Real, VAE round trip and generated images in numbers (high-frequency share: the share of an image's spectral
energy, mean removed, above a quarter of the Nyquist radius; total variation: mean absolute difference of
neighbouring pixels, both directions summed; KID and Frechet distance in the teacher's penultimate features:
generated against the real private-set sample, and that sample against the held-back public images, the noise
floor of both distances):

{diagnostics_table(figures, folder)}

Per class (KID per class from 100 generated images against the real sample's images of that class):

{per_class_diagnostics_table(figures, folder)}

## VAE designs measured before choosing the next generator's

Each trained with `python -m genqlib.zoo.train_generator --vae-only --holdout 500` and the options in the table,
at one thread on the shared 2-core machine (seconds per step include that sharing), and measured with
`python -m genqlib.bench generator --vae FOLDER` on the 500 held-back public images. The sampling cost is
counted, not timed: 10 DDIM steps, each two UNet evaluations (classifier-free guidance), and one decode.

{vae_options_table(figures)}

At this budget (300 steps of 32 images, a seventh of the first VAE's) every 8x8 design is still limited by its
training, not by its latent: 4 and 16 channels reconstruct alike, and the KL weight changes little yet. What
the table does separate: the 16x16 latent reconstructs best but costs the UNet about 4x per image (counted), so
synthesis would fall far below the 20 images/s target and UNet training past the 3-hour one; the edge term
raises PSNR and SSIM at equal budget; and with the first VAE's KL weight a 16-channel latent carries posterior
noise nearly as large as its own spread, which its decoder must average over however long it trains. The second generator's
recipe (`GeneratorRecipe`'s defaults, `python -m genqlib.zoo.train_generator`) therefore takes 16 channels
at 8x8 (Stable Diffusion 3's move, +1% UNet work), Stable Diffusion's own KL balance, the edge term, and
three times the first VAE's training steps at its batch size.
"""


def export_equality_table(figures: Path = FIGURES) -> str:
    """onnxruntime on the exported files against genqlib's fake quantization on the full test split
    (``scripts/export_equality.py``, ``figures/bench/export_equality.json``)."""
    record = _load(figures / "bench" / "export_equality.json")
    if record is None:
        return not_measured("export equality", "python scripts/export_equality.py 50")

    def cell(run: dict | str) -> str:
        if isinstance(run, str):  # onnxruntime's optimizer refused the file; it ran unoptimized
            return "optimizer fails; runs unoptimized"
        return f"{run['max_rel_error']:.2g} / {100 * run['top1_agreement']:.2f}%"

    rows = [
        [r["teacher"], f"W{r['bits']}A{r['bits']}", r["kind"], str(r["integer_layers"]), cell(r["as_written"]),
         cell(r["optimized"])]
        for r in record["rows"]
    ]  # fmt: skip
    head = [
        "teacher",
        "width",
        "kind",
        "integer layers",
        "as written: max rel. logit error / top-1 agreement",
    ]
    caption = (
        f"Engine {record.get('engine', MISSING)}, QDrop {record['iters_per_block']} iterations per block on "
        f"{record['calib']}, {record['n_test']} test images.\n\n"
    )
    return caption + markdown_table([*head, "optimized by onnxruntime"], rows)


def export_speed_table(figures: Path = FIGURES) -> str:
    """Milliseconds per batch and file sizes of the exported teachers (``python -m genqlib.bench export``,
    ``figures/bench/export.json``)."""
    record = _load(figures / "bench" / "export.json")
    if record is None:
        return not_measured("export speed and size", "python -m genqlib.bench export")
    runs = ("torch_fp32", "ort_fp32", "ort_w8a8", "ort_ortquant")
    rows = [
        [r["teacher"], *(f"{r[f'{run}_b1_ms']:.2f} / {r[f'{run}_b64_ms']:.1f}" for run in runs),
         " / ".join(f"{r[f'bytes_{k}'] / 1024:.0f}" for k in ("fp32", "w8a8", "w4a4", "ortquant")),
         f"{r['w8a8_integer_layers']} / {r['w8a8_float_layers']}"]
        for r in record["rows"]
    ]  # fmt: skip
    head = [
        "teacher",
        "PyTorch FP32",
        "onnxruntime FP32",
        "onnxruntime, genqlib W8A8",
        "onnxruntime's own W8A8",
    ]
    load = record["machine"].get("load_1min", MISSING)
    caption = (
        f"Milliseconds at batch 1 / batch 64 (medians), {record['threads']} threads, onnxruntime "
        f"{record['onnxruntime']}, load average {load} at the start; calibration: {record['calib']}.\n\n"
    )
    return caption + markdown_table(
        [*head, "file KiB: FP32 / W8A8 / W4A4 / own W8A8", "W8A8 layers integer / float"], rows
    )
