"""Train the report's CAM / ReCAM head on the frozen VGG16 (features from data/cache by default).

    python main.py -m CAM -l 1e-4 -e 50 --backbone-weights PATH/vgg16_imagenet_features.pth
    python main.py -m ReCAM -n sigmoid -l 5e-4 -e 40 --seed 1
    python main.py -m CAM -e 2 --no-cache             # the report's way: backbone on every step

Writes model/TS<timestamp>_<type>[_<normaliser>]/: config.json, training_logs.txt (one JSON line
per epoch) and epoch_N.pth whenever the validation loss improves. Training halts when the
validation loss exceeds twice the training loss (the report's overfitting stop).
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from flowercam import core, dataset, features, models
from flowercam.core import UserError, atomic_save_json, atomic_write, run_main

OVERFIT_RATIO = 2.0  # halt once valid_loss > OVERFIT_RATIO * train_loss
EVAL_BATCH = 256


def make_settings(model_type, normalize_by, class_names, size, backbone_id) -> dict:
    """The settings dict every checkpoint carries (see CONTRACT.md)."""
    if model_type not in models.MODEL_TYPES:
        raise UserError(f"unknown model type {model_type!r}: "
                        f"use one of {', '.join(models.MODEL_TYPES)}")
    if model_type == "ReCAM" and normalize_by not in models.NORMALIZERS:
        raise UserError(f"unknown normaliser {normalize_by!r}: "
                        f"use one of {', '.join(models.NORMALIZERS)}")
    return {"model_type": model_type,
            "normalize_by": normalize_by if model_type == "ReCAM" else None,
            "num_classes": len(class_names), "class_names": list(class_names),
            "input_size": int(size), "backbone": backbone_id}


def make_run_dir(output_dir, settings, tag="") -> Path:
    """New output_dir/TS<timestamp>_<type>[_<normaliser>][_<tag>]/ (suffix -2, -3.. if taken)."""
    name = f"TS{time.strftime('%Y%m%d-%H%M%S')}_{settings['model_type']}"
    name += f"_{settings['normalize_by']}" if settings["normalize_by"] else ""
    name += f"_{tag}" if tag else ""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        run_dir = Path(output_dir) / (name if n == 1 else f"{name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"too many runs named {name} in {output_dir}: clean it up")


def train_epoch(head, optimizer, source, order, batch_size) -> float:
    """One pass over source in the given order; mean cross-entropy per sample."""
    head.train()
    losses, sizes = [], []  # summed once at the end: no per-step sync or extra ops
    for feats, labels in source.batches(order, batch_size):
        loss = F.cross_entropy(head(feats), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        sizes.append(len(labels))
    total = torch.stack(losses).double().cpu() @ torch.tensor(sizes, dtype=torch.float64)
    return total.item() / len(order)


@torch.no_grad()
def evaluate(head, source, batch_size=EVAL_BATCH, ks=(1, 3, 5)) -> dict:
    """{"loss", "top1", "top3", "top5"} (accuracies in %) over every item of source, in order."""
    head.eval()
    loss, hits, n = 0.0, dict.fromkeys(ks, 0), len(source)
    for feats, labels in source.batches(torch.arange(n), batch_size):
        logits = head(feats)  # [B,C]
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [B,k]
        for k in ks:
            hits[k] += (top[:, :k] == labels[:, None]).any(1).sum().item()
    return {"loss": loss / n, **{f"top{k}": 100.0 * hits[k] / n for k in ks}}


@contextlib.contextmanager
def head_threads(source):
    """One intra-op thread while training the tiny head on cached features: its ops are too small
    to split, and a second thread only waits (badly so when the other core is busy; measured
    0.8 ms vs up to 80 ms per step on 2 loaded cores). The backbone path keeps the default."""
    if not isinstance(source, features.CachedSource) or source.labels.device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _write_log(run_dir, history):
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(Path(run_dir) / "training_logs.txt", lambda f: f.write(lines), mode="w")


def run_epoch(head, optimizer, train_src, valid_src, order, batch_size) -> dict:
    """Train one epoch, then validate -> the epoch's log row (without epoch/checkpoint)."""
    start = time.perf_counter()
    train_loss = train_epoch(head, optimizer, train_src, order, batch_size)
    valid = evaluate(head, valid_src)
    return {"train_loss": train_loss, "valid_loss": valid["loss"], "valid_top1": valid["top1"],
            "valid_top3": valid["top3"], "valid_top5": valid["top5"],
            "seconds": time.perf_counter() - start,
            "overfit": valid["loss"] > OVERFIT_RATIO * train_loss}


