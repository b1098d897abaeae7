"""Evaluate a training run in one of three modes: the top-1/3/5 accuracy and loss of every saved
epoch (accuracy, the default), how good its maps are (cam-metrics: faithfulness, localization on
masks) and whether they can be trusted (sanity: Adebayo 2018's randomisation checks).

    python evaluate.py -d model/TS20250101-120000_CAM            # validation split -> DIR/eval.json
    python evaluate.py -d model/TS20250101-120000_ReCAM_minmax --split-name test
    python evaluate.py cam-metrics -d model/RUN --limit 20       # -> DIR/cam_metrics.json/.md
    python evaluate.py -d model/RUN --cam-metrics --limit 20     # the same command
    python evaluate.py -d model/RUN --cam-metrics --split-name test   # tau validated on valid
    python evaluate.py -d model/RUN --cam-metrics --figures localization  # skip faithfulness
    python evaluate.py -d model/RUN --sanity --limit 12   # sanity checks -> DIR/sanity.md, .png
    python evaluate.py cam-metrics --help                 # the flags of one mode
    # cam-metrics or sanity interrupted: the same command continues it (--no-resume: afresh)

The first word names the mode (none: accuracy); --cam-metrics or --sanity anywhere on the line
names it too. Each mode has its own flags (`evaluate.py MODE --help`); a flag of another mode is
refused in one line that names its modes, so no flag is ever silently ignored.
"""

import argparse
import dataclasses
import sys
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
from flowercam.train import evaluation, records, runs, training

D = config.default  # the map modes' defaults live in MetricsConfig (each flag's dest is its field)
ACCURACY_BATCH = 64  # --batch-size of the accuracy mode; the map modes' is MetricsConfig's
MODES = ("accuracy", "cam-metrics", "sanity")
MODE_FLAGS = {"--cam-metrics": "cam-metrics", "--sanity": "sanity"}  # the mode as a flag
P = permuted.PermutedConfig()

ACCURACY = """Top-1/3/5 accuracy and loss of every saved epoch of a run -> RUN/eval.json.

    python evaluate.py -d model/TS20250101-120000_CAM
    python evaluate.py accuracy -d model/RUN --split-name test --no-cache
"""
CAM_METRICS = """How good the maps of --methods are: faithfulness (deletion/insertion, ROAD) and,
with masks, localization (pointing, PxAP, IoU, MaxBoxAccV2, Top-1 Loc) and pseudo-masks, with
95% bootstrap intervals and paired differences -> cam_metrics.json and cam_metrics.md.

    python evaluate.py -d model/RUN --cam-metrics --limit 20
    python evaluate.py cam-metrics -d model/RUN --masked-only --methods CAM LayerCAM \\
        --compare LayerCAM CAM
    python evaluate.py cam-metrics --checkpoint model/RUN/epoch_7.pth --split-name test \\
        --tau-from model/RUN/cam_metrics.json --output-dir output/test
"""
SANITY = """Sanity checks of the maps (Adebayo 2018): model randomisation, cascading and one
layer at a time, and data randomisation (a permuted-label head) -> sanity.json, sanity.md,
sanity_grid.png and sanity_plot.png.

    python evaluate.py -d model/RUN --sanity --limit 12
    python evaluate.py sanity -d model/RUN --no-independent --methods CAM LayerCAM \\
        --output-dir output/sanity
"""


