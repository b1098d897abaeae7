"""ReCAM as published (Chen et al. 2022) on the class maps: loss, final map, checkpoints (tiny)."""

import math

import cam_reference
import pytest
import torch

from flowercam import core
from flowercam.cache import features
from flowercam.cam import compute
from flowercam.model import checkpoints, heads, vgg
from flowercam.train import training

C, K, H = 4, 6, 5  # classes, feature channels, map size: small enough to compute by hand


def head_and_feats(lam=0.3, batch=3, seed=0):
    torch.manual_seed(seed)
    head = heads.PublishedReCAMHead(C, lam, in_channels=K)
    feats = torch.randn(batch, K, H, H, generator=torch.Generator().manual_seed(seed + 1))
    return head, feats


def by_hand(head, feats, labels):
    """Per image, with plain loops over classes and channels: -> (loss, logits)."""
    conv_w, conv_b = head.conv.weight[:, :, 0, 0], head.conv.bias
    w, w_sce, lam = head.fc.weight, head.sce.weight, head.recam_lambda
    total, all_logits = 0.0, []
    for x, y in zip(feats, labels.tolist(), strict=True):
        maps = [torch.relu(sum(conv_w[c, k] * x[k] for k in range(K)) + conv_b[c])
                for c in range(C)]
        pooled = torch.stack([m.mean() for m in maps])
        logits = torch.stack([sum(w[j, c] * pooled[c] for c in range(C)) for j in range(C)])
        cam = torch.relu(sum(w[y, c] * maps[c] for c in range(C)))
        cam = cam / (cam.max() + 1e-5)
        f_y = torch.stack([(cam * maps[c]).mean() for c in range(C)])
        scores = torch.stack([sum(w_sce[j, c] * f_y[c] for c in range(C)) for j in range(C)])
        ce_cls = torch.logsumexp(logits, 0) - logits[y]
        ce_sce = torch.logsumexp(scores, 0) - scores[y]
        total = total + ce_cls + lam * ce_sce
        all_logits.append(logits)
    return total / len(labels), torch.stack(all_logits)


def test_loss_equals_hand_computation():
    head, feats = head_and_feats(lam=0.3)
    labels = torch.tensor([2, 0, 3])
    loss, logits = head.loss(feats, labels)
    want_loss, want_logits = by_hand(head, feats, labels)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert torch.allclose(logits, want_logits, atol=1e-6)
    assert torch.allclose(logits, head(feats))  # top-k uses the cross-entropy classifier W
    # the L_sce term is really there and weighted by lambda
    ce = torch.nn.functional.cross_entropy(logits, labels)
    head.recam_lambda = 0.6
    assert (head.loss(feats, labels)[0] - ce).item() == pytest.approx(2 * (loss - ce).item(),
                                                                      rel=1e-5)


def test_mask_is_not_detached():
    """L_sce trains W through the re-activation mask, as the official code (no detach)."""
    head, feats = head_and_feats()
    labels = torch.tensor([1, 2, 0])
    f_y = head.reactivated(head.class_maps(feats), labels)
    sce = torch.nn.functional.cross_entropy(head.sce(f_y), labels)
    (grad,) = torch.autograd.grad(sce, head.fc.weight)
    assert grad.abs().sum() > 0


def test_map_is_one_cam_with_product_weights():
    head, feats = head_and_feats()
    maps = head.class_maps(feats)
    got = head.cams(maps)
    w = head.sce.weight * head.fc.weight
    for c in range(C):
        want = torch.relu(sum(w[c, k] * maps[:, k] for k in range(C)))
        assert torch.allclose(got[:, c], want, atol=1e-6)
    assert got.min() >= 0 and got.shape == (3, C, H, H)


def test_all_ones_sce_gives_relu_cam():
    head, feats = head_and_feats()
    with torch.no_grad():
        head.sce.weight.fill_(1.0)
    plain = heads.CAMHead(C, in_channels=K)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if k != "sce.weight"})
    maps = head.class_maps(feats)
    assert torch.allclose(head.cams(maps), torch.relu(plain.cams(maps)), atol=1e-6)


