"""Benchmarks. `cams`: batched CAM methods (one forward + ONE backward per batch) against the
report's loop (one forward + one backward per image), side by side in one run; checks they agree.
`costs`: seconds per image of each method; `layout`: the backbone NCHW vs channels-last;
`devices`: each method on the CPU and on --device, its time on each and how far apart the maps are.

    BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_features.pth python -m benchmarks.cams
    .venv/bin/python -m benchmarks.cams --random-backbone --synthetic --num-images 4 --size 64
    python -m benchmarks.cams --only costs --num-images 8 --methods CAM LayerCAM ScoreCAM
    python -m benchmarks.cams --only layout --num-images 32
    python3 -m benchmarks.cams --random-backbone --synthetic --device cuda --output b.json
    python3 -m benchmarks.cams --only devices --device cuda --num-images 2 --methods CAM SSCAM
"""

import copy
import os
import time
from pathlib import Path

import torch

from flowercam import core, flags
from flowercam.backbones import registry
from flowercam.cam import compute, methods
from flowercam.model import heads
from tests.cam_reference import load_images, report_loop


def shared_dir():
    """../shared beside the checkout, or env FLOWERCAM_SHARED."""
    default = Path(__file__).resolve().parents[2] / "shared"  # beside the checkout
    return Path(os.environ.get("FLOWERCAM_SHARED") or default)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=1):
    """-> (best wall time of `repeats` runs in s, last value)."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        value = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, value


def time_maps(args, model, images, method, **options):
    """-> (best seconds of --repeats runs, the last MapResult) of compute_maps on images' device."""
    return timed(lambda: compute.compute_maps(model, images, method, **options), images.device,
                 args.repeats)


def show(row):
    """One result row on one line, floats to 3 significant digits."""
    print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in row.items()), flush=True)


def build_model(args):
    torch.manual_seed(args.seed)
    name = args.backbone or registry.DEFAULT
    if args.random_backbone:  # VGG16: as vgg16.VGG16() under the seed above
        backbone = registry.load_backbone(name, seed=args.seed)
    else:
        backbone = registry.load_backbone(name, args.backbone_weights)
    head = heads.ReCAMHead(17, "minmax", backbone.channels)
    model = heads.Classifier(backbone, head).to(args.device).eval()
    return model, backbone.backbone_id


def bench_images(args):
    if args.synthetic:
        images = torch.randn(args.num_images, 3, args.size, args.size)
    else:
        images = load_images(args.images_dir or shared_dir() / "flowers17" / "jpg",
                             args.num_images, args.size)
    return images.to(args.device)


def prepared(args, warm_up="CAM"):
    """-> (the model on --device, its backbone id, the images there) after one warm-up map (lazy
    init, cuDNN's autotune), so that no timed run pays for them."""
    model, backbone_id = build_model(args)
    images = bench_images(args)
    compute.compute_maps(model, images[:1], warm_up)
    return model, backbone_id, images


def bench_costs(args):
    """Seconds per image of one plain map, of the --scales + flip aggregate (IRN's 1 0.5 1.5 2),
    and of Score-CAM (17 class maps -> 17 masked forwards per image)."""
    model, backbone_id, images = prepared(args)
    n = len(images)
    print(f"{backbone_id}, {n} images {args.size}px on {args.device}, "
          f"{torch.get_num_threads()} threads, scales {args.scales} + flip")
    rows = []
    for method in args.methods:
        plain_s, _ = time_maps(args, model, images, method)
        row = {"method": method, "plain_s_per_image": plain_s / n}
        if method in args.aggregate:
            agg_s, _ = time_maps(args, model, images, method, scales=args.scales, flip=True)
            row.update(aggregate_s_per_image=agg_s / n, aggregate_over_plain=agg_s / plain_s)
        rows.append(row)
        show(row)
    return rows


def bench_cams(args):
    """Batched compute_maps vs report_loop for every gradient method; -> list of result rows."""
    model, backbone_id, images = prepared(args, "LayerCAM")
    report_loop(model, images[:1], "LayerCAM")  # the loop's warm-up
    with torch.no_grad():
        forward_s, _ = timed(lambda: model(images), args.device, args.repeats)
    rows = [{"method": "forward only (no grad)", "batched_s": forward_s}]
    print(f"{backbone_id}, {args.num_images} images {args.size}px on {args.device}, "
          f"{torch.get_num_threads()} threads: batched forward {forward_s:.2f} s")
    for method in args.methods:
        batched_s, res = time_maps(args, model, images, method)
        row = {"method": method, "batched_s": batched_s}
        record = methods.METHODS[method]  # the report's loop knows only the plain logit's gradient
        if record.kind == "gradients" and not (record.objective or record.hessian):
            loop_s, maps = timed(lambda m=method: report_loop(model, images, m), args.device,
                                 args.repeats)
            diff = (maps - res.maps).abs().max().item()
            row.update(loop_s=loop_s, speedup=loop_s / batched_s, max_abs_diff=diff)
        rows.append(row)
        show(row)
    return rows


