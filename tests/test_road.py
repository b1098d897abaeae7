"""ROAD (metrics/road.py): noisy linear imputation's invariants, and the whole figure against
pytorch-grad-cam's ROADCombined (a test-only dependency) on a tiny model."""

import json

import numpy as np
import pytest
import torch
import training_data
from torch import nn

import evaluate as evaluate_cli
from flowercam.metrics import formulas, road

ROAD_REF = pytest.importorskip("pytorch_grad_cam.metrics.road")
TARGETS = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
# grad-cam passes torch tensors to np.percentile (a NumPy 2 deprecation inside the reference)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_imputation_keeps_known_pixels_and_reproduces_constant_and_linear_images():
    rng = np.random.default_rng(0)
    removed = np.zeros((12, 12), bool)
    removed[3:9, 2:10] = True
    ramp = np.stack([np.add.outer(np.arange(12.0), 2 * np.arange(12.0)) / 40] * 2)  # linear
    # inside the image the symmetric 8-neighbour mean reproduces any linear image exactly
    assert np.allclose(road.impute(ramp, removed, noise=0), ramp)
    removed[0, 0] = removed[11, 5] = True  # at the border (one-sided means) a constant stays
    const = np.full((3, 12, 12), 0.3)
    assert np.allclose(road.impute(const, removed, noise=0), const)
    noisy = rng.random((3, 12, 12))
    out = road.impute(noisy, removed, noise=0.01, rng=rng)
    assert np.array_equal(out[:, ~removed], noisy[:, ~removed])
    assert not np.allclose(out[:, removed], noisy[:, removed])


def test_imputation_matches_pytorch_grad_cam_noise_free():
    rng = np.random.default_rng(1)
    image = rng.random((3, 9, 11))
    keep = rng.random((9, 11)) > 0.6  # grad-cam's mask: 1 = kept
    ours = road.impute(image, ~keep, noise=0)
    ref = ROAD_REF.NoisyLinearImputer(noise=0)(torch.from_numpy(image).float(),
                                               torch.from_numpy(keep.astype(np.float32)))
    assert np.allclose(ours, ref.numpy(), atol=1e-5)


def test_removal_masks_take_the_fraction_from_the_right_end():
    maps = torch.arange(100.0).view(1, 10, 10)
    morf = road.removal_masks(maps, 0.3, "morf")[0].flatten()
    lerf = road.removal_masks(maps, 0.3, "lerf")[0].flatten()
    assert morf.sum() == lerf.sum() == 30
    assert morf[70:].all() and not morf[:70].any() and lerf[:30].all() and not lerf[30:].any()


class Tiny(nn.Module):
    """A seeded tiny classifier on 10x10 images: conv, GAP, 4 classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)) * 5)


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_road_combined_agrees_with_pytorch_grad_cam(noise, monkeypatch):
    """10x10 maps of distinct values: grad-cam's percentile thresholds remove exactly the pixel
    counts of our fractions, so without noise both figures agree to float precision; with
    Rong's noise (independent draws) within a few thousandths."""
    monkeypatch.setattr(ROAD_REF.NoisyLinearImputer.__init__, "__defaults__",
                        (noise, ROAD_REF.neighbors_weights))
    torch.manual_seed(0)
    model = Tiny().eval()
    pixels = torch.rand(4, 3, 10, 10)
    maps = torch.rand(4, 10, 10)
    targets = torch.tensor([0, 1, 2, 3])
    score_fn = formulas.make_score_fn(model, (0, 0, 0), (1, 1, 1))
    fractions = tuple(p / 100 for p in range(10, 100, 10))
    ours = road.road_figures(road.road_curves(score_fn, pixels, maps, targets, fractions, noise))
    ref = ROAD_REF.ROADCombined()(pixels, maps.numpy(),
                                  [TARGETS.ClassifierOutputSoftmaxTarget(int(t)) for t in targets],
                                  model)
    assert np.allclose(ours["road_combined"], ref, atol=1e-5 if noise == 0 else 5e-3)
    assert np.ptp(ref) > 1e-3  # the images differ: the check is not between constants


def test_evaluate_measures_road_only_when_asked(tmp_path):
    """--figures road: the three ROAD columns in cam_metrics, no deletion/insertion; the default
    families leave ROAD out."""
    data, weights, run = training_data.trained_run(tmp_path, 1, 1)
    for figures, out in ((["--figures", "road"], tmp_path / "road"), ([], tmp_path / "plain")):
        argv = ["-d", str(run), "--data-dir", data, "--backbone-weights", weights,
                "--cam-metrics", "--methods", "CAM", "--limit", "3", "--bootstrap", "20",
                "--baselines", "random", "--output-dir", str(out), *figures]
        evaluate_cli.main(evaluate_cli.get_args_parser().parse_args(argv))
        result = json.loads((out / "cam_metrics.json").read_text())
        overall = result["methods"]["CAM"]["overall"]
        if figures:
            assert overall["road_combined"]["n"] == 3 and overall["deletion_auc"]["n"] == 0
            lo, hi = overall["road_morf"]["ci95"]
            assert 0 <= lo <= overall["road_morf"]["value"] <= hi <= 1
            assert "ROAD MoRF" in (out / "cam_metrics.md").read_text()
        else:
            assert "road_morf" not in overall
