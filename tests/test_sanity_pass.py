"""The sanity checks' shared backbone passes (sanity/passes.py) give each method's own maps,
and an interrupted evaluate.py --sanity resumes to the files of a run without a break."""

import json
import re

import numpy as np
import pytest
import torch
import training_data

import evaluate as evaluate_cli
from flowercam.cam import compute
from flowercam.core import UserError
from flowercam.metrics.config import MetricsConfig
from flowercam.model import heads, vgg
from flowercam.sanity import checks, passes, permuted, randomise

ROWS = ("CAM", "GradCAM", "GradCAM++", "LayerCAM")


@pytest.fixture(scope="module")
def model():
    model = training_data.make_model("CAM", classes=5)
    with torch.no_grad():  # backbone biases not 0 (as ImageNet's), so the prefix matters
        for layer in model.backbone.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.uniform_(0.1, 0.2)
    return model


def test_the_prefix_is_the_backbone_cut_short(model):
    x = training_data.images(2, size=64)
    prefix = passes.Prefix(model.backbone, x)
    assert prefix.ends == [0, 5, 10, 17, 24]
    for k in (17, 5, 24, 10):  # any order: each from the longest known below it
        with torch.no_grad():
            assert torch.equal(prefix.at(k), model.backbone.features[:k](vgg.channels_last(x))), k
    feats, acts = model.backbone.forward_with(prefix.at(17), ["pool3", "pool4"], start=17)
    want, want_acts = model.backbone.forward_with(x, ["pool3", "pool4"])
    assert torch.equal(feats, want) and torch.equal(acts["pool4"], want_acts["pool4"])
    with pytest.raises(ValueError):  # a stage below the prefix cannot be read from it
        model.backbone.forward_with(prefix.at(24), ["pool3"], start=24)


@pytest.mark.parametrize("layers", [(), ("head.fc", "head.conv", "block5"), ("block5",),
                                    ("block3",), ("head.fc", "head.conv", "block5", "block4",
                                                  "block3", "block2", "block1")])
def test_one_pass_per_state_gives_every_methods_own_maps(model, layers):
    """The sanity path (Prefix + StatePass + FixedFeatures, the methods in METHODS order) against
    compute_maps of each method on the randomised model alone: bit-identical maps."""
    cfg = MetricsConfig(baselines=())
    x, targets = training_data.images(2, size=64), torch.tensor([1, 3])
    state = randomise.randomised(model, layers, seed=2)
    stages = passes.planned_stages(ROWS, lambda row: checks._options(row, cfg),
                                   model.backbone)
    assert stages == ("pool3", "pool4")  # LayerCAM's, in the order its driver asks
    prefix = passes.Prefix(model.backbone, x)  # the trained backbone's
    at = passes.random_from(state.backbone, layers)
    shared = heads.Classifier(passes.StatePass(state.backbone, prefix, at, stages),
                              state.head)
    feats = None
    for row in ROWS:
        (raw, maps), feats = checks.row_maps(shared, row, x, None, feats, targets, ["a", "b"],
                                             cfg, 0)
        want = compute.compute_maps(state, x, row, targets, normalize_by="minmax",
                                    **checks._options(row, cfg))
        assert np.array_equal(raw, want.raw.numpy()), row
        assert np.array_equal(maps, want.maps.numpy()), row
    assert shared.backbone.handed  # LayerCAM got the planned pass


def test_state_pass_runs_the_real_backbone_on_other_inputs(model):
    x = training_data.images(2, size=64)
    other = training_data.images(2, size=64, seed=5)
    state_pass = passes.StatePass(model.backbone, passes.Prefix(model.backbone, x),
                                       None, ("pool3",))
    with torch.no_grad():
        assert torch.equal(state_pass(other), model.backbone(other))
        assert torch.equal(state_pass(x), model.backbone(x))
    first, _ = state_pass.forward_with(x, ["pool3"])
    again, acts = state_pass.forward_with(x, ["pool3"])  # the planned graph is used: a new pass
    assert first is not again and torch.equal(first, again) and acts["pool3"].requires_grad


def _argv(data, weights, run, out, *extra):
    return ["-d", str(run), "--data-dir", data, "--backbone-weights", weights, "--sanity",
            "--methods", "CAM", "LayerCAM", "--limit", "3", "--bootstrap", "20",
            "--permuted-epochs", "2", "--figure-images", "2", "--batch-size", "1",
            "--no-independent", "--output-dir", str(out), *extra]


def _sanity(argv):
    return evaluate_cli.main(evaluate_cli.get_args_parser().parse_args(argv))


def _untimed(folder):
    """sanity.json and sanity.md without their timings; the figures' bytes."""
    summary = json.loads((folder / "sanity.json").read_text())
    for key in ("seconds", "map_seconds"):
        summary.pop(key)
    summary["data_randomisation"].pop("seconds")
    text = re.sub(r"[0-9.]+ (s\)|min)", "", (folder / "sanity.md").read_text())
    return (summary, text, (folder / "sanity_grid.png").read_bytes(),
            (folder / "sanity_plot.png").read_bytes())


def test_an_interrupted_run_resumes_to_the_files_of_a_run_without_a_break(tmp_path,
                                                                           monkeypatch):
    data, weights, run = training_data.trained_run(tmp_path, 2, 1)
    fresh, broken = tmp_path / "fresh", tmp_path / "broken"
    _sanity(_argv(data, weights, run, fresh))
    assert not (fresh / "sanity.partial").exists()  # finished: nothing to resume
    real_batch, calls = checks._batch, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt  # after 2 of the 3 batches
        return real_batch(*args)
    monkeypatch.setattr(checks, "_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _sanity(_argv(data, weights, run, broken))
    partial = broken / "sanity.partial"
    assert sorted(p.name for p in partial.glob("batch_*.pt")) == ["batch_00000.pt",
                                                                  "batch_00001.pt"]
    with pytest.raises(UserError, match="other settings"):  # another seed: refused
        _sanity(_argv(data, weights, run, broken, "-s", "3"))
    monkeypatch.setattr(checks, "_batch", real_batch)

    def trained_again(*args):
        raise AssertionError("the saved permuted-label head is reused")
    monkeypatch.setattr(permuted, "train_permuted", trained_again)
    _sanity(_argv(data, weights, run, broken))
    assert _untimed(broken) == _untimed(fresh)
    assert not partial.exists()
