"""The report's per-image loop for the gradient methods: the reference that the batched drivers
of flowercam/cam/maps.py must reproduce (tests/test_cams.py) and that benchmarks/cams.py times;
and every class's CAM in one pass (class_cams), the oracle of the CAM identities.

    python -c "from tests import cam_reference; help(cam_reference.report_loop)"
    .venv/bin/pytest tests/test_cams.py -q -k report_loop
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowercam import core
from flowercam.cam import maps, methods
from flowercam.model import normalization, vgg


def report_loop(model, images, method, targets=None, **options):
    """The report's way, one image at a time: full forward with the input requiring grad (how a
    frozen net is usually made differentiable), then one backward down to the input -> [B,H,W]."""
    opts = methods.resolve_options(method, options)
    layers = methods.layers_of(method, opts)
    stages = [name for name in layers if name != "classmaps"]
    out = []
    for i in range(len(images)):
        x = images[i : i + 1].clone().requires_grad_(True)
        feats, acts = model.backbone.forward_with(x, stages, graph="input")
        _, acts["classmaps"], logits = model.head.forward_maps(feats)
        t = int(logits.argmax(1)) if targets is None else int(targets[i])
        grads = torch.autograd.grad(logits[0, t], [x] + [acts[n] for n in layers])[1:]
        with torch.no_grad():
            weigh = methods.METHODS[method].weigh
            per = [weigh(acts[n].detach(), g, None) for n, g in zip(layers, grads, strict=True)]
            raw = maps.combine(method, per, opts, x.shape[-2:])[0]
            out.append(normalization.normalize(raw, opts["normalize_by"]))
    return torch.cat(out)


def load_images(folder, count, size):
    """image_0001.jpg.. spread over the classes -> [N,3,size,size] ImageNet-normalised."""
    ids = np.linspace(1, 1360, count).round().astype(int)
    paths = [Path(folder) / f"image_{i:04d}.jpg" for i in ids]
    if not all(p.is_file() for p in paths):
        raise core.UserError(f"Flower-17 images not found in {folder}: name the folder that "
                             "holds image_0001.jpg ..", topic="images")
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(3, 1, 1)
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        out.append((x - mean) / std)
    return torch.stack(out)


def class_cams(head, feats, method="CAM"):
    """All C class maps in one pass, the oracle of the CAM identities (tests/test_cams.py,
    tests/test_recam_published.py): feats [B,512,h,w] -> [B,C,h,w] (CAM or ReCAM)."""
    methods.check_method(method, head.model_type)
    with torch.no_grad():
        rew, maps, _ = head.forward_maps(feats)
        acts = {"classmaps": maps, "reweighted": rew}
        return head.cams(acts.get(methods.METHODS[method].default_layers[0], maps))
