"""Show a model: the frozen backbone and a head built from a model type or read from a checkpoint.

    python models.py -m CAM                          # the report's CAM head on 17 classes, VGG16
    python models.py -m ReCAM -n sigmoid --num-classes 5
    python models.py -m CAM --backbone resnet50      # its stages, cut and a head of its channels
    python models.py --checkpoint model/RUN/epoch_6.pth   # its settings and weights' shapes

The backbones are flowercam/backbones/ (docs/backbones.md), the heads and checkpoints
flowercam/model/. The backbone is built with seeded random weights: its shapes, not its weights.
"""

from flowercam import core, flags
from flowercam.backbones import registry
from flowercam.model import checkpoints, heads


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    flags.add_head(parser, "the head's type")
    add("--num-classes", default=17, type=int, help="classes of the head")
    add("--backbone", default=None, metavar="NAME",
        help=f"the backbone: {', '.join(registry.names())} or another timm model name; "
             f"default: the checkpoint's, else {registry.DEFAULT}")
    flags.add_cut(parser)
    add("--checkpoint", default=None, help="a .pth written by main.py (then -m/-n are ignored)")
    return parser


def describe(head, settings, backbone) -> list[str]:
    shapes = backbone.shapes()
    stages = ", ".join(f"{name} {shapes[name]}" for name in backbone.stages)
    lines = [f"backbone: {backbone.key}, frozen, {backbone.input_size} px -> {backbone.cut} "
             f"{shapes[backbone.cut]}", f"  stages: {stages}", f"settings: {settings.to_dict()}"]
    for name, tensor in head.state_dict().items():
        lines.append(f"  {name}: {tuple(tensor.shape)}")
    count = sum(t.numel() for t in head.parameters())
    lines.append(f"trainable parameters: {count}")
    return lines


def main(args):
    if args.checkpoint is not None:
        head, settings, _ = checkpoints.load_checkpoint(args.checkpoint)
        name = args.backbone or registry.name_of(settings)
        backbone = registry.load_backbone(name, seed=0)
        backbone = backbone.at(checkpoints.cut_of(settings, backbone))
        registry.check_fits(registry.name_of(settings), head, backbone,
                            f"checkpoint {args.checkpoint}")
    else:
        backbone = registry.load_backbone(args.backbone or registry.DEFAULT, seed=0)
        backbone = backbone.at(args.cut or backbone.default_cut)
        settings = heads.HeadSettings(
            args.model_type, args.num_classes,
            normalize_by=args.normalize_by if args.model_type == "ReCAM" else None,
            recam_lambda=heads.RECAM_LAMBDA if args.model_type == "ReCAM-published" else None,
            cut=backbone.cut, backbone=backbone.key)
        head = heads.build_head(settings, backbone.channels)
    print("\n".join(describe(head, settings, backbone)))


if __name__ == "__main__":
    core.run_main(main, get_args_parser(), hints=flags.HINTS)
