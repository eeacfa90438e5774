"""How far the "web" shift moves the generator's training images from the teachers' world:
``python -m genqlib.zoo.shift_audit`` (writes figures/web_shift/metrics.json).

For the public pool seen through the default shift and through variants with one perturbation removed, a
teacher's top-1 (the ceiling that class fidelity of a generator trained on that view can be expected to
approach) and the BN distance in batches of 100 (the gap the filters and the style token have to close).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from genqlib.fashion_mnist import load_fashion_mnist
from genqlib.filters import bn_distance
from genqlib.infra.paths import REPO_ROOT
from genqlib.metrics import class_fidelity
from genqlib.store import crop_border
from genqlib.zoo import load_teacher
from genqlib.zoo.web_shift import WebShift, apply_web_shift

DEFAULT_OUT = REPO_ROOT / "figures" / "web_shift" / "metrics.json"
VARIANTS = {
    "default": {},
    "no_affine": {"p_affine": 0.0},
    "no_zoom": {"p_zoom": 0.0},
    "no_flip": {"p_flip": 0.0},
    "no_tone": {"p_tone": 0.0},
    "no_background": {"p_background": 0.0},
    "no_tone_no_background": {"p_tone": 0.0, "p_background": 0.0},
    "pad_only": {"p_affine": 0.0, "p_zoom": 0.0, "p_flip": 0.0, "p_tone": 0.0, "p_background": 0.0},
}


def audit(
    shift: WebShift | None, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict:
    """Top-1 and mean BN distance (batches of 100) of ``images`` seen through ``shift`` (None: unshifted),
    brought back to 28x28 as ``SyntheticSet.images`` does with generated 32x32 images (the border cropped)."""
    if shift is not None:
        size = tuple(images.shape[-2:])
        images = crop_border(apply_web_shift(images, torch.Generator().manual_seed(0), shift), size)
    top1 = class_fidelity(teacher, images, labels)["class_fidelity"]
    distance = sum(bn_distance(teacher, images[i : i + 100]) for i in range(0, len(images), 100))
    return {"top1": top1, "bn_distance": distance / (len(images) // 100)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="resnet")
    parser.add_argument("--n", type=int, default=10_000, help="public images to shift (a multiple of 100)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    teacher = load_teacher(args.teacher)
    public = load_fashion_mnist("public").subset(args.n, seed=0)
    rows = {"clean": audit(None, teacher, public.images, public.labels)}
    for name, change in VARIANTS.items():
        rows[name] = audit(replace(WebShift(), **change), teacher, public.images, public.labels)
        print(
            f"{name:24s} top-1 {rows[name]['top1']:.3f}  BN distance {rows[name]['bn_distance']:.2f}",
            flush=True,
        )
    record = {
        "teacher": args.teacher,
        "n": args.n,
        "shift": WebShift().describe(),
        "variants": VARIANTS,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"clean top-1 {rows['clean']['top1']:.3f}, BN distance {rows['clean']['bn_distance']:.2f} -> {args.out}"
    )


if __name__ == "__main__":
    main()
