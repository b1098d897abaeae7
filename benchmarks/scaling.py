"""Past one machine, measured on this one: the feature cache build by 1 vs 2 processes (torchrun),
on real Flower-17 images, and where the time goes (decode, backbone, write, gather, spread).

    python -m benchmarks.scaling                          # 200 images, 2 repeats
    python -m benchmarks.scaling --images 400 --repeats 3 --output output/bench_scaling.json
    python -m benchmarks.scaling --backbone resnet50 --backbone-weights resnet50.pth

Every case builds a fresh cache of the same --images files (256 px, fp32, batches of
--batch-size, decoding in the main process so that each phase is timed alone) in a temporary
folder: one process as today (features.feature_cache; torch's default threads, then one
thread), and torchrun --nproc-per-node 2 (one thread each, torchrun's default) in the shared
and the gather layout (flowercam/cache/shards.py). Each process reports its phases;
a case's wall time is rank 0's build, from the first collective to the complete mark.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.training import add_backbone, shared_backbone, shared_items
from flowercam import core, dist
from flowercam.cache import features, shards
from flowercam.core import atomic_save_json

REPO = Path(__file__).resolve().parents[1]
CASES = (("1 process, default threads", 1, None, "shared"),
         ("1 process, 1 thread", 1, "1", "shared"),
         ("2 processes x 1 thread, shared folder", 2, "1", "shared"),
         ("2 processes x 1 thread, gathered to rank 0", 2, "1", "gather"))


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--images", type=int, default=200, help="Flower-17 images (spread over the classes)")
    add("--repeats", type=int, default=2, help="builds per case")
    add("--batch-size", type=int, default=16, help="backbone batch (cache.py's default)")
    add("--shared", default="../shared", help="folder with flowers17/, weights/")
    add_backbone(parser)
    add("--output", default="output/bench_scaling.json", help="where the figures go")
    add("--worker", default=None, help=argparse.SUPPRESS)  # one build: write its phases here
    return parser


def build_once(args):
    """One build in this process (under torchrun: with the other ranks) -> phases per rank."""
    items = shared_items(args.shared, args.images)
    backbone = shared_backbone(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(dist.broadcast(tmp))  # rank 0's folder (one machine: shared)
        key = features.cache_key(items, backbone, folder, 256, "fp32")
        npy, meta = features.cache_paths(folder, key)
        start = time.perf_counter()
        if dist.world() == 1 and os.environ.get("SCALING_PLAIN"):  # today's code path
            features.feature_cache(items, backbone, folder, "fp32", args.batch_size, 0, size=256)
            phases = {"total": time.perf_counter() - start}
        else:
            job = shards.Build(npy_path=npy, meta_path=meta, key=key, items=items, size=256,
                                     batch_size=args.batch_size, num_workers=0,
                                     run_batch=features.batch_runner(backbone, "fp32", "cpu"))
            shards.build(job)
            phases = dict(shards.PHASES)
        parts = dist.gather({**phases, "threads": torch.get_num_threads()})
        dist.wait_all()  # the folder stays until every rank is done with it
    if parts is not None:
        atomic_save_json(args.worker, parts)


def run_case(args, processes, threads, layout, plain):
    """One build in fresh processes -> [phases of each rank]."""
    env = {**os.environ, "FLOWERCAM_CACHE_LAYOUT": layout, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = threads
    if plain:
        env["SCALING_PLAIN"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phases.json"
        flags = ["--images", str(args.images), "--batch-size", str(args.batch_size),
                 "--shared", str(Path(args.shared).resolve()), "--worker", str(out)]
        if args.backbone:
            flags += ["--backbone", args.backbone]
        if args.backbone_weights:
            flags += ["--backbone-weights", str(Path(args.backbone_weights).resolve())]
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={processes}"] if processes > 1 else [sys.executable])
        subprocess.run([*launch, "-m", "benchmarks.scaling", *flags], cwd=REPO, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(out.read_text())


def summary(name, runs, images):
    """Per case: wall seconds (min..max of the repeats), images/s, each phase on rank 0."""
    totals = [run[0]["total"] for run in runs]
    phases = {k: float(np.mean([run[r][k] for run in runs for r in range(len(run))
                                if k in run[r]]))
              for k in ("decode", "backbone", "write", "gather", "spread") if k in runs[0][0]}
    return {"case": name, "processes": len(runs[0]), "threads": runs[0][0]["threads"],
            "seconds": totals, "img_per_s": [images / t for t in totals],
            "phases_mean_per_rank_s": phases}


def main(args):
    if args.worker:
        return build_once(args)
    results = []
    for name, processes, threads, layout in CASES:
        plain = processes == 1 and threads is None
        runs = [run_case(args, processes, threads, layout, plain) for _ in range(args.repeats)]
        results.append(summary(name + (" (features.feature_cache)" if plain else ""), runs,
                               args.images))
        row = results[-1]
        print(f"{row['case']:62s} {min(row['seconds']):6.1f}..{max(row['seconds']):6.1f} s  "
              f"{max(row['img_per_s']):5.2f} img/s  " + "  ".join(
                  f"{k} {v:.1f}" for k, v in row["phases_mean_per_rank_s"].items()))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_save_json(args.output, {"images": args.images, "batch_size": args.batch_size,
                                   "cpu_count": os.cpu_count(), "torch": torch.__version__,
                                   "cases": results})
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    dist.run_main(main, get_args_parser())
