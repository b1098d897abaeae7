"""The report's experiment grid in one command: CAM, ReCAM (3 normalisers), ReCAM-published x 4 lrs.

    python grid.py --backbone-weights ../shared/weights/vgg16_imagenet_features.pth  # 20 runs
    python grid.py --lrs 1e-4 2e-4 --epochs 10 --output-dir model/grid-test --results-dir /tmp/out
    python grid.py --precision bf16 --seed 1
    python grid.py --cut conv5_3 --model-types CAM CAM-paper --results-dir output/finer

Every configuration trains on one shared feature cache (built once) and gets its own run directory
under --output-dir. Writes RESULTS/table2.md and .csv (per configuration Table 2's epoch: the best
validation top-1 among epochs that are not overfitting), loss_curves.png and grid_runs.json
(configuration -> run dir, Table 2's epoch and the figures' best checkpoint). Under torchrun
(torchrun --nproc-per-node 2 grid.py) the ranks share the configurations; rank 0 writes these.
"""

import os
from pathlib import Path

from flowercam import core, dist, flags
from flowercam.cache import features
from flowercam.data import dataset
from flowercam.model import heads
from flowercam.report import grid, html
from flowercam.train import records, training

REPORT_FACTS = "../shared/report-facts.md"


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--lrs", default=list(grid.LRS), type=flags.positive_float, nargs="+",
        help="learning rates of the grid")
    add("--model-types", default=list(grid.REPORT_TYPES), nargs="+", choices=heads.MODEL_TYPES,
        help="heads of the grid (ReCAM: all three normalisers)")
    flags.add_cut(parser)
    add("-e", "--epochs", default=40, type=flags.positive_int,
        help="maximum epochs per configuration")
    flags.add_batch_size(parser, 8, "training batch size")
    flags.add_seed(parser, "every configuration's initialisation and shuffling")
    flags.add_device(parser)
    flags.add_data_dir(parser)
    flags.add_output_dir(parser, "model", "the run directories")
    add("--results-dir", default="output", help="where table2.md/.csv and loss_curves.png go")
    flags.add_backbone(parser)
    flags.add_split(parser)
    flags.add_precision(parser)
    flags.add_num_workers(parser)
    add("--report-facts", default=None,
        help="the report's facts file: its Table 2 goes beside ours (none: not); default: env "
             f"FLOWERCAM_REPORT_FACTS, else {REPORT_FACTS} (said and skipped when missing)")
    return parser


def report_facts(given):
    """The facts file to put beside Table 2, or None: a given one must exist (one line); the
    default, when missing, is said and skipped."""
    if given == "none":
        return None
    if given is not None:
        if not os.path.isfile(given):
            raise core.UserError(f"--report-facts {given} not found: pass the report's facts "
                                 "file, or --report-facts none")
        return given
    path = os.environ.get("FLOWERCAM_REPORT_FACTS") or REPORT_FACTS
    if not os.path.isfile(path):
        print(f"no report facts file at {path}: Table 2 without the report's columns")
        return None
    return path


def main(args):
    facts = report_facts(args.report_facts)  # before any training
    core.check_writable_dir(args.output_dir)
    core.check_writable_dir(args.results_dir, "--results-dir")
    backbone = flags.load_backbone(args)
    # the grid always trains on the shared cache
    opts = training.SourceOptions.pick(vars(args), no_cache=False)
    sources = training.make_sources(opts, backbone)
    names, size = dataset.class_names(args.data_dir), features.input_size(args.data_dir)

    def settings_of(config):
        return training.make_settings(config["model_type"], config["normalize_by"], names, size,
                                      backbone.backbone_id, cut=config["cut"],
                                      backbone=backbone.key,
                                      backbone_weights_id=backbone.weights_sha256)

    train_cfg = training.TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                     seed=args.seed, device=args.device)
    configs = grid.configurations(args.lrs, args.model_types, backbone.cut, backbone.default_cut)
    recorded = {**vars(args), **records.data_record(args.data_dir, args.split),
                **records.weights_record(args.backbone_weights)}
    results = grid.run_grid(configs, sources, settings_of, args.output_dir, train_cfg, recorded)
    if results is None:  # a rank > 0 under torchrun: rank 0 writes the tables
        return None
    grid.write_outputs(args.results_dir, results, args.epochs, facts)
    html.write_report(args.results_dir, gallery=False)  # Table 2 and the loss curves as a page
    for row, _ in results:
        print(f"{row['config']:32s} epoch {row['table_epoch']:3d}  top-1 {row['top1']:6.2f}  "
              f"top-3 {row['top3']:6.2f}  top-5 {row['top5']:6.2f}  loss {row['valid_loss']:.4f}")
    print(f"wrote {Path(args.results_dir) / 'table2.md'}, table2.csv, loss_curves.png, "
          "grid_runs.json, report.html")
    return results


if __name__ == "__main__":
    dist.run_main(main, get_args_parser(), hints=flags.HINTS)
