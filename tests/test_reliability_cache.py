"""Issue #11 on the feature cache: damage is found and repaired, a complete cache is only read,
legacy caches are adopted, and two concurrent builders compute every row once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from training_data import REPO, make_dataset, make_read_only, random_weights, run_cli

import main as main_cli
from flowercam.backbones import vgg16
from flowercam.cache import disk, features
from flowercam.data import dataset


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_weights(tmp_path_factory.mktemp("weights") / "a.pth", seed=0)


@pytest.fixture
def built(tmp_path, weights):
    """(data_dir, items, backbone, features as built, npy path, meta path): 12 train rows."""
    data_dir = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    items = dataset.split_items(data_dir, "train")
    backbone = vgg16.load(weights)
    feats = features.feature_cache(items, backbone, data_dir, batch_size=4, num_workers=0)
    (npy,) = (Path(data_dir) / "cache").glob("*.npy")
    return data_dir, items, backbone, feats.clone(), npy, npy.with_suffix(".json")


def counting(backbone, monkeypatch):
    """Rows the backbone computes from now on."""
    rows, forward = [], backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda x: rows.append(len(x)) or forward(x))
    return rows


def test_complete_cache_records_size_and_block_checksums(built):
    *_, npy, meta_path = built
    meta = json.loads(meta_path.read_text())
    assert meta["npy_bytes"] == npy.stat().st_size == disk.expected_bytes(meta["key"])
    assert meta["key"]["n"] == 12 and meta["dtype"] == "float32" and "cut" not in meta["key"]
    assert len(meta["crc32"]) == 1 and meta["block_rows"] == disk.BLOCK_ROWS


def test_truncated_cache_is_rebuilt(built, monkeypatch, capsys):
    """Was: 4096 bytes cut off -> padded with zeros and trained on (rc 0)."""
    data_dir, items, backbone, expected, npy, meta_path = built
    key = json.loads(meta_path.read_text())["key"]
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size - 4096)
    rows = counting(backbone, monkeypatch)
    again = features.feature_cache(items, backbone, data_dir, batch_size=4, num_workers=0)
    err = capsys.readouterr().err.strip().splitlines()
    assert any("wrong size" in line and str(npy) in line for line in err)
    assert sum(rows) == len(items) and npy.stat().st_size == disk.expected_bytes(key)
    torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-6)


def test_changed_bytes_rebuild_only_their_block(built, monkeypatch, capsys):
    """Was: 16 bytes changed in the middle -> trained on them (loss 1.6e24, rc 0)."""
    data_dir, items, backbone, expected, npy, meta_path = built
    monkeypatch.setattr(disk, "BLOCK_ROWS", 4)  # 3 blocks of 4 rows
    meta = json.loads(meta_path.read_text())  # checksums again, per 4 rows
    disk.save_progress(meta_path, meta["key"], disk.done_mask(meta),
                              disk.checksums(npy))
    middle = npy.stat().st_size // 2  # inside block 1 (rows 4..7)
    with open(npy, "r+b") as f:
        f.seek(middle)
        f.write(b"\x7f" * 16)
    rows = counting(backbone, monkeypatch)
    again = features.feature_cache(items, backbone, data_dir, batch_size=4, num_workers=0)
    assert "checksum of 1 of 3 blocks" in capsys.readouterr().err
    assert sum(rows) == 4
    torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(again).all()


def test_legacy_cache_adopted_without_recomputing(built, monkeypatch, capsys):
    data_dir, items, backbone, expected, npy, meta_path = built
    meta = json.loads(meta_path.read_text())
    legacy = {k: meta[k] for k in ("key", "shape", "dtype", "complete", "done")}
    meta_path.write_text(json.dumps(legacy))
    rows = counting(backbone, monkeypatch)
    again = features.feature_cache(items, backbone, data_dir, batch_size=4, num_workers=0)
    assert rows == [] and torch.equal(again, expected)
    assert "adopted" in capsys.readouterr().err
    assert json.loads(meta_path.read_text())["crc32"] == meta["crc32"]


def test_complete_cache_is_never_opened_for_writing(built, monkeypatch):
    data_dir, items, backbone, expected, npy, _ = built
    modes, load = [], np.load
    monkeypatch.setattr(np, "load",
                        lambda *a, **k: modes.append(k.get("mmap_mode")) or load(*a, **k))
    monkeypatch.setattr(disk, "open_for_build", None)  # any build attempt would fail
    again = features.feature_cache(items, backbone, data_dir, batch_size=4, num_workers=0)
    assert torch.equal(again, expected) and modes and set(modes) <= {"r", "c"}


def test_read_only_data_folder_trains(tmp_path, weights, monkeypatch, capsys):
    """Was: a read-only data folder with a complete cache -> PermissionError traceback."""
    data_dir = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    backbone = vgg16.load(weights)
    for subset in ("train", "valid"):
        features.feature_cache(dataset.split_items(data_dir, subset), backbone, data_dir,
                               num_workers=0)
    make_read_only(data_dir, monkeypatch)
    try:
        code, run_dir = run_cli(main_cli, ["--data-dir", data_dir, "-e", "1", "--num-workers",
                                           "0", "--backbone-weights", weights,
                                           "--output-dir", str(tmp_path / "model")])
        assert code is None and (run_dir / "epoch_1.pth").is_file()
        # a legacy cache (no checksums) in a read-only folder: used, with a one-line note
        monkeypatch.undo()
        (meta_path,) = [p for p in (Path(data_dir) / "cache").glob("*.json")
                        if json.loads(p.read_text())["key"]["n"] == 12]
        os.chmod(meta_path, 0o644)
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({k: meta[k] for k in ("key", "complete", "done")}))
        make_read_only(data_dir, monkeypatch)
        capsys.readouterr()
        items = dataset.split_items(data_dir, "train")
        feats = features.feature_cache(items, backbone, data_dir, num_workers=0)
        assert feats.shape[0] == 12 and "used unverified" in capsys.readouterr().err
    finally:
        monkeypatch.undo()
        for path in [Path(data_dir), *Path(data_dir).rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


BUILD = """
import sys, time
from flowercam.data import dataset
from flowercam.backbones import vgg16
from flowercam.cache import features
data_dir, weights = sys.argv[1], sys.argv[2]
backbone = vgg16.load(weights)
rows, forward = [], backbone.forward
def slow(x):  # slow enough that the two builds overlap
    rows.append(len(x)); time.sleep(0.2); return forward(x)
backbone.forward = slow
features.feature_cache(dataset.split_items(data_dir, "train"), backbone, data_dir, batch_size=2,
                       num_workers=0)
print(sum(rows))
"""


def test_two_concurrent_builders_compute_each_row_once(tmp_path, weights):
    data_dir = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, data_dir, weights], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1000:] for o in outs]
    assert sorted(int(o[0].split()[-1]) for o in outs) == [0, 12]  # one built, one waited
    (npy,) = (Path(data_dir) / "cache").glob("*.npy")
    shared_bytes = npy.read_bytes()
    alone = make_dataset(tmp_path / "alone", per_class=4, copies=2, size=32)
    items = dataset.split_items(alone, "train")
    features.feature_cache(items, vgg16.load(weights), alone, batch_size=2,
                           num_workers=0)
    (npy_alone,) = (Path(alone) / "cache").glob("*.npy")
    assert npy_alone.read_bytes() == shared_bytes
    assert not list((Path(data_dir) / "cache").glob("*.tmp"))
