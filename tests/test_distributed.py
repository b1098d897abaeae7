"""torchrun with 2 processes (gloo, CPU) on tiny seeded data gives what one process gives.

Every torchrun here runs with OMP_NUM_THREADS=1 (torchrun's own default) and the one-process
references with one thread too (torch.set_num_threads(1)): the ranks compute the single
process's batches, so the feature cache is equal byte for byte and the map metrics exactly.
(With other thread counts oneDNN may sum in another order: float32 rounding, < 1e-5.)
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import training_data

import evaluate as evaluate_cli
import grid as grid_cli
import inference as inference_cli
from flowercam.backbones import vgg16
from flowercam.cache import features
from flowercam.data import dataset
from flowercam.model import checkpoints, heads

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
CACHE = ["--batch-size", "3", "--num-workers", "0"]


def torchrun(args, *extra_env, launch=("--standalone", "--nproc-per-node=2")):
    """torchrun (default: one machine, 2 processes, a free port) -> Popen, started."""
    return subprocess.Popen([*TORCHRUN, *launch, *args], cwd=REPO, env={**ENV, **dict(extra_env)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ok(proc):
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes at 32 px (18 train, 6 test images), random VGG16 weights, a ReCAM head."""
    root = tmp_path_factory.mktemp("dist")
    data = training_data.make_dataset(root / "data", per_class=6, copies=2, size=32)
    weights = training_data.random_weights(root / "w.pth")
    backbone = vgg16.load(weights)
    settings = heads.HeadSettings.from_dict({
        "model_type": "ReCAM", "normalize_by": "minmax", "num_classes": 3,
        "class_names": list(training_data.CLASSES), "input_size": 32,
        "backbone": backbone.backbone_id})
    torch.manual_seed(0)
    checkpoints.save_checkpoint(root / "run" / "epoch_1.pth", heads.build_head(settings),
                                settings, epoch=1)
    return {"root": root, "data": data, "weights": weights, "backbone": backbone,
            "run": str(root / "run")}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fresh_copy(tiny, name):
    """A copy of the data folder (same image files and mtimes), no cache."""
    target = tiny["root"] / name
    subprocess.run(["cp", "-a", tiny["data"], str(target)], check=True)
    subprocess.run(["rm", "-rf", str(target / "cache")], check=True)
    return str(target)


def cache_files(data):
    """{subset file stem: (npy bytes, record)} of a data folder's caches."""
    return {p.stem: (p.read_bytes(), json.loads(p.with_suffix(".json").read_text()))
            for p in (Path(data) / "cache").glob("*.npy")}


def metrics_args(tiny, data, out):
    return ["-d", tiny["run"], "--data-dir", data, "--backbone-weights", tiny["weights"],
            "--cam-metrics", "--split-name", "test", "--batch-size", "2", "--steps", "3",
            "--bootstrap", "50", "--methods", "CAM", "ReCAM", "--validate-tau-on", "none",
            "--num-workers", "0", "--output-dir", out]


