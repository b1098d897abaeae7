"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): a channel's weight is the drop of the target score
when that channel of the layer is set to zero.

    python -c "from flowercam.cam import ablation; help(ablation.ablation_weights)"
    .venv/bin/pytest tests/test_cam_family.py -q -k ablation

w_k = (y_t - y_t^k) / y_t (the paper's Eq. 3, as pytorch-grad-cam), y_t^k: the target logit with
A_k zeroed; map relu(sum_k w_k A_k). The network after the ablated layer runs again: the head alone
for the class maps (17 channels), the backbone's forward_replacing (the rest of the backbone up to
the head's cut: VGG16 runs only the layers after the stage) + the head for a backbone stage. Zero
is the ablation value, as pytorch-grad-cam's.
"""

import torch
from tqdm import tqdm


def downstream(model, layer, x=None):
    """The rest of the network after `layer`, up to the head's cut: (activations [N,K,h,w], the
    rows of the images x [B,3,H,W] they belong to [N]) -> logits [N,C], the model's own.
    x: the images (a backbone that cannot split its network reruns them with the stage's output
    replaced); rows None = the first N images."""
    head = model.head
    if layer == "classmaps":
        reweight = getattr(head, "reweight", None)  # the report's ReCAM re-weights the class maps
        return lambda maps, rows=None: head.classify(reweight(maps)[0] if reweight else maps)

    def rest(acts, rows=None):
        images = None if x is None else (x[:len(acts)] if rows is None else x[rows])
        return head(model.backbone.forward_replacing(images, layer, acts))
    return rest


def ablation_weights(model, x, acts, targets, opts, layer, progress=True):
    """Ablation-CAM channel weights [B,K]: acts [B,K,h,w] of `layer` for the images x, targets [B].

    The B*K ablated copies go through the rest of the network opts["scorecam_batch"] at a time
    (any image/channel mix). A zero target logit gives zero weights (never NaN)."""
    batch, channels = acts.shape[:2]
    rest = downstream(model, layer, x)
    batch_size = opts["scorecam_batch"]
    with torch.no_grad():
        full = rest(acts).gather(1, targets[:, None])[:, 0]  # [B] y_t
        ablated = torch.empty(batch * channels, dtype=acts.dtype, device=acts.device)
        starts = range(0, batch * channels, batch_size)
        for start in tqdm(starts, desc="Ablation-CAM", leave=False, disable=not progress or None):
            pair = torch.arange(start, min(start + batch_size, batch * channels),
                                device=acts.device)
            b, k = pair // channels, pair % channels
            copies = acts[b].clone()
            copies[torch.arange(len(pair), device=acts.device), k] = 0
            ablated[pair] = rest(copies, b).gather(1, targets[b][:, None])[:, 0]
    drop = full[:, None] - ablated.view(batch, channels)
    safe = torch.where(full != 0, full, torch.ones_like(full))[:, None]
    return torch.where(full[:, None] != 0, drop / safe, torch.zeros_like(drop))
