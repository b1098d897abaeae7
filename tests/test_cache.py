"""Feature cache: same numbers as the backbone, keyed on its inputs, resumable."""

import json
import os
from pathlib import Path

import pytest
import torch
from training_data import make_dataset, random_weights

from flowercam.backbones import vgg16
from flowercam.cache import features
from flowercam.core import UserError
from flowercam.data import dataset


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return random_weights(folder / "a.pth", seed=0), random_weights(folder / "b.pth", seed=1)


@pytest.fixture
def data_dir(tmp_path):
    return make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)


def _counting(backbone, monkeypatch, fail_at=None):
    """Count backbone batches; raise KeyboardInterrupt on batch number fail_at (an interruption)."""
    calls = []
    forward = backbone.forward

    def counted(x):
        calls.append(len(x))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return forward(x)

    monkeypatch.setattr(backbone, "forward", counted)
    return calls


def test_cache_equals_backbone_and_is_reused(data_dir, weights, monkeypatch):
    items = dataset.split_items(data_dir, "train")
    backbone = vgg16.load(weights[0])
    feats = features.feature_cache(items, backbone, data_dir, batch_size=5, num_workers=2)
    assert feats.shape == (len(items), 512, 7, 7) and feats.dtype == torch.float32
    images = torch.stack([dataset.load_image(path, 32)[0] for _, path, _ in items])
    with torch.no_grad():
        expected = backbone(images)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    calls = _counting(backbone, monkeypatch)
    again = features.feature_cache(items, backbone, data_dir, batch_size=5, num_workers=0)
    assert calls == [] and torch.equal(again, feats)
    (meta_path,) = (Path(data_dir) / "cache").glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["complete"] and meta["done"] == "1" * len(items)


def test_key_changes_with_weights_images_precision(data_dir, weights):
    items = dataset.split_items(data_dir, "train")
    a, b = vgg16.load(weights[0]), vgg16.load(weights[1])
    assert a.backbone_id != b.backbone_id

    def path(items, backbone, precision="fp32"):
        key = features.cache_key(items, backbone, data_dir, 32, precision)
        return features.cache_paths(data_dir, key)[0]

    base = path(items, a)
    assert path(items, a) == base
    assert path(items, b) != base  # other weights
    assert path(items[:-1], a) != base  # other image list
    assert path(items, a, "bf16") != base
    os.utime(items[0][1], ns=(1, 1))  # same names, rewritten image
    assert path(items, a) != base
    feats_a = features.feature_cache(items, a, data_dir, num_workers=0)
    feats_b = features.feature_cache(items, b, data_dir, num_workers=0)
    assert not torch.allclose(feats_a, feats_b)
    assert len(list((Path(data_dir) / "cache").glob("*.npy"))) == 2


def test_interrupted_build_resumes(data_dir, weights, monkeypatch):
    items = dataset.split_items(data_dir, "train")  # 12 items, batches of 3
    backbone = vgg16.load(weights[0])
    _counting(backbone, monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        features.feature_cache(items, backbone, data_dir, batch_size=3, num_workers=0)
    (meta_path,) = (Path(data_dir) / "cache").glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["done"] == "1" * 6 + "0" * 6 and not meta["complete"]  # two batches kept
    monkeypatch.undo()
    calls = _counting(backbone, monkeypatch)
    feats = features.feature_cache(items, backbone, data_dir, batch_size=3, num_workers=0)
    assert sum(calls) == 6  # only the rows that were missing
    fresh_dir = make_dataset(data_dir + "-fresh", per_class=4, copies=2, size=32)
    fresh = features.feature_cache(dataset.split_items(fresh_dir, "train"), backbone, fresh_dir,
                                batch_size=4, num_workers=0)
    torch.testing.assert_close(feats, fresh, rtol=1e-5, atol=1e-6)


def test_corrupt_image_is_one_line_error(data_dir, weights):
    items = dataset.split_items(data_dir, "train")
    Path(items[5][1]).write_bytes(b"not a jpeg")
    backbone = vgg16.load(weights[0])
    with pytest.raises(UserError) as err:
        features.feature_cache(items, backbone, data_dir, batch_size=4, num_workers=2)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"image {items[5][1]}")


def test_bf16_close_to_fp32(data_dir, weights):
    items = dataset.split_items(data_dir, "valid")
    backbone = vgg16.load(weights[0])
    fp32 = features.feature_cache(items, backbone, data_dir, "fp32", num_workers=0)
    bf16 = features.feature_cache(items, backbone, data_dir, "bf16", num_workers=0)
    assert bf16.dtype == torch.float32
    rel = ((bf16 - fp32).norm() / fp32.norm()).item()
    assert 0 < rel < 0.05


def test_bad_precision_and_empty(data_dir, weights):
    backbone = vgg16.load(weights[0])
    with pytest.raises(UserError, match="precision"):
        features.feature_cache(dataset.split_items(data_dir, "valid"), backbone, data_dir, "fp8")
    assert features.feature_cache([], backbone, data_dir).shape == (0, 512, 7, 7)
    assert not (Path(data_dir) / "cache").exists()
