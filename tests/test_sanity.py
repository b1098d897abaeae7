"""The sanity checks (Adebayo et al. 2018): randomising layers, the similarity measures, the
permuted-label head, and evaluate.py --sanity end to end on a tiny synthetic run."""

import hashlib
import json

import numpy as np
import pytest
import torch
import training_data

import evaluate as evaluate_cli
from flowercam.backbones import registry, vgg16
from flowercam.cache import features
from flowercam.cam import compute, methods
from flowercam.core import UserError
from flowercam.metrics.config import MetricsConfig
from flowercam.model import checkpoints, heads, vgg
from flowercam.sanity import checks, permuted, randomise, similarity, tables


@pytest.fixture(scope="module")
def model():
    """A random CAM model whose backbone biases are not 0 (as ImageNet's are not), so that a
    re-initialisation changes them visibly too."""
    model = training_data.make_model("CAM", classes=5)
    with torch.no_grad():
        for layer in model.backbone.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.uniform_(0.1, 0.2)
    return model


def _layer_of(param_name, model):
    """'head.fc.weight' -> 'head.fc'; 'backbone.features.7.weight' -> 'block2'."""
    if param_name.startswith("head."):
        return ".".join(param_name.split(".")[:2])
    index = int(param_name.split(".")[2])
    blocks = vgg.block_convs(model.backbone.features)
    return next(b for b, convs in blocks.items() if index in convs)


CASCADE = ("head.fc", "head.conv", "block5", "block4", "block3", "block2", "block1")  # VGG16's


@pytest.mark.parametrize("layer", CASCADE)
def test_randomising_a_layer_changes_exactly_that_layer_and_not_the_model(model, layer):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = randomise.randomised(model, [layer], seed=0)
    for name, value in new.state_dict().items():
        changed = not torch.equal(value, before[name])
        assert changed == (_layer_of(name, model) == layer), name
        assert torch.equal(model.state_dict()[name], before[name])  # the caller's model: as it was
    assert (new.backbone is model.backbone) == (layer in randomise.HEAD_LAYERS)
    assert randomise.cascade_layers(model.backbone) == CASCADE
    if layer not in randomise.HEAD_LAYERS:
        assert new.backbone.backbone_id != model.backbone.backbone_id  # never the trained cache
        assert not any(p.requires_grad for p in new.backbone.parameters())


def test_cascade_and_layer_streams(model):
    assert randomise.cascade(3, model.backbone) == ("head.fc", "head.conv", "block5")
    with pytest.raises(UserError):
        randomise.cascade(8, model.backbone)
    with pytest.raises(UserError):
        randomise.randomised(model, ["block6"])
    both = randomise.randomised(model, ["head.fc", "block5"], seed=4)
    alone = randomise.randomised(model, ["block5"], seed=4)
    conv = model.backbone.features[28]
    assert torch.equal(both.backbone.features[28].weight, alone.backbone.features[28].weight)
    assert not torch.equal(alone.backbone.features[28].weight, conv.weight)
    again = randomise.randomised(model, ["head.fc"], seed=4)
    assert torch.equal(again.head.fc.weight, both.head.fc.weight)  # seeded, same stream
    state = torch.get_rng_state()
    randomise.randomised(model, ["head.conv"], seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched


def test_the_trained_checkpoint_is_never_modified_on_disk(tmp_path):
    settings = heads.HeadSettings("ReCAM-published", 4, recam_lambda=1.0)
    path = tmp_path / "epoch_1.pth"
    checkpoints.save_checkpoint(path, heads.build_head(settings), settings)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    torch.manual_seed(0)
    loaded, _ = registry.load_model(path, backbone=vgg16.VGG16())
    new = randomise.randomised(loaded, list(CASCADE[:3]))
    assert not torch.equal(new.head.sce.weight, loaded.head.sce.weight)  # W_sce goes with fc
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    again, _ = registry.load_model(path, backbone=vgg16.VGG16())
    assert torch.equal(again.head.fc.weight, loaded.head.fc.weight)


def test_similarities_of_hand_made_maps():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 128, 128)), rng.random((3, 128, 128))
    same = similarity.similarities(a, a, a, a)
    assert all(np.allclose(v, 1.0) for m, v in same.items() if m != "constant")
    assert np.all(same["constant"] == 0)  # the second maps vary
    noise = similarity.similarities(a, b, a, b)
    for measure in ("spearman", "spearman_abs", "ssim"):
        assert np.all(np.abs(noise[measure]) < 0.05), measure
    assert np.all(np.abs(noise["hog"]) < 0.25)  # noise's gradients share the pixel grid
    assert similarity.spearman(a[0], a[0] ** 3) == pytest.approx(1.0)  # ranks only
    assert similarity.spearman(a[0] - 0.5, 0.5 - a[0]) == pytest.approx(-1.0)
    centred = a[0] - 0.5
    assert similarity.spearman(np.abs(centred), np.abs(-centred)) == pytest.approx(1.0)
    assert similarity.spearman(np.ones((8, 8)), a[0, :8, :8]) == 0  # a collapsed map: nothing
    flat = np.zeros((1, 32, 32))
    assert similarity.similarities(flat, flat, flat, flat)["hog"][0] == 1  # no gradients: alike
    # a randomisation whose map vanished scores Spearman 0 like a changed one; "constant" tells
    gone = np.zeros((1, 128, 128))
    vanished = similarity.similarities(a[:1], gone, a[:1], gone)
    assert vanished["spearman"][0] == 0 and vanished["constant"][0] == 100
    summary = similarity.summarise(noise, n_boot=50)
    assert summary["spearman"]["n"] == 3
    assert summary["spearman"]["ci95"][0] <= summary["spearman"]["value"]


