"""Known-answer tests of flowercam.metrics.formulas (synthetic maps, masks and model)."""

import math

import metric_helpers as helpers
import numpy as np
import pytest
import torch
from torch import nn

from flowercam.data import masks as mask_files
from flowercam.metrics import config, formulas

THR = config.default_thresholds(100)


def square_mask(size=32, lo=8, hi=20):
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 1
    return mask


def one(mask, ignore=()):
    fg, valid = mask_files.mask_arrays(mask[None], ignore_values=ignore)
    return fg, valid


def test_map_equal_to_mask_is_perfect():
    mask = square_mask()
    fg, valid = one(mask)
    maps = mask[None].astype(float)
    assert helpers.pointing_game(maps, fg, valid) == 100
    assert helpers.pxap(maps, fg, valid, THR) == pytest.approx(100)
    miou, thr = helpers.best_iou(maps, fg, valid, THR)
    assert miou == pytest.approx(100) and 0 < thr <= 1


def test_inverted_map_scores_chance_only():
    """Pointing 0; at every threshold > 0 IoU is 0, so the best IoU is the trivial
    'everything is foreground' mask at threshold 0 (= foreground fraction), like PxAP's floor."""
    mask = square_mask()
    frac = mask.mean()
    fg, valid = one(mask)
    maps = 1.0 - mask[None].astype(float)
    # the peak (0, 0) is 11.3 px from the square: a hit at the published 15 px, not at 1 px
    assert helpers.pointing_game(maps, fg, valid) == 100
    assert helpers.pointing_game(maps, fg, valid, tolerance=1) == 0
    tp, fp, n_fg = formulas.threshold_counts(maps, fg, valid, THR)
    ious = formulas.iou_per_threshold(tp, fp, n_fg)
    assert np.all(ious[:, 1:] == 0)
    assert helpers.best_iou(maps, fg, valid, THR) == pytest.approx((frac * 100, 0.0))
    assert helpers.pxap(maps, fg, valid, THR) == pytest.approx(frac * 100)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_map_gives_foreground_fraction(value):
    mask = square_mask()
    fg, valid = one(mask)
    maps = np.full((1, 32, 32), value)
    assert helpers.pxap(maps, fg, valid, THR) == pytest.approx(mask.mean() * 100)
    # the peak_on_foreground variant: tied peaks share the credit (the foreground fraction);
    # the published game takes the first maximum, (0, 0), 11.3 px from the square
    hits = formulas.peak_on_foreground_per_image(maps, fg, valid)
    assert hits[0] * 100 == pytest.approx(mask.mean() * 100)
    assert helpers.pointing_game(maps, fg, valid, tolerance=1) == 0


def test_pxap_accumulates_over_the_set():
    """Counts are summed over images before precision/recall (not averaged per image)."""
    masks = np.stack([square_mask(), square_mask(lo=0, hi=4)])
    fg, valid = mask_files.mask_arrays(masks)
    maps = np.stack([masks[0].astype(float), np.full((32, 32), 0.5)])
    # image 0 perfect at every t in (0, .5]; image 1 flat 0.5: all its pixels count from t <= .5
    expected_high = 144 / 160  # recall from image 0 alone at t > 0.5 (precision 1)
    total_fg, total_pix = 160, 2 * 32 * 32 - (1024 - 144)
    ap = expected_high * 1 + (1 - expected_high) * total_fg / total_pix
    assert helpers.pxap(maps, fg, valid, THR) == pytest.approx(ap * 100)


def test_ignore_values_are_ignored():
    mask = square_mask()
    labels = mask.copy()
    labels[:4, :] = 128  # a band that is neither foreground nor background
    fg, valid = one(labels, ignore=[128])
    assert not fg[0, :4].any() and not valid[0, :4].any()
    maps = mask[None].astype(float)
    maps[0, :4, :] = 1.0  # the map fires in the ignored band: no penalty
    maps[0, 0, 0] = 2.0  # and its global peak there, 8 px from any flower pixel, is a miss
    assert helpers.pointing_game(maps, fg, valid, tolerance=1) == 0
    assert helpers.pxap(np.clip(maps, 0, 1), fg, valid, THR) == pytest.approx(100)
    assert helpers.best_iou(np.clip(maps, 0, 1), fg, valid, THR)[0] == pytest.approx(100)
    # without ignoring, 128 counts as foreground (default: any nonzero)
    fg2, valid2 = one(labels)
    assert fg2[0, :4].all() and valid2.all()


