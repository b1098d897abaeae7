"""Top-1/3/5 accuracy and loss of every saved epoch of a training run; --cam-metrics: how good
the maps are (faithfulness, localization on masks).

    python evaluate.py -d model/TS20250101-120000_CAM            # validation split -> DIR/eval.json
    python evaluate.py -d model/TS20250101-120000_ReCAM_minmax --split-name test
    python evaluate.py -d model/RUN --cam-metrics --limit 20     # -> DIR/cam_metrics.json/.md
    python evaluate.py -d model/RUN --cam-metrics --split-name test   # tau validated on valid
    python evaluate.py -d model/RUN --cam-metrics --figures localization  # skip faithfulness
    python evaluate.py -d model/RUN --sanity --limit 12   # sanity checks -> DIR/sanity.md, .png
    # --cam-metrics or --sanity interrupted: the same command continues it (--no-resume: afresh)

Three modes share the flags of the first group; every other flag belongs to one mode (its group)
and is refused in the others (--sanity reads the --cam-metrics flags of SANITY_READS), so no flag
is ever silently ignored.
"""

import argparse
import dataclasses
from pathlib import Path

from flowercam import core, dist, flags
from flowercam.cam import methods
from flowercam.metrics import config, resume, runner
from flowercam.metrics.config import MetricsConfig
from flowercam.refine import methods as refiners
from flowercam.report import html
from flowercam.sanity import checks as sanity
from flowercam.sanity import figures as sanity_figures
from flowercam.sanity import permuted
from flowercam.sanity import tables as sanity_tables
from flowercam.train import evaluation, runs, training

D = config.default  # --cam-metrics defaults live in MetricsConfig; flags not given are absent
ACCURACY_BATCH = 64  # --batch-size of the accuracy mode; the map metrics' is MetricsConfig's


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("-d", "--model-dir", default=None,
        help="run directory of main.py (epoch_N.pth files); default: the newest run under model/")
    add("--split-name", default="valid", choices=("valid", "test"), help="subset to evaluate on")
    flags.add_split(parser, from_run=True)
    flags.add_data_dir(parser)
    flags.add_backbone_weights(parser, from_run=True)
    flags.add_precision(parser)
    add("--no-cache", action="store_true", help="run the backbone instead of the feature cache")
    parser.add_argument("--batch-size", default=None, type=flags.positive_int,
                        help=f"images per batch: of the accuracy pass (default {ACCURACY_BATCH}); "
                             f"with --cam-metrics of the maps (default {D('map_batch_size')})")
    flags.add_num_workers(parser)
    flags.add_device(parser)
    add_cam_metrics_args(parser)
    add_sanity_args(parser)
    return parser


def _suppressing(parser, group, mode):
    """group.add_argument with default SUPPRESS (a flag not given leaves no attribute), each flag
    recorded as belonging to `mode` in the parsed args' flag_modes (the one declaration)."""
    modes = parser.get_default("flag_modes")

    def add(*names, **kw):
        kw.setdefault("default", argparse.SUPPRESS)
        action = group.add_argument(*names, **kw)
        modes[action.dest] = mode
    return add


