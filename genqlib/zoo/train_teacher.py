"""Train a mini-world teacher on the private split: ``python -m genqlib.zoo.train_teacher NAME``.

Fixed seed, a progress bar, and a checkpoint after every epoch under ``--workdir`` so a stopped run
resumes where it was. At the end the weights are written as safetensors next to this module, with a
JSON record (accuracies, time, recipe) and a Markdown model card made from it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from genqlib.fashion_mnist import load_fashion_mnist
from genqlib.infra.atomic import atomic_path
from genqlib.infra.progress import tqdm
from genqlib.zoo import TEACHER_DIR, build_teacher, list_teachers
from genqlib.zoo.evaluate import CARD_SUBSET_SEED, CARD_SUBSET_SIZE, top1


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings for one teacher."""

    epochs: int
    lr: float
    weight_decay: float
    optimizer: str  # "sgd" (Nesterov momentum 0.9) or "adamw"
    batch_size: int = 128
    warmup_epochs: float = 0.5
    seed: int = 0


RECIPES = {
    "resnet": Recipe(epochs=10, lr=0.1, weight_decay=5e-4, optimizer="sgd"),
    "mobilenet": Recipe(epochs=12, lr=0.1, weight_decay=4e-5, optimizer="sgd"),
    "vit": Recipe(epochs=20, lr=2e-3, weight_decay=0.05, optimizer="adamw", warmup_epochs=1.0),
}


def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill) and random horizontal flip, per image."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    out = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD or AdamW with weight decay on weights only (not on norms, biases, tokens)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())


def train(name: str, workdir: Path, epochs: int | None = None) -> dict:
    """Train teacher ``name`` (resuming from ``workdir``) and return its measured record."""
    recipe = RECIPES[name]
    if epochs is not None:
        recipe = Recipe(**{**asdict(recipe), "epochs": epochs})
    torch.manual_seed(recipe.seed)
    data = load_fashion_mnist("private")
    model = build_teacher(name)
    opt = make_optimizer(model, recipe)
    steps_per_epoch = len(data) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, int(recipe.warmup_epochs * steps_per_epoch))
    )
    ckpt_path = workdir / f"{name}.ckpt"
    state = {"epoch": 0, "seconds": 0.0}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        state = {"epoch": ckpt["epoch"], "seconds": ckpt["seconds"]}
        print(f"resuming {name} after epoch {state['epoch']}")
    for epoch in range(state["epoch"], recipe.epochs):
        start = time.time()
        gen = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
        order = torch.randperm(len(data), generator=gen)
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{recipe.epochs}")
        for step in bar:
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x, y = augment(data.images[idx], gen), data.labels[idx]
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        state = {"epoch": epoch + 1, "seconds": state["seconds"] + time.time() - start}
        ckpt = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), **state}
        with atomic_path(ckpt_path) as tmp:
            torch.save(ckpt, tmp)
    return finish(name, model.eval(), recipe, state["seconds"])


def finish(name: str, model: nn.Module, recipe: Recipe, seconds: float) -> dict:
    """Measure the trained teacher, write its safetensors, JSON record and model card."""
    test = load_fashion_mnist("test")
    subset = test.subset(CARD_SUBSET_SIZE, seed=CARD_SUBSET_SEED)
    record = {
        "name": name,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": asdict(recipe),
        "train_split": "private (Fashion-MNIST train images 0-49,999)",
        "train_seconds": round(seconds, 1),
        "train_threads": torch.get_num_threads(),
        "test_top1": round(top1(model, test), 2),
        "subset_top1": round(top1(model, subset), 2),
        "subset": {"size": CARD_SUBSET_SIZE, "seed": CARD_SUBSET_SEED, "per_class": True},
        "command": f"python -m genqlib.zoo.train_teacher {name}",
        "evaluate_command": f"python -m genqlib.zoo.evaluate {name}",
        "torch": torch.__version__,
    }
    TEACHER_DIR.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, TEACHER_DIR / f"{name}.safetensors", metadata={"name": name})
    (TEACHER_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (TEACHER_DIR / f"{name}.md").write_text(model_card(record, model))
    return record


def model_card(record: dict, model: nn.Module) -> str:
    """A Markdown model card built from the measured record (no hand-typed numbers)."""
    r = record
    return f"""# Teacher `{r["name"]}` ({r["architecture"]})

Full-precision Fashion-MNIST classifier, one of genqlib's mini-world teachers (the models to quantize).
Input: float images in [0, 1], shape (B, 1, 28, 28); normalisation is inside the model.

| | |
|---|---|
| parameters | {r["parameters"]:,} |
| training data | {r["train_split"]} |
| recipe | {r["recipe"]["epochs"]} epochs, {r["recipe"]["optimizer"]}, lr {r["recipe"]["lr"]}, \
weight decay {r["recipe"]["weight_decay"]}, batch {r["recipe"]["batch_size"]}, \
warm-up {r["recipe"]["warmup_epochs"]} epoch then cosine; random shift <= 2 px and horizontal flip; \
seed {r["recipe"]["seed"]} |
| training time | {r["train_seconds"]} s on {r["train_threads"]} CPU threads (torch {r["torch"]}) |
| test top-1 (10,000 images) | **{r["test_top1"]}%** |
| top-1 on the fixed 2,000-image test subset (seed {r["subset"]["seed"]}) | {r["subset_top1"]}% |

Reproduce: `{r["command"]}` (trains, then rewrites this card); measure: `{r["evaluate_command"]}`.

## Architecture

```
{model}
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=list_teachers())
    parser.add_argument("--workdir", type=Path, default=Path("runs/teachers"))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe (smoke runs)")
    args = parser.parse_args()
    record = train(args.name, args.workdir, args.epochs)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
