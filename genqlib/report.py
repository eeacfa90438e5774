"""Regenerate the README's measured tables from the committed JSON: ``python -m genqlib.report``.

Each table lives between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers and is never typed
by hand; ``--check`` exits non-zero when the README is out of date (the tests run it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from genqlib.profiles import MINI_GENERATOR, REPO_ROOT, get_profile
from genqlib.results import fig4, fig5, fig6, table1, table2, table3, table4, table5
from genqlib.zoo import TEACHER_DIR, list_teachers, teacher_record

README = REPO_ROOT / "README.md"
FIGURES = REPO_ROOT / "figures"


def teachers_table() -> str:
    """Teacher accuracies and training times from genqlib/zoo/teachers/*.json."""
    rows = [
        "| teacher | architecture | parameters | test top-1 (10,000) | training wall time (CPU threads; the machine was shared) | reproduce |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_teachers():
        if not (TEACHER_DIR / f"{name}.json").exists():
            rows.append(
                f"| `{name}` | not trained yet | | | | `python -m genqlib.zoo.train_teacher {name}` |"
            )
            continue
        r = teacher_record(name)
        rows.append(
            f"| `{name}` | {r['architecture']} | {r['parameters']:,} | {r['test_top1']}% | "
            f"{r['train_seconds'] / 60:.1f} min ({r['train_threads']}) | `{r['command']}`; `{r['evaluate_command']}` |"
        )
    return "\n".join(rows)


def run_times_table() -> str:
    """Wall time of each notebook in the last full run of each profile (``figures/run_times-<profile>.json``)."""
    records = {p: _load(_run_times_file(p)) for p in ("ci", "mini")}
    records = {p: r for p, r in records.items() if r}
    if not records:
        return "_No full run recorded yet: `bash scripts/run.sh`._"
    notebooks = sorted({nb for r in records.values() for nb in r["notebooks"]})
    header = "| notebook | " + " | ".join(f"`{p}` (min)" for p in records) + " |"
    rows = [header, "|---|" + "---|" * len(records)]
    for nb in notebooks:
        cells = [_minutes(r["notebooks"].get(nb)) for r in records.values()]
        rows.append(f"| {nb} | " + " | ".join(cells) + " |")
    rows.append(
        "| **all six** | "
        + " | ".join(f"**{_minutes(r['total_seconds'])}**" for r in records.values())
        + " |"
    )
    notes = [f"`{p}`: " + ", ".join(_how_it_ran(r)) for p, r in records.items()]
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + "."


def _run_times_file(profile: str) -> Path:
    """Where a full run of ``profile`` records its times: its figures folder, read relative to FIGURES."""
    folder = get_profile(profile).figures_dir.relative_to(REPO_ROOT / "figures")
    return FIGURES / folder / f"run_times-{profile}.json"


def _how_it_ran(record: dict) -> list[str]:
    """The conditions a run recorded: cores, threads and whether it started from an empty cache."""
    how = [f"{record['cpu_count']} CPU cores"] if record.get("cpu_count") else []
    how += [f"threads {record['threads']}"] if record.get("threads") else []
    cache = {
        True: "from an empty cache",
        False: "with a work dir that was not empty (steps may have come from its caches)",
    }
    how += [cache.get(record.get("cold_start"), "cache state not recorded")]
    resumed = record.get("resumed", 0)
    if resumed:  # the interrupted notebook restarted and reused what it had cached, so it may read low
        how += [f"resumed {resumed}x after an interruption (`--resume`)"]
    return how


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def generator_table() -> str:
    """The mini generator's measured numbers (training record, notebook 01, generation benchmark)."""
    training = _load(MINI_GENERATOR / "training.json")
    fidelity = _load(FIGURES / "01_generate" / "metrics.json")
    speed = _load(FIGURES / "bench" / "generate.json")
    if training is None:
        return "The mini generator is not trained yet: `python -m genqlib.zoo.train_generator`."
    r = training["recipe"]
    params = sum(training["parameters"].values())
    rows = [
        "| what | measured | reproduce |",
        "|---|---|---|",
        f"| size | {params / 1e6:.1f} M parameters (UNet {training['parameters']['unet'] / 1e6:.1f} M) | |",
        f"| training | VAE {r['vae_steps']} steps, UNet {r['unet_steps']} steps at batch {r['unet_batch']}; "
        f"UNet stage {training['unet_train_seconds'] / 60:.0f} min of CPU wall time (see the card's note) | "
        f"`{training['command']}` |",
    ]
    if fidelity:
        bn = fidelity["bn_distance"]
        rows.append(
            f"| class fidelity (`{fidelity['teacher']}`, {fidelity['n_eval']} images, guidance "
            f"{fidelity['guidance_scale']}, {fidelity['steps']} steps) | {100 * fidelity['class_fidelity']:.1f}% | "
            "`bash scripts/run.sh` (notebook 01) |"
        )
        rows.append(
            f"| BN distance, synthetic vs real (batches of {bn['real']['batch_size']}) | "
            f"{bn['synthetic']['mean']:.2f} ± {bn['synthetic']['std']:.2f} vs {bn['real']['mean']:.2f} ± "
            f"{bn['real']['std']:.2f} | notebook 01 |"
        )
    if speed:
        rows.append(
            f"| sampling speed (batch {speed['batch_size']}, {speed['steps']} steps, guidance "
            f"{speed['guidance_scale']}) | {speed['images_per_s']} images/s, peak {speed['peak_mem_mb']:.0f} MB | "
            f"`{speed['command']}` |"
        )
    return "\n".join(rows)


def fidelity_per_class_table() -> str:
    """Per-class class fidelity of notebook 01's unfiltered label-prompt set."""
    fidelity = _load(FIGURES / "01_generate" / "metrics.json")
    if fidelity is None:
        return "Not measured yet: run notebook 01."
    rows = ["| class | fidelity |", "|---|---|"]
    rows += [f"| {name} | {100 * v:.1f}% |" for name, v in fidelity["class_fidelity_per_class"].items()]
    return "\n".join(rows)


def filters_table() -> str:
    """Notebook 02's before/after metrics per teacher, and the filter benchmark's speeds."""
    m = _load(FIGURES / "02_filter" / "metrics.json")
    bench = _load(FIGURES / "bench" / "filters.json")
    if m is None:
        return "Not measured yet: run notebook 02."
    rows = [
        f"Energy drop {m['energy_drop']}, then second-stage drop {m['second_drop']} (per class), T = {m['T']}, "
        f"on {m['n_synthetic']} label-prompt images:",
        "",
        "| teacher | second stage | images kept | BN distance before → after | class fidelity before → after |",
        "|---|---|---|---|---|",
    ]
    for teacher in ("resnet", "mobilenet", "vit"):
        if teacher not in m:
            continue
        b, a = m[teacher]["before"], m[teacher]["after"]
        bn = f"{b['bn_distance']:.2f} → {a['bn_distance']:.2f}" if "bn_distance" in b else "no BatchNorm"
        stage = {"bn": "BN sensitivity", "patch": "patch entropy"}[m[teacher]["second_stage"]]
        rows.append(
            f"| `{teacher}` | {stage} | {a['n']} of {b['n']} | {bn} | "
            f"{100 * b['class_fidelity']:.1f}% → {100 * a['class_fidelity']:.1f}% |"
        )
    if bench:
        speed = bench["bn_sensitivity_speedup"]
        rows += [
            "",
            f"BN sensitivity in closed form vs the naive B+1 forward passes at B={bench.get('batch_size', 64)}: "
            + ", ".join(f"{k} {v}x" for k, v in speed.items())
            + " faster (`python -m genqlib.bench filters`).",
        ]
    return "\n".join(rows)


def web_shift_table() -> str:
    """Teacher top-1 and BN distance of the public pool through the web shift and its variants (shift audit)."""
    audit = _load(FIGURES / "web_shift" / "metrics.json")
    if audit is None:
        return "Not measured yet: run `python -m genqlib.zoo.shift_audit`."
    rows = [
        f"| public images seen through | `{audit['teacher']}` top-1 | BN distance (batches of 100) |",
        "|---|---|---|",
    ]
    for name, r in audit["rows"].items():
        rows.append(f"| {name.replace('_', ' ')} | {100 * r['top1']:.1f}% | {r['bn_distance']:.2f} |")
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "run-times": run_times_table,
    "filters": filters_table,
    "teachers": teachers_table,
    "generator": generator_table,
    "fidelity": fidelity_per_class_table,
    "web-shift": web_shift_table,
    "results-table2": table2,
    "results-table4": table4,
    "results-table3": table3,
    "results-fig4": fig4,
    "results-fig5": fig5,
    "results-fig6": fig6,
    "results-table5": table5,
    "results-table1": table1,
}


def generator_card() -> str:
    """The mini generator's model card, from its training record and the measured JSON."""
    training = _load(MINI_GENERATOR / "training.json") or {}
    shift = "\n".join(f"| `{k}` | {v} |" for k, v in training.get("web_shift", {}).items())
    return f"""# The mini generator (Stable Diffusion architecture, Fashion-MNIST size)

Loads with `StableDiffusionPipeline.from_pretrained("genqlib/zoo/generator")`, the call that loads Stable
Diffusion v1.5; `genqlib.generate.load_pipeline` swaps in DDIM sampling and turns off the safety checker.

- **Training data:** {training.get("training_data", "?")}: never the private split (the teachers' data) nor
  the test split.
- **Architecture:** CLIPTokenizer (byte-level BPE, {training.get("vocab_size", "?")} tokens, every prompt word
  one token) + CLIPTextModel (3 layers, width 128) + AutoencoderKL (32x32x1 pixels to 8x8x4 latents) +
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

{generator_table()}

Class fidelity per class:

{fidelity_per_class_table()}
"""


def render(text: str) -> str:
    """``text`` with every known marked section replaced by its freshly generated table."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = parser.parse_args()
    current = README.read_text()
    fresh = render(current)
    if args.check:
        card = MINI_GENERATOR / "README.md"
        stale_card = card.exists() and card.read_text() != generator_card()
        if fresh != current or stale_card:
            sys.exit("README.md tables or the generator card are stale: run python -m genqlib.report")
        return
    README.write_text(fresh)
    if (MINI_GENERATOR / "training.json").exists():
        (MINI_GENERATOR / "README.md").write_text(generator_card())
    print("README.md tables and the generator's model card regenerated")


if __name__ == "__main__":
    main()