def add_cam_metrics_args(parser):
    """The flags of --cam-metrics: what is measured, then the masks, then how."""
    parser.set_defaults(flag_modes={})
    parser.add_argument("--cam-metrics", action="store_true",
                        help="measure the maps of --methods (faithfulness; localization with "
                             "masks) instead of the accuracy of every epoch")
    group = parser.add_argument_group("--cam-metrics (map quality; the flags below need it)")
    add = _suppressing(parser, group, "cam-metrics")
    add("--figures", nargs="+", choices=config.FAMILIES,
        help="map figures to measure (road = ROAD, Rong 2022, on the --perturb-limit images; "
             "faithfulness takes most of the time); default: faithfulness localization")
    add("--methods", nargs="+", choices=list(methods.METHODS),
        help="map methods to measure; none given: the report's methods the head supports "
             "(CAM, ReCAM, LayerCAM, GradCAM, GradCAM++, ScoreCAM)")
    add("--checkpoint", help="head checkpoint; none given: the -d model dir's best epoch")
    add("--scales", nargs="+", type=flags.positive_float,
        help="aggregate every map over these scales (IRN/ReCAM: 1 0.5 1.5 2); default 1")
    add("--flip", action="store_true", help="also aggregate over horizontally flipped images")
    add("--layers", nargs="+", choices=methods.LAYERS,
        help="LayerCAM's layers; default: pool3 pool4 classmaps (the report's, after pooling); "
             "stage3 stage4 classmaps = the LayerCAM paper's, before pooling; one layer (e.g. "
             "stage5) is also the layer of every one-layer method (Grad-CAM, Ablation-CAM, ...)")
    add("--limit", type=flags.positive_int, help="measure a seeded random N images of the split")
    add("--steps", type=flags.positive_int,
        help=f"deletion/insertion steps (2*(steps-1) forwards); default {D('steps')}")
    add("--perturb-limit", type=flags.non_negative_int,
        help="deletion/insertion on this many of the measured images, spread over the classes "
             "(seeded; they cost 2*(steps-1) backbone forwards per image and method); 0 = all; "
             f"default {D('perturb_limit')}")
    add("--deletion-baseline", choices=config.DELETION_BASELINES,
        help="what deleted pixels become: zeros of the normalised input (= ImageNet mean "
             "colour, Petsiuk 2018), black pixels, or the blurred image; default "
             f"{D('deletion_baseline')}")
    add("--target", choices=config.TARGETS,
        help=f"the class each map explains; default {D('target')}")
    add_baseline_args(add)
    add_mask_args(add)
    add_run_args(parser, group, add)
    return parser


def add_baseline_args(add):
    """The rows beside the methods (baselines), the refined rows (METHOD+REFINER), the pairs."""
    add("--baselines", nargs="*", choices=config.MAP_BASELINES + config.FEW_SHOT_BASELINES,
        help="maps scored beside the methods: center (Gaussian, sigma = side/4), full (all "
             "ones), random (seeded uniform noise), sobel (the image's edge magnitude), "
             "few-shot-N (a pixel classifier on N training masks per class); --baselines "
             "alone: none; default: center full")
    add("--compare", nargs=2, action="append", metavar=("A", "B"),
        help="also report the paired bootstrap difference A - B of every figure (maps among "
             "--methods and --baselines; repeat for more pairs); every map is always paired "
             "with center")
    add("--refine", nargs="+", choices=list(refiners.REFINERS),
        help="also score every map refined from its image (rows METHOD+REFINER): dense CRF "
             "(IRN's settings), SLIC superpixel means; "
             "none = the plain map; default: none")
    add("--refine-workers", type=flags.non_negative_int,
        help="worker processes for the refinements (0 = this process); default 0")


def add_mask_args(add):
    add("--masks-dir", help="folder of <image stem>.png label masks (resized nearest); "
                            "default: DATA_DIR/masks (augment.py --source) when it exists")
    flags.add_mask_values(add, "what the masks' data folder records (augment.py; Flower-17: 1), "
                               "else the nonzero value of masks holding 0 and one other value",
                          "the recorded ones (Flower-17: 0 5), else none")
    add("--masked-only", action="store_true",
        help="measure only the images that have a mask (every figure, faithfulness too)")
    add("--validate-tau-on", choices=("valid", "test", "none"),
        help="choose the validated tau on this subset's mask images (the oracle tau is chosen on "
             "the images scored); default: valid when --split-name test and masks exist")
    add("--tau-from", metavar="CAM_METRICS_JSON",
        help="take the validated tau from an earlier run on the other subset (its oracle tau; "
             "same checkpoint and map options, no --limit) instead of measuring that subset's "
             "maps again: half the maps of a test run")


