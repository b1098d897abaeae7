"""The segmenter (segment.py, flowercam.segment): trained from image labels alone (no mask file
is ever read), better than the noisy pseudo-labels it learns from, its checkpoint round trip and
bad inputs, its rows in --cam-metrics and its masks in inference.py; and a real-data smoke run."""

import json
import shutil

import numpy as np
import pytest
import torch
import training_data
from mask_data import record_values
from PIL import Image

import evaluate as evaluate_cli
import inference as inference_cli
import segment as segment_cli
from flowercam.backbones import vgg16
from flowercam.core import UserError
from flowercam.data import dataset, masks, prepare
from flowercam.model import checkpoints, heads, vgg
from flowercam.segment import labels, pixels, segmenter

SIZE = 32


def _head(root, backbone, classes=training_data.CLASSES, size=SIZE):
    settings = heads.HeadSettings.from_dict({
        "model_type": "CAM", "normalize_by": "minmax", "num_classes": len(classes),
        "class_names": list(classes), "input_size": size, "backbone": backbone.backbone_id})
    checkpoints.save_checkpoint(root / "run" / "epoch_1.pth", heads.build_head(settings), settings)
    return root / "run" / "epoch_1.pth"


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """3-class 32 px data dir where EVERY image has a Flower-17 style mask, a random CAM head."""
    root = tmp_path_factory.mktemp("segment")
    data = training_data.make_dataset(root / "data", per_class=4, copies=2, size=SIZE)
    mask = np.full((SIZE, SIZE), 3, np.uint8)
    mask[8:24, 10:26] = 1
    (root / "data" / "masks").mkdir()
    for image in dataset.read_index(data)["images"]:
        Image.fromarray(mask).save(root / "data" / "masks" / f"{image['id']}.png")
    record_values(root / "data")
    weights = training_data.random_weights(root / "w.pth")
    backbone = vgg.load_backbone(weights)
    return {"data": data, "weights": weights, "ckpt": _head(root, backbone), "root": root}


def _segment(masked, out, *more):
    return training_data.run_cli(segment_cli, [
        "--checkpoint", str(masked["ckpt"]), "--data-dir", masked["data"], "--backbone-weights",
        masked["weights"], "--output", str(out), "--pixels-per-image", "64", *more])


@pytest.fixture(scope="module")
def trained(masked):
    out = masked["root"] / "seg.pth"
    code, _ = _segment(masked, out, "--rounds", "1")
    assert code is None
    return out


def test_training_never_reads_a_mask(masked, tmp_path, monkeypatch):
    """Every image has a mask here; any read of one (the mask reader, or opening a file of the
    masks folder) raises, and training still completes."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a mask was read: {args[:1]}")
    for name in ("read_labels", "open_labels", "find_mask", "resolve_masks", "batch_masks"):
        monkeypatch.setattr(masks, name, refuse)
    opened, original = [], Image.open

    def watched(path, *args, **kwargs):
        opened.append(str(path))
        if "masks" in str(path):
            refuse(path)
        return original(path, *args, **kwargs)
    monkeypatch.setattr(Image, "open", watched)
    code, _ = _segment(masked, tmp_path / "seg.pth", "--rounds", "1")
    assert code is None and (tmp_path / "seg.pth").is_file()
    train = dataset.load_split(masked["data"], 1)["train"]
    assert opened and all("/auged/" in p for p in opened)
    assert {p.rsplit("/", 1)[1].rsplit("_", 1)[0] for p in opened} == set(train)


def _disc_images(folder, n, rng, size=48):
    """n images: a red disc (the flower) on green noise; -> [(id, path, 0)], masks [n,H,W]."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    items, truth = [], []
    for i in range(n):
        cy, cx, r = rng.integers(14, size - 14), rng.integers(14, size - 14), rng.integers(8, 13)
        fg = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image = np.stack([rng.integers(0, 90, (size, size)), rng.integers(90, 200, (size, size)),
                          rng.integers(0, 60, (size, size))], -1)
        image[fg] = np.stack([rng.integers(180, 255, fg.sum()), rng.integers(0, 60, fg.sum()),
                              rng.integers(0, 60, fg.sum())], -1)
        path = folder / f"disc_{i}.png"
        Image.fromarray(image.astype(np.uint8)).save(path)
        items.append((f"disc_{i}", str(path), 0))
        truth.append(fg)
    return items, np.stack(truth)