def test_verdict_rule():
    low = {"value": 0.1, "ci95": [0.0, 0.3]}
    high = {"value": 0.6, "ci95": [0.4, 0.7]}
    assert tables.passes({"spearman": low, "spearman_abs": low})
    assert not tables.passes({"spearman": low, "spearman_abs": high})
    rows = {"A": {"last": {"spearman": low, "spearman_abs": low},
                  "data": {"spearman": high, "spearman_abs": low}}}
    assert tables.verdicts(rows, ["last", "data"])["A"] == {
        "last": True, "data": False, "passes": False}


def test_a_pass_by_vanished_maps_says_so():
    """sanity.md's verdict: a pass at a state where most randomised maps are constant names the
    share (the maps changed by disappearing); a pass with varying maps is plain."""
    low = {"value": 0.0, "ci95": [0.0, 0.0]}
    summary = {"states": [{"name": "cascade:b1", "group": "cascade"}], "methods": ["A", "B"],
               "deciding_states": ["cascade:b1"], "data_randomisation": None,
               "similarities": {"A": {"cascade:b1": {"spearman": low, "constant": {
                                    "value": 90.0, "ci95": [80.0, 100.0]}}},
                                "B": {"cascade:b1": {"spearman": low, "constant": {
                                    "value": 0.0, "ci95": [0.0, 0.0]}}}},
               "verdicts": {"A": {"passes": True}, "B": {"passes": True}}}
    lines = tables._table(summary, "spearman", "cascade", with_verdict=True)
    assert lines[2].endswith("| **pass** (constant maps: b1 90%) |")
    assert lines[3].endswith("| **pass** |")


def test_permuted_labels_keep_class_counts_and_agree_across_copies():
    items = [(f"image_{i:04d}_{k}", "", i % 3) for i in range(30) for k in range(2)]
    labels = permuted.permuted_labels(items, seed=0)
    assert sorted(labels.tolist()) == sorted(label for _, _, label in items)
    assert torch.equal(labels[0::2], labels[1::2])  # both copies of an image
    assert not torch.equal(labels, torch.tensor([label for _, _, label in items]))


