"""Activation-map figures: report grids and strip, comparison figure, own images, raw maps, masks.

    python inference.py -m model/RUN -t CAM -s 0
    python inference.py --grid-runs output/grid_runs.json -s 0 --compare CAM-lr0.0001:CAM \\
        ReCAM-minmax-lr0.0001:ReCAM CAM-lr0.0001:LayerCAM
    python inference.py -m model/RUN --image photos/ --save-maps maps.npz --masks-dir masks

--compare pairs are CKPT:METHOD[:NORMALISER] read from the right, so C:\\runs\\best.pth:CAM works;
CKPT may also be a configuration name of --grid-runs (output/grid_runs.json).
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flowercam import cams, core, dataset, features, models, render, runs
from flowercam.core import UserError, run_main
from flowercam.image_files import arrays_of, expand_images, load_items, save_extras, save_png

NUM_IMAGES = 12
COLS = 4


def get_args_parser():
    p = core.ArgumentParser(description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-m", "--model-path",
                   help="checkpoint .pth, a run directory (its best epoch) or a --grid-runs "
                        "configuration; None = the newest run under model/")
    p.add_argument("-t", "--model-type", choices=list(cams.METHODS),
                   help="map method; default: the checkpoint's head type")
    p.add_argument("-n", "--normalize-by", choices=sorted(cams.NORMALIZERS),
                   help="map normaliser; default: the checkpoint's (minmax for a CAM head)")
    p.add_argument("-s", "--seed", type=int, default=0, help="picks the 12 validation images")
    p.add_argument("--compare", nargs="+", metavar="CKPT:METHOD[:NORM]",
                   help="comparison figure of these pairs on the seeded images (or --image)")
    p.add_argument("--grid-runs", help="grid_runs.json: lets CKPT be a configuration name")
    p.add_argument("--image", nargs="+", metavar="PATH", help="your own image files or folders")
    p.add_argument("--save-maps", metavar="FILE.npz", help="also save raw and normalised maps")
    p.add_argument("--masks-dir", help="also write binary pseudo-masks <image stem>.png here")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="on the normalised map")
    p.add_argument("--colormap", choices=render.COLORMAPS, default="red",
                   help="red: map in the red channel (the report's); jet: as most tools")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the map in the overlay")
    p.add_argument("--name", default="comparison", help="file name stem of the --compare figure")
    p.add_argument("--batch-size", type=int, default=NUM_IMAGES, help="images per model call")
    p.add_argument("--data-dir", default="data", help="folder prepared by augment.py")
    p.add_argument("--output-dir", default="output", help="where the figures go")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--backbone-weights", help="VGG16 state dict (else env BACKBONE_WEIGHTS)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (--image)")
    return p


def parse_pair(spec):
    """'CKPT:METHOD[:NORM]' read from the right -> (ckpt, method, norm or None)."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 3 and parts[2] in cams.NORMALIZERS and parts[1] in cams.METHODS:
        return parts[0], parts[1], parts[2]
    ckpt, _, method = spec.rpartition(":")
    if not ckpt or method not in cams.METHODS:
        raise UserError(f"--compare {spec!r} is not CKPT:METHOD[:NORMALISER]: METHOD is one of "
                        f"{', '.join(cams.METHODS)}, NORMALISER one of "
                        f"{', '.join(sorted(cams.NORMALIZERS))}")
    return ckpt, method, None


def resolve_checkpoint(name, grid_runs):
    """A checkpoint path, or a configuration name of grid_runs.json -> its best checkpoint."""
    if os.path.isdir(name):  # a run directory (or model/): its best checkpoint
        return str(runs.best_checkpoint(name))
    if not grid_runs or os.path.isfile(name):
        return name
    try:
        entries = json.loads(Path(grid_runs).read_text())
        if not isinstance(entries, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read --grid-entries {grid_runs} ({type(err).__name__}): run "
                        "grid.py first or pass checkpoint paths") from None
    # "CAM_lr0.0001" and "CAM-lr0.0001" name the same configuration
    found = [k for k in entries if k.replace("-", "_") == name.replace("-", "_")]
    if not found:
        raise UserError(f"{name} is neither a file nor a configuration of {grid_runs} (it has: "
                        f"{', '.join(sorted(entries)) or 'none'})")
    best = entries[found[0]].get("best_checkpoint")
    if not best:
        raise UserError(f"configuration {found[0]} of {grid_runs} saved no checkpoint: rerun it")
    return best


