"""Training the report's head on the frozen backbone: Adam, cross-entropy, a checkpoint whenever
the validation loss improves, and the report's overfitting halt (flowercam.train.runs.overfitting).

    python main.py -m CAM -l 1e-4 -e 40      # the command; this module is what it runs
    python -c "from flowercam.train import training; print(training.make_settings('CAM', None, \
['a', 'b'], 256, 'x'))"
"""

import contextlib
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from flowercam.cache import features
from flowercam.core import UserError, atomic_write
from flowercam.data import dataset
from flowercam.model import checkpoints, heads, normalization
from flowercam.train import runs

EVAL_BATCH = 256


def make_settings(model_type, normalize_by, class_names, size, backbone_id,
                  recam_lambda=None, cut=None, backbone="vgg16",
                  backbone_weights_id=None) -> heads.HeadSettings:
    """The settings every checkpoint carries, from main.py's flags: normalize_by is kept for
    ReCAM only, recam_lambda (None = heads.RECAM_LAMBDA) for ReCAM-published only; cut (None:
    the backbone's default), the backbone's registry name, its weights id (backbone_id) and the
    sha256 of its weights file (None: a download); checked now, before any training."""
    if model_type not in heads.MODEL_TYPES:
        raise UserError(f"unknown model type {model_type!r}: "
                        f"use one of {', '.join(heads.MODEL_TYPES)}")
    if model_type == "ReCAM" and normalize_by not in normalization.NORMALIZERS:
        raise UserError(f"unknown normaliser {normalize_by!r}: "
                        f"use one of {', '.join(normalization.NORMALIZERS)}")
    lam = None
    if model_type == "ReCAM-published":
        lam = heads.RECAM_LAMBDA if recam_lambda is None else recam_lambda
        if not isinstance(lam, (int, float)) or isinstance(lam, bool):
            raise UserError(f"recam_lambda must be a finite number >= 0, got {lam!r}")
        lam = float(lam)
    return heads.HeadSettings(
        model_type=model_type, num_classes=len(class_names), class_names=tuple(class_names),
        input_size=int(size), normalize_by=normalize_by if model_type == "ReCAM" else None,
        recam_lambda=lam, cut=cut, backbone=backbone, backbone_id=backbone_id,
        backbone_weights_id=backbone_weights_id)


def batch_loss(head, feats, labels, reduction="mean"):
    """-> (loss, logits [B,C]): the head's own loss when it has one (ReCAM-published: CE +
    lambda L_sce), else cross-entropy of its logits. Train and valid losses use the same one."""
    if hasattr(head, "loss"):
        return head.loss(feats, labels, reduction)
    logits = head(feats)
    return F.cross_entropy(logits, labels, reduction=reduction), logits


def train_epoch(head, optimizer, source, order, batch_size) -> float:
    """One pass over source in the given order; mean loss (batch_loss) per sample."""
    head.train()
    losses, sizes = [], []  # summed once at the end: no per-step sync or extra ops
    for feats, labels in source.batches(order, batch_size):
        loss = batch_loss(head, feats, labels)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        sizes.append(len(labels))
    total = torch.stack(losses).double().cpu() @ torch.tensor(sizes, dtype=torch.float64)
    return total.item() / len(order)


@torch.no_grad()
def evaluate(head, source, batch_size=EVAL_BATCH, ks=(1, 3, 5)) -> dict:
    """{"loss" (batch_loss), "top1", "top3", "top5"} (accuracies in %) over every item of source,
    in order; top-k from the head's logits (its cross-entropy classifier)."""
    head.eval()
    loss, hits, n = 0.0, dict.fromkeys(ks, 0), len(source)
    for feats, labels in source.batches(torch.arange(n), batch_size):
        batch, logits = batch_loss(head, feats, labels, reduction="sum")  # logits [B,C]
        loss += batch.item()
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


def run_epoch(head, optimizer, train_src, valid_src, order, batch_size) -> dict:
    """Train one epoch, then validate -> the epoch's log row (without epoch/checkpoint)."""
    start = time.perf_counter()
    train_loss = train_epoch(head, optimizer, train_src, order, batch_size)
    valid = evaluate(head, valid_src)
    return {"train_loss": train_loss, "valid_loss": valid["loss"], "valid_top1": valid["top1"],
            "valid_top3": valid["top3"], "valid_top5": valid["top5"],
            "seconds": time.perf_counter() - start,
            "overfit": runs.overfitting({"train_loss": train_loss, "valid_loss": valid["loss"]})}


@dataclasses.dataclass
class TrainState:
    """Everything an epoch changes: saved as run_dir/state.pth after every epoch (resume)."""

    head: torch.nn.Module
    optimizer: torch.optim.Optimizer
    order_gen: torch.Generator  # the shuffling's own stream
    history: list  # the log rows so far


def start(settings, run_dir, lr, seed, device, resume=False, in_channels=None) -> TrainState:
    """A fresh seeded head reading in_channels (the backbone's; None: heads.CHANNELS) and Adam;
    resume: as they were after the last saved epoch (the rule in flowercam/train/runs.py: later
    log rows and checkpoints are discarded and redone)."""
    torch.manual_seed(seed)
    head = heads.build_head(settings, in_channels).to(device)
    # fused Adam: one kernel per step instead of a dozen small ones (the head step is tiny)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, fused=True)
    state = TrainState(head, optimizer, torch.Generator().manual_seed(seed), [])
    if resume:
        _restore(state, run_dir)
    return state


