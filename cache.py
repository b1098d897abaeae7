"""Build (or resume) the feature cache of one subset: the frozen backbone's output of every image.

    python cache.py --subset train --backbone-weights ../shared/weights/vgg16_imagenet_features.pth
    python cache.py --subset valid --split 2 --precision bf16
    python cache.py --subset test --num-workers 2 --batch-size 16
    python cache.py --subset train --cut conv5_3     # VGG16's 16x16 relu5_3 features, float16
    python cache.py --subset train --backbone efficientnet_lite0   # docs/backbones.md

main.py, evaluate.py and grid.py build a missing cache themselves; this command builds one ahead
(e.g. on a faster machine). Under torchrun the processes share the work (README "Past one
machine"): torchrun --nproc-per-node 2 cache.py --subset train. The files are described in
flowercam/cache/features.py.
"""

from flowercam import core, dist, flags
from flowercam.cache import features
from flowercam.data import dataset


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    flags.add_data_dir(parser)
    flags.add_split(parser)
    parser.add_argument("--subset", default="train", choices=dataset.SUBSETS,
                        help="which subset of the split to cache")
    flags.add_backbone(parser)
    flags.add_precision(parser, "backbone precision (bf16 = bfloat16 autocast, stored as float32)")
    flags.add_batch_size(parser, 16, "images per backbone batch")
    flags.add_num_workers(parser)
    flags.add_device(parser)
    flags.add_cut(parser)
    return parser


def main(args):
    items = dataset.split_items(args.data_dir, args.subset, args.split)
    backbone = flags.load_backbone(args)
    feats = features.feature_cache(items, backbone, args.data_dir, args.precision,
                                   args.batch_size, args.num_workers, args.device)
    key = features.cache_key(items, backbone, args.data_dir, features.input_size(args.data_dir),
                             args.precision)
    path = features.cache_paths(args.data_dir, key)[0]
    if dist.is_root():
        print(f"{args.subset} split {args.split}: {tuple(feats.shape)} in {path}")


if __name__ == "__main__":
    dist.run_main(main, get_args_parser(), hints=flags.HINTS)
