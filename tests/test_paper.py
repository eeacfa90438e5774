"""The paper profiles' parts without a network: ImageNet folders, class names, hf: classifiers, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genqlib import imagenet
from genqlib.zoo.classifiers import (
    Preprocess,
    Preprocessing,
    preprocessing_from_hf,
    preprocessing_from_timm,
    teacher_tag,
)


def test_class_table_has_the_1000_imagenet_classes():
    assert len(imagenet.wnids()) == len(imagenet.class_names()) == 1000
    assert imagenet.wnids()[0] == "n01440764" and imagenet.class_names()[0].startswith("tench")
    assert list(imagenet.wnids()) == sorted(imagenet.wnids())


def _jpeg(path, size=(50, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def test_tree_and_flat_layouts(tmp_path):
    wn = imagenet.wnids()
    for c in (3, 5):
        for i in range(3):
            _jpeg(tmp_path / "train" / wn[c] / f"{i}.JPEG")
    for i in range(2):
        _jpeg(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    (tmp_path / "val_labels.txt").write_text(
        f"ILSVRC2012_val_00000000.JPEG {wn[5]}\nILSVRC2012_val_00000001 3\n"
    )
    train = imagenet.load_imagenet("train", 16, tmp_path, n=4, seed=0)
    assert train.images.shape == (4, 3, 16, 16) and sorted(train.labels.tolist()) == [3, 3, 5, 5]
    val = imagenet.load_imagenet("val", 16, tmp_path)
    assert val.labels.tolist() == [5, 3]
    assert 0.49 < float(val.images.mean()) < 0.52


def test_missing_folder_names_the_variable(monkeypatch):
    monkeypatch.delenv("GENQ_IMAGENET", raising=False)
    with pytest.raises(imagenet.ImageNetNotFoundError, match="GENQ_IMAGENET"):
        imagenet.load_imagenet("val", 16)


def test_hf_preprocessing_configs():
    resnet = preprocessing_from_hf({"size": {"shortest_edge": 224}, "crop_pct": 0.875})
    assert (resnet.resize_short, resnet.crop) == (256, (224, 224))
    vit = preprocessing_from_hf({"size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3})
    assert vit.resize_to == (224, 224) and vit.crop is None and vit.mean == (0.5, 0.5, 0.5)
    deit = preprocessing_from_hf(
        {"size": {"height": 256, "width": 256}, "do_center_crop": True, "crop_size": 224}
    )
    assert deit.resize_to == (256, 256) and deit.crop == (224, 224)
    timm = preprocessing_from_timm(
        {"input_size": (3, 224, 224), "crop_pct": 0.875, "mean": (0.1,) * 3, "std": (0.2,) * 3}
    )
    assert timm.resize_short == 256 and timm.crop == (224, 224)


def test_preprocess_module_maps_any_size_to_the_input():
    pre = Preprocess(Preprocessing(resize_short=36, crop=(32, 32)))
    out = pre(torch.full((2, 1, 50, 40), 0.5))
    assert out.shape == (2, 3, 32, 32)
    assert torch.allclose(out[:, 0], torch.full((2, 32, 32), (0.5 - 0.485) / 0.229), atol=1e-5)


def test_teacher_tags_are_file_names():
    assert teacher_tag("resnet") == "resnet"
    assert teacher_tag("hf:microsoft/resnet-50") == "hf-microsoft--resnet-50"
    assert teacher_tag("hf:/tmp/x/hf-vit") == "hf-hf-vit"
    assert teacher_tag("timm:resnet18") == "timm-resnet18"


def test_hf_classifier_from_a_local_folder(tmp_path):
    from genqlib.zoo import load_teacher
    from genqlib.zoo.smoke import build_hf_vit

    build_hf_vit(tmp_path / "vit")
    model = load_teacher(f"hf:{tmp_path / 'vit'}")
    out = model(torch.rand(3, 3, 45, 60))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 1000)
    assert len(model.transformer_blocks()) == 2 and model.class_names[1].startswith("goldfish")