def bench_layout(args):
    """VGG16's convolutions on one batch laid out NCHW and channels-last (what vgg.channels_last
    gives the backbone on the CPU and CUDA): images per second of each, and how far apart they
    are."""
    if (args.backbone or registry.DEFAULT) != "vgg16":
        raise core.UserError(f"--only layout times VGG16's own layers, not {args.backbone}: "
                             "drop --backbone")
    model, backbone_id = build_model(args)
    images, features, outs, rows = bench_images(args), model.backbone.features, {}, []
    print(f"{backbone_id} features, {len(images)} images {args.size}px on {args.device}, "
          f"{torch.get_num_threads()} threads")
    with torch.no_grad():
        for layout, memory_format in (("NCHW", torch.contiguous_format),
                                      ("channels-last", torch.channels_last)):
            x = images.contiguous(memory_format=memory_format)
            features(x[:1])  # warm-up (oneDNN primitives are made per layout)
            seconds, outs[layout] = timed(lambda x=x: features(x), args.device, args.repeats)
            rows.append({"layout": layout, "images_per_s": len(x) / seconds})
    rows[1].update(speedup=rows[1]["images_per_s"] / rows[0]["images_per_s"],
                   max_abs_diff=(outs["NCHW"] - outs["channels-last"]).abs().max().item(),
                   max_abs_value=outs["NCHW"].abs().max().item())
    for row in rows:
        show(row)
    return rows


def bench_devices(args):
    """Each method's maps of the same images on the CPU and on --device (PyTorch's defaults, so
    CUDA's convolutions may use TF32): seconds per image on each, and the largest difference of
    the [0, 1] maps. The noisy methods draw on the CPU on both (flowercam.cam.noise)."""
    model, backbone_id, images = prepared(args)
    cpu_model, n, tf32 = copy.deepcopy(model).cpu(), len(images), torch.backends.cudnn.allow_tf32
    print(f"{backbone_id}, {n} images {args.size}px, cpu ({torch.get_num_threads()} threads) "
          f"against {args.device} (cudnn TF32 allowed: {tf32})")
    rows = []
    for method in args.methods:
        here_s, here = time_maps(args, model, images, method)
        cpu_s, cpu = time_maps(args, cpu_model, images.cpu(), method)
        rows.append({"method": method, "cpu_s_per_image": cpu_s / n,
                     "device_s_per_image": here_s / n, "speedup": cpu_s / here_s,
                     "max_abs_diff": (here.maps.cpu() - cpu.maps).abs().max().item(),
                     "cudnn_tf32": tf32})
        show(rows[-1])
    return rows


BENCHMARKS = {"cams": bench_cams, "costs": bench_costs, "layout": bench_layout,
              "devices": bench_devices}


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(BENCHMARKS), nargs="+", default=["cams"],
                        help="benchmarks to run (costs: plain vs aggregated vs Score-CAM; "
                        "layout: the backbone NCHW vs channels-last; devices: the CPU vs "
                        "--device)")
    flags.add_backbone(parser)  # as main.py's; --only layout times vgg16 only
    parser.add_argument("--random-backbone", action="store_true",
                        help="random-init backbone (timing only, no weights file needed)")
    parser.add_argument("--images-dir", default=None,
                        help="Flower-17 jpg folder (default ../shared/flowers17/jpg)")
    parser.add_argument("--synthetic", action="store_true", help="random images instead")
    parser.add_argument("--num-images", type=flags.positive_int, default=12, help="batch size")
    parser.add_argument("--size", type=flags.positive_int, default=256, help="input size (px)")
    parser.add_argument("--methods", nargs="+", choices=list(methods.METHODS),
                        default=["CAM", "LayerCAM", "GradCAM", "GradCAM++"], help="CAM methods")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.5, 1.5, 2.0],
                        help="costs: scales of the aggregate (with flips)")
    parser.add_argument("--aggregate", nargs="+", default=["CAM", "LayerCAM"],
                        choices=list(methods.METHODS), help="costs: methods also timed aggregated")
    flags.add_device(parser)
    parser.add_argument("--repeats", type=flags.positive_int, default=1,
                        help="timed runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random head")
    parser.add_argument("--output", default=None, help="also write the rows to this JSON file")
    return parser


def main(args):
    results = {name: BENCHMARKS[name](args) for name in args.only}
    if args.output:
        core.atomic_save_json(args.output, {"args": vars(args), "results": results})
    return results


if __name__ == "__main__":
    core.run_main(main, get_args_parser(), hints={"images": "pass --images-dir or --synthetic"})
