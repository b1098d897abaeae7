"""Train a CAM, ReCAM or ReCAM-published head on the frozen backbone (VGG16 by default; --backbone
NAME), reading its features from data/cache by default.

    python main.py -m CAM -l 1e-4 -e 40 --backbone-weights PATH/vgg16_imagenet_features.pth
    python main.py -m ReCAM -n sigmoid -l 5e-5 -e 40 --seed 1
    python main.py -m CAM -e 2 --no-cache             # the report's way: backbone on every step
    python main.py --resume model/TS20260101-120000_CAM   # continue an interrupted run
    python main.py -m CAM-paper --cut conv5_3 -l 1e-4 -e 5   # the CAM paper's head, 16x16 maps

Writes model/TS<timestamp>_<type>[_<normaliser>]/: config.json, training_logs.txt (one JSON line
per epoch) and epoch_N.pth whenever the validation loss improves. Training halts when the
validation loss exceeds twice the training loss (the report's overfitting stop). --resume RUN
continues RUN after its last complete epoch (RUN/state.pth) with RUN's own settings (config.json),
giving the losses of an uninterrupted run; the rule is in flowercam/train/runs.py.
"""

import argparse
import shutil
from pathlib import Path

from flowercam import core, dist, flags
from flowercam.backbones import registry
from flowercam.cache import features
from flowercam.data import dataset
from flowercam.model import heads
from flowercam.train import records, runs, training

EPOCHS = 50  # -e when not given (a new run)
# what --resume takes from the run's config.json: everything that changes the numbers
RESUMED = ("model_type", "normalize_by", "lr", "epochs", "batch_size", "seed", "data_dir",
           "backbone_weights", "split", "precision", "no_cache")


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    flags.add_head(parser)
    add("--recam-lambda", default=heads.RECAM_LAMBDA, type=flags.positive_float,
        help="ReCAM-published: weight of its L_sce (Chen et al. 2022: 1 on VOC, 0.1 on COCO)")
    add("-l", "--lr", default=1e-4, type=flags.positive_float, help="Adam learning rate")
    add("-e", "--epochs", default=None, type=flags.positive_int,
        help=f"maximum number of epochs (default {EPOCHS}; with --resume: the run's, or more)")
    flags.add_batch_size(parser, 8, "training batch size")
    flags.add_seed(parser, "the head's initialisation and the shuffling")
    flags.add_device(parser)
    flags.add_data_dir(parser)
    flags.add_output_dir(parser, "model", "run directories")
    flags.add_backbone(parser)
    flags.add_split(parser)
    flags.add_cut(parser)
    flags.add_precision(parser)
    add("--no-cache", action="store_true", help="run the backbone on every step (the report's way)")
    flags.add_num_workers(parser)
    add("--resume", default=None, metavar="RUN",
        help="continue this interrupted run directory (its settings; -e may extend it)")
    return parser


def resumed_args(args):
    """A copy of args with the run's recorded settings (config.json); only --epochs may grow."""
    run_dir = Path(args.resume)
    if run_dir.is_file():
        raise core.UserError(f"--resume takes a run folder, not the file {run_dir}: pass "
                             f"--resume {run_dir.parent}")
    config = records.run_config(run_dir)
    if not config:
        raise core.UserError(f"{run_dir} is not a run directory of main.py (no "
                             f"{records.CONFIG_NAME}): pass one, or start a new run")
    missing = [k for k in RESUMED if k not in config]
    if missing:
        raise core.UserError(f"run config {run_dir / records.CONFIG_NAME} lacks {missing[0]}: "
                             "restore it, or start a new run")
    recorded = {**{k: config[k] for k in RESUMED},
                "cut": config.get("cut"),  # None: the backbone's default (runs before the cuts)
                "backbone": config.get("backbone") or registry.DEFAULT,  # runs before --backbone
                "recam_lambda": config.get("recam_lambda", heads.RECAM_LAMBDA)}
    refuse_contradictions(args, recorded, run_dir)
    merged = {**vars(args), **recorded}
    merged["epochs"] = max(config["epochs"], args.epochs or 0)
    given = None if args.data_dir == DEFAULTS["data_dir"] else args.data_dir
    merged["data_dir"] = records.run_data_dir(run_dir, given)  # gone, changed, other: one line
    merged["backbone_weights"] = records.run_weights(run_dir, args.backbone_weights)  # likewise
    return argparse.Namespace(**merged)


