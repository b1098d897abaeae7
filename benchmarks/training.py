"""Training benchmarks: cache build vs bare backbone, cached vs uncached epoch, peak memory.

    python -m benchmarks.training                        # ../shared images + weights
    python -m benchmarks.training --images 64 --steps 10 --epochs 40 --precision bf16
    python -m benchmarks.training --train-size 6800 --output output/bench_training.json
    python -m benchmarks.training --backbone efficientnet_lite0      # any backbone of the registry

The cached run trains CAM (lr 1e-4, batch 8) for --epochs on a synthetic memory-mapped cache of
the backbone's row shape at its cut ([train-size,512,7,7] for VGG16's pool5; class-structured
features: Flower-17's shapes and sizes) in a subprocess that reports its peak RSS. The uncached
epoch (the report's way) is timed on --steps batches of real images and scaled to a full epoch
(train-size/8 steps + the valid-size images).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flowercam import core, flags
from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.core import UserError, atomic_save_json, run_main
from flowercam.data import dataset
from flowercam.model import heads
from flowercam.train import training

NUM_CLASSES = 17
SHARED_WEIGHTS = "vgg16_imagenet_features.pth"  # the default backbone's file under SHARED/weights
REPO = Path(__file__).resolve().parents[1]


def shared_items(shared, n):
    """n Flower-17 images spread over the classes: [(item_id, path, label)]."""
    jpg = Path(shared) / "flowers17" / "jpg"
    if not (jpg / "image_0001.jpg").is_file():
        raise UserError(f"Flower-17 images not found in {jpg}: pass --shared PATH")
    numbers = np.linspace(1, 1360, n).round().astype(int)
    return [(f"image_{k:04d}_0", str(jpg / f"image_{k:04d}.jpg"), (k - 1) // 80) for k in numbers]


def add_backbone(parser):
    """--backbone (main.py's flag) and --backbone-weights, whose default for the default
    backbone is the --shared folder's file."""
    flags.add_backbone_name(parser)
    parser.add_argument("--backbone-weights", default=None,
                        help=f"the backbone's state dict file; default: {registry.DEFAULT}: "
                             f"SHARED/weights/{SHARED_WEIGHTS}, others: the registry's "
                             "(docs/backbones.md; offline: pass a file)")


def shared_backbone(args):
    """The backbone --backbone names, with --backbone-weights, else (the default backbone) the
    --shared folder's weights file, else the registry's own."""
    name = args.backbone or registry.DEFAULT
    weights = args.backbone_weights
    if weights is None and name == registry.DEFAULT:
        weights = Path(args.shared) / "weights" / SHARED_WEIGHTS
    return registry.load_backbone(name, weights)


def bench_backbone(items, backbone, args) -> dict:
    """Bare backbone forward on pre-decoded images vs the cache build on the same files."""
    images = torch.stack([dataset.load_image(p, 256)[0] for _, p, _ in items])
    with torch.inference_mode(), features.autocast(args.precision, "cpu"):
        backbone(images[:2])  # warm-up: oneDNN primitive creation
        start, cpu = time.perf_counter(), time.process_time()
        for batch in images.split(args.cache_batch):
            backbone(batch)
        bare, bare_cpu = time.perf_counter() - start, time.process_time() - cpu
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        features.feature_cache(items, backbone, tmp, args.precision, args.cache_batch,
                            args.num_workers, size=256)
        build = time.perf_counter() - start
    n = len(items)
    return {"images": n, "bare_img_per_s": n / bare, "build_img_per_s": n / build,
            "build_vs_bare": bare / build, "bare_s_per_img": bare / n,
            "bare_cpu_s_per_img": bare_cpu / n}


def bench_uncached(items, backbone, args) -> dict:
    """The report's epoch: decode + backbone + head step for every batch; timed on a few steps."""
    source = features.BackboneSource(items, backbone, 256, args.precision, args.num_workers)
    settings = training.make_settings("CAM", None, [str(c) for c in range(NUM_CLASSES)], 256,
                                      backbone.backbone_id, cut=backbone.cut,
                                      backbone=backbone.key)
    head = heads.build_head(settings, backbone.channels)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4, fused=True)
    order = torch.arange(min(len(items), args.steps * 8))
    training.train_epoch(head, optimizer, source, order[:8], 8)  # warm-up
    start = time.perf_counter()
    training.train_epoch(head, optimizer, source, order, 8)
    per_image = (time.perf_counter() - start) / len(order)
    steps = -(-args.train_size // 8)
    # validation runs the backbone forward only: the bare per-image cost
    epoch = steps * 8 * per_image + args.valid_size * per_image
    return {"timed_images": len(order), "s_per_image": per_image, "epoch_s_estimate": epoch}


def make_synthetic(path, n, seed, shape=(512, 7, 7)):
    """[n,*shape] float32 .npy (shape: a cache row, C,h,w): class mean + noise, so train and
    valid behave like real data."""
    # the class means are shared by train and valid; the noise differs per seed
    means = np.random.default_rng(1234).random((NUM_CLASSES, shape[0], 1, 1), dtype=np.float32)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))
    for start in range(0, n, 500):
        rows = labels[start:start + 500]
        noise = rng.random((len(rows), *shape), dtype=np.float32) * 2
        store[start:start + 500] = means[rows] + noise
    store.flush()
    return labels


