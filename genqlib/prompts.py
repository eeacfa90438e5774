"""Text prompts for synthetic calibration data: label prompts, mixup-class prompts, style-token prompts.

* Label prompt (GenQ eq. 4): ``"A photo of a {D} {C}"``, ``{D}`` an adjective drawn from the CLIP ImageNet
  templates (``CLIP_TEMPLATE_ADJECTIVES``), ``{C}`` the class name. The article stays ``"a"`` whatever follows,
  exactly as the paper's template (and CLIP's own "a origami {}") writes it.
* Mixup-class prompt (Park et al. 2025, "mixup-class prompting"): several class names fused in one prompt.
  Only the abstract is in ``shared/papers``, so the wording is ours: the label prompt with the extra classes
  joined in, ``"A photo of a {D} {C1} and a {C2}"`` (three or more: ``"{C1}, a {C2} and a {C3}"``). The
  image's own class ``C1`` comes first; partners are drawn without replacement from the run's other classes;
  every class involved gets the same weight ``1/k`` (the prompt carries no mixing ratio).
* Style prompt (GenQ eq. 10, data-scarce case): ``"A photo of a {C} in the style of {S}"``, ``{S}`` a token
  learned by textual inversion.
* Plain prompt: ``"A photo of a {C}"`` (no adjective; the ablation baseline).

Class names in prompts (``prompt_name``): the text before the first ``/`` or ``,`` (ImageNet's synonym lists
and Fashion-MNIST's "T-shirt/top" alike), lower-cased word by word except words with a capital after their
first letter (acronyms, "iPod"). So "T-shirt/top" -> "t-shirt", "Ankle boot" -> "ankle boot". We keep the
first alternative only: it is the common name, and a shorter prompt leaves the small generator's text encoder
less to untangle ("t-shirt or top" would also read as a two-class prompt).

Determinism: ``PromptSpec.item(i)`` depends only on the spec and ``i``; its random choices come from a
``random.Random`` seeded with the string ``"genq-prompt:{seed}:{i}"`` (string seeds are hashed with SHA-512,
stable across Python runs and platforms).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

# The adjectives in OpenAI CLIP's 80 ImageNet prompt templates (CLIP repository,
# notebooks/Prompt_Engineering_for_ImageNet.ipynb, e.g. "a bad photo of a {}.", "a photo of a clean {}.",
# "the plastic {}."), which GenQ (Appendix A) uses for {D}. Three groups:
CLIP_TEMPLATE_ADJECTIVES: tuple[str, ...] = (
    # "a {D} photo of a {}" and "a photo of a {D} {}"
    "bad",
    "black and white",
    "blurry",
    "bright",
    "clean",
    "close-up",
    "cool",
    "cropped",
    "dark",
    "dirty",
    "good",
    "hard to see",
    "jpeg corrupted",
    "large",
    "low resolution",
    "nice",
    "pixelated",
    "small",
    "weird",
    # "a/the {D} {}": the object-kind templates
    "cartoon",
    "embroidered",
    "origami",
    "plastic",
    "plushie",
    "toy",
    # "a {medium} of a {}" turned into participles: rendering, sculpture, painting, drawing, sketch, doodle, tattoo
    "rendered",
    "sculpted",
    "painted",
    "drawn",
    "sketched",
    "doodled",
    "tattooed",
)

PROMPT_KINDS = ("label", "mixup", "style", "plain")
DEFAULT_STYLE_TOKEN = "<s>"


def prompt_name(class_name: str) -> str:
    """The class name as it appears in prompts: first alternative, lower-cased (acronyms kept)."""
    first = class_name.replace(",", "/").split("/")[0].strip()
    if not first:
        raise ValueError(f"class name {class_name!r} has no text before its first '/' or ','")
    return " ".join(w if any(c.isupper() for c in w[1:]) else w.lower() for w in first.split())


def _rng(rng: random.Random | int | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def label_prompt(
    class_name: str, rng: random.Random | int | None = None, adjective: str | None = None
) -> str:
    """GenQ's label prompt "A photo of a {D} {C}"; {D} is ``adjective``, else a random CLIP template
    adjective drawn from ``rng``."""
    adjective = adjective or _rng(rng).choice(CLIP_TEMPLATE_ADJECTIVES)
    return f"A photo of a {adjective} {prompt_name(class_name)}"


def mixup_prompt(class_names: Sequence[str], rng: random.Random | int | None = None) -> str:
    """Mixup-class prompt fusing two or more class names: "A photo of a {D} {C1}, a {C2} and a {C3}"."""
    if len(class_names) < 2:
        raise ValueError(f"a mixup prompt needs at least 2 class names, got {list(class_names)}")
    names = [prompt_name(n) for n in class_names]
    adjective = _rng(rng).choice(CLIP_TEMPLATE_ADJECTIVES)
    joined = ", a ".join(names[:-1]) + f" and a {names[-1]}"
    return f"A photo of a {adjective} {joined}"


def style_prompt(class_name: str, token: str = DEFAULT_STYLE_TOKEN) -> str:
    """GenQ's data-scarce prompt "A photo of a {C} in the style of {S}" with a learned token {S}."""
    return f"A photo of a {prompt_name(class_name)} in the style of {token}"


