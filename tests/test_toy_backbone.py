"""Adding a backbone is one class plus one registry line (docs/backbones.md "Adding a backbone"):
a toy two-stage CNN defined here, registered under "toy", trains (main.py --backbone toy), gives
maps (gradient, activation and ablation methods, LayerCAM at its own stages), is measured
(evaluate.py cam-metrics) and sanity-checked (its own cascade), and its pixel_stages are what
the few-shot rows and the segmenter read, with no other change."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mask_data import record_values
from PIL import Image
from torch import nn
from training_data import make_dataset, run_cli

import evaluate
import inference
import main as main_cli
import segment
from flowercam.backbones import protocol, registry
from flowercam.cam import compute, methods
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.metrics import fewshot
from flowercam.sanity import randomise
from flowercam.segment import pixels, segmenter


class Toy(protocol.Backbone):
    """conv 3->8, ReLU, 2x2 max pool ("conv1"); conv 8->16, ReLU, 2x2 max pool ("conv2" = the
    features a head reads)."""

    name, input_size = "toy", 32
    mean, std = protocol.INPUT_MEAN, protocol.INPUT_STD
    stages = {"conv1": 8, "conv2": 16}
    cuts = ("features",)
    default_cut = cut = "features"
    min_size = 4

    def __init__(self, seed=0):
        super().__init__()
        with protocol.seeded(seed):
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.requires_grad_(False)
        self.eval()
        self.backbone_id = protocol.state_dict_id(self.name, self)

    def block(self, conv, h):
        return F.max_pool2d(F.relu(conv(h)), 2)

    def forward(self, x):
        return self.block(self.conv2, self.block(self.conv1, x))

    def forward_with(self, x, layers, graph="stages", start=0):
        self.check_stages(layers)
        if start:
            raise ValueError("the toy has no prefixes")
        leaf = graph == "stages"
        with torch.set_grad_enabled(graph is not None):
            h1 = self.block(self.conv1, x.detach() if leaf else x)
            if leaf and "conv1" in layers:  # the graph starts at the earliest named stage
                h1 = h1.detach().requires_grad_()
            h2 = self.block(self.conv2, h1)
            if leaf and "conv2" in layers and "conv1" not in layers:
                h2 = h2.detach().requires_grad_()
        acts = {"conv1": h1, "conv2": h2}
        return h2, {name: acts[name] for name in layers}

    def forward_replacing(self, x, stage, act):
        return self.block(self.conv2, act) if stage == "conv1" else act

    def cascade(self):
        return (("conv2", [self.conv2]), ("conv1", [self.conv1]))

    def reinit(self, module):
        module.reset_parameters()


ENTRY = protocol.Entry(lambda weights=None, device="cpu": Toy().to(device),
                       lambda seed=0, device="cpu": Toy(seed).to(device))


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.BACKBONES, "toy", ENTRY)  # the one registry line


def test_the_toy_trains_maps_measures_and_is_sanity_checked(toy, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=4, copies=1, size=32)
    common = ["--data-dir", data, "--num-workers", "0"]
    code, run_dir = run_cli(main_cli, ["-m", "CAM", "-e", "2", "--backbone", "toy",
                                       "--output-dir", str(tmp_path / "model"), *common])
    assert code is None
    model, settings = registry.load_model(next(run_dir.glob("epoch_*.pth")))
    assert settings.backbone == "toy" and model.head.conv.in_channels == 16
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for method in ("CAM", "GradCAM", "LayerCAM", "EigenCAM", "AblationCAM", "ScoreCAM"):
        result = compute.compute_maps(model, x, method)
        assert result.maps.shape == (2, 32, 32) and torch.isfinite(result.maps).all(), method
    assert compute.compute_maps(model, x, "LayerCAM").options["layers"] == ["conv1", "classmaps"]
    assert "FullGrad" not in methods.supported("CAM", backbone=model.backbone)
    assert randomise.cascade_layers(model.backbone) == ("head.fc", "head.conv", "conv2", "conv1")

    code, _ = run_cli(evaluate, ["cam-metrics", "-d", str(run_dir), "--methods", "CAM",
                                 "GradCAM", "LayerCAM", "--steps", "3", "--bootstrap", "20",
                                 "--limit", "3", *common])
    assert code is None
    summary = json.loads((run_dir / "cam_metrics.json").read_text())
    assert summary["backbone"] == model.backbone.backbone_id
    out = tmp_path / "sanity"
    code, _ = run_cli(evaluate, ["sanity", "-d", str(run_dir), "--methods", "CAM", "LayerCAM",
                                 "--limit", "2", "--permuted-epochs", "1", "--bootstrap", "20",
                                 "--output-dir", str(out), *common])
    assert code is None  # data randomisation too: the permuted-label head reads the toy's 16
    sanity = json.loads((out / "sanity.json").read_text())
    assert "cascade:conv1" in [s["name"] for s in sanity["states"]]
    assert "data" in sanity["verdicts"]["CAM"] and sanity["data_randomisation"]["valid_images"]


def test_the_few_shot_rows_and_the_segmenter_read_the_toys_pixel_stages(toy, tmp_path,
                                                                        monkeypatch):
    """pixel_stages = conv2 alone (16 channels; not VGG16's stage3..5, which the toy lacks): the
    few-shot classifier and segment.py's segmenter read it; the segmenter's checkpoint records
    the toy and conv2 (and crf-mean, the seeds' refiner by default on a backbone other than
    vgg16), inference.py draws with it, and a VGG16 model refuses it in one line."""
    monkeypatch.setattr(Toy, "pixel_stages", ("conv2",))
    data = make_dataset(tmp_path / "data", per_class=4, copies=1, size=32)
    label = np.full((32, 32), 3, np.uint8)
    label[8:24, 10:26] = 1
    (tmp_path / "data" / "masks").mkdir()
    for image in dataset.read_index(data)["images"]:
        Image.fromarray(label).save(tmp_path / "data" / "masks" / f"{image['id']}.png")
    record_values(tmp_path / "data")
    toy_backbone = registry.load_backbone("toy", seed=0)
    assert pixels.resolve(pixels.DEFAULT, toy_backbone).layers == ("conv2",)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert pixels.pixel_features(toy_backbone, x).shape == (2, 16, 64, 64)
    rows, _ = fewshot.train_rows(["few-shot-1"], toy_backbone, data, 1,
                                 masks.resolve_masks(data, size=32), 32)
    assert rows["few-shot-1"].settings.layers == ("conv2",)
    assert rows["few-shot-1"].weight.shape == (16,)

    common = ["--data-dir", data, "--num-workers", "0"]
    code, run_dir = run_cli(main_cli, ["-m", "CAM", "-e", "1", "--backbone", "toy",
                                       "--output-dir", str(tmp_path / "model"), *common])
    assert code is None
    seg = tmp_path / "seg.pth"
    code, _ = run_cli(segment, ["--checkpoint", str(next(run_dir.glob("epoch_*.pth"))),
                                "--data-dir", data, "--output", str(seg), "--pixels-per-image",
                                "64"])
    assert code is None
    pm, settings = segmenter.load(seg)
    assert settings["backbone_name"] == "toy" and settings["classifier"]["layers"] == ["conv2"]
    assert settings["refiner"] == "crf-mean"  # no --refine: crf-mean on any backbone but vgg16
    assert pm.settings.layers == ("conv2",) and pm.weight.shape == (16,)
    segmenter.check_backbone(settings, toy_backbone, seg)  # its own backbone: accepted

    photos = tmp_path / "photos"
    photos.mkdir()
    for _, path, _ in dataset.split_items(data, "test", 1)[:2]:
        shutil.copy(path, photos)
    code, _ = run_cli(inference, ["--segmenter", str(seg), "--image", str(photos),
                                  "--output-dir", str(tmp_path / "out")])
    assert code is None and len(list((tmp_path / "out").glob("segmenter_*.png"))) == 2

    vgg = registry.load_backbone("vgg16", seed=0)
    with pytest.raises(UserError) as err:
        segmenter.check_backbone(settings, vgg, seg)
    assert "\n" not in str(err.value)
    assert "trained on backbone toy" in str(err.value) and "vgg16" in str(err.value)