def test_the_permuted_label_head_cannot_beat_chance_on_a_seeded_tiny_set():
    """17 classes whose features carry the class: the true labels are learnt (the control),
    the permuted ones give a validation accuracy near 1/17."""
    classes, gen = 17, torch.Generator().manual_seed(0)
    centres = torch.randn(classes, 512, 2, 2, generator=gen).relu()

    def sample(per_class):
        labels = torch.arange(classes).repeat_interleave(per_class)
        feats = centres[labels] + torch.randn(len(labels), 512, 2, 2, generator=gen)
        return feats, labels

    (train_x, train_y), (valid_x, valid_y) = sample(12), sample(12)
    settings = heads.HeadSettings("CAM", classes)
    valid = features.CachedSource(valid_x, valid_y)
    cfg = permuted.PermutedConfig(epochs=40, lr=1e-2, batch_size=16)
    _, truth = permuted.train_permuted(settings, train_x, train_y, valid, cfg)
    items = [(f"im_{i:04d}_0", "", int(y)) for i, y in enumerate(train_y)]
    _, rand = permuted.train_permuted(settings, train_x, permuted.permuted_labels(items, 0),
                                      valid, cfg)
    assert truth[-1]["valid_top1"] > 80
    assert rand[-1]["valid_top1"] < 100 * 2.5 / classes  # chance: 5.9%
    assert rand[-1]["train_top1"] > rand[-1]["valid_top1"] + 20  # it memorised instead


def test_evaluate_sanity_end_to_end(tmp_path):
    data, weights, run = training_data.trained_run(tmp_path, 2, 1)
    best = next(run.glob("epoch_*.pth"))
    digest = hashlib.sha256(best.read_bytes()).hexdigest()
    out = tmp_path / "sanity"
    argv = ["-d", str(run), "--data-dir", data, "--backbone-weights", weights, "--sanity",
            "--methods", "CAM", "GradCAM", "--limit", "3", "--bootstrap", "20",
            "--permuted-epochs", "2", "--figure-images", "2", "--output-dir", str(out)]
    evaluate_cli.main(evaluate_cli.get_args_parser().parse_args(argv))
    summary = json.loads((out / "sanity.json").read_text())
    assert len(summary["states"]) == 7 + 7 + 1 and summary["ids"] and len(summary["ids"]) == 3
    rows = summary["similarities"]
    assert set(rows) == {"CAM", "GradCAM", "center", "full", "random", "sobel"}
    for name in ("cascade:block1", "independent:head.conv", "data"):
        assert rows["sobel"][name]["ssim"]["value"] == pytest.approx(1.0)  # ignores the model
        assert rows["random"][name]["spearman"]["value"] < 0.2  # drawn anew: chance
    assert set(summary["verdicts"]["CAM"]) == {"cascade:block1", "data", "passes"}
    same = summary["per_image"]["GradCAM"]  # the same layers randomised: the same maps
    assert same["independent:head.fc"] == same["cascade:head.fc"]
    assert summary["data_randomisation"]["chance"] == pytest.approx(100 / 3)
    assert (out / "sanity_grid.png").stat().st_size > 0 and (out / "sanity_plot.png").exists()
    assert "| CAM |" in (out / "sanity.md").read_text()
    assert hashlib.sha256(best.read_bytes()).hexdigest() == digest


def test_sanity_refuses_the_other_modes_flags(tmp_path, capsys):
    parser = evaluate_cli.get_args_parser()
    for argv in (["--sanity", "--steps", "3"], ["--cam-metrics", "--permuted-epochs", "2"],
                 ["--sanity", "--cam-metrics"]):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["-d", str(tmp_path), *argv])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and err.startswith("error:") and "\n" not in err


def test_fixed_features_give_the_maps_of_the_full_model(model):
    """One backbone pass shared by the class-map methods: the same maps as each method's own."""
    cfg = MetricsConfig(baselines=())
    x = training_data.images(2, size=64)
    targets = torch.tensor([1, 3])
    for row in methods.METHODS:
        if row not in methods.supported("CAM"):
            continue
        if row in ("CAM", "GradCAM", "LayerCAM", "ScoreCAM"):  # LayerCAM reads pool3 / pool4
            only = checks.class_maps_only(row, cfg, model.backbone)
            assert only == (row in ("CAM", "GradCAM")), row
        if not checks.class_maps_only(row, cfg, model.backbone):
            continue
        (raw, maps), feats = checks.row_maps(model, row, x, None, None, targets, ["a", "b"], cfg,
                                            0)
        want = compute.compute_maps(model, x, row, targets)
        assert np.allclose(raw, want.raw.numpy(), atol=1e-5) and feats is not None
        (again, _), _ = checks.row_maps(model, row, x, None, feats, targets, ["a", "b"], cfg, 0)
        assert np.allclose(again, raw, atol=1e-5)
