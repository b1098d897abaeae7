"""Property tests (hypothesis): normalisers, every CAM method and the metric formulas on random
shapes, constant maps, huge and tiny magnitudes: never NaN, always in range, inputs unchanged."""

import functools

import metric_helpers as helpers
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from training_data import cheap

from flowercam.backbones import vgg16
from flowercam.cam import compute, methods
from flowercam.metrics import config, formulas
from flowercam.model import heads, normalization

FAST = settings(max_examples=30, deadline=None)
SCALES = [0.0, 1e-30, 1e-6, 1.0, 1e6, 1e30]  # 0: constant maps


@st.composite
def scaled(draw, shape):
    """float32 array of shape: standard normal noise x a magnitude (0 = constant), + offset."""
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from(SCALES))
    offset = draw(st.sampled_from([0.0, -3.0, 1e20]))
    noise = np.random.default_rng(seed).standard_normal(shape)
    return (noise * scale + offset).astype(np.float32)


@st.composite
def map_batches(draw, max_side=9):
    side = st.integers(1, max_side)
    shape = (draw(st.integers(1, 3)), draw(side), draw(side))
    return draw(scaled(shape))


@FAST
@given(maps=map_batches(), how=st.sampled_from(normalization.NORMALIZERS))
def test_normalize_in_unit_range(maps, how):
    x = torch.from_numpy(maps)
    before = x.clone()
    out = normalization.normalize(x, how)
    assert torch.equal(x, before) and out.shape == x.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    flat = (x.amax((-2, -1)) - x.amin((-2, -1))) <= 1e-6
    assert (out[flat] == 0).all()  # a constant map carries no location


@functools.cache
def tiny_model(model_type):
    """A random VGG16 + head on 3 classes (built once: hypothesis reuses it across examples)."""
    torch.manual_seed(0)
    head = heads.build_head(heads.HeadSettings.from_dict({"model_type": model_type,
                                                        "num_classes": 3}))
    return heads.Classifier(vgg16.VGG16(), head).eval()


def check_result(result, batch, size):
    assert result.maps.shape == result.raw.shape == (batch, *size)
    assert torch.isfinite(result.raw).all() and torch.isfinite(result.maps).all()
    assert result.maps.min() >= 0 and result.maps.max() <= 1


FEATURE_METHODS = sorted(n for n, m in methods.METHODS.items() if m.from_features)


@FAST
@given(data=st.data(), method=st.sampled_from(FEATURE_METHODS),
       how=st.sampled_from(normalization.NORMALIZERS))
def test_class_map_methods_from_features(data, method, how):
    batch, side = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 7))
    feats = torch.from_numpy(data.draw(scaled((batch, 512, side, side)))).abs()  # ReLU output
    head = tiny_model(methods.METHODS[method].needs_head or "CAM").head
    before = feats.clone()
    result = compute.compute_maps_from_features(head, feats, method, size=(16, 16),
                                             normalize_by=how)
    assert torch.equal(feats, before)
    check_result(result, batch, (16, 16))


@settings(max_examples=25, deadline=None)
@given(data=st.data(), method=st.sampled_from(sorted(methods.METHODS)))
def test_every_method_on_images(data, method):
    batch = data.draw(st.integers(1, 2))
    images = torch.from_numpy(data.draw(scaled((batch, 3, 32, 32))))
    images = images.clamp(-1e4, 1e4)  # normalised pixels; beyond this the backbone overflows
    model = tiny_model(methods.METHODS[method].needs_head or "CAM")
    before = images.clone()
    result = compute.compute_maps(model, images, method, **cheap(method))
    assert torch.equal(images, before)
    check_result(result, batch, (32, 32))


@st.composite
def localization_inputs(draw):
    """(maps in [0,1] [N,H,W], fg, valid) with at least one valid foreground pixel per image."""
    maps = np.clip(np.abs(draw(map_batches())), 0, 1).astype(np.float64)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    fg = rng.random(maps.shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    valid = rng.random(maps.shape) < draw(st.sampled_from([0.5, 1.0]))
    fg[:, 0, 0] = valid[:, 0, 0] = True
    return maps, fg & valid, valid


@FAST
@given(inputs=localization_inputs())
def test_localization_metrics_in_range(inputs):
    maps, fg, valid = inputs
    before = [a.copy() for a in inputs]
    point = helpers.pointing_game(maps, fg, valid)
    ap = helpers.pxap(maps, fg, valid)
    iou, tau = helpers.best_iou(maps, fg, valid)
    for value in (point, ap, iou):
        assert np.isfinite(value) and 0 <= value <= 100
    assert tau in config.default_thresholds()
    assert all(np.array_equal(a, b) for a, b in zip(inputs, before, strict=True))


@FAST
@given(y=hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 1)),
       o=hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 1)))
def test_faithfulness_metrics_in_range(y, o):
    n = min(len(y), len(o))
    y, o = y[:n], o[:n]
    before = y.copy(), o.copy()
    drop = helpers.average_drop(y, o)
    increase = helpers.increase_in_confidence(y, o)
    assert np.isfinite(drop) and 0 <= drop <= 100
    assert np.isfinite(increase) and 0 <= increase <= 100
    assert np.array_equal(y, before[0]) and np.array_equal(o, before[1])


@FAST
@given(curves=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 12)),
                         elements=st.floats(0, 1)))
def test_auc_between_curve_extremes(curves):
    before = curves.copy()
    area = formulas.auc(curves)
    assert np.isfinite(area).all()
    assert (area >= curves.min(-1) - 1e-12).all() and (area <= curves.max(-1) + 1e-12).all()
    assert np.array_equal(curves, before)
