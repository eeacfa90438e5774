"""ImageNet classifiers from ``transformers`` (``hf:``) and timm (``timm:``), in genqlib's one convention.

``load_classifier("hf:microsoft/resnet-50")`` (a hub id) or ``load_classifier("hf:/path/to/folder")`` (a
``save_pretrained`` folder) loads an ``AutoModelForImageClassification``; ``load_classifier("timm:resnet18")`` a
pretrained timm model (only where timm imports). Either comes back as a ``Classifier``: its forward takes
float images in [0, 1] of any size (N, 3 or 1, H, W), applies the model's own preprocessing inside (resize,
centre crop, mean/std from the ``preprocessor_config.json`` or timm's data config) and returns the logits
tensor, exactly as the mini teachers normalise inside themselves. So real ImageNet images, synthetic images
and noise all go through the same preprocessing, and filters, quantizers and metrics see plain tensors.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genqlib.logits import Logits, logits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCHEMES = ("hf:", "timm:")


@dataclass(frozen=True)
class Preprocessing:
    """How a classifier wants its pixels: resize (shorter side to ``resize_short``, or both sides to
    ``resize_to``), then a centre crop to ``crop`` (H, W), then ``(x - mean) / std`` per channel."""

    resize_short: int | None = None
    resize_to: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.crop or self.resize_to


def _hw(value, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    if "height" in value:
        return (int(value["height"]), int(value["width"]))
    return (int(value["shortest_edge"]), int(value["shortest_edge"]))


def preprocessing_from_hf(cfg: dict, image_size: int = 224) -> Preprocessing:
    """The ``Preprocessing`` that a ``preprocessor_config.json`` describes (ConvNeXt-style ``crop_pct``,
    ``shortest_edge`` + ``crop_size`` or a fixed ``height``/``width``), as transformers' processors apply it."""
    size = cfg.get("size", image_size)
    size = {"shortest_edge": size} if isinstance(size, int) else size
    mean = tuple(cfg.get("image_mean", IMAGENET_MEAN)) if cfg.get("do_normalize", True) else (0.0,)
    std = tuple(cfg.get("image_std", IMAGENET_STD)) if cfg.get("do_normalize", True) else (1.0,)
    do_resize = cfg.get("do_resize", True)
    crop = _hw(cfg.get("crop_size"), image_size) if cfg.get("do_center_crop") else None
    if not do_resize:
        return Preprocessing(crop=crop, mean=mean, std=std)
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        crop_pct = cfg.get("crop_pct")
        if crop_pct is not None:  # ConvNextImageProcessor (microsoft/resnet-*, convnext)
            if edge < 384:
                return Preprocessing(int(edge / crop_pct), None, (edge, edge), mean, std)
            return Preprocessing(None, (edge, edge), None, mean, std)
        return Preprocessing(edge, None, crop, mean, std)
    return Preprocessing(None, _hw(size, image_size), crop, mean, std)


def preprocessing_from_timm(data_config: dict) -> Preprocessing:
    """The ``Preprocessing`` of timm's ``resolve_data_config``: shorter side to size / crop_pct, centre crop."""
    _, h, w = data_config["input_size"]
    crop_pct = data_config.get("crop_pct", 0.875)
    return Preprocessing(
        math.floor(min(h, w) / crop_pct), None, (h, w), tuple(data_config["mean"]), tuple(data_config["std"])
    )