def _peaked(peaks, fg_box=(30, 40, 30, 40), size=64):
    """A size x size map of zeros with 1 at each peak (y, x), and a foreground square."""
    maps = np.zeros((1, size, size))
    for y, x in peaks:
        maps[0, y, x] = 1.0
    fg = np.zeros((1, size, size), bool)
    y0, y1, x0, x1 = fg_box
    fg[0, y0:y1, x0:x1] = True
    return maps, fg


def test_pointing_game_is_the_published_one():
    """Zhang et al. 2018: the maximum is a hit within 15 px of the foreground, a miss beyond;
    the first maximum counts (no shared credit); ignored pixels are never hits."""
    near, fg = _peaked([(20, 35)])  # 10 px above the square
    valid = np.ones_like(fg)
    assert formulas.pointing_game_per_image(near, fg, valid).tolist() == [1.0]
    assert formulas.peak_on_foreground_per_image(near, fg, valid).tolist() == [0.0]
    far, _ = _peaked([(10, 35)])  # 20 px above
    assert formulas.pointing_game_per_image(far, fg, valid).tolist() == [0.0]
    tied, _ = _peaked([(2, 2), (35, 35)])  # first in raster order: far from the flower
    assert formulas.pointing_game_per_image(tied, fg, valid).tolist() == [0.0]
    assert formulas.peak_on_foreground_per_image(tied, fg, valid).tolist() == [0.5]
    # the peak on an ignored band 20 px away; the best non-ignored pixel is on the flower
    on_ignored, _ = _peaked([(10, 35)])
    on_ignored[0, 30:40, 30:40] = 0.5
    ignored = valid.copy()
    ignored[0, :15] = False
    assert formulas.pointing_game_per_image(on_ignored, fg, ignored).tolist() == [0.0]
    assert formulas.peak_on_foreground_per_image(on_ignored, fg, ignored).tolist() == [1.0]
    assert math.isnan(formulas.pointing_game_per_image(near, fg & False, valid)[0])  # no flower
    # ignored pixels near the peak are not foreground, even where the label says flower
    fg_ignored = fg.copy()
    fg_ignored[0, 22:30, 35] = True  # a flower stalk reaching up to the peak, but ignored
    stalk = valid.copy()
    stalk[0, 22:30, 35] = False
    assert formulas.pointing_game_per_image(far, fg_ignored, stalk).tolist() == [0.0]
    assert formulas.pointing_game_per_image(far, fg_ignored, valid).tolist() == [1.0]


def test_mask_values_select_foreground():
    labels = np.array([[0, 1, 2, 3]])
    fg, valid = mask_files.mask_arrays(labels, mask_values=[2, 3], ignore_values=[1])
    assert fg.tolist() == [[False, False, True, True]]
    assert valid.tolist() == [[True, False, True, True]]


def test_image_without_foreground_is_skipped_for_pointing_and_iou():
    masks = np.stack([square_mask(), np.zeros((32, 32), np.uint8)])
    fg, valid = mask_files.mask_arrays(masks)
    maps = masks.astype(float)
    hits = formulas.pointing_game_per_image(maps, fg, valid)
    assert hits[0] == 1 and math.isnan(hits[1])
    assert helpers.best_iou(maps, fg, valid, THR)[0] == pytest.approx(100)


def test_average_drop_and_increase():
    y = np.array([0.8, 0.5, 0.4])
    assert helpers.average_drop(y, y) == 0  # a map of ones leaves the image unchanged
    assert helpers.increase_in_confidence(y, y) == 0
    o = np.array([0.4, 0.6, 0.0])
    assert helpers.average_drop(y, o) == pytest.approx((50 + 0 + 100) / 3)
    assert helpers.increase_in_confidence(y, o) == pytest.approx(100 / 3)