class ModesParser(core.ArgumentParser):
    """evaluate.py's parser: `evaluate.py [MODE] FLAGS`, one sub-command per mode. --cam-metrics
    or --sanity anywhere name the mode too; a flag of another mode is one line naming its
    modes."""

    def parse_known_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self.with_mode(argv), namespace)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.refusal(parsed.mode, extras))
        return parsed

    def with_mode(self, argv):
        """The line as typed -> [MODE, flags...] (the mode flags taken out); --help alone: the
        modes' help."""
        named = [MODE_FLAGS[a] for a in argv if a in MODE_FLAGS]
        if argv and argv[0] in MODES:
            named.insert(0, argv[0])
            argv = argv[1:]
        if len(set(named)) > 1:
            self.error(f"{' and '.join(dict.fromkeys(named))} are two modes of evaluate.py: "
                       "pick one")
        rest = [a for a in argv if a not in MODE_FLAGS]
        if not named and {"-h", "--help"} & set(rest):
            return ["--help"]
        return [named[0] if named else "accuracy", *rest]

    def modes(self) -> dict:
        """{mode: its parser}."""
        action = next(a for a in self._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    def refusal(self, mode, extras) -> str:
        """The one line for flags the mode does not take: the modes that take them, or
        argparse's own words for flags no mode has."""
        owners = {}
        for name, sub in self.modes().items():
            for option in sub._option_string_actions:
                owners.setdefault(option, []).append(name)
        theirs = [a for a in extras if a.startswith("-") and a.split("=")[0] in owners]
        if not theirs:
            return f"unrecognized arguments: {' '.join(extras)}"
        them = "it" if len(theirs) == 1 else "them"
        takes_all = [m for m in MODES if all(m in owners[a.split("=")[0]] for a in theirs)]
        fix = f"add --{takes_all[0]} or drop {them}" if mode == "accuracy" and takes_all else \
            f"drop {them}"
        named = ", ".join(f"{a} ({', '.join(owners[a.split('=')[0]])})" for a in theirs)
        verb = "is not a flag" if len(theirs) == 1 else "are not flags"
        return f"{named} {verb} of evaluate.py {mode}: {fix}"


def get_args_parser():
    parser = ModesParser(description=__doc__)
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True,
                                  parser_class=core.ArgumentParser,
                                  help="accuracy (default), cam-metrics or sanity; "
                                       "`evaluate.py MODE --help`: its flags")
    add_accuracy_args(modes.add_parser("accuracy", description=ACCURACY,
                                       help="the default: top-1/3/5 and loss of every epoch"))
    add_cam_metrics_args(modes.add_parser("cam-metrics", description=CAM_METRICS,
                                          help="how good the maps are (also: --cam-metrics)"))
    add_sanity_args(modes.add_parser("sanity", description=SANITY,
                                     help="can the maps be trusted (also: --sanity)"))
    return parser


def add_run_choice(parser, model_default):
    """The flags of every mode: the run, the images, where the features come from."""
    add = parser.add_argument
    add("-d", "--model-dir", default=None,
        help=f"run directory of main.py (epoch_N.pth files); {model_default}")
    add("--split-name", default="valid", choices=("valid", "test"), help="subset to evaluate on")
    flags.add_split(parser, from_run=True)
    flags.add_data_dir(parser, from_run=True)
    flags.add_backbone_weights(parser, from_run=True)
    add("--no-cache", action="store_true", help="run the backbone instead of the feature cache")
    flags.add_num_workers(parser)
    flags.add_device(parser)


def add_accuracy_args(parser):
    add_run_choice(parser, "default: the newest run under model/")
    flags.add_precision(parser)
    flags.add_batch_size(parser, ACCURACY_BATCH, "images per batch of the accuracy pass")
    parser.add_argument("--output-dir", help="where eval.json goes; default: the run folder")
    return parser


def _from_config(group):
    """group.add_argument whose default (unless given) is the MetricsConfig field named by the
    flag's dest: the library's defaults, written once, shown by --help."""

    def add(*names, **kw):
        action = group.add_argument(*names, **kw)
        if "default" not in kw:
            value = D(action.dest)  # StopIteration: a flag with no field would be ignored
            action.default = list(value) if kw.get("action") == "append" else value
        return action
    return add


def add_map_choice(parser):
    """The flags of both map modes (cam-metrics, sanity): the model, the maps, the images."""
    add_run_choice(parser, "or --checkpoint")
    add = _from_config(parser)
    add("--checkpoint", help="head checkpoint; none given: the -d run's best epoch")
    add("--methods", nargs="+", choices=list(methods.METHODS),
        help="map methods to measure; none given: the report's methods the head supports "
             f"({', '.join(methods.REPORT_METHODS)})")
    add("--layers", nargs="+",
        help="LayerCAM's layers: the backbone's stages and classmaps (docs/backbones.md); "
             "default: its map stages and classmaps (VGG16: pool3 pool4 classmaps, the report's, "
             "after pooling; stage3 stage4 classmaps = the LayerCAM paper's, before pooling); "
             "one layer (e.g. stage5) is also the layer of every one-layer method (Grad-CAM, "
             "Ablation-CAM, ...)")
    add("--target", choices=config.TARGETS, help="the class each map explains")
    add("--limit", type=flags.positive_int, help="measure a seeded random N images of the split")
    add("--batch-size", dest="map_batch_size", type=flags.positive_int,
        help="images per batch of the maps")
    add_mask_args(_from_config(parser.add_argument_group(
        "masks (localization; the images --masked-only keeps)")))
    return add


def add_mask_args(add):
    add("--masks-dir", help="folder of <image stem>.png label masks (resized nearest); "
                            "default: DATA_DIR/masks (augment.py --source) when it exists")
    flags.add_mask_values(add, "what the masks' data folder records (augment.py; Flower-17: 1), "
                               "else the nonzero value of masks holding 0 and one other value",
                          "the recorded ones (Flower-17: 0 5), else none")
    add("--masked-only", action="store_true",
        help="measure only the images that have a mask (every figure, faithfulness too)")


