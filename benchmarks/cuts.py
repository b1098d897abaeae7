"""Backbone cuts: what float16 storage of the conv5_3 cache changes, and what each head costs.

    python -m benchmarks.cuts --data-dir data --pool5-data-dir ../main/data
    python -m benchmarks.cuts --data-dir data --pool5-data-dir ../main/data --steps 5 --skip-effect
    python -m benchmarks.cuts --pool5-data-dir ../main/data --checkpoint RUN/epoch_6.pth
    python -m benchmarks.cuts --backbone convnext_tiny --skip-effect   # its cuts' head costs

Effect of float16 (needs a conv5_3 cache and a pool5 cache of the same valid and test images, e.g.
two data folders that share auged/): pool5 derived from the float16 conv5_3 rows
(vgg.pool5_from_conv5_3) against the float32 pool5 rows of the backbone, element by element, and
the top-1 on the valid images of a pool5 head on either: --checkpoint's (a trained run's), else a
CAM head trained here on the test rows (--epochs, lr 1e-4: then the figure is the change between
the two inputs, not an accuracy).
Cost: one Adam step of each head on a batch at each of the backbone's cuts (its declared cuts
and their shapes at 256 px; VGG16: pool5 and conv5_3), ms on one thread, scaled to an epoch.
The effect is VGG16's alone (the only backbone whose cuts are pool5 and a float16 conv5_3 that
pool5 derives from): another backbone needs --skip-effect.
"""

import time

import torch

from flowercam import flags
from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.core import ArgumentParser, UserError, atomic_save_json, run_main
from flowercam.data import dataset
from flowercam.model import checkpoints, heads, vgg
from flowercam.train import training

SIZE = 256  # input side of the cost's rows (the data folders' default)


def get_args_parser():
    parser = ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--data-dir", default="data", help="data folder with the conv5_3 caches")
    add("--pool5-data-dir", default=None, help="data folder with the pool5 caches (default: same)")
    flags.add_backbone(parser)  # --backbone-weights: the file the caches were built with
    add("--epochs", default=30, type=int, help="epochs of the probe head on the test rows")
    add("--steps", default=10, type=int, help="timed Adam steps per head and cut")
    add("--batch-size", default=8, type=int, help="training batch size")
    add("--epoch-images", default=[1360, 6800], type=int, nargs="+",
        help="training set sizes to scale the step cost to")
    add("--skip-effect", action="store_true", help="only the cost")
    add("--checkpoint", default=None, help="a trained pool5 head to measure the effect with")
    add("--output", default="output/bench_cuts.json", help="where the figures go")
    return parser


def cached(data_dir, subset, backbone):
    """The subset's cache rows at backbone.cut (built if missing) as float32, and its labels."""
    items = dataset.split_items(data_dir, subset)
    feats = features.feature_cache(items, backbone, data_dir, num_workers=0)
    return feats.float(), features.labels_tensor(items)


def top1(head, feats, labels) -> torch.Tensor:
    with torch.no_grad():
        return head(feats).argmax(1) == labels


def probe_head(rows, classes, epochs):
    """A pool5 CAM head trained on (feats, labels) rows, seed 0, lr 1e-4, batch 8."""
    torch.manual_seed(0)
    head = heads.CAMHead(classes)
    source = features.CachedSource(*rows)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4)
    for _ in range(epochs):
        training.train_epoch(head, optimizer, source, torch.randperm(len(source)), 8)
    return head.eval()


def check_effect(backbone):
    """UserError (one line) unless the backbone's declared cuts are VGG16's (pool5, conv5_3)."""
    if tuple(backbone.cuts) != vgg.CUTS:
        raise UserError(f"backbone {backbone.key} has the cuts {', '.join(backbone.cuts)}: the "
                        f"float16 effect compares VGG16's {' and '.join(vgg.CUTS)} caches; pass "
                        "--skip-effect for its heads' cost alone")


def storage_effect(args) -> dict:
    """float16 conv5_3 -> derived pool5 vs the float32 pool5 path, features and top-1."""
    backbone = registry.load_backbone(args.backbone or registry.DEFAULT, args.backbone_weights)
    check_effect(backbone)
    pool5_dir = args.pool5_data_dir or args.data_dir
    exact = {s: cached(pool5_dir, s, backbone) for s in ("valid", "test")}
    fine = {s: cached(args.data_dir, s, backbone.at("conv5_3")) for s in ("valid", "test")}
    derived = vgg.pool5_from_conv5_3(fine["valid"][0])
    diff = (derived - exact["valid"][0]).abs()
    head = (checkpoints.load_checkpoint(args.checkpoint)[0] if args.checkpoint
            else probe_head(exact["test"], len(dataset.class_names(args.data_dir)), args.epochs))
    a, b = top1(head, *exact["valid"]), top1(head, derived, exact["valid"][1])
    return {"conv5_3_max": float(fine["valid"][0].max()), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float((diff / exact["valid"][0].abs().clamp(min=1e-3)).max()),
            "rel_l1": float(diff.sum() / exact["valid"][0].abs().sum()),
            "top1_float32": 100.0 * float(a.float().mean()),
            "top1_from_float16": 100.0 * float(b.float().mean()),
            "predictions_changed": int((head(exact["valid"][0]).argmax(1)
                                        != head(derived).argmax(1)).sum()),
            "images": len(a), "head": args.checkpoint or "probe trained on the test rows"}


def step_cost(kind, cut, shape, args, classes=17) -> dict:
    """ms per Adam step of one head on a random batch of rows of shape (C,h,w), one thread."""
    torch.manual_seed(0)
    head = heads.build_head(heads.HeadSettings.from_dict({"model_type": kind,
                                                        "num_classes": classes}), shape[0])
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4, fused=True)
    feats = torch.rand(args.batch_size, *shape)
    labels = torch.randint(0, classes, (args.batch_size,))
    times = []
    for i in range(args.steps + 2):  # two warm-up steps
        start = time.perf_counter()
        loss = training.batch_loss(head, feats, labels)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    ms = 1000 * sorted(times)[len(times) // 2]  # median: the machine is shared
    return {"model_type": kind, "cut": cut, "ms_per_step": ms,
            **{f"s_per_epoch_{n}": ms / 1000 * n / args.batch_size for n in args.epoch_images}}


def main(args):
    torch.set_num_threads(1)
    result = {"threads": 1, "batch_size": args.batch_size}
    # its cuts and their shapes: seeded random weights (shapes need no download)
    shaped = registry.load_backbone(args.backbone or registry.DEFAULT, seed=0)
    if not args.skip_effect:
        check_effect(shaped)
        result["float16"] = storage_effect(args)
        f = result["float16"]
        print(f"float16 conv5_3 -> pool5: max |diff| {f['max_abs_diff']:.4g} (max relative "
              f"{f['max_rel_diff']:.2g}); top-1 {f['top1_float32']:.2f} -> "
              f"{f['top1_from_float16']:.2f}, {f['predictions_changed']} predictions changed")
    shapes = shaped.shapes(SIZE)
    result["cost"] = [step_cost(kind, cut, shapes[cut], args) for kind in heads.MODEL_TYPES
                      for cut in shaped.cuts]
    for row in result["cost"]:
        print(f"{row['model_type']:16s} {row['cut']:8s} {row['ms_per_step']:8.2f} ms/step  "
              + "  ".join(f"{row[f's_per_epoch_{n}']:.0f} s/epoch of {n}"
                          for n in args.epoch_images))
    atomic_save_json(args.output, result)
    return result


if __name__ == "__main__":
    run_main(main, get_args_parser())
