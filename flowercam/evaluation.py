"""Top-1/3/5 accuracy and loss of every saved epoch of a training run (CAM metrics: metrics.py).

    python evaluate.py -d model/TS20250101-120000_CAM            # validation split -> DIR/eval.json
    python evaluate.py -d model/TS20250101-120000_ReCAM_minmax --split-name test
    python evaluate.py -d model/RUN --no-cache --backbone-weights PATH/vgg16_imagenet_features.pth
"""

import argparse
from pathlib import Path

from flowercam import core, dataset, features, models, training
from flowercam.core import UserError, atomic_save_json, run_main


def _metrics():
    """metrics.py (CAM metrics, another helper's module) or None while it does not exist."""
    try:
        from flowercam.metrics import formulas
    except ImportError:
        return None
    return formulas


def load_heads(checkpoints) -> tuple[list, dict]:
    """Load every checkpoint -> ([(epoch, path, head)], settings); UserError if they disagree."""
    heads, settings = [], None
    for epoch, path in checkpoints:
        head, these, _ = models.load_checkpoint(path)
        if settings is not None and these != settings:
            raise UserError(f"{path} is a checkpoint of another kind than {checkpoints[0][1]}: "
                            "keep one run's checkpoints per directory")
        settings = these
        heads.append((epoch, path, head))
    return heads, settings


def check_data(settings, data_dir, backbone):
    """The checkpoint must fit the data and backbone it is evaluated with."""
    names = dataset.class_names(data_dir)
    if settings.get("num_classes") != len(names):
        raise UserError(f"checkpoint has {settings.get('num_classes')} classes but {data_dir} has "
                        f"{len(names)}: pass the --data-dir it was trained on")
    size = features.input_size(data_dir)
    if settings.get("input_size", size) != size:
        raise UserError(f"checkpoint was trained at {settings.get('input_size')} px but {data_dir} "
                        f"holds {size} px images: pass the --data-dir it was trained on")
    if settings.get("backbone") and settings["backbone"] != backbone.backbone_id:
        raise UserError(f"checkpoint was trained on backbone {settings['backbone']}, got "
                        f"{backbone.backbone_id}: pass the --backbone-weights it was trained with")


def evaluate_run(args) -> dict:
    """Evaluate every checkpoint of args.model_dir on the chosen split -> the eval.json dict."""
    heads, settings = load_heads(core.run_checkpoints(args.model_dir))
    config = core.run_config(args.model_dir)
    args.split = args.split or config.get("split", 1)
    args.backbone_weights = args.backbone_weights or config.get("backbone_weights")
    backbone = training.load_backbone(args)
    check_data(settings, args.data_dir, backbone)
    (source,) = training.make_sources(args, backbone, subsets=(args.split_name,))
    rows = []
    for epoch, path, head in heads:
        scores = training.evaluate(head.to(args.device), source, args.batch_size)
        rows.append({"epoch": epoch, "checkpoint": path.name, **scores})
        print(f"epoch {epoch:3d}: loss {scores['loss']:.4f}  top-1 {scores['top1']:.2f}  "
              f"top-3 {scores['top3']:.2f}  top-5 {scores['top5']:.2f}")
    return {"model_type": settings["model_type"], "normalize_by": settings.get("normalize_by"),
            "split": args.split, "split_name": args.split_name, "images": len(source),
            "precision": args.precision, "epochs": rows}


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("-d", "--model-dir", default=None,
        help="run directory of main.py (epoch_N.pth files); None = the newest run under model/")
    add("--split-name", default="valid", choices=("valid", "test"), help="subset to evaluate on")
    add("--split", default=None, type=int, choices=(1, 2, 3),
        help="split number; None = the run's (its config.json), else 1")
    add("--data-dir", default="data", help="folder prepared by augment.py")
    add("--backbone-weights", default=None,
        help="VGG16 weights file; None = the run's, else env BACKBONE_WEIGHTS, else torchvision")
    add("--precision", default="fp32", choices=features.PRECISIONS, help="backbone precision")
    add("--no-cache", action="store_true", help="run the backbone instead of the feature cache")
    add("--batch-size", default=64, type=int, help="evaluation batch size")
    add("--num-workers", default=2, type=int, help="image decoding processes")
    add("--device", default="cpu", help="torch device (cpu, cuda)")
    metrics = _metrics()
    if metrics is not None:
        try:
            metrics.add_cam_metrics_args(parser)
        except ImportError:  # metrics.py present but its runner module not (yet): top-k still works
            pass
    return parser


def main(args):
    if getattr(args, "cam_metrics", False):
        metrics = _metrics()
        if metrics is None:
            raise UserError("--cam-metrics needs metrics.py, which is missing: restore it")
        return metrics.run_cam_metrics(args)
    if not args.model_dir:
        args.model_dir = str(core.latest_run("model"))
        print(f"evaluating the newest run, {args.model_dir}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    result = evaluate_run(args)
    out = Path(args.model_dir) / "eval.json"
    atomic_save_json(out, result)
    best = max(result["epochs"], key=lambda row: (row["top1"], -row["loss"]))
    print(f"best top-1 {best['top1']:.2f}% at epoch {best['epoch']}; wrote {out}")
    return result


if __name__ == "__main__":
    run_main(main, get_args_parser())