def add_run_args(add, files):
    """Intervals, seed, resuming and the output folder of a map mode that writes `files`."""
    add("--bootstrap", type=flags.non_negative_int,
        help="bootstrap resamples for the 95%% intervals")
    add("-s", "--seed", type=flags.seed_int,
        help="seed of the --limit sample, tie order, bootstrap resamples")
    add("--no-resume", dest="resume", action="store_false",
        help="discard a partial run in the output folder (OUT/cam_metrics.partial/ or "
             "OUT/sanity.partial/, kept batch by batch) and start afresh; default: an "
             "interrupted run of the same settings continues where it stopped, one of other "
             "settings is refused")
    add("--output-dir", help=f"where {files} go; default: the run's or checkpoint's folder")


def add_cam_metrics_args(parser):
    """cam-metrics: what is measured, the rows beside the methods, the masks, then how."""
    add = add_map_choice(parser)
    flags.add_precision(parser, "precision of the deletion/insertion scoring forwards (the maps "
                                "are fp32)")
    add("--figures", dest="families", nargs="+", choices=config.FAMILIES,
        help="map figures to measure (road = ROAD, Rong 2022, on the --perturb-limit images; "
             "faithfulness takes most of the time); default: faithfulness localization "
             "pseudo-masks")
    add("--scales", nargs="+", type=flags.positive_float,
        help="aggregate every map over these scales (IRN/ReCAM: 1 0.5 1.5 2); default 1")
    add("--flip", action="store_true", help="also aggregate over horizontally flipped images")
    add("--steps", type=flags.positive_int,
        help="deletion/insertion steps (2*(steps-1) forwards)")
    add("--perturb-limit", type=flags.non_negative_int,
        help="deletion/insertion on this many of the measured images, spread over the classes "
             "(seeded; they cost 2*(steps-1) backbone forwards per image and method); 0 = all")
    add("--deletion-baseline", choices=config.DELETION_BASELINES,
        help="what deleted pixels become: zeros of the normalised input (= ImageNet mean "
             "colour, Petsiuk 2018), black pixels, or the blurred image")
    add("--metrics-batch-size", type=flags.positive_int,
        help="images per forward when scoring perturbed images")
    add_baseline_args(_from_config(parser.add_argument_group("rows beside the methods")))
    tau = _from_config(parser.add_argument_group("the validated tau (localization)"))
    tau("--validate-tau-on", choices=("valid", "test", "none"),
        help="choose the validated tau on this subset's mask images (the oracle tau is chosen on "
             "the images scored); default: valid when --split-name test and masks exist")
    tau("--tau-from", metavar="CAM_METRICS_JSON",
        help="take the validated tau from an earlier run on the other subset (its oracle tau; "
             "same checkpoint and map options, no --limit) instead of measuring that subset's "
             "maps again: half the maps of a test run")
    add_run_args(_from_config(parser.add_argument_group("the run")),
                 "cam_metrics.json and cam_metrics.md")
    return parser


def add_baseline_args(add):
    """The rows beside the methods (baselines), the refined rows (METHOD+REFINER), the pairs."""
    add("--baselines", nargs="*", choices=config.MAP_BASELINES + config.FEW_SHOT_BASELINES,
        help="maps scored beside the methods: center (Gaussian, sigma = side/4), full (all "
             "ones), random (seeded uniform noise), sobel (the image's edge magnitude), "
             "few-shot-N (a pixel classifier on N training masks per class); --baselines "
             "alone: none; default: center full")
    add("--segmenter", metavar="CKPT",
        help="also score a segment.py checkpoint's masks (rows segmenter and segmenter+REFINER "
             "of --refine): a pixel classifier trained on the training images' pseudo-masks, "
             "never on a mask; paired with the largest few-shot-N row")
    add("--compare", nargs=2, action="append", metavar=("A", "B"),
        help="also report the paired bootstrap difference A - B of every figure (maps among "
             "--methods and --baselines; repeat for more pairs); every map is always paired "
             "with center")
    add("--refine", nargs="+", choices=list(refiners.REFINERS),
        help="also score every map refined from its image (rows METHOD+REFINER): dense CRF "
             "(IRN's settings; crf-mean: undecided at each map's mean, for any backbone), SLIC "
             "superpixel means; none = the plain map; default: none")
    add("--refine-workers", type=flags.non_negative_int,
        help="worker processes for the refinements (0 = this process)")