def test_cam_code_gets_the_published_map():
    """The hook for flowercam.cams: head.cams() on forward_maps' class maps is the final map."""
    torch.manual_seed(0)
    head = heads.PublishedReCAMHead(C)
    feats = torch.randn(2, vgg.FEATURE_SHAPE[0], 7, 7)
    rew, maps, logits = head.forward_maps(feats)
    assert rew is maps and torch.equal(logits, head(feats))
    assert torch.equal(cam_reference.class_cams(head, feats, "CAM"), head.cams(maps))


def test_batch_independence():
    head, feats = head_and_feats(batch=4)
    labels = torch.tensor([0, 1, 2, 3])
    losses, _ = head.loss(feats, labels, reduction="none")
    maps = head.cams(head.class_maps(feats))
    for i in range(4):
        one, _ = head.loss(feats[i : i + 1], labels[i : i + 1], reduction="none")
        assert torch.allclose(losses[i], one[0], atol=1e-6)
        assert torch.allclose(maps[i], head.cams(head.class_maps(feats[i : i + 1]))[0], atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 2.5, -1.0])
def test_no_nan_on_constant_inputs(value):
    head, _ = head_and_feats()
    feats = torch.full((2, K, H, H), value)
    loss, logits = head.loss(feats, torch.tensor([0, 3]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
    assert torch.isfinite(head.cams(head.class_maps(feats))).all()


def test_evaluate_and_train_use_the_same_loss():
    head, feats = head_and_feats(batch=5)
    labels = torch.tensor([0, 1, 2, 3, 1])
    scores = training.evaluate(head, features.CachedSource(feats, labels), batch_size=2)
    with torch.no_grad():
        assert scores["loss"] == pytest.approx(head.loss(feats, labels)[0].item(), rel=1e-5)


def settings(lam=0.1):
    return training.make_settings("ReCAM-published", "sigmoid", [f"c{i}" for i in range(17)], 64,
                                  vgg.RANDOM_ID, lam)


def test_checkpoint_round_trip(tmp_path):
    s = settings(0.1)
    assert s.recam_lambda == 0.1 and s.normalize_by is None
    assert training.make_settings("CAM", None, ["a"], 64, "x").recam_lambda is None
    torch.manual_seed(0)
    head = heads.build_head(s)
    path = tmp_path / "epoch_1.pth"
    checkpoints.save_checkpoint(path, head, s, epoch=1)
    raw = torch.load(path, weights_only=True)
    assert set(raw["state_dict"]) == {"conv.weight", "conv.bias", "fc.weight", "sce.weight"}
    loaded, s2, _ = checkpoints.load_checkpoint(path)
    assert type(loaded) is heads.PublishedReCAMHead and s2 == s and loaded.recam_lambda == 0.1
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in head.state_dict().items())
    older = heads.HeadSettings.from_dict({**s.to_dict(), "recam_lambda": None})
    assert heads.build_head(older).recam_lambda == heads.RECAM_LAMBDA


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "1"])
def test_bad_lambda_is_one_line(bad):
    with pytest.raises(core.UserError, match="recam_lambda"):
        settings(bad)


def test_the_published_method_draws_the_published_map():
    """compute_maps_from_features(head, feats, "ReCAM-published") = relu((W_sce*W)_t . M)."""
    torch.manual_seed(0)
    head = heads.build_head(heads.HeadSettings("ReCAM-published", 4, recam_lambda=1.0)).eval()
    feats = torch.randn(3, 512, 5, 5)
    res = compute.compute_maps_from_features(head, feats, "ReCAM-published", targets=[0, 2, 3],
                                          size=(5, 5))
    with torch.no_grad():
        maps = head.class_maps(feats)
        expected = head.cams(maps)[torch.arange(3), torch.tensor([0, 2, 3])]
    assert torch.allclose(res.raw_native, expected, atol=1e-6)
    with pytest.raises(core.UserError, match="needs a ReCAM-published head"):
        compute.compute_maps_from_features(heads.build_head(heads.HeadSettings("CAM", 4)), feats,
                                        "ReCAM-published")