def refuse_contradictions(args, recorded, run_dir):
    """A flag given with --resume that contradicts the run's recorded value is a UserError
    naming both: resume continues the run as it was (only -e may grow it; --data-dir and
    --backbone-weights may name copies of its files, checked by records.run_data_dir and
    records.run_weights). A flag is taken as given when it differs
    from its default."""
    for key, value in recorded.items():
        if key in ("epochs", "data_dir", "backbone_weights"):
            continue
        given = getattr(args, key)
        if given != DEFAULTS[key] and given != value:
            flag = "--" + key.replace("_", "-")
            value = "its backbone's default" if value is None else value  # e.g. cut None
            raise core.UserError(f"{run_dir} was trained with {flag} {value}, not {given}: "
                                 f"--resume continues it as it was (drop {flag}, or start a new "
                                 "run)")


def new_run(args, settings, sizes) -> Path:
    run_dir = runs.make_run_dir(args.output_dir, settings)
    config = {**{k: v for k, v in vars(args).items() if k != "resume"},
              "normalize_by": settings.normalize_by,  # the head's (None but for ReCAM)
              **records.data_record(args.data_dir, args.split),
              **records.weights_record(args.backbone_weights)}
    try:
        core.atomic_save_json(run_dir / "config.json", {**config, "settings": settings.to_dict(),
                                                        "train_images": sizes[0],
                                                        "valid_images": sizes[1]})
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def train(args, settings, train_src, valid_src, run_dir):
    """training.train; a new run that ends before its first epoch leaves no folder behind."""
    try:
        cfg = training.TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                                   seed=args.seed, device=args.device, resume=bool(args.resume))
        return training.train(settings, train_src, valid_src, run_dir, cfg)
    except BaseException:
        if not args.resume and not runs.read_log(run_dir, missing_ok=True):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def main(args):
    if args.resume:
        args = resumed_args(args)
    elif args.epochs is None:
        args = argparse.Namespace(**{**vars(args), "epochs": EPOCHS})
    if args.resume:  # before the (long) cache build
        core.check_writable_dir(args.resume, "--resume")
        with runs.training_lock(args.resume):  # refused now if another process trains it
            pass
    else:
        core.check_writable_dir(args.output_dir)
    backbone = flags.load_backbone(args)
    train_src, valid_src = training.make_sources(training.SourceOptions.pick(vars(args)), backbone)
    if not dist.is_root():  # under torchrun the ranks share the cache build; rank 0 trains
        return None
    settings = training.make_settings(args.model_type, args.normalize_by,
                                      dataset.class_names(args.data_dir),
                                      features.input_size(args.data_dir), backbone.backbone_id,
                                      args.recam_lambda, backbone.cut, backbone.key,
                                      backbone.weights_sha256)
    if args.resume:
        run_dir = Path(args.resume)
        if records.run_settings(run_dir) != settings:
            raise core.UserError(f"{run_dir} was trained on other data or weights: start a new "
                                 "run")
    else:
        run_dir = new_run(args, settings, (len(train_src), len(valid_src)))
    print(f"training {settings.model_type} on {len(train_src)} images -> {run_dir}")
    history = train(args, settings, train_src, valid_src, run_dir)
    saved = [row for row in history if "checkpoint" in row]
    if not saved:
        print(f"{len(history)} epochs; no finite validation loss, nothing saved in {run_dir}")
        return run_dir
    best = runs.best_checkpoint(run_dir)
    print(f"{len(history)} epochs; the figures' checkpoint (lowest valid loss, not overfitting): "
          f"{best}")
    return run_dir


DEFAULTS = vars(get_args_parser().parse_args([]))  # what a flag is when not given


if __name__ == "__main__":
    dist.run_main(main, get_args_parser(), hints=flags.HINTS)