def run_name(ckpt):
    """The run folder's name (model/<run>/epoch_N.pth), else the file's stem."""
    parent = Path(ckpt).resolve().parent.name
    return parent if parent and parent not in ("model", "models") else Path(ckpt).stem


def select_items(data_dir, seed, split=1, n=NUM_IMAGES):
    """n validation items picked by Generator(seed) from the sorted list (same on every model)."""
    items = sorted(dataset.split_items(data_dir, "valid", split))
    if not items:
        raise UserError(f"no validation images in {data_dir}: run `python augment.py` first")
    picked = np.random.default_rng(seed).choice(len(items), size=min(n, len(items)), replace=False)
    return [items[i] for i in picked]


def check_pair(spec_ckpt, method, args):
    """Checks done before the backbone loads -> (ckpt path, method, settings, input size)."""
    ckpt = resolve_checkpoint(spec_ckpt, args.grid_runs)
    settings = models.load_checkpoint(ckpt)[1]
    method = method or settings["model_type"]
    cams.check_method(method, settings)  # e.g. ReCAM on a CAM head: one line
    return ckpt, method, settings, int(settings.get("input_size", models.INPUT_SIZE))


def explain(model, settings, images, method, override, device, shared=None):
    """Maps of one batch -> MapResult on the cpu. Normaliser: -n, else the head's own for ReCAM,
    else minmax. A `shared` dict lets CAM/ReCAM reuse backbone features of the same images."""
    norm = override or (settings.get("normalize_by") if method == "ReCAM" else None)
    options = {"normalize_by": norm} if norm else {}
    if shared is None or method not in cams.CLASS_MAP_METHODS:
        return cams.compute_maps(model, images.to(device), method, **options).to("cpu")
    if "feats" not in shared:
        with torch.no_grad():
            shared["feats"] = model.backbone(images.to(device))  # [B,512,7,7]
    return cams.compute_maps_from_features(model.head, shared["feats"], method,
                                           size=tuple(images.shape[-2:]), **options).to("cpu")


def method_info(ckpt, result, settings):
    """-> (normaliser used, the method's settings as saved in the npz)."""
    norm = result.options.get("normalize_by", "none")
    return norm, {"checkpoint": str(ckpt), "method": result.method, "normalize_by": norm,
                  "options": result.options, "model_settings": settings}


def report(args):
    """The report's three figures for one checkpoint and method on the seeded validation images."""
    ckpt, method, settings, size = check_pair(args.model_path, args.model_type, args)
    items = select_items(args.data_dir, args.seed, run_split(ckpt))
    paths = [path for _, path, _ in items]
    images, originals = load_items(paths, size)
    model, settings = models.load_model(ckpt, args.backbone_weights, args.device)
    result = explain(model, settings, images, method, args.normalize_by, args.device)
    norm, info = method_info(ckpt, result, settings)
    tiles, heats, overlays = render.panels(originals, cams.postprocess(result.maps).numpy(), size,
                                           args.colormap, args.alpha)
    names = settings.get("class_names") or dataset.class_names(args.data_dir)
    lines, correct = render.labelled_captions(result.logits.numpy(), [i[2] for i in items], names)
    run = run_name(ckpt)
    stem = Path(args.output_dir) / f"{run}_{method}_{norm}_seed{args.seed}"
    title = f"{run} | {method} | {norm} | seed {args.seed}"
    save_png(render.labelled_grid(overlays, lines, correct, title, COLS), f"{stem}_grid.png")
    save_png(render.compact_grid(overlays, COLS), f"{stem}_compact.png")
    save_png(render.strip(tiles, heats, overlays), f"{stem}_strip.png")
    save_extras(args, paths, [im.size for im in originals], arrays_of([result]), info)