def _noisy(truth, rng, shift=2, flip=0.3):
    """The known noise: the mask shifted by `shift` px and `flip` of its pixels flipped."""
    out = np.roll(truth, (shift, shift), (1, 2))
    return np.where(rng.random(truth.shape) < flip, ~out, out)


def _iou(pred, truth):
    return float(np.mean([(p & t).sum() / max((p | t).sum(), 1) for p, t in zip(pred, truth,
                                                                                   strict=True)]))


def test_noisy_pseudo_labels_train_a_model_that_beats_them(tmp_path):
    """Seeds = true masks shifted by 2 px and 30% of their pixels flipped; the model trained on
    them (no refiner, no self-training; a strong weight decay, as for few labelled images) is
    closer to the true masks than they are, on images it never saw."""
    rng = np.random.default_rng(0)
    items, truth = _disc_images(tmp_path / "train", 24, rng)
    held, held_truth = _disc_images(tmp_path / "held", 8, rng)
    seeds = {item[0]: m for item, m in zip(items, _noisy(truth, rng), strict=True)}

    def seed_fn(images, targets, batch):
        return torch.from_numpy(np.stack([seeds[i] for i, _, _ in batch]).astype(np.float32))
    torch.manual_seed(0)
    backbone = vgg16.VGG16()  # random weights: colour survives in the stages
    model = type("M", (), {"backbone": backbone})()
    s = segmenter.SegmenterSettings(pixels.PixelSettings(side=48, pixels_per_image=1024,
                                                         weight_decay=0.1),
                                    refiner="none", rounds=0)
    pm, record = segmenter.train(model, items, 48, s, seed_fn=seed_fn)
    assert len(record["round_seconds"]) == 1
    images = torch.stack([dataset.load_image(p, 48)[0] for _, p, _ in held])
    predicted = pm.maps(backbone, images).numpy() >= 0.5
    model_iou = _iou(predicted, held_truth)
    seed_iou = _iou(_noisy(held_truth, np.random.default_rng(1)), held_truth)
    assert model_iou > seed_iou + 0.15, (model_iou, seed_iou)


def test_confident_labels_ignore_the_band():
    fg_map = np.array([[0.05, 0.3, 0.9]])
    refined = np.array([[0.1, 0.4, 0.8]])
    assert labels.confident(fg_map, refined).tolist() == [[0, labels.IGNORED, 1]]
    raw_only = labels.LabelSettings(bg_refined_threshold=None)
    low = np.array([[0.1, 0.2, 0.8]])  # the refined map low in the band: background by default
    assert labels.confident(fg_map, low, raw_only).tolist() == [[0, labels.IGNORED, 1]]
    assert labels.confident(fg_map, low).tolist() == [[0, 0, 1]]
    picked, y = labels.sample(np.array([[1, 0, 255, 0]], np.uint8), 4, np.random.default_rng(0))
    assert sorted(y.tolist()) == [0, 0, 1] and 2 not in picked.tolist()


def test_label_variants_refined_background_and_own_proportion():
    fg_map = np.array([[0.05, 0.3, 0.9, 0.4]])
    refined = np.array([[0.1, 0.2, 0.8, 0.45]])
    s = labels.LabelSettings(bg_refined_threshold=0.25)
    assert labels.confident(fg_map, refined, s).tolist() == [[0, 0, 1, labels.IGNORED]]
    raw_only = labels.LabelSettings(bg_refined_threshold=None)
    assert labels.confident(fg_map, refined, raw_only).tolist() == [
        [0, labels.IGNORED, 1, labels.IGNORED]]
    with pytest.raises(UserError, match="refined background threshold"):
        labels.LabelSettings(bg_refined_threshold=0.6).check()
    seeds = np.array([[1] * 10 + [0] * 90 + [labels.IGNORED] * 28], np.uint8)
    rng = np.random.default_rng(0)
    _, half = labels.sample(seeds, 20, rng)
    picked, own = labels.sample(seeds, 100, rng, "labels")
    assert half.mean() == 0.5 and own.mean() == 0.1 and (picked < 100).all()


