"""Fashion-MNIST loader: fixed splits, search order, and the errors users see."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from genqlib.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, FILES, DataNotFoundError, load_fashion_mnist

needs_data = pytest.mark.skipif(
    not (DEBIAN_DIR / FILES["test_labels"]).exists(), reason="dataset-fashion-mnist not installed"
)


@needs_data
def test_split_sizes_and_ranges():
    private, public, test = (load_fashion_mnist(s) for s in ("private", "public", "test"))
    assert (len(private), len(public), len(test)) == (50_000, 10_000, 10_000)
    assert private.images.shape == (50_000, 1, 28, 28) and private.images.dtype == torch.float32
    assert float(private.images.min()) >= 0.0 and float(private.images.max()) <= 1.0
    assert set(test.labels.tolist()) == set(range(len(CLASS_NAMES)))


@needs_data
def test_private_and_public_partition_the_official_train_set(fresh_data_cache):
    private, public = load_fashion_mnist("private"), load_fashion_mnist("public")
    train_images, train_labels = fresh_data_cache._CACHE["train"]
    together = torch.cat([private.images, public.images])
    assert torch.equal((together * 255).round().to(torch.uint8).squeeze(1), train_images)
    assert torch.equal(torch.cat([private.labels, public.labels]), train_labels)
    # Concatenated in order they are the official train set row for row, so the two splits take
    # disjoint rows (0-49,999 and 50,000-59,999) and together every row exactly once.


@needs_data
def test_balanced_subset_is_reproducible():
    test = load_fashion_mnist("test")
    a, b = test.subset(2000, seed=0), test.subset(2000, seed=0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert a.labels.bincount().tolist() == [200] * 10
    assert not torch.equal(test.subset(2000, seed=1).images, a.images)


def test_unknown_split_names_choices():
    with pytest.raises(ValueError, match="private"):
        load_fashion_mnist("train")


def test_missing_files_error_names_all_three_ways(tmp_path, monkeypatch, fresh_data_cache):
    monkeypatch.setenv("GENQ_DATA", str(tmp_path))
    monkeypatch.setattr(fresh_data_cache, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        load_fashion_mnist("test", download=False)
    message = str(err.value)
    assert "GENQ_DATA" in message and "dataset-fashion-mnist" in message and "download=True" in message


@needs_data
def test_corrupt_file_fails_checksum(tmp_path, monkeypatch, fresh_data_cache):
    for key in ("test_images", "test_labels"):
        shutil.copy(DEBIAN_DIR / FILES[key], tmp_path / FILES[key])
    raw = bytearray(gzip.decompress((tmp_path / FILES["test_images"]).read_bytes()))
    raw[1000] ^= 0xFF
    (tmp_path / FILES["test_images"]).write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setenv("GENQ_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="SHA-256"):
        load_fashion_mnist("test")


@needs_data
def test_genq_data_takes_precedence_and_download_path_verifies(tmp_path, monkeypatch, fresh_data_cache):
    fetched = []

    def fake_urlretrieve(url, target):
        name = url.rsplit("/", 1)[-1]
        fetched.append(name)
        shutil.copy(DEBIAN_DIR / name, target)

    monkeypatch.setenv("GENQ_DATA", str(tmp_path))
    monkeypatch.setattr(fresh_data_cache, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(fresh_data_cache.urllib.request, "urlretrieve", fake_urlretrieve)
    test = load_fashion_mnist("test", download=True)
    assert sorted(fetched) == sorted([FILES["test_images"], FILES["test_labels"]])
    assert len(test) == 10_000 and (tmp_path / FILES["test_labels"]).exists()
    assert not list(tmp_path.glob("*.part"))
