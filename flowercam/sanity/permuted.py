"""Data randomisation (Adebayo et al. 2018): the same head trained on the training labels
permuted, so it can only memorise; its maps should have nothing in common with the true head's.

    python evaluate.py -d model/RUN --sanity --limit 12      # trains it on the feature cache
    python -c "from flowercam.sanity import permuted as p; print(p.permuted_labels( \
[('a_0', '', 0), ('a_1', '', 0), ('b_0', '', 1), ('b_1', '', 1)], seed=3))"

The labels are permuted per source image (every augmented copy keeps its image's new label), so
the class frequencies are unchanged and the copies of one image agree, as a memorising network
needs. The head trains a fixed number of epochs with Adam on the cached features, without the
overfitting halt (memorising is the point); its validation accuracy on the true labels should
be chance (1 / classes).
"""

import dataclasses

import numpy as np
import torch
from tqdm import tqdm

from flowercam.cache import features
from flowercam.model import heads
from flowercam.train import training


def source_image(item_id):
    """'image_0001_3' (augmented copy 3) -> 'image_0001'."""
    stem, _, copy = item_id.rpartition("_")
    return stem if stem and copy.isdigit() else item_id


def permuted_labels(items, seed=0) -> torch.Tensor:
    """[N] long: the items' labels permuted over their source images (seeded)."""
    sources = [source_image(item_id) for item_id, _, _ in items]
    first = {}
    for src, (_, _, label) in zip(sources, items, strict=True):
        first.setdefault(src, label)
    names = list(first)
    shuffled = np.random.default_rng([seed, 17]).permutation(len(names))
    new = {name: first[names[j]] for name, j in zip(names, shuffled, strict=True)}
    return torch.tensor([new[src] for src in sources], dtype=torch.long)


@dataclasses.dataclass(frozen=True)
class PermutedConfig:
    """How the permuted-label head trains (fixed epochs: no halt)."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"


def train_permuted(settings, train_feats, labels, valid_src, cfg: PermutedConfig):
    """-> (head in eval mode, history [{"epoch", "train_loss", "train_top1" on the permuted
    labels, "valid_top1" on the true labels}]). train_feats [N,C,h,w] (the backbone's cut: C
    channels, e.g. VGG16's 512 x 7 x 7), labels [N] permuted."""
    torch.manual_seed(cfg.seed)
    head = heads.build_head(settings, train_feats.shape[1]).to(cfg.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    source = features.CachedSource(train_feats, labels, cfg.device)
    order_gen, history = torch.Generator().manual_seed(cfg.seed), []
    with training.head_threads(source):
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="permuted-label head", unit="epoch"):
            order = torch.randperm(len(source), generator=order_gen)
            loss = training.train_epoch(head, optimizer, source, order, cfg.batch_size)
            history.append({"epoch": epoch, "train_loss": loss,
                            "valid_top1": training.evaluate(head, valid_src)["top1"]})
        history[-1]["train_top1"] = training.evaluate(head, source)["top1"]
    return head.eval(), history