def test_seed_maps_at_side_give_the_labels_at_side():
    """The cache keeps the maps at the classifier's side: labelling them there = labelling at
    the input size and resizing the labels (the same nearest pixels)."""
    rng = np.random.default_rng(0)
    m, r = rng.random((37, 37)).astype(np.float32), rng.random((37, 37)).astype(np.float32)
    full = labels.at_side(labels.confident(m, r), 16)
    small = labels.confident(segmenter._at_side(m, 16), segmenter._at_side(r, 16))
    assert np.array_equal(full, small)


def test_seeds_cache_is_reused_and_keyed(masked, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "seeds.pt"
    code, _ = _segment(masked, tmp_path / "a.pth", "--rounds", "0", "--seeds-cache", str(cache))
    assert code is None and cache.is_file()
    first = torch.load(tmp_path / "a.pth", weights_only=True)

    def refuse(*args, **kwargs):
        raise AssertionError("the seeds' maps were computed again")
    monkeypatch.setattr(segmenter, "seed_maps", refuse)
    stamp = cache.stat().st_mtime_ns
    code, _ = _segment(masked, tmp_path / "b.pth", "--rounds", "0", "--seeds-cache", str(cache))
    assert code is None and cache.stat().st_mtime_ns == stamp
    again = torch.load(tmp_path / "b.pth", weights_only=True)
    assert torch.equal(first["state"]["weight"], again["state"]["weight"])
    code, _ = _segment(masked, tmp_path / "c.pth", "--rounds", "0", "--seeds-cache", str(cache),
                       "--sampling", "labels", "--bg-refined-threshold", "0")
    assert code is None
    c = torch.load(tmp_path / "c.pth", weights_only=True)
    assert c["settings"]["thresholds"]["sampling"] == "labels"
    assert c["settings"]["thresholds"]["bg_refined_threshold"] is None  # 0: off
    assert first["settings"]["thresholds"]["bg_refined_threshold"] == 0.3
    assert not torch.equal(first["state"]["weight"], c["state"]["weight"])
    capsys.readouterr()
    code, _ = _segment(masked, tmp_path / "d.pth", "--rounds", "0", "--seeds-cache", str(cache),
                       "--refine", "superpixels")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "refiner" in err
    assert not (tmp_path / "d.pth").exists()


def test_checkpoint_round_trip(trained, masked):
    pm, settings = segmenter.load(trained)
    assert settings["backbone_name"] == "vgg16" and settings["rounds"] == 1
    assert settings["refiner"] == "crf"  # no --refine: IRN's CRF on vgg16
    assert settings["backbone"] == vgg.load_backbone(masked["weights"]).backbone_id
    assert settings["cam_checkpoint"] == str(masked["ckpt"]) and len(settings["round_seconds"]) == 2
    assert pm.images and all(i.endswith("_0") for i in pm.images)
    saved = torch.load(trained, weights_only=True)
    assert torch.equal(saved["state"]["weight"], pm.weight)
    again = masked["root"] / "again.pth"
    segmenter.save(again, pm, segmenter.DEFAULT, vgg16.load(masked["weights"]))
    pm2, _ = segmenter.load(again)
    assert torch.equal(pm2.weight, pm.weight) and torch.equal(pm2.mean, pm.mean)


def test_bad_checkpoints_are_one_line(trained, tmp_path):
    good = torch.load(trained, weights_only=True)
    cases = {"missing.pth": None, "text.pth": b"not a checkpoint",
             "other.pth": {"format": "flowercam-head"},
             "version.pth": {**good, "version": 99},
             "shapes.pth": {**good, "state": {**good["state"], "mean": torch.zeros(3)}},
             "nan.pth": {**good, "state": {**good["state"], "std": good["state"]["std"] * np.nan}},
             "layers.pth": {**good, "settings": {**good["settings"], "classifier": {"side": 8}}}}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(UserError) as err:
            segmenter.load(path)
        assert "\n" not in str(err.value) and name in str(err.value)
    other = vgg.Backbone()
    with pytest.raises(UserError, match="trained on backbone"):
        segmenter.check_backbone(segmenter.load(trained)[1], other, trained)


def test_bad_flags_exit_2_before_work(masked, tmp_path, capsys):
    code, _ = _segment(masked, tmp_path / "s.pth", "--fg-threshold", "0.1", "--bg-threshold",
                       "0.3")
    assert code == 2 and not (tmp_path / "s.pth").exists()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "background threshold" in err
    code, _ = _segment(masked, tmp_path, "--rounds", "0")  # a folder as --output
    assert code == 2 and "is a folder" in capsys.readouterr().err
    code, _ = training_data.run_cli(evaluate_cli, [
        "--checkpoint", str(masked["ckpt"]), "--cam-metrics", "--data-dir", masked["data"],
        "--backbone-weights", masked["weights"], "--segmenter", str(tmp_path / "none.pth"),
        "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "none.pth not found" in err


def test_segmenter_rows_in_cam_metrics(trained, masked, tmp_path):
    code, result = training_data.run_cli(evaluate_cli, [
        "--checkpoint", str(masked["ckpt"]), "--cam-metrics", "--data-dir", masked["data"],
        "--backbone-weights", masked["weights"], "--split-name", "test", "--masked-only",
        "--figures", "pseudo-masks", "--methods", "CAM", "--baselines", "center", "few-shot-1",
        "--refine", "none", "crf", "--segmenter", str(trained), "--compare", "segmenter",
        "CAM+crf", "--bootstrap", "20", "--output-dir", str(tmp_path)])
    assert code is None
    saved = json.loads((tmp_path / "cam_metrics.json").read_text())
    for row in ("segmenter", "segmenter+crf"):
        figures = saved["baselines"][row]["overall"]["pseudo_masks"]
        assert "fg_iou" in figures["validated_tau"] and "fg_iou" in figures["oracle_tau"]
    assert {"segmenter - CAM+crf", "segmenter - few-shot-1",
            "segmenter+crf - few-shot-1"} <= set(saved["paired"])
    assert saved["segmenter"]["checkpoint"] == str(trained)
    assert "segmenter+crf" in (tmp_path / "cam_metrics.md").read_text()


def test_inference_writes_the_segmenter_masks(trained, masked, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for _, path, _ in dataset.split_items(masked["data"], "test", 1)[:3]:
        shutil.copy(path, folder)
    code, _ = training_data.run_cli(inference_cli, [
        "--segmenter", str(trained), "--image", str(folder), "--pseudo-masks-dir",
        str(tmp_path / "masks"), "--refine", "crf", "--backbone-weights", masked["weights"],
        "--output-dir", str(tmp_path / "out")])
    assert code is None
    written = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert written == sorted(p.with_suffix(".png").name for p in folder.iterdir())
    mask = np.array(Image.open(tmp_path / "masks" / written[0]))
    assert set(np.unique(mask)) <= {0, 255} and mask.shape == (SIZE, SIZE)
    assert len(list((tmp_path / "out").glob("segmenter_*.png"))) == 3


@pytest.mark.real
def test_real_flowers_smoke(flowers_jpg, weights_path, tmp_path):
    """A handful of real Flower-17 images (with their real masks beside, never read), real
    VGG16 weights, a random head: one self-training round end to end at 64 px."""
    source = tmp_path / "flowers17"
    (source / "jpg").mkdir(parents=True)
    for c in range(3):
        for n in range(c * 80 + 1, c * 80 + 5):
            (source / "jpg" / f"image_{n:04d}.jpg").symlink_to(flowers_jpg / f"image_{n:04d}.jpg")
    prepare.prepare(tmp_path / "data", prepare.AugmentSettings(copies=1, size=64), source)
    backbone = vgg16.load(weights_path)
    names = dataset.class_names(tmp_path / "data")
    ckpt = _head(tmp_path, backbone, names, 64)
    code, _ = training_data.run_cli(segment_cli, [
        "--checkpoint", str(ckpt), "--data-dir", str(tmp_path / "data"), "--backbone-weights",
        str(weights_path), "--output", str(tmp_path / "seg.pth"), "--rounds", "1"])
    assert code is None
    pm, settings = segmenter.load(tmp_path / "seg.pth")
    assert settings["n_images"] == len(dataset.split_items(tmp_path / "data", "train", 1))
    image = dataset.load_image(source / "jpg" / "image_0001.jpg", 64)[0][None]
    p = pm.maps(backbone, image)
    assert p.shape == (1, 64, 64) and 0 <= p.min() <= p.max() <= 1
