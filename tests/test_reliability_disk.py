"""Issue #11, disk errors: a full disk (simulated by RLIMIT_FSIZE, SIGXFSZ ignored, so writes
fail with EFBIG) is one line naming the path, exit code 2, and no partial file under a final name;
atomic writes are complete or absent; a rerun redoes augmented copies that do not decode."""

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from training_data import REPO, make_dataset, make_folder_dataset, random_weights

from flowercam import core
from flowercam.backbones import vgg16
from flowercam.cache import features
from flowercam.data import dataset, prepare


def run_limited(argv, limit_bytes, cwd):
    """Run a root script with files limited to limit_bytes -> CompletedProcess."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=300, preexec_fn=limit)


def assert_one_line_disk_error(proc, path_part):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and path_part in last
    assert "File too large" in last and "ulimit -f" in last


def no_temporaries(folder):
    return not [p for p in Path(folder).rglob("*") if p.name.startswith((".tmp-",))
                or p.name.endswith(".tmp")]


def test_atomic_write_disk_full_leaves_old_content(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    core.atomic_save_json(path, {"old": 1})

    def full(f):
        f.write("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(core.UserError, match="free space on that disk") as err:
        core.atomic_write(path, full, mode="w")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == '{\n  "old": 1\n}' and no_temporaries(tmp_path)


def test_augment_disk_full_then_rerun(tmp_path):
    """Was: `ulimit -f` -> augment.py reported success with truncated JPEGs."""
    source = make_folder_dataset(tmp_path / "src", per_class=4, size=(300, 200))
    data = tmp_path / "data"
    argv = [REPO / "augment.py", "--source", source, "--data-dir", data, "--copies", "3",
            "--size", "128", "--num-workers", "2"]
    proc = run_limited(argv, 3072, tmp_path)
    assert_one_line_disk_error(proc, str(data / "auged"))
    assert dataset.read_json(data / "augment.json")["complete"] is False
    assert no_temporaries(data)
    for path in (data / "auged").iterdir():  # whatever is there under a final name is whole
        assert prepare.is_complete_jpeg(path)
        Image.open(path).load()
    proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and dataset.read_json(data / "augment.json")["complete"]
    assert len(list((data / "auged").iterdir())) == 12 * 3


def test_rerun_redoes_copies_that_do_not_decode(folder_dataset, tmp_path):
    """Copies truncated by an earlier version (or a crash of another tool) are found and redone."""
    settings = prepare.AugmentSettings(copies=2, size=48)
    prepare.prepare(tmp_path / "data", settings, folder_dataset)
    auged = tmp_path / "data" / "auged"
    expected = {p.name: p.read_bytes() for p in auged.iterdir()}
    victim = auged / "dog_02_1.jpg"
    victim.write_bytes(expected[victim.name][:-300])
    (auged / "cat_00_0.jpg").write_bytes(b"")
    result = prepare.prepare(tmp_path / "data", settings, folder_dataset)
    assert result["written"] == 2
    assert {p.name: p.read_bytes() for p in auged.iterdir()} == expected


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """(data dir, weights) with the train/valid caches built (so only the run folder is written)."""
    root = tmp_path_factory.mktemp("disk")
    data_dir = make_dataset(root / "data", per_class=4, copies=2, size=32)
    weights = random_weights(root / "w.pth")
    backbone = vgg16.load(weights)
    for subset in ("train", "valid"):
        features.feature_cache(dataset.split_items(data_dir, subset), backbone, data_dir,
                               num_workers=0)
    return data_dir, weights


def test_checkpoint_disk_full_one_line_no_run_left(cached, tmp_path):
    """Was: torch.save's "unexpected pos" traceback; a run folder holding only config.json."""
    data_dir, weights = cached
    out = tmp_path / "model"
    argv = [REPO / "main.py", "--data-dir", data_dir, "--backbone-weights", weights, "-e", "2",
            "--output-dir", out, "--num-workers", "0"]
    proc = run_limited(argv, 4096, tmp_path)  # config.json fits, the checkpoint does not
    assert_one_line_disk_error(proc, "epoch_1.pth")
    assert not out.exists() or not list(out.iterdir())


def test_cache_build_disk_full_one_line_nothing_left(tmp_path):
    """Was: OSError Errno 27 traceback and a data/cache/feats-*.npy.tmp left behind."""
    data_dir = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    weights = random_weights(tmp_path / "w.pth")
    argv = [REPO / "cache.py", "--data-dir", data_dir, "--backbone-weights", weights,
            "--subset", "train", "--num-workers", "0"]
    proc = run_limited(argv, 200_000, tmp_path)  # 12 rows x 100 kB do not fit
    assert_one_line_disk_error(proc, "feats-")
    cache = Path(data_dir) / "cache"
    assert not list(cache.glob("*.npy")) and no_temporaries(cache)
    proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_download_disk_full_names_the_file(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    from test_augment import make_mirror

    url = make_mirror(tmp_path / "mirror", b"unused: data/datasplits.mat is already there")
    data = tmp_path / "data"
    data.mkdir()
    scipy_io.savemat(data / "datasplits.mat", {f"{k}{s}": [1] for k in ("trn", "val", "tst")
                                               for s in "123"})
    proc = run_limited([REPO / "augment.py", "--data-dir", data, "--base-url", url,
                        "--num-workers", "1"], 2048, tmp_path)
    assert_one_line_disk_error(proc, "17flowers.tgz.part")
    assert not (data / "17flowers.tgz").exists() and not (data / "jpg").exists()