def plain_prompt(class_name: str) -> str:
    """The bare "A photo of a {C}" (no adjective), the ablation baseline."""
    return f"A photo of a {prompt_name(class_name)}"


@dataclass(frozen=True)
class PromptItem:
    """One image's prompt: its text, its own class, every class involved and their weights (sum 1)."""

    text: str
    class_index: int
    classes: tuple[int, ...]
    class_weights: tuple[float, ...]


@dataclass(frozen=True)
class PromptSpec:
    """Deterministic prompts for a run: image ``i`` is of class ``classes[i % len(classes)]``.

    Round-robin order keeps every prefix of the run class-balanced and makes image ``i`` independent of how
    many images per class are asked for, so a run can be resumed or extended. ``classes`` are indices into
    ``class_names`` (default: all); ``class_names`` is required because only the dataset knows them. ``mixup_k`` classes are fused per mixup prompt.
    """

    kind: str = "label"
    class_names: tuple[str, ...] = field(kw_only=True)  # the dataset's, e.g. datasets.class_names(profile)
    classes: tuple[int, ...] | None = None
    seed: int = 0
    style_token: str = DEFAULT_STYLE_TOKEN
    mixup_k: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        classes = tuple(range(len(self.class_names))) if self.classes is None else tuple(self.classes)
        object.__setattr__(self, "classes", classes)
        self._validate()

    def _validate(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompts kind {self.kind!r}; choose one of {list(PROMPT_KINDS)}")
        if not self.classes:
            raise ValueError("classes is empty; give at least one class")
        bad = [c for c in self.classes if not 0 <= c < len(self.class_names)]
        if bad:
            raise ValueError(f"class indices {bad} out of range 0..{len(self.class_names) - 1}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes has duplicates: {list(self.classes)}")
        if self.kind == "mixup" and not 2 <= self.mixup_k <= len(self.classes):
            raise ValueError(
                f"mixup_k must be in 2..{len(self.classes)} (the number of classes), got {self.mixup_k}"
            )

    def item(self, index: int) -> PromptItem:
        """The prompt of image ``index`` (0-based position in the run's round-robin order)."""
        if index < 0:
            raise ValueError(f"image index must be >= 0, got {index}")
        rng = random.Random(f"genq-prompt:{self.seed}:{index}")
        own = self.classes[index % len(self.classes)]
        involved = (own,)
        if self.kind == "mixup":
            others = [c for c in self.classes if c != own]
            involved += tuple(rng.sample(others, self.mixup_k - 1))
        text = self._text([self.class_names[c] for c in involved], rng)
        weights = tuple(1.0 / len(involved) for _ in involved)
        return PromptItem(text, own, involved, weights)

    def _text(self, names: list[str], rng: random.Random) -> str:
        if self.kind == "label":
            return label_prompt(names[0], rng)
        if self.kind == "mixup":
            return mixup_prompt(names, rng)
        if self.kind == "style":
            return style_prompt(names[0], self.style_token)
        return plain_prompt(names[0])

    def items(self, n_per_class: int) -> list[PromptItem]:
        """Prompts of the first ``n_per_class * len(classes)`` images."""
        return [self.item(i) for i in range(n_per_class * len(self.classes))]
