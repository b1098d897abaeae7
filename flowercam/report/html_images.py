"""The pictures of report.html: the gallery tiles (image, map overlay, the true mask's and the
pseudo-mask's outlines) and the plots (deletion / insertion curves, PxAP's precision-recall
curves), each a PNG in the report's folder.

    python -c "from flowercam.report import html_images as h; help(h.gallery_maps)"

Takes plain data read from a run's JSON (never the metrics package); maps are recomputed through
the public CAM API (flowercam.cam.compute) from the checkpoint the JSON names.
"""

import numpy as np
import torch
from matplotlib.figure import Figure

from flowercam.backbones import registry
from flowercam.cam import compute, methods
from flowercam.core import atomic_write
from flowercam.data import dataset, masks
from flowercam.refine import methods as refiners
from flowercam.report import render

TILE = 192  # gallery tile side in pixels
PSEUDO_COLOUR = render.REFINED_COLOUR  # the pseudo-mask's outline: cyan; the true mask's: white


def save_figure(fig, path):
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))


def plot_perturbation(path, curves):
    """Deletion and insertion curves (mean class score per step) of every row -> PNG; False when
    no row has a curve."""
    rows = {r: c for r, c in curves.items() if "deletion" in c or "insertion" in c}
    if not rows:
        return False
    fig = Figure(figsize=(10, 3.6))  # no pyplot: no GUI backend, no global state
    for ax, kind in zip(fig.subplots(1, 2), ("deletion", "insertion"), strict=True):
        for row, c in rows.items():
            if kind in c:
                ax.plot(np.linspace(0, 1, len(c[kind])), c[kind], "o-", ms=3, label=row)
        ax.set_title(f"{kind} (AUC {'lower' if kind == 'deletion' else 'higher'} is better)")
        ax.set_xlabel("fraction of pixels " + ("deleted" if kind == "deletion" else "inserted"))
        ax.set_ylabel("mean score of the class")
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_precision_recall(path, curves):
    """PxAP's set-level pixel precision-recall curve of every row -> PNG; False without any."""
    rows = {r: c for r, c in curves.items() if "precision" in c}
    if not rows:
        return False
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    for row, c in rows.items():
        ax.plot(c["recall"], c["precision"], label=row)
    ax.set_xlabel("recall (mask pixels found)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("pixel precision-recall over tau (PxAP = area)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def load_gallery_model(checkpoint, backbone_weights, device):
    """(model, settings) of the checkpoint the run names."""
    return registry.load_model(checkpoint, backbone_weights, device)


def gallery_maps(model, row, paths, targets, options, size):
    """[N,size,size] min-max maps of one row (a method, or METHOD+REFINER) on the images at paths,
    with the run's scales, flip and layers (the maps the run scored)."""
    name, how = refiners.split_row(row)
    images = torch.stack([dataset.load_image(p, size)[0] for p in paths])
    device = next(model.head.parameters()).device
    result = compute.compute_maps(model, images.to(device), name,
                                  targets=torch.as_tensor(targets, device=device),
                                  scales=tuple(options.get("scales") or (1.0,)),
                                  flip=bool(options.get("flip")), normalize_by="minmax",
                                  **methods.layer_options(name, options.get("layers")))
    maps = result.maps.detach().float().cpu()
    if how != "none":
        pixels = torch.stack([torch.from_numpy(np.asarray(dataset.open_rgb(p).resize(
            (size, size)), np.float32) / 255).permute(2, 0, 1) for p in paths])
        maps = refiners.refine_batch(how, pixels, maps)
    return maps.numpy()


def true_mask(masks_dir, image_id, size, mask_values, ignore_values):
    """(foreground bool [size,size], found) of an image's label mask (as the run read it)."""
    found = masks.find_mask(masks_dir, image_id) if masks_dir else None
    if found is None:
        return np.zeros((size, size), bool), False
    labels = masks.read_labels(found, size)
    fg = np.isin(labels, mask_values) if mask_values else labels > 0
    return fg & ~np.isin(labels, ignore_values or []), True


def gallery_tiles(path, heat, fg, has_mask, tau, out_photo, out_overlay):
    """Two PNG tiles of one image: the photo with the true mask's outline (white), and the
    map's overlay with the true mask's outline and the pseudo-mask's (map >= tau, cyan)."""
    photo = np.asarray(dataset.open_rgb(path).resize((TILE, TILE)))
    overlay = render.blend(photo, heat, 0.5, "jet")
    if has_mask:
        photo, overlay = render.draw_outline(photo, fg), render.draw_outline(overlay, fg)
    if tau is not None:
        overlay = render.draw_outline(overlay, heat >= tau, PSEUDO_COLOUR)
    for tile, out in ((photo, out_photo), (overlay, out_overlay)):
        atomic_write(out, lambda f, tile=tile: render.to_image(tile).save(f, format="PNG"))
