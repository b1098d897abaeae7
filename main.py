"""Train a CAM, ReCAM or ReCAM-published head on the frozen VGG16 (features: data/cache by default).

    python main.py -m CAM -l 1e-4 -e 40 --backbone-weights PATH/vgg16_imagenet_features.pth
    python main.py -m ReCAM -n sigmoid -l 5e-5 -e 40 --seed 1
    python main.py -m CAM -e 2 --no-cache             # the report's way: backbone on every step

Writes model/TS<timestamp>_<type>[_<normaliser>]/: config.json, training_logs.txt (one JSON line
per epoch) and epoch_N.pth whenever the validation loss improves. Training halts when the
validation loss exceeds twice the training loss (the report's overfitting stop).
"""

from flowercam import core, dataset, features, flags, models, runs, training


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("-m", "--model-type", default="CAM", choices=models.MODEL_TYPES, help="head to train")
    add("-n", "--normalize-by", default="minmax", choices=models.NORMALIZERS,
        help="ReCAM mask normaliser (ignored for CAM)")
    add("--recam-lambda", default=models.RECAM_LAMBDA, type=flags.positive_float,
        help="ReCAM-published: weight of its L_sce (Chen et al. 2022: 1 on VOC, 0.1 on COCO)")
    add("-l", "--lr", default=1e-4, type=flags.positive_float, help="Adam learning rate")
    add("-e", "--epochs", default=50, type=flags.positive_int, help="maximum number of epochs")
    flags.add_batch_size(parser, 8, "training batch size")
    flags.add_seed(parser, "the head's initialisation and the shuffling")
    flags.add_device(parser)
    flags.add_data_dir(parser)
    flags.add_output_dir(parser, "model", "run directories")
    flags.add_backbone_weights(parser)
    flags.add_split(parser)
    flags.add_precision(parser)
    add("--no-cache", action="store_true", help="run the backbone on every step (the report's way)")
    flags.add_num_workers(parser)
    return parser


def source_options(args) -> training.SourceOptions:
    return training.SourceOptions(args.data_dir, args.split, args.precision, args.no_cache,
                                  args.num_workers, args.device)


def main(args):
    core.check_writable_dir(args.output_dir)  # before the (long) cache build, not after it
    backbone = models.load_backbone(args.backbone_weights, args.device)
    train_src, valid_src = training.make_sources(source_options(args), backbone)
    settings = training.make_settings(args.model_type, args.normalize_by,
                                      dataset.class_names(args.data_dir),
                                      features.input_size(args.data_dir), backbone.backbone_id,
                                      args.recam_lambda)
    run_dir = runs.make_run_dir(args.output_dir, settings)
    core.atomic_save_json(run_dir / "config.json", {**vars(args), "settings": settings,
                                                    "train_images": len(train_src),
                                                    "valid_images": len(valid_src)})
    print(f"training {settings['model_type']} on {len(train_src)} images -> {run_dir}")
    history = training.train(settings, train_src, valid_src, run_dir, args.lr, args.epochs,
                             args.batch_size, args.seed, args.device)
    saved = [row for row in history if "checkpoint" in row]
    if not saved:
        print(f"{len(history)} epochs; no finite validation loss, nothing saved in {run_dir}")
        return run_dir
    best = runs.best_checkpoint(run_dir)
    print(f"{len(history)} epochs; the figures' checkpoint (lowest valid loss, not overfitting): "
          f"{best}")
    return run_dir


if __name__ == "__main__":
    core.run_main(main, get_args_parser())
