"""README.md stays true: its Python API example runs, on a tiny trained run."""

import re

from training_data import REPO, make_dataset, random_weights, run_cli

import main as main_cli


def readme_block(title):
    """The first ```python block after the heading `title`."""
    text = (REPO / "README.md").read_text()
    section = text.split(title, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", per_class=4, copies=1, size=32)
    weights = random_weights(tmp_path / "w.pth")
    code, _ = run_cli(main_cli, ["--data-dir", data, "--backbone-weights", weights, "-e", "1",
                                 "--output-dir", str(tmp_path / "model"), "--num-workers", "0"])
    assert code is None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKBONE_WEIGHTS", weights)
    exec(compile(readme_block("## Python API"), "README.md", "exec"), {})  # noqa: S102
    assert "torch.Size" in capsys.readouterr().out
