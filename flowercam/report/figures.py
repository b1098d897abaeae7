"""Activation-map figures: report grids and strip, comparison figure, own images, raw maps, masks.

    python inference.py -m model/RUN -t CAM -s 0
    python -c "from flowercam.report import figures as f; print(f.parse_pair('a/b.pth:ReCAM:relu'))"
    python -c "from flowercam.report import figures; print(figures.select_items('data', 0)[:2])"

--compare pairs are CKPT:METHOD[:NORMALISER] read from the right, so C:\\runs\\best.pth:CAM works;
CKPT may also be a configuration name of grid_runs (output/grid_runs.json).
"""

import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from flowercam import dist
from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.cam import compute, methods
from flowercam.core import UserError, fit_name
from flowercam.data import dataset
from flowercam.model import checkpoints, normalization
from flowercam.report import image_files, render
from flowercam.report.image_files import arrays_of, expand_images, load_items, save_extras, save_png
from flowercam.segment import segmenter
from flowercam.train import evaluation, records, runs

NUM_IMAGES = 12
COLS = 4
NO_FILES = image_files.MapFiles()  # no npz, no masks


@dataclasses.dataclass(frozen=True)
class FigureOptions:
    """What every figure takes (inference.py's flags)."""

    data_dir: str = "data"
    output_dir: str = "output"
    device: str = "cpu"
    backbone_weights: str | None = None
    seed: int = 0  # picks the validation images
    normalize_by: str | None = None  # None: the head's own for ReCAM, else minmax
    colormap: str = "red"
    alpha: float = 0.5
    batch_size: int = NUM_IMAGES
    num_workers: int = 0
    grid_runs: str | None = None  # grid_runs.json: lets a checkpoint be a configuration name
    agg: compute.Aggregation = compute.Aggregation()  # scales and flips (default: one plain pass)
    outline_masks: str | None = None  # folder of <image stem>.png masks outlined in strip/compare
    outline_value: int | None = None  # the mask value outlined; None: the folder's record
    max_pixels: int = dataset.MAX_PIXELS  # largest --image accepted (dataset.open_rgb)


