"""The maps without a classifier (metrics/maprows.py): seeded noise and the Sobel edge map."""

import metric_helpers as helpers
import numpy as np
import pytest
import torch

from flowercam.data import dataset
from flowercam.metrics import maprows, road
from flowercam.model import vgg


def test_random_map_is_seeded_per_image_id_not_per_batch():
    pixels = torch.rand(3, 3, 16, 16)
    together = maprows.baseline_maps("random", pixels, ["a", "b", "c"], seed=0)
    alone = maprows.baseline_maps("random", pixels[1:2], ["b"], seed=0)
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[1])  # another image, another draw
    other_seed = maprows.baseline_maps("random", pixels[:1], ["a"], seed=1)
    assert not torch.equal(other_seed[0], together[0])
    assert 0 <= together.min() and together.max() < 1 and abs(together.mean() - 0.5) < 0.05


def test_sobel_map_marks_the_edge_of_a_step_and_nothing_on_a_flat_image():
    step = torch.zeros(1, 3, 20, 20)
    step[:, :, :, 10:] = 1.0  # a vertical edge between columns 9 and 10
    edges = maprows.baseline_maps("sobel", step, ["x"])[0].numpy()
    assert edges.max() == pytest.approx(1.0)
    assert set(np.flatnonzero(edges.max(0) > 0.5)) == {9, 10}
    assert np.all(edges[:, :8] == 0) and np.all(edges[:, 12:] == 0)
    flat = maprows.baseline_maps("sobel", torch.full((1, 3, 8, 8), 0.3), ["y"])
    assert torch.all(flat == 0)


def test_random_noise_localizes_like_chance():
    """PxAP of noise is the foreground share (no ranking information)."""
    maps = maprows.baseline_maps("random", torch.rand(20, 3, 32, 32),
                                   [str(i) for i in range(20)]).numpy()
    fg = np.zeros((20, 32, 32), bool)
    fg[:, 8:24, 8:24] = True
    assert helpers.pxap(maps, fg, np.ones_like(fg)) == pytest.approx(25.0, abs=1.5)


def test_center_and_full_keep_their_shapes_and_unknown_names_are_refused():
    pixels = torch.rand(2, 3, 9, 7)
    assert maprows.baseline_maps("center", pixels, ["a", "b"]).shape == (2, 9, 7)
    assert torch.all(maprows.baseline_maps("full", pixels, ["a", "b"]) == 1)
    with pytest.raises(ValueError):
        maprows.baseline_maps("edges", pixels, ["a", "b"])


@pytest.mark.real
def test_real_flower_sobel_and_road_imputation(flowers_jpg):
    """A real Flower-17 image: a sparse edge map in [0, 1], and ROAD's imputation of the half of
    the pixels with the strongest edges keeps the image's colour statistics."""
    image = dataset.load_image(flowers_jpg / "image_0001.jpg", 64)[0]  # [3,64,64] normalised
    mean, std = torch.tensor(vgg.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(vgg.IMAGENET_STD)
    pixels = (image * std.view(3, 1, 1) + mean).clamp(0, 1)[None]
    edges = maprows.baseline_maps("sobel", pixels, ["image_0001"])[0]
    assert edges.max() == pytest.approx(1.0) and 0.02 < edges.mean() < 0.5
    removed = road.removal_masks(edges[None], 0.5, "morf")[0].numpy()
    filled = road.impute(pixels[0].numpy(), removed)
    assert np.abs(filled.mean((1, 2)) - pixels[0].numpy().mean((1, 2))).max() < 0.05