def metrics(out):
    got = json.loads((Path(out) / "cam_metrics.json").read_text())
    return {k: got[k] for k in ("methods", "baselines", "per_image", "n_images")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_grid_cache_metrics_and_maps_equal_one_process(tiny, tmp_path, one_thread):
    """gather layout + grid; shared layout + --cam-metrics; inference --save-maps: all at once."""
    grid_args = ["--lrs", "1e-3", "--epochs", "2", "--num-workers", "0", "--backbone-weights",
                 tiny["weights"], "--report-facts", "none"]
    runs = {"grid": torchrun(["grid.py", "--data-dir", fresh_copy(tiny, "g"), *grid_args,
                              "--output-dir", str(tmp_path / "gm"), "--results-dir",
                              str(tmp_path / "g")], ("FLOWERCAM_CACHE_LAYOUT", "gather")),
            "metrics": torchrun(["evaluate.py", *metrics_args(tiny, fresh_copy(tiny, "m"),
                                                              str(tmp_path / "m"))]),
            "maps": torchrun(["inference.py", "-m", f"{tiny['run']}/epoch_1.pth", "--image",
                              str(Path(tiny["data"]) / "auged"), "--batch-size", "5",
                              "--save-maps", str(tmp_path / "maps2.npz"), "--output-dir",
                              str(tmp_path / "o2"), "--backbone-weights", tiny["weights"]])}
    # meanwhile, one process
    data = fresh_copy(tiny, "one")
    run = training_data.run_cli
    assert run(grid_cli, ["--data-dir", data, *grid_args, "--output-dir", str(tmp_path / "om"),
                          "--results-dir", str(tmp_path / "o")])[0] is None
    assert run(evaluate_cli, metrics_args(tiny, data, str(tmp_path / "o")))[0] is None
    assert run(inference_cli, ["-m", f"{tiny['run']}/epoch_1.pth", "--image",
                               str(Path(tiny["data"]) / "auged"), "--batch-size", "5",
                               "--save-maps", str(tmp_path / "maps1.npz"), "--output-dir",
                               str(tmp_path / "o1"), "--backbone-weights",
                               tiny["weights"]])[0] is None
    outs = {name: ok(proc) for name, proc in runs.items()}
    one = cache_files(data)
    for folder in ("g", "m"):  # train + valid (grid), test (metrics): the same bytes
        for stem, (npy, meta) in cache_files(tiny["root"] / folder).items():
            assert meta["complete"] and npy == one[stem][0]
    assert (tmp_path / "g" / "table2.md").read_text() == (tmp_path / "o" / "table2.md").read_text()
    assert set(json.loads((tmp_path / "g" / "grid_runs.json").read_text())) == set(
        json.loads((tmp_path / "o" / "grid_runs.json").read_text()))
    assert outs["grid"].count("wrote ") == 1  # rank 0 alone writes
    assert metrics(tmp_path / "m") == metrics(tmp_path / "o")
    two, single = np.load(tmp_path / "maps2.npz"), np.load(tmp_path / "maps1.npz")
    assert list(two["paths"]) == list(single["paths"])
    for key in ("raw", "maps", "logits", "targets"):
        np.testing.assert_array_equal(two[key], single[key])


def test_killed_rank_leaves_an_incomplete_cache_and_a_rerun_finishes_it(tiny, one_thread,
                                                                       monkeypatch):
    data = fresh_copy(tiny, "killed")
    proc = torchrun(["tests/dist_jobs.py", "--data-dir", data, "--backbone-weights",
                     tiny["weights"], *CACHE], ("KILL_RANK", "1"), ("KILL_AFTER", "1"))
    proc.communicate(timeout=150)
    assert proc.returncode != 0
    ((npy, meta),) = cache_files(data).values()
    done = np.frombuffer(meta["done"].encode(), np.uint8) == ord("1")
    assert not meta["complete"] and "crc32" not in meta and 0 < done.sum() < 18
    items, rows = dataset.split_items(data, "train", 1), []
    forward = tiny["backbone"].forward
    monkeypatch.setattr(tiny["backbone"], "forward", lambda x: rows.append(len(x)) or forward(x))
    again = features.feature_cache(items, tiny["backbone"], data, batch_size=3, num_workers=0)
    assert sum(rows) == 18 - done.sum()  # only the rows not recorded are computed again
    monkeypatch.undo()
    images = torch.stack([dataset.load_image(path, 32)[0] for _, path, _ in items])
    with torch.inference_mode():
        fresh = tiny["backbone"](images)
    torch.testing.assert_close(again, fresh, rtol=1e-5, atol=1e-6)  # recorded rows kept
    reference = fresh_copy(tiny, "reference")
    features.feature_cache(items, tiny["backbone"], reference, batch_size=3, num_workers=0)
    assert cache_files(data) == cache_files(reference)  # rerun -> the same bytes


def test_a_user_error_on_one_rank_is_one_line_and_every_rank_stops(tiny, tmp_path):
    data = fresh_copy(tiny, "corrupt")
    train = dataset.split_items(data, "train", 1)
    Path(train[4][1]).write_bytes(b"not a jpeg")  # row 4: batch 1 (rows 3-5), rank 1's
    start = time.monotonic()
    proc = torchrun(["--log-dir", str(tmp_path / "logs"), "--redirects", "3", "cache.py",
                     "--data-dir", data, "--backbone-weights", tiny["weights"], *CACHE])
    proc.communicate(timeout=150)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stderr.log")}
    said = [line for text in logs.values() for line in text.splitlines()
            if line.startswith("error: ")]
    assert len(logs) == 2 and len(said) == 1 and Path(train[4][1]).name in said[0], logs
    assert not any("Traceback" in text for text in logs.values()), logs


LEAVING = """
import atexit, os, signal, sys, time
from flowercam import dist
signal.signal(signal.SIGTERM, dist._terminated)
if sys.argv[1] == "leaving":  # the rank is in its exit already
    dist._group.stop.set()
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5)))
sys.exit(2)
"""


@pytest.mark.parametrize("state", ["leaving", "running"])
def test_torchruns_sigterm_to_a_rank_already_leaving_is_quiet(state):
    """torchrun SIGTERMs the other ranks once one has failed; one may be in its exit already
    (atexit hooks): the signal must not raise there. (It raced: a traceback 1 run in 15.)"""
    proc = subprocess.run([sys.executable, "-c", LEAVING, state], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    if state == "leaving":
        assert proc.stderr == ""
    else:  # still running: the signal unwinds it through Stopped (the control)
        assert "flowercam.dist.Stopped" in proc.stderr


def test_two_simulated_machines_give_one_process_cache_and_metrics(tiny, tmp_path, one_thread):
    """Two torchrun agents (--nnodes 2, loopback), no shared folder assumed (gather layout)."""
    data, port = fresh_copy(tiny, "nodes"), free_port()
    agents = [torchrun(["evaluate.py", *metrics_args(tiny, data, str(tmp_path / "n"))],
                       ("FLOWERCAM_CACHE_LAYOUT", "gather"),
                       launch=("--nnodes=2", f"--node-rank={r}", "--nproc-per-node=1",
                               f"--rdzv-endpoint=127.0.0.1:{port}")) for r in (0, 1)]
    one = fresh_copy(tiny, "nodes-one")
    assert training_data.run_cli(evaluate_cli, metrics_args(tiny, one, str(tmp_path / "o")))[0] \
        is None
    for agent in agents:
        ok(agent)
    assert cache_files(data) == cache_files(one)
    assert metrics(tmp_path / "n") == metrics(tmp_path / "o")
