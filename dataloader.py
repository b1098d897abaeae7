"""Check a data folder augment.py wrote: split sizes of every subset and one loaded batch.

    python dataloader.py                              # split sizes of data/ and one loaded batch
    python dataloader.py --data-dir data --split 2 --batch-size 4
    python dataloader.py --size 224 --seed 1 --num-workers 2
"""

from flowercam import core, flags
from flowercam.data import dataset


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    flags.add_data_dir(parser)
    flags.add_split(parser)
    flags.add_batch_size(parser, 8, "batch size of the loaded batch")
    parser.add_argument("--size", default=256, type=flags.positive_int, help="input size in pixels")
    flags.add_seed(parser, "the loader's shuffling")
    flags.add_num_workers(parser, default=0)
    return parser


def main(args):
    for subset in dataset.SUBSETS:
        items = dataset.split_items(args.data_dir, subset, args.split)
        print(f"split {args.split} {subset}: {len(items)} items")
    if not items:
        raise core.UserError(f"split {args.split} of {args.data_dir} has no test images: rerun "
                             "`python augment.py`")
    loader = dataset.make_loader(items, args.batch_size, True, args.seed, args.num_workers,
                                 args.size)
    images, labels = next(iter(loader))
    print(f"test batch: images {tuple(images.shape)}, labels {labels.tolist()}")


if __name__ == "__main__":
    core.run_main(main, get_args_parser(), hints=flags.HINTS)