class Preprocess(nn.Module):
    """[0, 1] images of any size -> the classifier's normalised input (bilinear resize with antialias)."""

    def __init__(self, spec: Preprocessing) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = (int(n) for n in x.shape[-2:])  # Python ints, also when a tracer holds the shape
        size = None
        if self.spec.resize_to is not None:
            size = self.spec.resize_to
        elif self.spec.resize_short is not None:
            scale = self.spec.resize_short / min(h, w)
            size = (
                max(self.spec.resize_short, round(h * scale)),
                max(self.spec.resize_short, round(w * scale)),
            )
        if size is not None and tuple(size) != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.spec.crop is not None:
            ch, cw = self.spec.crop
            top, left = max(0, (x.shape[-2] - ch) // 2), max(0, (x.shape[-1] - cw) // 2)
            x = x[..., top : top + ch, left : left + cw]
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Classifier(nn.Module):
    """A classifier in genqlib's convention: [0, 1] images in, logits tensor out (see the module doc).

    ``pixel_mean``/``pixel_std`` (per channel, in [0, 1] pixels) are what the baselines start noise from;
    ``transformer_blocks()`` lists the encoder layers that patch-similarity entropy hooks."""

    def __init__(self, model: nn.Module, spec: Preprocessing, name: str, class_names: tuple[str, ...] = ()):
        super().__init__()
        self.preprocess = Preprocess(spec)
        # Logits: every submodule that genqlib sees returns a tensor (transformers returns ImageClassifierOutput)
        self.model = model if isinstance(model, Logits) else Logits(model)
        self.name = name
        self.class_names = class_names
        self.pixel_mean = torch.tensor(spec.mean).view(-1, 1, 1)
        self.pixel_std = torch.tensor(spec.std).view(-1, 1, 1)
        side = spec.input_size or (224, 224)  # any size works: preprocessing resizes inside
        self.input_size = (len(spec.mean), *side)  # (C, H, W) for genqlib.quant.example_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits(self.model(self.preprocess(x)))

    def transformer_blocks(self) -> list[nn.Module]:
        """The model's transformer layers: the first ModuleList named ``layers``, ``layer`` or ``blocks``
        (transformers' ViT/DeiT ``vit.layers`` or ``encoder.layer``, timm's ``blocks``); [] for CNNs."""
        for name, module in self.model.named_modules():
            listed = isinstance(module, nn.ModuleList | nn.Sequential) and len(module) > 0
            named = name.rsplit(".", 1)[-1] in ("layers", "layer", "blocks")
            if listed and named and any("Attention" in type(m).__name__ for m in module[0].modules()):
                return list(module.children())
        return []

    def extra_repr(self) -> str:
        return f"name={self.name!r}, preprocessing={asdict(self.preprocess.spec)}"


def is_classifier_name(name: str) -> bool:
    """Whether ``name`` uses one of the schemes ``hf:`` or ``timm:``."""
    return name.startswith(SCHEMES)


def load_classifier(name: str, device: str | torch.device | None = None) -> Classifier:
    """``hf:<hub id or folder>`` or ``timm:<model name>`` as a ``Classifier`` in eval mode."""
    if name.startswith("hf:"):
        model = _load_hf(name[3:], name)
    elif name.startswith("timm:"):
        model = _load_timm(name[5:], name)
    else:
        raise ValueError(f"classifier names start with one of {SCHEMES}, got {name!r}")
    return model.to(device or "cpu").eval()


def _load_hf(source: str, name: str) -> Classifier:
    from transformers import AutoModelForImageClassification

    folder = Path(source).expanduser()
    try:
        model = AutoModelForImageClassification.from_pretrained(str(folder) if folder.is_dir() else source)
    except OSError as err:
        raise OSError(
            f"could not load {name!r}: neither a folder with a transformers image classifier nor a hub id "
            f"available offline ({err}). Download it once with `hf download {source}` or pass hf:/local/folder."
        ) from err
    cfg = _read_preprocessor(folder if folder.is_dir() else None, source)
    image_size = getattr(model.config, "image_size", 224)
    image_size = image_size if isinstance(image_size, int) else 224
    spec = preprocessing_from_hf(cfg, image_size)
    id2label = getattr(model.config, "id2label", None) or {}
    names = tuple(id2label[i] for i in sorted(id2label)) if id2label else ()
    return Classifier(model, spec, name, names)


def _read_preprocessor(folder: Path | None, source: str) -> dict:
    """The model's ``preprocessor_config.json`` as a dict ({} when it has none: ImageNet defaults apply)."""
    if folder is not None:
        path = folder / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source, "preprocessor_config.json")).read_text())
    except Exception:  # noqa: BLE001 - any hub failure means "no processor config": the defaults apply
        return {}


def _load_timm(model_name: str, name: str) -> Classifier:
    try:
        import timm
    except ImportError as err:
        raise ValueError(
            f"{name!r} needs timm, which does not import here ({err}); use an hf: model"
        ) from err
    model = timm.create_model(model_name, pretrained=True)
    spec = preprocessing_from_timm(timm.data.resolve_data_config({}, model=model))
    return Classifier(model, spec, name)


def teacher_tag(name: str) -> str:
    """A file-name-safe tag for a teacher name: mini names unchanged, ``hf:/a/b/resnet`` -> ``hf-resnet``,
    ``hf:microsoft/resnet-50`` -> ``hf-microsoft--resnet-50``, ``timm:resnet18`` -> ``timm-resnet18``."""
    if not is_classifier_name(name):
        return name
    scheme, rest = name.split(":", 1)
    path = Path(rest).expanduser()
    rest = path.name if (path.is_absolute() or rest.startswith((".", "~"))) else rest.replace("/", "--")
    return f"{scheme}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", rest)