def add_run_args(parser, group, add):
    add("--bootstrap", type=flags.non_negative_int,
        help=f"bootstrap resamples for the 95%% intervals; default {D('bootstrap')}")
    add("--metrics-batch-size", type=flags.positive_int,
        help=f"images per forward when scoring perturbed images; default "
             f"{D('metrics_batch_size')}")
    add("-s", "--seed", type=flags.seed_int,  # flags.add_seed's, without a default
        help="seed of the --limit sample, tie order, bootstrap resamples; default 0")
    add("--no-resume", action="store_true",
        help="discard a partial run in the output folder (OUT/cam_metrics.partial/ or "
             "OUT/sanity.partial/, kept batch by batch) and start afresh; default: an "
             "interrupted run of the same settings continues where it stopped, one of other "
             "settings is refused")
    # both modes: output_dir is shared (SUPPRESS: "was it given?" is hasattr)
    flags.add_output_dir(group, argparse.SUPPRESS, "eval.json, or with --cam-metrics "
                         "cam_metrics.json/.md (default: the run's or checkpoint's folder)")


P = permuted.PermutedConfig()
# the --cam-metrics flags that --sanity reads too (images, maps, intervals, output)
SANITY_READS = {"methods", "checkpoint", "layers", "limit", "baselines", "bootstrap", "seed",
                "output_dir", "target", "masked_only", "masks_dir", "mask_values", "ignore_values",
                "no_resume"}


def add_sanity_args(parser):
    parser.add_argument("--sanity", action="store_true",
                        help="sanity checks of the maps (Adebayo 2018): model randomisation, "
                             "cascading and one layer at a time, and data randomisation; reads "
                             "--methods --limit --baselines (default here: all four) --bootstrap "
                             "-s --output-dir too")
    group = parser.add_argument_group("--sanity (the flags below need it)")
    add = _suppressing(parser, group, "sanity")
    add("--no-independent", action="store_true", help="skip the one-layer-at-a-time states")
    add("--no-data-randomisation", action="store_true",
        help="skip the permuted-label head (it needs the training split's feature cache)")
    add("--permuted-epochs", type=flags.positive_int,
        help=f"epochs of the permuted-label head; default {P.epochs}")
    add("--permuted-lr", type=flags.positive_float,
        help=f"Adam learning rate of the permuted-label head; default {P.lr:g}")
    add("--figure-images", type=flags.non_negative_int,
        help="images (the first measured) in sanity_grid.png; default "
             f"{sanity.SanityOptions.figure_images}")


def sanity_options(args) -> sanity.SanityOptions:
    seed = getattr(args, "seed", 0)
    trainer = permuted.PermutedConfig(epochs=getattr(args, "permuted_epochs", P.epochs),
                                      lr=getattr(args, "permuted_lr", P.lr), seed=seed,
                                      device=args.device)
    return sanity.SanityOptions(independent=not hasattr(args, "no_independent"),
                                data=not hasattr(args, "no_data_randomisation"),
                                trainer=trainer,
                                figure_images=getattr(args, "figure_images",
                                                      sanity.SanityOptions.figure_images))


def run_sanity(args):
    """--sanity: measure, then sanity.json/.md, sanity_grid.png and sanity_plot.png."""
    cfg = metrics_config(args)
    if not hasattr(args, "baselines"):  # a sanity check is read against the edge and noise maps
        cfg = dataclasses.replace(cfg, baselines=config.MAP_BASELINES)
    result = sanity.run(cfg, sanity_options(args))
    summary = sanity_tables.write(result["out_dir"],
                                  sanity_tables.summarise(result, cfg.bootstrap, cfg.seed))
    sanity_figures.write(result["out_dir"], summary, result["figure"], result["figure_paths"])
    resume.discard(result["out_dir"], "sanity")  # finished: nothing left to resume
    write_page(result["out_dir"], args)
    print(f"{len(summary['ids'])} images x {len(summary['states'])} randomisations in "
          f"{summary['seconds'] / 60:.1f} min -> {result['out_dir']}/sanity.md")
    return summary


def write_page(out_dir, args):
    """OUT/report.html of the run's files (flowercam.report.html), the gallery's maps on the
    run's device."""
    page = html.write_report(out_dir, args.data_dir, args.backbone_weights, args.device)
    print(f"wrote {page}")