def train(settings, train_src, valid_src, run_dir, lr=1e-4, epochs=50, batch_size=8, seed=0,
          device="cpu", progress=True) -> list[dict]:
    """Adam + cross-entropy on a fresh seeded head; logs, checkpoints, overfit halt. -> history."""
    torch.manual_seed(seed)
    head = models.build_head(settings).to(device)
    # fused Adam: one kernel per step instead of a dozen small ones (the head step is tiny)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, fused=True)
    order_gen = torch.Generator().manual_seed(seed)  # shuffling independent of the global stream
    history, best = [], float("inf")
    bar = tqdm(range(1, epochs + 1), desc=Path(run_dir).name, unit="epoch", disable=not progress)
    with head_threads(train_src):
        for epoch in bar:
            order = torch.randperm(len(train_src), generator=order_gen)
            row = {"epoch": epoch,
                   **run_epoch(head, optimizer, train_src, valid_src, order, batch_size)}
            if row["valid_loss"] < best:
                best = row["valid_loss"]
                row["checkpoint"] = f"epoch_{epoch}.pth"
                models.save_checkpoint(Path(run_dir) / row["checkpoint"], head, settings,
                                       **{k: row[k] for k in ("epoch", "train_loss",
                                                              "valid_loss", "valid_top1")})
            history.append(row)
            _write_log(run_dir, history)
            bar.set_postfix(train=f"{row['train_loss']:.3f}", valid=f"{row['valid_loss']:.3f}",
                            top1=f"{row['valid_top1']:.1f}")
            if row["overfit"]:
                tqdm.write(f"epoch {epoch}: valid loss {row['valid_loss']:.4f} > "
                           f"{OVERFIT_RATIO:g} x train loss: overfitting, stopping")
                break
    return history


def read_log(run_dir) -> list[dict]:
    """The rows of run_dir/training_logs.txt."""
    path = Path(run_dir) / "training_logs.txt"
    if not path.is_file():
        raise UserError(f"{path} not found: pass a run directory written by main.py")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_backbone(args):
    return models.load_backbone(models.resolve_backbone_weights(args.backbone_weights), args.device)


def make_sources(args, backbone, subsets=("train", "valid")) -> list:
    """One feature source per subset: CachedSource (default) or BackboneSource (--no-cache)."""
    size = features.input_size(args.data_dir)
    sources = []
    for subset in subsets:
        items = dataset.split_items(args.data_dir, subset, args.split)
        if not items:
            raise UserError(f"split {args.split} of {args.data_dir} has no {subset} images: "
                            "rerun `python augment.py`")
        if args.no_cache:
            sources.append(features.BackboneSource(items, backbone, size, args.precision,
                                                args.num_workers, args.device))
            continue
        feats = features.feature_cache(items, backbone, args.data_dir, args.precision,
                                    num_workers=args.num_workers, device=args.device, size=size)
        sources.append(features.CachedSource(feats, features.labels_tensor(items), args.device))
    return sources


def check_args(args):
    for name in ("lr", "epochs", "batch_size"):
        if getattr(args, name) <= 0:
            flag = name.replace("_", "-")
            raise UserError(f"--{flag} must be positive, got {getattr(args, name)}")


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("-m", "--model-type", default="CAM", choices=models.MODEL_TYPES, help="head to train")
    add("-n", "--normalize-by", default="minmax", choices=models.NORMALIZERS,
        help="ReCAM mask normaliser (ignored for CAM)")
    add("-l", "--lr", default=1e-4, type=float, help="Adam learning rate")
    add("-e", "--epochs", default=50, type=int, help="maximum number of epochs")
    add("--batch-size", default=8, type=int, help="training batch size")
    add("-s", "--seed", default=0, type=int, help="seed of the head init and the shuffling")
    add("--device", default="cpu", help="torch device (cpu, cuda)")
    add("--data-dir", default="data", help="folder prepared by augment.py")
    add("--output-dir", default="model", help="where the run directory is created")
    add("--backbone-weights", default=None,
        help="VGG16 weights file (default: env BACKBONE_WEIGHTS, else torchvision download)")
    add("--split", default=1, type=int, choices=(1, 2, 3), help="which train/valid/test split")
    add("--precision", default="fp32", choices=features.PRECISIONS,
        help="backbone precision (bf16 = bfloat16 autocast)")
    add("--no-cache", action="store_true", help="run the backbone on every step (the report's way)")
    add("--num-workers", default=2, type=int, help="image decoding processes")
    return parser


def main(args):
    check_args(args)
    core.check_writable_dir(args.output_dir)  # before the (long) cache build, not after it
    backbone = load_backbone(args)
    train_src, valid_src = make_sources(args, backbone)
    settings = make_settings(args.model_type, args.normalize_by,
                             dataset.class_names(args.data_dir),
                             features.input_size(args.data_dir), backbone.backbone_id)
    run_dir = make_run_dir(args.output_dir, settings)
    atomic_save_json(run_dir / "config.json", {**vars(args), "settings": settings,
                                               "train_images": len(train_src),
                                               "valid_images": len(valid_src)})
    print(f"training {settings['model_type']} on {len(train_src)} images -> {run_dir}")
    history = train(settings, train_src, valid_src, run_dir, args.lr, args.epochs,
                    args.batch_size, args.seed, args.device)
    saved = [row for row in history if "checkpoint" in row]
    if not saved:
        print(f"{len(history)} epochs; no finite validation loss, nothing saved in {run_dir}")
        return run_dir
    print(f"{len(history)} epochs; best valid loss {saved[-1]['valid_loss']:.4f} "
          f"(top-1 {saved[-1]['valid_top1']:.1f}%) in {run_dir / saved[-1]['checkpoint']}")
    return run_dir


if __name__ == "__main__":
    run_main(main, get_args_parser())
