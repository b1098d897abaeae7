"""Prepare data/: get Flower-17 (or your own class folders), check the images, augment them.

    python augment.py --source ../shared/flowers17      # Oxford layout already on disk (holds jpg/)
    python augment.py --source my_photos --data-dir data_mine   # my_photos/<class name>/*.jpg|png
    python augment.py                                    # downloads 17flowers.tgz + datasplits.mat
"""

import argparse
from pathlib import Path

from flowercam import core, flags
from flowercam.data import download, masks, prepare

MIN_SIZE = 32  # the backbone's five 2x2 poolings need at least 32 pixels


def image_size(text) -> int:
    value = flags.positive_int(text)
    if value < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {MIN_SIZE}")
    return value


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--data-dir", default="data", help="output folder (index, splits, auged/)")
    add("--source", default=None, help="images on disk: Oxford layout (DIR/jpg/) or "
        "DIR/<class name>/*.jpg; default: data/jpg, downloaded when missing")
    add("--copies", default=10, type=flags.positive_int,
        help="copies per image (copy 0 = resized only)")
    add("--size", default=256, type=image_size, help="output size in pixels (square)")
    flags.add_seed(parser, "the augmentation")
    flags.add_num_workers(parser, default=flags.default_workers())
    add("--limit-per-class", default=None, type=flags.positive_int,
        help="use only the first N images of each class (quick runs)")
    add("--base-url", default=download.BASE_URL, help="where to download Flower-17 from")
    flags.add_max_pixels(parser)
    flags.add_mask_values(parser.add_argument,
                          "SOURCE/masks' values, recorded in the data folder for every reader: "
                          "as an earlier run was given, else Flower-17's 1 (ignored 0 5) for "
                          "Flower-17, else the nonzero value of masks holding 0 and one other",
                          "as an earlier run was given, else Flower-17's 0 5, else none")
    return parser


def main(args):
    core.check_writable_dir(args.data_dir, "--data-dir")
    settings = prepare.AugmentSettings(args.copies, args.size, args.seed)
    declared = masks.declared_values(args.mask_values, args.ignore_values)
    result = prepare.prepare(args.data_dir, settings, args.source, args.num_workers,
                             args.limit_per_class, args.base_url, args.max_pixels, declared)
    index, splits = result["index"], result["splits"]
    sizes = {k: len(v) for k, v in splits["splits"]["1"].items()}
    print(f"{args.data_dir}: {len(index['images'])} images x {args.copies} copies in "
          f"{result['out_dir']} ({result['written']} new files), {len(index['classes'])} classes, "
          f"split 1 {sizes} ({splits['source']})")
    redone = result["redone"]
    if redone:
        print(f"{len(redone)} source image(s) changed since the last run, their copies redone: "
              f"{', '.join(redone[:5])}{' ...' if len(redone) > 5 else ''}")
    if index.get("masks"):
        record = index["masks"]
        values = record["values"]
        print(f"{record['count']} masks from {record['source']} in "
              f"{Path(args.data_dir) / record['dir']}: foreground "
              f"{values['foreground'] or 'any nonzero'}, ignored {values['ignore']}, background "
              f"{values['background'] or 'the rest'} ({values['from']})")
        if result["remasked"]:
            print(f"{len(result['remasked'])} source mask(s) changed since the last run, copied "
                  f"again: {', '.join(result['remasked'][:5])}"
                  f"{' ...' if len(result['remasked']) > 5 else ''}")
    return result


if __name__ == "__main__":
    core.run_main(main, get_args_parser(), hints=flags.HINTS)