RENAMED = {"figures": "families"}  # flag dest -> MetricsConfig field
NEGATED = {"no_resume": "resume"}  # store_true flag dest -> the MetricsConfig field it clears
TUPLES = ("methods", "baselines", "mask_values", "ignore_values", "scales", "layers", "families",
          "refine")
PAIRS = ("compare",)  # lists of [A, B] -> tuples of pairs


def check_modes(args):
    """Flags of the other mode: one line (they would be silently ignored)."""
    if args.cam_metrics and args.sanity:
        raise core.UserError("--cam-metrics and --sanity are two modes of evaluate.py: pick one")
    mode = "sanity" if args.sanity else "cam-metrics" if args.cam_metrics else "accuracy"
    wrong = [d for d, m in args.flag_modes.items() if m != mode and hasattr(args, d)
             and not (mode == "sanity" and d in SANITY_READS)]
    if wrong:
        names = ", ".join("--" + d.replace("_", "-") for d in wrong)
        fix = "add --cam-metrics or drop them" if mode == "accuracy" else "drop them"
        raise core.UserError(f"{names} belong to the other mode of evaluate.py: {fix}")


def metrics_config(args) -> MetricsConfig:
    """The parsed flags -> MetricsConfig; flags not given keep MetricsConfig's defaults."""
    given = [d for d, m in args.flag_modes.items() if m == "cam-metrics" and hasattr(args, d)]
    given += ["output_dir"] if hasattr(args, "output_dir") else []
    chosen = {RENAMED.get(d, d): getattr(args, d) for d in given if d not in NEGATED}
    chosen |= {NEGATED[d]: False for d in given if d in NEGATED}
    if args.batch_size is not None:
        chosen["map_batch_size"] = args.batch_size
    for name in TUPLES:
        if name in chosen:
            chosen[name] = tuple(chosen[name])
    for name in PAIRS:
        if name in chosen:
            chosen[name] = tuple(map(tuple, chosen[name]))
    return MetricsConfig(model_dir=args.model_dir, data_dir=args.data_dir, split=args.split,
                         split_name=args.split_name, backbone_weights=args.backbone_weights,
                         no_cache=args.no_cache, num_workers=args.num_workers,
                         device=args.device, precision=args.precision, **chosen)


def main(args):
    check_modes(args)
    if args.sanity:
        return run_sanity(args)
    if args.cam_metrics:
        cfg = metrics_config(args)
        result = runner.run(cfg)
        if result is not None:  # rank 0 (torchrun): the page beside cam_metrics.json
            write_page(cfg.output_dir or Path(result["checkpoint"]).parent, args)
        return result
    if not args.model_dir:
        args.model_dir = str(runs.latest_run("model"))
        print(f"evaluating the newest run, {args.model_dir}")
    runs.run_checkpoints(args.model_dir)  # a run folder (not a checkpoint file), errors first
    best = runs.best_checkpoint(args.model_dir).name  # reads the log: its errors come first too
    out = Path(getattr(args, "output_dir", None) or args.model_dir) / "eval.json"
    if hasattr(args, "output_dir"):
        core.check_writable_dir(out.parent)
    else:
        core.check_writable_dir(out.parent, "the run folder", "pass --output-dir DIR")
    opts = training.SourceOptions.pick(vars(args))
    batch = ACCURACY_BATCH if args.batch_size is None else args.batch_size
    result = evaluation.evaluate_run(args.model_dir, args.split_name, opts, args.backbone_weights,
                                     batch)
    if not dist.is_root():  # under torchrun the ranks built the caches; rank 0 writes
        return result
    core.atomic_save_json(out, result)
    row = next((r for r in result["epochs"] if r["checkpoint"] == best), None)
    top1 = f": top-1 {row['top1']:.2f}%" if row else ""
    print(f"the figures' checkpoint (runs.best_checkpoint) is {best}{top1}; wrote {out}")
    return result


if __name__ == "__main__":
    dist.run_main(main, get_args_parser(),
                  hints={**flags.HINTS, "partial": "pass --no-resume or another --output-dir"})
