"""Tests for heads.py: frozen backbone, CAM / ReCAM heads, weight files, checkpoints (tiny)."""

import hashlib
import os

import pytest
import torch
from training_data import run_cli

import models as models_cli
from flowercam import core
from flowercam.backbones import registry, vgg16
from flowercam.model import checkpoints, heads, normalization, vgg

C = 17  # Flower-17


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return vgg16.VGG16()


@pytest.fixture(scope="module")
def features_file(tmp_path_factory, backbone):
    path = tmp_path_factory.mktemp("w") / "features.pth"
    torch.save(backbone.features.state_dict(), path)
    return path


def images(n=2, size=64, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def settings(model_type="CAM", normalize_by=None):
    return heads.HeadSettings(model_type, C, tuple(f"c{i}" for i in range(C)), 64,
                              normalize_by=normalize_by, backbone_id=vgg.RANDOM_ID)


def test_backbone_frozen_and_eval_under_train(backbone):
    model = heads.Classifier(backbone, heads.CAMHead(C))
    model.train()
    assert not backbone.training and model.head.training
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone(images()).shape == (2, *vgg.FEATURE_SHAPE)


def test_training_step_changes_head_not_backbone(backbone):
    torch.manual_seed(0)
    model = heads.Classifier(backbone, heads.ReCAMHead(C, "sigmoid")).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(images(4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert any(not torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())


def test_forward_with_matches_forward_and_requires_grad(backbone):
    x = images()
    with torch.no_grad():
        feats, acts = backbone.forward_with(x, ["stage5", "stage3", "stage4"])
    assert torch.allclose(feats, backbone(x))
    assert acts["stage3"].shape == (2, 256, 16, 16) and acts["stage4"].shape == (2, 512, 8, 8)
    assert acts["stage5"].shape == (2, 512, 4, 4)
    assert all(a.requires_grad for a in acts.values())
    with pytest.raises(core.UserError):
        backbone.forward_with(x, ["stage9"])


def test_the_backbone_runs_channels_last_on_the_cpu_with_the_same_values(backbone):
    x = images()
    laid = vgg.channels_last(x)
    assert laid.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(
        memory_format=torch.channels_last)  # the caller's tensor is not changed
    assert torch.equal(laid, x)
    with torch.no_grad():
        nchw = backbone.pool(backbone.features(x))  # the pool5 cut: all of .features + pool
        assert torch.allclose(backbone(x), nchw, rtol=1e-4, atol=1e-5 * nchw.abs().max())


@pytest.mark.parametrize("variant", ["plain", "prefixed", "full", "wrapped"])
def test_load_backbone_file_variants(tmp_path, backbone, variant):
    sd = backbone.features.state_dict()
    if variant != "plain":
        sd = {f"features.{k}": v for k, v in sd.items()}
    if variant == "full":
        sd["classifier.0.weight"] = torch.zeros(2, 2)
    if variant == "wrapped":
        sd = {"state_dict": sd}
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    loaded = vgg16.load(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert loaded.backbone_id == f"vgg16-file-{digest}"
    x = images()
    assert torch.equal(loaded(x), backbone(x))


def test_backbone_weights_env(monkeypatch, features_file):
    monkeypatch.setenv("BACKBONE_WEIGHTS", str(features_file))
    assert vgg.resolve_backbone_weights(None) == str(features_file)
    assert vgg.resolve_backbone_weights("x.pth") == "x.pth"
    assert vgg16.load().backbone_id.startswith("vgg16-file-")


def test_load_backbone_bad_files(tmp_path, backbone):
    with pytest.raises(core.UserError, match="not found"):
        vgg16.load(str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(core.UserError, match="cannot read"):
        vgg16.load(str(tmp_path / "junk.pth"))
    sd = dict(backbone.features.state_dict())
    sd.pop("28.bias")
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(core.UserError, match="do not match"):
        vgg16.load(str(tmp_path / "short.pth"))
    sd["28.bias"] = torch.zeros(3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(core.UserError, match="do not match"):
        vgg16.load(str(tmp_path / "shape.pth"))


def test_cam_head_mean_of_cam_is_logit(backbone):
    torch.manual_seed(0)
    head = heads.CAMHead(C)
    feats = backbone(images(3))
    cams = head.cams(head.class_maps(feats))
    assert cams.shape == (3, C, 7, 7)
    assert torch.allclose(cams.mean((2, 3)), head(feats), atol=1e-5)


@pytest.mark.parametrize("how", normalization.NORMALIZERS)
def test_recam_head_matches_definition(backbone, how):
    torch.manual_seed(0)
    head = heads.ReCAMHead(C, how)
    feats = backbone(images(3))
    maps = torch.relu(head.conv(feats))
    pred = head.fc(maps.mean((2, 3))).argmax(1)
    for i in range(3):
        cam = (head.fc.weight[pred[i]][:, None, None] * maps[i]).sum(0)
        mask = normalization.normalize(cam[None], how)[0]
        logits = head.fc((maps[i] * mask).mean((1, 2)))
        assert torch.allclose(head(feats[i : i + 1])[0], logits, atol=1e-5)
    with pytest.raises(core.UserError):
        heads.ReCAMHead(C, "softmax")


def test_normalize_constant_and_untouched():
    maps = torch.stack([torch.full((5, 5), 3.0), torch.zeros(5, 5), torch.arange(25.0).view(5, 5)])
    copy = maps.clone()
    for how in normalization.NORMALIZERS:
        out = normalization.normalize(maps, how)
        assert torch.isfinite(out).all() and out[:2].abs().sum() == 0
        assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(maps, copy)
    assert normalization.normalize(maps, "minmax")[2].max() == 1


@pytest.mark.parametrize("kind", ["CAM", "ReCAM"])
def test_checkpoint_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    s = settings(kind, "relu" if kind == "ReCAM" else None)
    head = heads.build_head(s)
    path = tmp_path / "sub" / "epoch_1.pth"
    checkpoints.save_checkpoint(path, head, s, epoch=1, losses=[0.5])
    assert 30_000 < os.path.getsize(path) < 60_000  # ~37 KB for 17 classes
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "flowercam-head" and raw["epoch"] == 1
    loaded, s2, ckpt = checkpoints.load_checkpoint(path)
    assert s2 == s and type(loaded) is type(head) and ckpt["losses"] == [0.5]
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in head.state_dict().items())
    assert [p.name for p in path.parent.iterdir()] == ["epoch_1.pth"]  # no tmp left behind


def test_checkpoint_errors(tmp_path):
    with pytest.raises(core.UserError, match="not found"):
        checkpoints.load_checkpoint(tmp_path / "missing.pth")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(core.UserError, match="not a flowercam"):
        checkpoints.load_checkpoint(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(core.UserError, match="cannot read"):
        checkpoints.load_checkpoint(tmp_path / "junk.pth")
    s = settings()
    checkpoints.save_checkpoint(tmp_path / "c.pth", heads.CAMHead(5), s)  # 5 classes, settings: 17
    with pytest.raises(core.UserError, match="do not fit"):
        checkpoints.load_checkpoint(tmp_path / "c.pth")
    for bad in ({**s.to_dict(), "model_type": "X"}, {**s.to_dict(), "num_classes": 0}):
        with pytest.raises(core.UserError):
            heads.HeadSettings.from_dict(bad)


def test_load_model(tmp_path, backbone, features_file):
    s = settings("ReCAM", "minmax")
    torch.manual_seed(0)
    head = heads.build_head(s)
    checkpoints.save_checkpoint(tmp_path / "m.pth", head, s)
    with pytest.warns(UserWarning, match="trained on backbone"):
        model, s2 = registry.load_model(tmp_path / "m.pth", backbone_weights=str(features_file))
    assert s2 == s and not model.training
    x = images()
    with torch.no_grad():
        assert torch.allclose(model(x), head(backbone(x)))


def test_run_main_user_error(capsys):
    import argparse

    def main(args):
        raise core.UserError("thing is wrong: fix it")

    with pytest.raises(SystemExit) as exc:
        core.run_main(main, argparse.ArgumentParser(), [])
    assert exc.value.code == 2 and capsys.readouterr().err == "error: thing is wrong: fix it\n"


def test_models_command_shows_a_head_and_a_checkpoint(tmp_path, capsys):
    """models.py: the head built from -m/-n, or the one a checkpoint rebuilds."""
    code, _ = run_cli(models_cli, ["-m", "ReCAM", "-n", "sigmoid", "--num-classes", "5"])
    out = capsys.readouterr().out
    assert code is None and "conv.weight: (5, 512, 1, 1)" in out
    assert "trainable parameters: 2590" in out  # 512*5 + 5 + 5*5
    head = heads.build_head(heads.HeadSettings("CAM", 3))
    checkpoints.save_checkpoint(tmp_path / "c.pth", head, heads.HeadSettings("CAM", 3))
    code, _ = run_cli(models_cli, ["--checkpoint", str(tmp_path / "c.pth")])
    assert code is None and "fc.weight: (3, 3)" in capsys.readouterr().out
    code, _ = run_cli(models_cli, ["--checkpoint", str(tmp_path / "nope.pth")])
    assert code == 2 and "nope.pth not found" in capsys.readouterr().err
