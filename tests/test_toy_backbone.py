"""Adding a backbone is one class plus one registry line (docs/backbones.md "Adding a backbone"):
a toy two-stage CNN defined here, registered under "toy", trains (main.py --backbone toy), gives
maps (gradient, activation and ablation methods, LayerCAM at its own stages), is measured
(evaluate.py cam-metrics) and sanity-checked (its own cascade) with no other change."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training_data import make_dataset, run_cli

import evaluate
import main as main_cli
from flowercam.backbones import protocol, registry
from flowercam.cam import compute, methods
from flowercam.sanity import randomise


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
                                 "--limit", "2", "--no-data-randomisation", "--bootstrap", "20",
                                 "--output-dir", str(out), *common])
    assert code is None
    states = [p for p in out.rglob("*.json")]
    assert states and any("cascade:conv1" in p.read_text() for p in states)