def test_increase_in_confidence_ignores_float_ties():
    """The `full` map scores the unchanged image: O equals Y up to the rounding of another batch
    composition (1 vs 2 processes), which must not count as an increase."""
    y = np.array([0.5, 0.5, 0.5], np.float32)
    o = y + np.array([3e-8, 0.01, 0.0], np.float32)  # a float-rounding tie, a real increase
    assert formulas.increase_per_image(y, o).tolist() == [0.0, 100.0, 0.0]
    assert formulas.increase_per_image(y, y + 1e-6).tolist() == [0.0, 0.0, 0.0]


def test_auc_trapezoid():
    assert formulas.auc([1, 1, 1]) == pytest.approx(1)
    assert formulas.auc([1, 0]) == pytest.approx(0.5)
    assert formulas.auc(np.linspace(1, 0, 9)) == pytest.approx(0.5)


class RegionModel(nn.Module):
    """Two-class logits: class 0 grows with the mean (pixel space) brightness of a known region."""

    def __init__(self, region, mean, std):
        super().__init__()
        self.region = region
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        pixels = x * self.std + self.mean
        score = pixels[:, :, self.region[0], self.region[1]].mean((1, 2, 3))
        return torch.stack([8 * score, torch.full_like(score, 4.0)], 1)


def synthetic_setup(n=3, size=32):
    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    region = (slice(4, 14), slice(10, 26))
    model = RegionModel(region, mean, std)
    score = formulas.make_score_fn(model, mean, std, batch_size=5)
    images = torch.rand(n, 3, size, size) * 0.2 + 0.8
    good = torch.zeros(n, size, size)
    good[:, region[0], region[1]] = 1.0
    return score, images, good, torch.zeros(n, dtype=torch.long)


def test_score_fn_matches_softmax_and_map_of_ones_has_no_drop():
    score, images, _, targets = synthetic_setup()
    y = score(images, targets)
    assert torch.all((y > 0) & (y < 1))
    o = score(images * torch.ones(3, 1, 32, 32), targets)
    assert helpers.average_drop(y.numpy(), o.numpy()) == 0


def test_deletion_perfect_ordering_beats_random():
    score, images, good, targets = synthetic_setup()
    gen = torch.Generator().manual_seed(0)
    random_map = torch.rand(good.shape, generator=gen)
    zeros = torch.zeros_like(images)
    curves = {
        name: formulas.deletion_curve(score, images, m, targets, 8, zeros, generator=gen)
        for name, m in {"good": good, "random": random_map, "inverse": 1 - good}.items()
    }
    aucs = {k: formulas.auc(c.numpy()).mean() for k, c in curves.items()}
    assert aucs["good"] < aucs["random"] < aucs["inverse"]
    for c in curves.values():  # same endpoints: the original and the fully deleted image
        assert torch.allclose(c[:, 0], score(images, targets))
        assert torch.allclose(c[:, -1], score(zeros, targets))


def test_insertion_perfect_ordering_beats_random():
    score, images, good, targets = synthetic_setup()
    gen = torch.Generator().manual_seed(1)
    blurred = formulas.blur(images * 0.0 + 0.3)
    ins = {
        name: formulas.auc(
            formulas.insertion_curve(score, images, m, targets, 8, blurred, generator=gen).numpy()
        ).mean()
        for name, m in {"good": good, "random": torch.rand(good.shape, generator=gen)}.items()
    }
    assert ins["good"] > ins["random"]


def test_curve_uses_given_endpoints_and_step_count():
    score, images, good, targets = synthetic_setup()
    ends = (torch.full((3,), 7.0), torch.full((3,), -7.0))
    curve = formulas.deletion_curve(score, images, good, targets, 4, images * 0, ends=ends)
    assert curve.shape == (3, 5)
    assert torch.all(curve[:, 0] == 7) and torch.all(curve[:, -1] == -7)


def test_pixel_ranks_are_a_permutation_in_map_order():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])
    ranks = formulas.pixel_ranks(maps, torch.Generator().manual_seed(0))
    assert ranks[0, 1] == 0 and ranks[0, 0] == 3
    assert sorted(ranks[0].tolist()) == [0, 1, 2, 3]