def save_state(state: TrainState, run_dir):
    """run_dir/state.pth, atomically; written after the epoch's checkpoint and log row."""
    blob = {"epoch": len(state.history), "head": state.head.state_dict(),
            "optimizer": state.optimizer.state_dict(), "order_rng": state.order_gen.get_state(),
            "torch_rng": torch.get_rng_state()}
    atomic_write(Path(run_dir) / runs.STATE_NAME, lambda f: torch.save(blob, f))


def _restore(state: TrainState, run_dir):
    path = Path(run_dir) / runs.STATE_NAME
    if not path.is_file():  # stopped inside the first epoch: start over
        runs.discard_after(run_dir, 0)
        return
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        epoch = blob["epoch"]
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
            raise ValueError(f"epoch {epoch!r}")
        state.head.load_state_dict(blob["head"])
        state.optimizer.load_state_dict(blob["optimizer"])
        state.order_gen.set_state(blob["order_rng"])
        torch.set_rng_state(blob["torch_rng"])
    except Exception as err:  # damaged or from other settings
        raise UserError(f"cannot resume from {path} ({type(err).__name__}): start a new run "
                        "instead") from None
    state.history = runs.discard_after(run_dir, epoch)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one configuration trains (main.py's flags; the grid varies lr)."""

    lr: float = 1e-4
    epochs: int = 50
    batch_size: int = 8
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    resume: bool = False  # continue run_dir's saved state


def train(settings, train_src, valid_src, run_dir, cfg: TrainConfig) -> list[dict]:
    """Adam + cross-entropy on a fresh seeded head (or the resumed one); per epoch: checkpoint
    when the validation loss improved, log row, state.pth; overfit halt. -> history.
    A second process training in the same run_dir is refused (runs.training_lock)."""
    with runs.training_lock(run_dir):  # one trainer per run folder
        state = start(settings, run_dir, cfg.lr, cfg.seed, cfg.device, cfg.resume,
                      getattr(train_src, "channels", None))
        best = min((row["valid_loss"] for row in state.history), default=float("inf"))
        if state.history and state.history[-1]["overfit"]:
            return state.history  # the run had already stopped
        bar = tqdm(range(len(state.history) + 1, cfg.epochs + 1), desc=Path(run_dir).name,
                   unit="epoch", disable=not cfg.progress)
        with head_threads(train_src):
            for epoch in bar:
                order = torch.randperm(len(train_src), generator=state.order_gen)
                row = {"epoch": epoch, **run_epoch(state.head, state.optimizer, train_src,
                                                   valid_src, order, cfg.batch_size)}
                best = _save_epoch(state, row, best, settings, run_dir)
                bar.set_postfix(train=f"{row['train_loss']:.3f}",
                                valid=f"{row['valid_loss']:.3f}", top1=f"{row['valid_top1']:.1f}")
                if row["overfit"]:
                    tqdm.write(f"epoch {epoch}: valid loss {row['valid_loss']:.4f} > "
                               f"{runs.OVERFIT_RATIO:g} x train loss: overfitting, stopping")
                    break
        return state.history


def _save_epoch(state: TrainState, row, best, settings, run_dir) -> float:
    """The epoch's checkpoint when its validation loss improved on best, then its log row, then
    state.pth (the order the resume rule relies on) -> the new best."""
    if row["valid_loss"] < best:
        best = row["valid_loss"]
        row["checkpoint"] = f"epoch_{row['epoch']}.pth"
        checkpoints.save_checkpoint(Path(run_dir) / row["checkpoint"], state.head, settings,
                                    **{k: row[k] for k in ("epoch", "train_loss", "valid_loss",
                                                           "valid_top1")})
    state.history.append(row)
    runs.write_log(run_dir, state.history)
    save_state(state, run_dir)
    return best


@dataclasses.dataclass
class SourceOptions:
    """Where the backbone features of a subset come from (the flags of main.py / evaluate.py)."""

    data_dir: str = "data"
    split: int = 1
    precision: str = "fp32"
    no_cache: bool = False  # True: run the backbone on every batch (the report's way)
    num_workers: int = 2
    device: str = "cpu"

    @classmethod
    def pick(cls, values: dict, **overrides):
        """Built by keyword from a mapping that has (at least) these fields' names, e.g. a
        command's parsed flags as a dict; overrides win."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})


def make_sources(opts: SourceOptions, backbone, subsets=("train", "valid")) -> list:
    """One feature source per subset: CachedSource (default) or BackboneSource (no_cache)."""
    size = features.input_size(opts.data_dir)
    sources = []
    for subset in subsets:
        items = dataset.split_items(opts.data_dir, subset, opts.split)
        if not items:
            raise UserError(f"split {opts.split} of {opts.data_dir} has no {subset} images: "
                            "rerun `python augment.py`")
        if opts.no_cache:
            sources.append(features.BackboneSource(items, backbone, size, opts.precision,
                                                   opts.num_workers, opts.device))
            continue
        feats = features.feature_cache(items, backbone, opts.data_dir, opts.precision,
                                       num_workers=opts.num_workers, device=opts.device,
                                       size=size)
        sources.append(features.CachedSource(feats, features.labels_tensor(items), opts.device))
    return sources
