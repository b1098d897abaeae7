"""Activation-map figures of a trained head: the report's grids and strip, the comparison figure,
maps of your own images, raw maps (.npz) and pseudo-masks.

    python inference.py -m model/RUN -t CAM -s 0        # labelled grid, compact grid, strip
    python inference.py --grid-runs output/grid_runs.json -s 0 --compare CAM-lr0.0001:CAM \\
        ReCAM-minmax-lr0.0001:ReCAM CAM-lr0.0001:LayerCAM
    python inference.py -m model/RUN --image photos/ --save-maps maps.npz --pseudo-masks-dir masks
    python inference.py -m model/RUN --image photos/ --pseudo-masks-dir masks --refine crf
    python inference.py --segmenter model/segmenter.pth --image photos/ --pseudo-masks-dir masks \\
        --refine crf                                  # a segment.py model's masks of new images
    python inference.py -m model/RUN -t ScoreCAM --scales 1 0.5 1.5 2 --flip \
        --outline-masks ../shared/flowers17/masks

-m takes a checkpoint .pth, a run directory (its best epoch) or, with --grid-runs, a configuration
name. --compare pairs are CKPT:METHOD[:NORMALISER] read from the right (C:\\runs\\best.pth:CAM).
"""

import dataclasses

from flowercam import core, dist, flags
from flowercam.cam import compute, methods
from flowercam.core import UserError
from flowercam.model import normalization
from flowercam.refine import methods as refiners
from flowercam.report import figures, image_files, render
from flowercam.train import runs

REFINE_HELP = ("refine the map from the image before --pseudo-masks-dir thresholds it at "
               "--mask-threshold; the strip and --compare maps outline it in cyan: dense CRF "
               "(IRN's settings; crf-mean: undecided at each map's mean, for any backbone), SLIC "
               "superpixel means")


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("-m", "--checkpoint",
        help="checkpoint .pth, a run directory (its best epoch) or a --grid-runs configuration; "
             "None = the newest run under model/")
    add("-t", "--method", choices=list(methods.METHODS),
        help="map method; default: the checkpoint's head type")
    add("-n", "--normalize-by", choices=sorted(normalization.NORMALIZERS),
        help="map normaliser; default: the checkpoint's (minmax for a CAM head)")
    flags.add_seed(parser, "the 12 validation images")
    add("--compare", nargs="+", metavar="CKPT:METHOD[:NORM]",
        help="comparison figure of these pairs on the seeded images (or --image)")
    add("--segmenter", metavar="CKPT",
        help="draw a segment.py model's masks of the --image files instead of a head's maps "
             "(P(flower) overlaid, the mask outlined in cyan; --pseudo-masks-dir writes them, "
             "--refine and --mask-threshold apply)")
    add("--grid-runs", help="grid_runs.json: lets CKPT be a configuration name")
    add("--image", nargs="+", metavar="PATH", help="your own image files or folders")
    add("--save-maps", metavar="FILE.npz", help="also save raw and normalised maps")
    add("--pseudo-masks-dir", help="also write binary pseudo-masks <image stem>.png here")
    add("--mask-threshold", type=flags.unit_float, default=0.5, help="on the normalised map")
    add("--refine", choices=list(refiners.REFINERS), default="none", help=REFINE_HELP)
    add("--colormap", choices=render.COLORMAPS, default="red",
        help="red: map in the red channel (the report's); jet: as most tools")
    add("--alpha", type=flags.unit_float, default=0.5, help="weight of the map in the overlay")
    add("--name", default="comparison", help="file name stem of the --compare figure")
    add("--scales", nargs="+", type=flags.positive_float, default=[1.0], metavar="S",
        help="also run the method on the images resized by each S and average the maps "
             "(IRN/ReCAM: 1 0.5 1.5 2)")
    add("--flip", action="store_true", help="also average the maps of the flipped images")
    add("--outline-masks", metavar="DIR",
        help="draw the outline of DIR/<image stem>.png masks over the strip and --compare maps")
    add("--outline-value", type=flags.non_negative_int,
        help="mask value outlined; default: the foreground the masks' folder records "
             "(augment.py; Flower-17's masks: 1 = flower), else the nonzero value of masks "
             "holding 0 and one other value")
    flags.add_batch_size(parser, figures.NUM_IMAGES, "images per model call")
    flags.add_data_dir(parser)
    flags.add_output_dir(parser, "output", "the figures")
    flags.add_device(parser)
    flags.add_backbone_weights(parser)
    flags.add_num_workers(parser, default=0)
    flags.add_max_pixels(parser)
    return parser


def check_args(args):
    if args.segmenter and (args.checkpoint or args.compare or not args.image or args.save_maps):
        raise UserError("--segmenter draws the masks of --image files on its own: drop "
                        "-m/--compare/--save-maps and give --image FILES_OR_FOLDERS")
    if args.compare and args.checkpoint:
        raise UserError("give either -m/--checkpoint CKPT (with -t METHOD) or --compare PAIRS")
    if args.compare and (args.save_maps or args.pseudo_masks_dir):
        raise UserError("--save-maps and --pseudo-masks-dir work with -m, not with --compare")
    if args.refine != "none" and args.image and not (args.pseudo_masks_dir or args.compare):
        raise UserError("--refine with --image refines the --pseudo-masks-dir masks: add "
                        "--pseudo-masks-dir (or --compare to outline them)")
    core.check_writable_dir(args.output_dir)  # every output path before any work
    if args.pseudo_masks_dir:
        core.check_writable_dir(args.pseudo_masks_dir, "--pseudo-masks-dir")
    if args.save_maps:
        core.check_writable_file(args.save_maps, "--save-maps")


def figure_options(args) -> figures.FigureOptions:
    """The figures' options by keyword: every FigureOptions field is a flag of the same name,
    except agg (from --scales and --flip)."""
    names = {f.name for f in dataclasses.fields(figures.FigureOptions)} - {"agg"}
    return figures.FigureOptions(**{name: getattr(args, name) for name in names},
                                 agg=compute.Aggregation(tuple(args.scales), args.flip))


def main(args):
    check_args(args)
    opts = figure_options(args)
    files = image_files.MapFiles(save_maps=args.save_maps, masks_dir=args.pseudo_masks_dir,
                                 mask_threshold=args.mask_threshold, refine=args.refine)
    if args.segmenter:
        if not dist.is_root():  # one pass over the images: rank 0 alone
            return None
        return figures.segmenter_images(args.segmenter, args.image, opts, files)
    if args.compare:
        if not dist.is_root():  # one figure: rank 0 alone
            return None
        return figures.compare(args.compare, args.image, opts, args.name, files)
    checkpoint = args.checkpoint
    if not checkpoint:
        checkpoint = str(runs.best_checkpoint("model"))
        print(f"using the newest run's best checkpoint, {checkpoint}")
    if args.image:  # under torchrun the ranks share the images; rank 0 writes
        return figures.own_images(checkpoint, args.method, args.image, opts, files)
    if not dist.is_root():  # the report's 12 images: rank 0 alone
        return None
    return figures.report(checkpoint, args.method, opts, files)


if __name__ == "__main__":
    dist.run_main(main, get_args_parser(), hints=flags.HINTS)
