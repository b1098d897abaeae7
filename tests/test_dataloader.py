"""dataloader.py: split sizes/stratification/stability, split items, FlowerDataset, loaders."""

import io
import json
import sys
from collections import Counter

import pytest
import torch

import augment
import dataloader
from flowercam.core import UserError
from flowercam.data import dataset, splits


def fake_images(classes=17, per_class=80):
    return [{"id": f"image_{c * per_class + i + 1:04d}", "label": c, "source": "x"}
            for c in range(classes) for i in range(per_class)]


def test_generated_split_official_sizes_and_stratified():
    images = fake_images()
    result = splits.generate_splits(images)
    assert result["source"] == "generated" and result["seed"] == splits.SPLIT_SEED
    label = {im["id"]: im["label"] for im in images}
    for parts in result["splits"].values():
        for subset, per_class in zip(dataset.SUBSETS, (40, 20, 20), strict=True):
            counts = Counter(label[i] for i in parts[subset])
            assert set(counts.values()) == {per_class} and len(counts) == 17
        every = parts["train"] + parts["valid"] + parts["test"]
        assert sorted(every) == sorted(label)  # disjoint and complete
    assert result["splits"]["1"]["train"] != result["splits"]["2"]["train"]


def test_generated_split_stable_and_proportional():
    images = fake_images(classes=3, per_class=10)
    assert splits.generate_splits(images) == splits.generate_splits(list(images))
    assert splits.split_sizes(80) == (40, 20, 20)
    assert splits.split_sizes(10) == (5, 2, 3) and splits.split_sizes(1) == (1, 0, 0)
    # a class added later does not reshuffle the others
    more = splits.generate_splits(images + fake_images(classes=4, per_class=10)[30:])
    old = splits.generate_splits(images)["splits"]["1"]["test"]
    assert more["splits"]["1"]["test"][: len(old)] == old


def test_split_items(prepared_data):
    split = dataset.load_split(prepared_data, 1)
    train = dataset.split_items(prepared_data, "train", 1)
    valid = dataset.split_items(prepared_data, "valid", 1)
    assert len(split["train"]) == 9 and len(train) == 9 * 2 and len(valid) == 3
    assert {item_id[-2:] for item_id, _, _ in valid} == {"_0"}
    assert train[1][0] == split["train"][0] + "_1"
    labels = {im["id"]: im["label"] for im in dataset.read_index(prepared_data)["images"]}
    for item_id, path, label in train + valid:
        assert label == labels[item_id.rsplit("_", 1)[0]] and path.endswith(item_id + ".jpg")
    assert dataset.class_names(prepared_data) == ["cat", "dog", "fox"]


def test_dataset_and_seeded_loader(prepared_data):
    items = dataset.split_items(prepared_data, "train")
    flowers = dataset.FlowerDataset(items, size=64)
    image, label = flowers[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and label == items[0][2]
    assert -2.2 < image.min() and image.max() < 2.7  # ImageNet-normalised range

    def order(seed):
        loader = dataset.make_loader(items, 4, True, seed, 0, size=64)
        return torch.cat([labels for _, labels in loader]).tolist()

    torch.manual_seed(1)
    first = order(5)
    torch.manual_seed(2)  # the global stream must not matter
    assert order(5) == first and sorted(first) == sorted(label for _, _, label in items)
    batch, labels = next(iter(dataset.make_loader(items, 4, False, 0, 0, size=32)))
    assert batch.shape == (4, 3, 32, 32) and labels.tolist() == [i[2] for i in items[:4]]


def test_load_image_and_errors(prepared_data, tmp_path):
    path = dataset.split_items(prepared_data, "test")[0][1]
    tensor, original = dataset.load_image(path, size=32)
    assert tensor.shape == (3, 32, 32) and original.mode == "RGB" and original.size == (64, 64)
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(UserError, match="bad.jpg is unreadable"):
        dataset.load_image(tmp_path / "bad.jpg")
    with pytest.raises(UserError, match="not found"):
        dataset.load_image(tmp_path / "missing.jpg")
    with pytest.raises(UserError, match="not found: the data folder is not prepared"):
        dataset.read_index(tmp_path)
    with pytest.raises(UserError, match="use 1, 2 or 3"):
        dataset.load_split(prepared_data, 4)
    with pytest.raises(UserError, match="unknown subset"):
        dataset.split_items(prepared_data, "val")


def test_unfinished_augmentation_refused(prepared_data, tmp_path):
    data = tmp_path / "data"
    for name in ("index.json", "splits.json"):
        (data / name).parent.mkdir(exist_ok=True)
        (data / name).write_bytes((prepared_data / name).read_bytes())
    (data / "augment.json").write_text(json.dumps({"copies": 2, "size": 64, "seed": 0,
                                                   "complete": False}))
    with pytest.raises(UserError, match="incomplete"):
        dataset.split_items(data, "train")


def test_mat_splits_need_scipy(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import now fails as if not installed
    with pytest.raises(UserError, match="needs scipy"):
        splits.read_mat_splits(tmp_path / "datasplits.mat", set())


def test_mat_splits_read(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, {f"{k}{s}": [[3, 1, 2]] for k in ("trn", "val", "tst") for s in "123"})
    (tmp_path / "datasplits.mat").write_bytes(buffer.getvalue())
    result = splits.read_mat_splits(tmp_path / "datasplits.mat", {"image_0001", "image_0003"})
    assert result["source"] == "datasplits.mat"
    assert result["splits"]["3"]["test"] == ["image_0001", "image_0003"]


def test_cli_prints_sizes(prepared_data, capsys):
    dataloader.main(dataloader.get_args_parser().parse_args(
        ["--data-dir", str(prepared_data), "--size", "32", "--batch-size", "2"]))
    out = capsys.readouterr().out
    assert "split 1 train: 18 items" in out and "(2, 3, 32, 32)" in out


@pytest.mark.real
def test_real_subset_loads(flowers_jpg, tmp_path):
    """A few real Flower-17 images per class through augment.py and FlowerDataset/make_loader."""
    source = tmp_path / "flowers17"
    (source / "jpg").mkdir(parents=True)
    for c in range(17):
        for n in (c * 80 + 1, c * 80 + 2):
            (source / "jpg" / f"image_{n:04d}.jpg").symlink_to(flowers_jpg / f"image_{n:04d}.jpg")
    data = tmp_path / "data"
    augment.main(augment.get_args_parser().parse_args(
        ["--source", str(source), "--data-dir", str(data), "--copies", "2", "--num-workers", "2"]))
    assert len(list((data / "auged").iterdir())) == 17 * 2 * 2
    items = dataset.split_items(data, "train")
    assert len(items) == 17 * 2 and {label for _, _, label in items} == set(range(17))
    images, labels = next(iter(dataset.make_loader(items, 8, True, 0, 0)))
    assert images.shape == (8, 3, 256, 256) and labels.max() < 17
    # --limit-per-class on the shared folder gives the same images
    augment.main(augment.get_args_parser().parse_args(
        ["--source", str(flowers_jpg.parent), "--data-dir", str(tmp_path / "lim"), "--copies", "2",
         "--num-workers", "2", "--limit-per-class", "2"]))
    assert sorted(p.name for p in (tmp_path / "lim" / "auged").iterdir()) == sorted(
        p.name for p in (data / "auged").iterdir())