def compare(args):
    """One figure: a column per checkpoint:method pair, a row per image (seeded or --image)."""
    pairs = [check_pair(c, m, args) + (c, n) for c, m, n in map(parse_pair, args.compare)]
    sizes = sorted({pair[3] for pair in pairs})
    if len(sizes) > 1:
        raise UserError(f"--compare checkpoints use different input sizes {sizes}: compare "
                        "models of one input size")
    paths = image_paths(args, pairs[0][0])
    images, originals = load_items(paths, sizes[0])
    backbone = models.load_backbone(args.backbone_weights, args.device)  # shared by all pairs
    columns, shared = [], {}
    for ckpt, method, _, size, spec_ckpt, norm in tqdm(pairs, desc="compare"):
        model, settings = models.load_model(ckpt, device=args.device, backbone=backbone)
        result = explain(model, settings, images, method, norm or args.normalize_by, args.device,
                         shared)
        norm = method_info(ckpt, result, settings)[0]
        heat = cams.postprocess(result.maps).numpy()
        label = spec_ckpt if spec_ckpt != ckpt else run_name(ckpt)
        overlays = render.panels(originals, heat, size, args.colormap, args.alpha)[2]
        columns.append((f"{label}: {method} ({norm})", overlays))
    tiles = [render.as_rgb_array(im.resize((sizes[0], sizes[0]))) for im in originals]
    suffix = "" if args.image else f"_seed{args.seed}"
    save_png(render.comparison_figure(tiles, columns),
             Path(args.output_dir) / f"{args.name}{suffix}.png")


def image_paths(args, ckpt):
    """--image files/folders (all checked first), else the seeded validation images of the
    split `ckpt`'s run trained on."""
    if args.image:
        return expand_images(args.image)
    return [path for _, path, _ in select_items(args.data_dir, args.seed, run_split(ckpt))]


def run_split(ckpt):
    """The split the checkpoint's run trained on (its config.json), so its validation images
    are never training images; 1 when unknown."""
    return int(runs.run_config(ckpt).get("split") or 1)


def own_images(args):
    """Maps of your own images, each overlay at the image's own resolution."""
    ckpt, method, settings, size = check_pair(args.model_path, args.model_type, args)
    paths = image_paths(args, ckpt)
    model, settings = models.load_model(ckpt, args.backbone_weights, args.device)
    items = [(Path(p).stem, p, 0) for p in paths]
    loader = dataset.make_loader(items, args.batch_size, False, 0, args.num_workers, size)
    with features.worker_errors():  # a bad image in a worker: its one line, not a traceback
        results = [explain(model, settings, batch, method, args.normalize_by, args.device)
                   for batch, _ in tqdm(loader, desc=f"{method} maps")]
    arrays = arrays_of(results)
    norm, info = method_info(ckpt, results[0], settings)
    heat = cams.postprocess(torch.from_numpy(arrays["maps"])).numpy()
    names = settings.get("class_names") or [str(i) for i in range(arrays["logits"].shape[1])]
    sizes = []
    for path, h, logits in zip(paths, heat, arrays["logits"], strict=True):
        original = dataset.load_image(path, size)[1]
        sizes.append(original.size)
        overlay = render.blend(original, h, args.alpha, args.colormap)  # map upsampled to W x H
        save_png(render.to_image(overlay),
                 Path(args.output_dir) / f"{run_name(ckpt)}_{method}_{norm}_{Path(path).stem}.png")
        top = ", ".join(f"{n} {p:.1%}" for n, p in render.topk_predictions(logits, names))
        print(f"  {path}: {top}")
    save_extras(args, paths, sizes, arrays, info)


def check_args(args):
    if args.compare and args.model_path:
        raise UserError("give either -m/--model-path CKPT (with -t METHOD) or --compare PAIRS")
    if args.compare and (args.save_maps or args.masks_dir):
        raise UserError("--save-maps and --masks-dir work with -m, not with --compare")
    for name, value in (("--mask-threshold", args.mask_threshold), ("--alpha", args.alpha)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} {value} is outside [0, 1]")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")


def main(args):
    check_args(args)
    if not args.compare and not args.model_path:
        args.model_path = str(runs.best_checkpoint("model"))
        print(f"using the newest run's best checkpoint, {args.model_path}")
    if args.compare:
        compare(args)
    elif args.image:
        own_images(args)
    else:
        report(args)


if __name__ == "__main__":
    run_main(main, get_args_parser())