def parse_pair(spec):
    """'CKPT:METHOD[:NORM]' read from the right -> (ckpt, method, norm or None)."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 3 and parts[2] in normalization.NORMALIZERS and parts[1] in methods.METHODS:
        return parts[0], parts[1], parts[2]
    ckpt, _, method = spec.rpartition(":")
    if not ckpt or method not in methods.METHODS:
        raise UserError(f"--compare {spec!r} is not CKPT:METHOD[:NORMALISER]: METHOD is one of "
                        f"{', '.join(methods.METHODS)}, NORMALISER one of "
                        f"{', '.join(sorted(normalization.NORMALIZERS))}")
    return ckpt, method, None


def resolve_checkpoint(name, grid_runs):
    """runs.resolve_checkpoint, as the path string the figures record."""
    return str(runs.resolve_checkpoint(name, grid_runs))


def run_name(ckpt):
    """The run folder's name (model/<run>/epoch_N.pth), else the file's stem."""
    parent = Path(ckpt).resolve().parent.name
    return parent if parent and parent not in ("model", "models") else Path(ckpt).stem


def select_items(data_dir, seed, split=1, n=NUM_IMAGES):
    """n validation items picked by Generator(seed) from the sorted list (same on every model)."""
    items = sorted(dataset.split_items(data_dir, "valid", split))
    if not items:
        raise UserError(f"no validation images in {data_dir}: run `python augment.py` first")
    return dataset.sample_items(items, n, seed)


def check_pair(spec_ckpt, method, grid_runs=None):
    """Checks done before the backbone loads -> (ckpt path, method, settings, input size)."""
    ckpt = resolve_checkpoint(spec_ckpt, grid_runs)
    settings = checkpoints.load_checkpoint(ckpt)[1]
    method = method or settings.model_type
    methods.check_method(method, settings.model_type)  # e.g. ReCAM on a CAM head: one line
    return ckpt, method, settings, settings.input_size


def explain(model, settings, images, method, override, device, shared=None, agg=compute.PLAIN):
    """Maps of one batch -> MapResult on the cpu. Normaliser: -n, else the head's own for ReCAM,
    else minmax. A `shared` dict lets CAM/ReCAM reuse backbone features of the same images
    (one plain pass only: `agg` with scales or flips runs compute_maps)."""
    # a method tied to a head type (ReCAM) maps with that head's own normaliser by default
    own = settings.normalize_by if methods.METHODS[method].needs_head else None
    norm = override or own
    options = {"normalize_by": norm} if norm else {}
    shared = {} if shared is None else shared
    return compute.maps_reusing(model, images.to(device), method, shared, agg=agg,
                                **options).to("cpu")


def method_info(ckpt, result, settings):
    """-> (normaliser used, the method's settings as saved in the npz)."""
    norm = result.options.get("normalize_by", "none")
    return norm, {"checkpoint": str(ckpt), "method": result.method, "normalize_by": norm,
                  "options": result.options, "model_settings": settings.to_dict()}


def report(checkpoint, method, opts, files=NO_FILES):
    """The report's three figures for one checkpoint and method (None = the head's type) on the
    seeded validation images of the split the checkpoint's run trained on."""
    ckpt, method, settings, size = check_pair(checkpoint, method, opts.grid_runs)
    evaluation.check_classes(settings, opts.data_dir)  # its labels name the figure's images
    items = select_items(opts.data_dir, opts.seed, run_split(ckpt))
    paths = [path for _, path, _ in items]
    masks = outline_masks(opts, paths)
    images, originals = load_items(paths, size, opts.max_pixels)
    model, settings = registry.load_model(ckpt, run_weights(ckpt, opts), opts.device)
    result = explain(model, settings, images, method, opts.normalize_by, opts.device,
                     agg=opts.agg)
    norm, info = method_info(ckpt, result, settings)
    heat = compute.postprocess(result.maps).numpy()
    tiles, heats, overlays = render.panels(originals, heat, size,
                                           opts.colormap, opts.alpha)
    names = settings.class_names or dataset.class_names(opts.data_dir)
    lines, correct = render.labelled_captions(result.logits.numpy(), [i[2] for i in items], names)
    run = run_name(ckpt)
    tag = agg_tag(opts.agg)
    stem = Path(opts.output_dir) / f"{run}_{method}_{norm}{tag}_seed{opts.seed}"
    title = f"{run} | {method} | {norm}{tag.replace('_', ' ')} | seed {opts.seed}"
    save_png(render.labelled_grid(overlays, lines, correct, title, COLS), f"{stem}_grid.png")
    save_png(render.compact_grid(overlays, COLS), f"{stem}_compact.png")
    refined = refined_masks(files, paths, heat)
    overlays = with_outlines(with_outlines(overlays, masks), refined, render.REFINED_COLOUR)
    save_png(render.strip(tiles, with_outlines(heats, masks), overlays), f"{stem}_strip.png")
    save_extras(files, paths, [im.size for im in originals], arrays_of([result]), info)


def compare(specs, images, opts, name="comparison", files=NO_FILES):
    """One figure <name>[_seed<seed>].png: a column per CKPT:METHOD[:NORM] spec, a row per image
    (your own `images`, files or folders, else the seeded validation images); with files.refine
    each map's refined pseudo-mask is outlined beside the ground truth's."""
    pairs = [check_pair(c, m, opts.grid_runs) + (c, n) for c, m, n in map(parse_pair, specs)]
    for _, _, settings, *_ in (pairs if not images else []):  # the data folder's images
        evaluation.check_classes(settings, opts.data_dir)
    sizes = sorted({pair[3] for pair in pairs})
    if len(sizes) > 1:
        raise UserError(f"--compare checkpoints use different input sizes {sizes}: compare "
                        "models of one input size")
    paths = image_paths(images, pairs[0][0], opts)
    masks = outline_masks(opts, paths)
    images_t, originals = load_items(paths, sizes[0], opts.max_pixels)
    loaded = {}  # one backbone per name, shared by its pairs
    columns, shared = [], {}
    for ckpt, method, settings, size, spec_ckpt, norm in tqdm(pairs, desc="compare"):
        backbone_name = registry.name_of(settings)  # `name` is the figure's file stem
        if backbone_name not in loaded:
            loaded[backbone_name] = registry.load_backbone(backbone_name, opts.backbone_weights,
                                                           opts.device)
        model, settings = registry.load_model(ckpt, device=opts.device,
                                              backbone=loaded[backbone_name])
        result = explain(model, settings, images_t, method, norm or opts.normalize_by,
                         opts.device, shared, opts.agg)
        norm = method_info(ckpt, result, settings)[0]
        heat = compute.postprocess(result.maps).numpy()
        label = spec_ckpt if spec_ckpt != ckpt else run_name(ckpt)
        overlays = render.panels(originals, heat, size, opts.colormap, opts.alpha)[2]
        overlays = with_outlines(with_outlines(overlays, masks), refined_masks(files, paths, heat),
                                 render.REFINED_COLOUR)
        columns.append((f"{label}: {method} ({norm})", overlays))
    tiles = [render.as_rgb_array(im.resize((sizes[0], sizes[0]))) for im in originals]
    suffix = agg_tag(opts.agg) + ("" if images else f"_seed{opts.seed}")
    save_png(render.comparison_figure(tiles, columns),
             Path(opts.output_dir) / f"{name}{suffix}.png")


def image_paths(images, ckpt, opts):
    """Your own image files/folders (all checked first), else the seeded validation images of
    the split `ckpt`'s run trained on."""
    if images:
        return expand_images(images, opts.max_pixels)
    return [path for _, path, _ in select_items(opts.data_dir, opts.seed, run_split(ckpt))]


def run_weights(ckpt, opts):
    """--backbone-weights, else the file the checkpoint's run recorded (records.run_weights)."""
    return records.run_weights(ckpt, opts.backbone_weights)


def run_split(ckpt):
    """The split the checkpoint's run trained on (its config.json), so its validation images
    are never training images; 1 when unknown."""
    return int(records.run_config(ckpt).get("split") or 1)


def own_images(checkpoint, method, images, opts, files=NO_FILES):
    """Maps of your own images (files or folders), each overlay at the image's own resolution."""
    ckpt, method, settings, size = check_pair(checkpoint, method, opts.grid_runs)
    paths = image_paths(images, ckpt, opts)
    model, settings = registry.load_model(ckpt, run_weights(ckpt, opts), opts.device)
    items, step = [(Path(p).stem, p, 0) for p in paths], opts.batch_size
    starts = dist.shard(range(0, len(items), step))  # under torchrun: every world()-th batch
    loader = dataset.make_loader([it for s in starts for it in items[s:s + step]], step, False,
                                 0, opts.num_workers, size, opts.max_pixels)
    with features.worker_errors():  # a bad image in a worker: its one line, not a traceback
        mine = [(start, explain(model, settings, batch, method, opts.normalize_by, opts.device,
                                agg=opts.agg))
                for start, (batch, _) in zip(starts, tqdm(loader, desc=f"{method} maps"),
                                             strict=True)]
    results = dist.gather_ordered(mine)
    if results is None:  # a rank > 0: rank 0 writes every file, in input order
        return None
    arrays = arrays_of(results)
    norm, info = method_info(ckpt, results[0], settings)
    heat = compute.postprocess(torch.from_numpy(arrays["maps"])).numpy()
    names = settings.class_names or [str(i) for i in range(arrays["logits"].shape[1])]
    sizes = []
    for path, h, logits in zip(paths, heat, arrays["logits"], strict=True):
        original = dataset.load_image(path, size, opts.max_pixels)[1]
        sizes.append(original.size)
        overlay = render.blend(original, h, opts.alpha, opts.colormap)  # map upsampled to W x H
        name = f"{run_name(ckpt)}_{method}_{norm}{agg_tag(opts.agg)}_{Path(path).stem}"
        save_png(render.to_image(overlay), Path(opts.output_dir) / fit_name(name, ".png"))
        top = ", ".join(f"{n} {p:.1%}" for n, p in render.topk_predictions(logits, names))
        print(f"  {path}: {top}")
    save_extras(files, paths, sizes, arrays, info)


def agg_tag(agg):
    """'' for one plain pass, else e.g. '_x1-0.5-1.5-2_flip' (file names and titles)."""
    if agg.plain:
        return ""
    return "_x" + "-".join(f"{s:g}" for s in agg.scales) + ("_flip" if agg.flip else "")


def outline_masks(opts, paths):
    """Foreground masks of the images (bool [h, w] or None each) when opts.outline_masks is set."""
    if not opts.outline_masks:
        return None
    return image_files.load_masks(opts.outline_masks, paths, opts.outline_value)


def refined_masks(files, paths, heat):
    """The pseudo-masks of --refine (map refined from its image >= --mask-threshold) to outline
    beside the ground truth's; None each without --refine."""
    if files.refine == "none":
        return [None] * len(paths)
    return [image_files.refined(files.refine, p, h) >= files.mask_threshold
            for p, h in zip(paths, heat, strict=True)]


def with_outlines(tiles, masks, colour=render.OUTLINE_COLOUR):
    """Tiles with their mask's outline drawn (a tile without a mask is left as it is)."""
    if masks is None:
        return tiles
    return [tile if mask is None else render.draw_outline(tile, mask, colour)
            for tile, mask in zip(tiles, masks, strict=True)]


def segmenter_images(segmenter_path, images, opts, files=NO_FILES):
    """The segmenter's masks (segment.py) of your own images: an overlay of its P(flower) with
    the mask's outline (refined by files.refine first, >= files.mask_threshold) per image, at the
    image's own resolution; files.masks_dir gets the masks as PNGs (255 = flower)."""
    pm, settings = segmenter.load(segmenter_path)
    paths = expand_images(images, opts.max_pixels)
    backbone = registry.load_backbone(settings["backbone_name"], opts.backbone_weights,
                                      opts.device)  # the one it was trained on
    segmenter.check_backbone(settings, backbone, segmenter_path)
    size = int(settings.get("input_size") or dataset.DEFAULT_SIZE)
    maps, sizes = [], []
    for start in tqdm(range(0, len(paths), opts.batch_size), desc="segmenter masks", unit="batch"):
        chunk = paths[start:start + opts.batch_size]
        batch = torch.stack([dataset.load_image(p, size, opts.max_pixels)[0] for p in chunk])
        maps.append(pm.maps(backbone, batch.to(opts.device)))
    maps = torch.cat(maps).numpy()  # [N,size,size] P(flower)
    for path, heat in zip(paths, maps, strict=True):
        original = dataset.load_image(path, size, opts.max_pixels)[1]
        sizes.append(original.size)
        mask = image_files.refined(files.refine, path, heat) >= files.mask_threshold
        tile = render.draw_outline(render.blend(original, heat, opts.alpha, opts.colormap),
                                   mask, render.REFINED_COLOUR)
        save_png(render.to_image(tile), Path(opts.output_dir) / fit_name(
            f"segmenter_{Path(segmenter_path).stem}_{Path(path).stem}", ".png"))
    save_extras(dataclasses.replace(files, save_maps=None), paths, sizes, {"maps": maps}, {})
