"""A tiny synthetic --cam-metrics run (the synthetic_run fixture of conftest.py) and the
MetricsConfig evaluate.py builds from flags on it."""

import torch
import training_data

import evaluate as evaluate_cli
from flowercam.backbones import vgg16
from flowercam.model import checkpoints, heads


def make_synthetic_run(root):
    """3-class 32 px data dir, a random ReCAM head checkpoint and a random backbone file."""
    data = training_data.make_dataset(root / "data", per_class=4, copies=1, size=32)
    torch.manual_seed(0)
    weights = root / "vgg_random.pth"
    torch.save(vgg16.VGG16().features.state_dict(), weights)
    backbone = vgg16.load(str(weights))
    settings = heads.HeadSettings.from_dict({
        "model_type": "ReCAM", "normalize_by": "minmax", "num_classes": 3,
        "class_names": list(training_data.CLASSES), "input_size": 32,
        "backbone": backbone.backbone_id})
    for epoch in (1, 3):
        checkpoints.save_checkpoint(root / "run" / f"epoch_{epoch}.pth",
                                    heads.build_head(settings), settings, epoch=epoch)
    return {"root": root, "data": data, "weights": str(weights), "run": root / "run"}


def parse(run, *extra):
    argv = ["-d", str(run["run"]), "--data-dir", run["data"], "--backbone-weights",
            run["weights"], "--cam-metrics", "--steps", "3", "--bootstrap", "50", *extra]
    return evaluate_cli.get_args_parser().parse_args(argv)


def cli(run, *extra):
    """The MetricsConfig evaluate.py builds from these flags."""
    return evaluate_cli.metrics_config(parse(run, *extra))
