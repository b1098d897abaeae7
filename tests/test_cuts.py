"""Backbone cuts (pool5, conv5_3): shapes, the derived pool5, and the cache keyed by the cut."""

import json
from pathlib import Path

import pytest
import torch
from training_data import make_dataset, random_weights, run_cli

import grid as grid_cli
from flowercam.backbones import registry, vgg16
from flowercam.cache import disk, features
from flowercam.data import dataset
from flowercam.model import vgg


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return vgg16.load(random_weights(tmp_path_factory.mktemp("w") / "a.pth", seed=0))


def test_cut_shapes_and_shared_layers(backbone):
    x = torch.randn(2, 3, 64, 64)
    at = backbone.at("conv5_3")
    with torch.no_grad():
        assert backbone(x).shape == (2, *vgg.feature_shape("pool5", 64)) == (2, 512, 7, 7)
        assert at(x).shape == (2, *vgg.feature_shape("conv5_3", 64)) == (2, 512, 4, 4)
    assert at.features is backbone.features and backbone.cut == "pool5" and at.cut == "conv5_3"
    assert backbone.at("pool5") is backbone and vgg.feature_shape("conv5_3") == (512, 16, 16)
    with pytest.raises(Exception, match="unknown backbone cut"):
        backbone.at("conv9")


def test_pool5_derived_from_conv5_3_equals_pool5_path(backbone):
    x = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        fine = backbone.at("conv5_3")(x)  # [3,512,16,16]
        torch.testing.assert_close(vgg.pool5_from_conv5_3(fine), backbone(x), rtol=0, atol=0)


def test_forward_with_at_conv5_3_ends_at_relu5_3(backbone):
    x = torch.randn(1, 3, 64, 64)
    feats, acts = backbone.at("conv5_3").forward_with(x, ["stage5", "pool3"])
    assert feats is acts["stage5"] and feats.requires_grad and feats.shape == (1, 512, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(feats, backbone.at("conv5_3")(x))


def test_conv5_3_cache_is_float16_and_keyed_by_cut(tmp_path, backbone):
    data_dir = make_dataset(tmp_path / "data", per_class=2, copies=1, size=64)
    items = dataset.split_items(data_dir, "valid")
    coarse = features.feature_cache(items, backbone, data_dir, num_workers=0)
    fine = features.feature_cache(items, backbone.at("conv5_3"), data_dir, num_workers=0)
    assert coarse.dtype == torch.float32 and fine.dtype == torch.float16
    assert fine.shape == (len(items), 512, 4, 4)
    metas = [json.loads(p.read_text()) for p in sorted(Path(data_dir, "cache").glob("*.json"))]
    assert sorted(m["dtype"] for m in metas) == ["float16", "float32"]
    keys = {m["dtype"]: m["key"] for m in metas}
    assert "cut" not in keys["float32"]  # pool5 keys as before this change: old caches stay valid
    assert keys["float16"]["cut"] == "conv5_3" and keys["float16"]["storage"] == "float16"
    npy = features.cache_paths(data_dir, keys["float16"])[0]
    assert npy.stat().st_size == disk.expected_bytes(keys["float16"])
    images = torch.stack([dataset.load_image(path, 64)[0] for _, path, _ in items])
    with torch.no_grad():
        exact = backbone.at("conv5_3")(images)
    torch.testing.assert_close(fine.float(), exact, rtol=1e-3, atol=1e-3)  # float16 rounding
    torch.testing.assert_close(vgg.pool5_from_conv5_3(fine.float()), coarse, rtol=1e-3,
                               atol=1e-3)
    src = features.CachedSource(fine, features.labels_tensor(items))
    batch, _ = next(src.batches(torch.arange(len(items)), 4))
    assert batch.dtype == torch.float32


def test_grid_trains_new_heads_at_conv5_3_and_records_the_cut(tmp_path):
    data_dir = make_dataset(tmp_path / "data", per_class=2, copies=1, size=32)
    weights = random_weights(tmp_path / "w.pth")
    out = tmp_path / "out"
    argv = ["--data-dir", data_dir, "--backbone-weights", weights, "--lrs", "1e-3", "-e", "1",
            "--output-dir", str(tmp_path / "model"), "--results-dir", str(out),
            "--num-workers", "0", "--cut", "conv5_3", "--model-types", "CAM", "CAM-paper"]
    code, results = run_cli(grid_cli, argv)
    assert code is None and [row["config"] for row, _ in results] == [
        "CAM@conv5_3-lr0.001", "CAM-paper@conv5_3-lr0.001"]
    table = (out / "table2.md").read_text()
    assert "| CAM @conv5_3 | 0.001 |" in table and "| CAM-paper @conv5_3 | 0.001 |" in table
    for row, _ in results:
        model, settings = registry.load_model(row["best_checkpoint"], weights)
        assert settings.cut == "conv5_3" and model.backbone.cut == "conv5_3"
