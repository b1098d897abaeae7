"""Train the segmenter: a per-pixel foreground model learnt from image-level labels alone. The
CAM checkpoint's class maps of every training image of the split (LayerCAM by default, of the
image's labelled class) are refined from the image (dense CRF) into confident pixel labels: the
refined foreground is flower, the pixels where the map is low are background, the band between
is ignored. The few-shot rows' pixel classifier on the frozen backbone learns from those labels,
and each self-training round relabels the images with its own refined maps and fits again. No
mask file is read. The training images are the split's unaugmented copies (copy 0).

    python segment.py --checkpoint model/reference/CAM_lr0.0001_epoch6.pth --data-dir data
    python segment.py --checkpoint model/RUN/epoch_7.pth --rounds 2 --output model/seg2.pth
    python segment.py --checkpoint model/RUN/epoch_7.pth --limit 20 --rounds 0   # a quick look
    python segment.py --checkpoint model/RUN/epoch_7.pth --seeds-cache model/seeds.pt \
        --sampling half --output model/seg-half.pth    # 2nd run: seeds' maps from the cache
    python evaluate.py --checkpoint model/RUN/epoch_7.pth --cam-metrics --figures pseudo-masks \\
        --segmenter model/segmenter.pth --refine none crf --compare segmenter LayerCAM+crf
    python inference.py --segmenter model/segmenter.pth --image my_photos \\
        --pseudo-masks-dir output/masks --refine crf     # its masks of new images, as PNGs

Writes one checkpoint (--output; atomic) holding the classifier and its settings: backbone name
and weights id, the stages it read, the CAM checkpoint, the thresholds, the rounds and the
seconds each took.
"""

import time
from pathlib import Path

from flowercam import core, flags
from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.cam import methods
from flowercam.core import UserError
from flowercam.data import dataset
from flowercam.refine import methods as refiners
from flowercam.segment import labels, pixels, segmenter
from flowercam.train import evaluation, records


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="head checkpoint (.pth of main.py) whose class maps seed the labels")
    flags.add_data_dir(parser)
    flags.add_split(parser, from_run=True)
    flags.add_backbone_weights(parser, from_run=True)
    parser.add_argument("--output", default="model/segmenter.pth",
                        help="the segmenter checkpoint to write")
    parser.add_argument("--method", default=segmenter.DEFAULT.method,
                        choices=list(methods.METHODS),
                        help="the map method whose class maps are the seeds")
    parser.add_argument("--refine", default=None,
                        choices=[r for r in refiners.REFINERS if r != "none"],
                        help="how the maps are refined from the image before labelling; "
                             "default: crf on vgg16, crf-mean on any other backbone (IRN's crf "
                             "expects maps above 0.5 on the object: docs/refinement.md)")
    parser.add_argument("--rounds", default=segmenter.DEFAULT.rounds, type=flags.non_negative_int,
                        help="self-training rounds after the fit on the seeds (0: none)")
    parser.add_argument("--fg-threshold", default=labels.DEFAULT.fg_threshold,
                        type=flags.unit_float,
                        help="refined map at or above this: a flower label")
    parser.add_argument("--bg-threshold", default=labels.DEFAULT.bg_threshold,
                        type=flags.unit_float,
                        help="map at or below this (and not flower): a background label; "
                             "pixels between are ignored")
    parser.add_argument("--bg-refined-threshold", default=labels.DEFAULT.bg_refined_threshold,
                        type=flags.unit_float,
                        help="refined map at or below this (and not flower): a background label "
                             "too (IRN's background from the CRF map); 0: off, the map's "
                             "--bg-threshold only")
    parser.add_argument("--sampling", default=labels.DEFAULT.sampling, choices=labels.SAMPLINGS,
                        help="half: half flower, half background pixels per image, classes "
                             "weighted equally; labels: in the labels' own class proportion")
    parser.add_argument("--seeds-cache", default=None,
                        help="a .pt file of the seeds' maps (at the classifier's side): read "
                             "when it exists, written otherwise, so runs that change only the "
                             "labelling or the rounds skip the class maps and their CRF")
    parser.add_argument("--pixels-per-image", type=flags.positive_int,
                        default=segmenter.DEFAULT.classifier.pixels_per_image,
                        help="labelled pixels sampled per image and round (see --sampling)")
    parser.add_argument("--limit", default=None, type=flags.positive_int,
                        help="train on a seeded sample of this many training images (default: all)")
    flags.add_seed(parser, "the image sample and the sampled pixels")
    flags.add_batch_size(parser, segmenter.DEFAULT.batch_size, "images per batch")
    flags.add_device(parser)
    return parser


def training_items(data_dir, split, limit=None, seed=0):
    """The split's training images, copy 0 (the unaugmented one), --limit sampled."""
    items = [it for it in dataset.split_items(data_dir, "train", split) if it[0].endswith("_0")]
    if not items:
        raise UserError(f"split {split} of {data_dir} has no training images: run augment.py")
    return dataset.sample_items(items, limit, seed, in_order=True) if limit else items


def main(args):
    if Path(args.output).is_dir():
        raise UserError(f"--output {args.output} is a folder: give a .pth file path")
    core.check_writable_dir(Path(args.output).parent or Path("."), "--output's folder")
    split, weights = records.run_defaults(args.checkpoint, args.split, args.backbone_weights)
    # the checkpoint's own backbone: its pixel_stages are the features (segment/pixels.py)
    model, head_settings = registry.load_model(args.checkpoint, weights, args.device)
    backbone = model.backbone
    settings = segmenter.SegmenterSettings(
        pixels.PixelSettings(pixels_per_image=args.pixels_per_image, seed=args.seed),
        labels.LabelSettings(args.fg_threshold, args.bg_threshold,
                             args.bg_refined_threshold or None, args.sampling),
        args.method, args.refine or segmenter.default_refiner(registry.name_of(head_settings)),
        args.rounds, args.batch_size)
    settings.check()
    evaluation.check_data(head_settings, args.data_dir, model.backbone)
    methods.check_method(args.method, head_settings.model_type)
    items = training_items(args.data_dir, split, args.limit, args.seed)
    size = features.input_size(args.data_dir)
    seeds, key = None, None
    if args.seeds_cache:
        if Path(args.seeds_cache).is_dir():
            raise UserError(f"--seeds-cache {args.seeds_cache} is a folder: give a .pt file path")
        core.check_writable_dir(Path(args.seeds_cache).parent or Path("."),
                                "--seeds-cache's folder")
        key = segmenter.seeds_key(settings, backbone, args.checkpoint, args.data_dir, size)
        seeds = segmenter.load_seeds(args.seeds_cache, key)
    cached = set(seeds or ())
    start = time.perf_counter()
    pm, record = segmenter.train(model, items, size, settings, args.device, seeds=seeds)
    seconds = time.perf_counter() - start
    if seeds is not None and set(seeds) != cached:
        segmenter.save_seeds(args.seeds_cache, key, seeds)
    segmenter.save(args.output, pm, settings, backbone, cam_checkpoint=str(args.checkpoint),
                   data_dir=str(args.data_dir), split=split, input_size=size,
                   n_images=len(items), seconds=seconds, **record)
    per_round = ", ".join(f"{s:.0f} s" for s in record["round_seconds"])
    print(f"segmenter of {len(items)} training images of split {split}, {args.rounds} "
          f"self-training round(s) ({per_round}; {seconds / len(items) / (args.rounds + 1):.2f} "
          f"s per image and round) -> {args.output}")


if __name__ == "__main__":
    core.run_main(main, get_args_parser(), hints=flags.HINTS)
