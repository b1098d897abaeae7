"""Show a model: the frozen VGG16 and a head built from a model type or read from a checkpoint.

    python models.py -m CAM                          # the report's CAM head on 17 classes
    python models.py -m ReCAM -n sigmoid --num-classes 5
    python models.py --checkpoint model/RUN/epoch_6.pth   # its settings and weights' shapes

The library is flowercam/model/ (vgg.py, heads.py, normalization.py, checkpoints.py).
"""

from flowercam import core, flags
from flowercam.model import checkpoints, heads, vgg


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    flags.add_head(parser, "the head's type")
    add("--num-classes", default=17, type=int, help="classes of the head")
    add("--checkpoint", default=None, help="a .pth written by main.py (then -m/-n are ignored)")
    return parser


def describe(head, settings) -> list[str]:
    lines = [f"backbone: VGG16 features, frozen, {vgg.INPUT_SIZE} px -> {vgg.FEATURE_SHAPE}"]
    lines += [f"settings: {settings.to_dict()}"]
    for name, tensor in head.state_dict().items():
        lines.append(f"  {name}: {tuple(tensor.shape)}")
    count = sum(t.numel() for t in head.parameters())
    lines.append(f"trainable parameters: {count}")
    return lines


def main(args):
    if args.checkpoint is not None:
        head, settings, _ = checkpoints.load_checkpoint(args.checkpoint)
    else:
        settings = heads.HeadSettings(
            args.model_type, args.num_classes,
            normalize_by=args.normalize_by if args.model_type == "ReCAM" else None,
            recam_lambda=heads.RECAM_LAMBDA if args.model_type == "ReCAM-published" else None)
        head = heads.build_head(settings)
    print("\n".join(describe(head, settings)))


if __name__ == "__main__":
    core.run_main(main, get_args_parser(), hints=flags.HINTS)