def add_sanity_args(parser):
    """sanity: the map modes' model, maps and images, then what is randomised."""
    add_map_choice(parser)
    group = parser.add_argument_group("the rows and the run")
    add = _from_config(group)
    add("--baselines", nargs="*", choices=config.MAP_BASELINES, default=list(config.MAP_BASELINES),
        help="maps read beside the methods (a sanity check is read against the edge and noise "
             "maps): center, full, random, sobel; --baselines alone: none; default: all four")
    add_run_args(add, "sanity.json/.md, sanity_grid.png and sanity_plot.png")
    group = parser.add_argument_group("what is randomised")
    group.add_argument("--no-independent", action="store_true",
                       help="skip the one-layer-at-a-time states")
    group.add_argument("--no-data-randomisation", action="store_true",
                       help="skip the permuted-label head (it needs the training split's "
                            "feature cache)")
    group.add_argument("--permuted-epochs", type=flags.positive_int, default=P.epochs,
                       help="epochs of the permuted-label head")
    group.add_argument("--permuted-lr", type=flags.positive_float, default=P.lr,
                       help="Adam learning rate of the permuted-label head")
    group.add_argument("--figure-images", type=flags.non_negative_int,
                       default=sanity.SanityOptions.figure_images,
                       help="images (the first measured) in sanity_grid.png")
    return parser


SANITY_FLAGS = ("no_independent", "no_data_randomisation", "permuted_epochs", "permuted_lr",
                "figure_images")  # the sanity mode's dests that are not MetricsConfig fields


def sanity_options(args) -> sanity.SanityOptions:
    trainer = permuted.PermutedConfig(epochs=args.permuted_epochs, lr=args.permuted_lr,
                                      seed=args.seed, device=args.device)
    return sanity.SanityOptions(independent=not args.no_independent,
                                data=not args.no_data_randomisation, trainer=trainer,
                                figure_images=args.figure_images)


def run_sanity(args):
    """sanity: measure, then sanity.json/.md, sanity_grid.png and sanity_plot.png."""
    cfg = metrics_config(args)
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


FIELDS = tuple(f.name for f in dataclasses.fields(MetricsConfig))


def _tupled(value):
    """argparse's lists (nargs, append) -> MetricsConfig's tuples (pairs: tuples of tuples)."""
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def metrics_config(args) -> MetricsConfig:
    """A map mode's parsed flags -> MetricsConfig: every flag's dest is the field it sets (the
    parser's defaults are MetricsConfig's)."""
    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    if given.get("data_dir") is None:  # not given, and no run to read it from: the default
        given.pop("data_dir", None)
    return MetricsConfig(**{k: _tupled(v) for k, v in given.items()})


def with_run_data(args):
    """args with data_dir resolved (records.run_data_dir): the folder the run was trained on unless
    --data-dir names one holding the same split; the run is -d's, --checkpoint's or the newest."""
    named = getattr(args, "checkpoint", None) or args.model_dir
    if not named and args.data_dir is not None:
        return args
    run = named if named else runs.latest_run("model")
    if named and not Path(named).exists():
        return argparse.Namespace(**{**vars(args), "data_dir": args.data_dir or "data"})
    data_dir = records.run_data_dir(run, args.data_dir)
    return argparse.Namespace(**{**vars(args), "data_dir": data_dir})


def main(args):
    args = with_run_data(args)
    if args.mode == "sanity":
        return run_sanity(args)
    if args.mode == "cam-metrics":
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
    out = Path(args.output_dir or args.model_dir) / "eval.json"
    if args.output_dir is not None:
        core.check_writable_dir(out.parent)
    else:
        core.check_writable_dir(out.parent, "the run folder", "pass --output-dir DIR")
    opts = training.SourceOptions.pick(vars(args))
    result = evaluation.evaluate_run(args.model_dir, args.split_name, opts, args.backbone_weights,
                                     args.batch_size)
    if not dist.is_root():  # under torchrun the ranks built the caches; rank 0 writes
        return result
    result["best_checkpoint"] = best  # the one cam-metrics, sanity and inference read
    core.atomic_save_json(out, result)
    row = next((r for r in result["epochs"] if r["checkpoint"] == best), None)
    top1 = f": top-1 {row['top1']:.2f}%" if row else ""
    print(f"the figures' checkpoint (runs.best_checkpoint) is {best}{top1}; wrote {out}")
    return result


if __name__ == "__main__":
    dist.run_main(main, get_args_parser(),
                  hints={**flags.HINTS, "partial": "pass --no-resume or another --output-dir"})