def child_train(args):
    """Subprocess body: train on memory-mapped synthetic caches, print timings + peak RSS."""
    tmp = Path(args.child)
    sources = []
    for name in ("train", "valid"):
        labels = torch.from_numpy(np.load(tmp / f"{name}_labels.npy"))
        feats = torch.from_numpy(np.load(tmp / f"{name}.npy", mmap_mode="c"))
        sources.append(features.CachedSource(feats, labels))
    settings = training.make_settings("CAM", None, [str(c) for c in range(NUM_CLASSES)], 256, "x")
    start, cpu = time.perf_counter(), time.process_time()
    cfg = training.TrainConfig(lr=1e-4, epochs=args.epochs, batch_size=8, seed=0, progress=False)
    history = training.train(settings, *sources, tmp / "run", cfg)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"epochs": len(history), "total_s": total, "epoch_s": total / len(history),
                      "cpu_s": cpu, "cpu_s_per_epoch": cpu / len(history),
                      "median_epoch_s": float(np.median([r["seconds"] for r in history])),
                      "peak_rss_mb": rss_mb, "last_valid_top1": history[-1]["valid_top1"]}))


def bench_cached(args, shape) -> dict:
    """The child's cached run on synthetic rows of shape (C,h,w): the backbone's at its cut."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, seed in (("train", args.train_size, 0), ("valid", args.valid_size, 1)):
            labels = make_synthetic(Path(tmp) / f"{name}.npy", n, seed, shape)
            np.save(Path(tmp) / f"{name}_labels.npy", labels)
        # a fresh process, so its peak RSS is the training's alone
        out = subprocess.run([sys.executable, "-m", "benchmarks.training", "--child", tmp,
                              "--epochs", str(args.epochs)], check=True, capture_output=True,
                             text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--shared", default="../shared", help="folder with flowers17/jpg and weights/")
    add_backbone(parser)
    add("--images", default=32, type=int, help="images for the backbone / cache-build timing")
    add("--steps", default=5, type=int, help="uncached training steps (batch 8) to time")
    add("--epochs", default=40, type=int, help="epochs of the cached run")
    add("--train-size", default=6800, type=int, help="training images of the cached run")
    add("--valid-size", default=340, type=int, help="validation images of the cached run")
    add("--precision", default="fp32", choices=features.PRECISIONS, help="backbone precision")
    add("--cache-batch", default=16, type=int, help="backbone batch size of the cache build")
    add("--num-workers", default=2, type=int, help="image decoding processes")
    add("--output", default="output/bench_training.json", help="where the figures go")
    add("--child", default=None, help=argparse.SUPPRESS)
    return parser


def main(args):
    if args.child:
        return child_train(args)
    backbone = shared_backbone(args)
    items = shared_items(args.shared, max(args.images, args.steps * 8))
    result = {"torch_threads": torch.get_num_threads(), "precision": args.precision,
              "backbone_id": backbone.backbone_id,
              "backbone": bench_backbone(items[:args.images], backbone, args),
              "uncached": bench_uncached(items, backbone, args),
              "cached": bench_cached(args, backbone.shapes(256)[backbone.cut])}
    result["cached_vs_uncached_epoch"] = (result["uncached"]["epoch_s_estimate"]
                                          / result["cached"]["epoch_s"])
    atomic_save_json(args.output, result)
    b, c = result["backbone"], result["cached"]
    print(f"bare backbone {b['bare_img_per_s']:.2f} img/s, cache build {b['build_img_per_s']:.2f} "
          f"img/s ({100 * b['build_vs_bare']:.0f}%)")
    print(f"cached: {c['epochs']} epochs in {c['total_s']:.1f} s ({c['epoch_s']:.2f} s/epoch), "
          f"peak RSS {c['peak_rss_mb']:.0f} MB")
    print(f"uncached epoch ~{result['uncached']['epoch_s_estimate']:.0f} s -> cached is "
          f"{result['cached_vs_uncached_epoch']:.0f}x faster; wrote {args.output}")
    return result


if __name__ == "__main__":
    run_main(main, get_args_parser())
