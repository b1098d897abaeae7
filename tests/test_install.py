"""The package installs (pyproject.toml's build system) and imports outside the checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pip_install_then_import_from_elsewhere(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"  # a copy: the build writes beside it
    shutil.copytree(REPO / "flowercam", source / "flowercam",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "data", "model", "output"):  # folders: empty
        (REPO / name).is_file() and shutil.copy(REPO / name, source / name)
        (REPO / name).is_dir() and (source / name).mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    assert (target / "flowercam" / "cam" / "compute.py").is_file()
    assert (target / "flowercam" / "report" / "report_template.html").is_file()  # report.html's
    assert not (target / "data").exists() and not (target / "model").exists()
    code = ("import flowercam, sys; from flowercam.cam import compute, methods; "
            "print(flowercam.__file__); print(next(iter(methods.METHODS)))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.splitlines()[0].startswith(str(target)) and out.splitlines()[1] == "CAM"
