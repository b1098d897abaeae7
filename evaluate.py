"""Top-1/3/5 accuracy and loss of every saved epoch of a training run; --cam-metrics: how good
the maps are (faithfulness, localization on masks).

    python evaluate.py -d model/TS20250101-120000_CAM            # validation split -> DIR/eval.json
    python evaluate.py -d model/TS20250101-120000_ReCAM_minmax --split-name test
    python evaluate.py -d model/RUN --cam-metrics --limit 20     # -> DIR/cam_metrics.json/.md
"""

from pathlib import Path

from flowercam import core, evaluation, flags, runs, training
from flowercam.metrics import runner


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
    flags.add_batch_size(parser, 64, "evaluation batch size")
    flags.add_num_workers(parser)
    flags.add_device(parser)
    runner.add_args(parser)
    return parser


def main(args):
    if args.cam_metrics:
        return runner.run(args)
    if not args.model_dir:
        args.model_dir = str(runs.latest_run("model"))
        print(f"evaluating the newest run, {args.model_dir}")
    opts = training.SourceOptions(args.data_dir, args.split, args.precision, args.no_cache,
                                  args.num_workers, args.device)
    result = evaluation.evaluate_run(args.model_dir, args.split_name, opts, args.backbone_weights,
                                     args.batch_size)
    out = Path(args.model_dir) / "eval.json"
    core.atomic_save_json(out, result)
    best = runs.best_checkpoint(args.model_dir).name
    row = next((r for r in result["epochs"] if r["checkpoint"] == best), None)
    top1 = f": top-1 {row['top1']:.2f}%" if row else ""
    print(f"the figures' checkpoint (runs.best_checkpoint) is {best}{top1}; wrote {out}")
    return result


if __name__ == "__main__":
    core.run_main(main, get_args_parser())
