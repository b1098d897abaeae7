"""inference.py end to end on a tiny synthetic setup: 64 px images, random-init VGG16 backbone."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inference as inference_cli
from flowercam import core
from flowercam.backbones import registry, vgg16
from flowercam.cam import methods
from flowercam.model import checkpoints, heads
from flowercam.report import figures

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
CLASSES = ["Daffodil", "Snowdrop", "LilyValley"]
N_VALID = 20


def make_data_dir(data):
    """The contract's data layout (index, labels, augment.json, splits, auged copy 0)."""
    ids = [f"image_{n:04d}" for n in range(1, N_VALID + 1)]
    images = [{"id": i, "label": k % 3, "source": f"jpg/{i}.jpg"} for k, i in enumerate(ids)]
    (data / "auged").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for im in images:
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "auged" / f"{im['id']}_0.jpg")
    (data / "index.json").write_text(json.dumps(
        {"dataset": "synthetic", "source": "test", "classes": CLASSES, "images": images}))
    (data / "labels.txt").write_text("".join(c + "\n" for c in CLASSES))
    (data / "augment.json").write_text(json.dumps(
        {"copies": 1, "size": SIZE, "seed": 0, "complete": True}))
    (data / "splits.json").write_text(json.dumps({"source": "generated", "seed": 0, "splits": {
        "1": {"train": [], "valid": ids, "test": []}}}))


def make_checkpoint(path, model_type, normalize_by, backbone_id):
    settings = heads.HeadSettings.from_dict({"model_type": model_type, "normalize_by": normalize_by,
                "num_classes": len(CLASSES), "class_names": CLASSES, "input_size": SIZE,
                "backbone": backbone_id})
    torch.manual_seed(1)
    checkpoints.save_checkpoint(path, heads.build_head(settings), settings, epoch=1)
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    make_data_dir(root / "data")
    torch.manual_seed(0)
    weights = root / "backbone.pth"
    torch.save(vgg16.VGG16().features.state_dict(), weights)
    backbone_id = vgg16.load(str(weights)).backbone_id
    cam = make_checkpoint(root / "model" / "CAM_run" / "best.pth", "CAM", None, backbone_id)
    recam = make_checkpoint(root / "model" / "ReCAM_run" / "best.pth", "ReCAM", "minmax",
                            backbone_id)
    (root / "grid_runs.json").write_text(json.dumps({
        "ReCAM-minmax-lr0.0001": {"run_dir": str(Path(recam).parent), "best_checkpoint": recam}}))
    photos = root / "photos"
    photos.mkdir()
    Image.new("RGB", (90, 50), (200, 30, 30)).save(photos / "wide.png")
    Image.new("L", (40, 70), 120).save(photos / "grey.jpg")
    Image.new("RGBA", (70, 70), (0, 90, 200, 128)).save(photos / "alpha.png")
    (root / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (root / "garbage.pth").write_bytes(b"not a checkpoint")
    return {"root": root, "data": str(root / "data"), "weights": str(weights), "cam": cam,
            "recam": recam, "photos": photos, "grid_runs": str(root / "grid_runs.json")}


def run(env, out, *argv):
    """inference.py in-process with the test's data dir, output dir and backbone weights."""
    flags = ["--data-dir", env["data"], "--output-dir", str(out),
             "--backbone-weights", env["weights"]]
    return core.run_main(inference_cli.main, inference_cli.get_args_parser(), list(argv) + flags)


def test_report_outputs_have_the_expected_pixel_sizes(env, tmp_path):
    maps = tmp_path / "maps.npz"
    run(env, tmp_path, "-m", env["cam"], "-t", "CAM", "-s", "3", "--save-maps", str(maps))
    (grid,) = tmp_path.glob("*_grid.png")
    assert grid.name.startswith("CAM_run_CAM_") and "seed3" in grid.name
    stem = str(grid)[: -len("_grid.png")]
    frame = max(2, SIZE // 32)
    assert Image.open(grid).width == 4 * (SIZE + 2 * frame)
    assert Image.open(grid).height > 3 * SIZE
    assert Image.open(stem + "_compact.png").size == (4 * SIZE, 3 * SIZE)
    assert Image.open(stem + "_strip.png").size == (3 * SIZE, 12 * SIZE)
    with np.load(maps) as npz:
        assert list(npz["paths"]) == [p for _, p, _ in figures.select_items(env["data"], 3)]


def test_same_seed_picks_the_same_images(env):
    first = figures.select_items(env["data"], 0)
    assert len(first) == 12 and len({item[0] for item in first}) == 12
    assert figures.select_items(env["data"], 0) == first
    assert figures.select_items(env["data"], 1) != first


def test_npz_holds_raw_maps_logits_targets_and_settings(env, tmp_path):
    maps = tmp_path / "maps.npz"
    run(env, tmp_path, "-m", env["cam"], "-t", "CAM", "--save-maps", str(maps))
    with np.load(maps) as npz:
        assert {"paths", "raw", "raw_native", "maps", "logits", "targets", "settings"} <= set(npz)
        assert npz["raw"].shape == npz["maps"].shape == (12, SIZE, SIZE)
        assert npz["logits"].shape == (12, len(CLASSES))
        assert (npz["targets"] == npz["logits"].argmax(1)).all()  # predicted class
        target_logits = npz["logits"][np.arange(12), npz["targets"]]
        # CAM: the map at its own 7x7 resolution averages to the target's logit
        np.testing.assert_allclose(npz["raw_native"].mean((1, 2)), target_logits, rtol=1e-4,
                                   atol=1e-5)
        assert 0.0 <= npz["maps"].min() and npz["maps"].max() <= 1.0
        settings = json.loads(npz["settings"].item())
    assert settings["method"] == "CAM" and settings["model_settings"]["model_type"] == "CAM"


def test_own_images_give_native_size_overlays_and_binary_masks(env, tmp_path):
    masks = tmp_path / "masks"
    run(env, tmp_path / "out", "-m", env["cam"], "-t", "LayerCAM", "--image", str(env["photos"]),
        "--pseudo-masks-dir", str(masks), "--mask-threshold", "0.4", "--colormap", "jet")
    for photo in env["photos"].iterdir():
        size = Image.open(photo).size
        mask = Image.open(masks / f"{photo.stem}.png")
        assert mask.mode == "L" and mask.size == size
        assert set(np.unique(np.array(mask))) <= {0, 255}
        (overlay,) = (tmp_path / "out").glob(f"CAM_run_LayerCAM_*_{photo.stem}.png")
        assert Image.open(overlay).size == size


def test_refined_pseudo_masks_are_binary_at_image_size(env, tmp_path):
    plain, crf = tmp_path / "plain", tmp_path / "crf"
    for folder, how in ((plain, "none"), (crf, "crf")):
        run(env, tmp_path / "out", "-m", env["cam"], "-t", "CAM", "--image", str(env["photos"]),
            "--pseudo-masks-dir", str(folder), "--refine", how)
    photos = sorted(env["photos"].iterdir())
    refined = [np.array(Image.open(crf / f"{p.stem}.png")) for p in photos]
    assert all(m.shape == Image.open(p).size[::-1] and set(np.unique(m)) <= {0, 255}
               for m, p in zip(refined, photos, strict=True))
    assert any((m != np.array(Image.open(plain / f"{p.stem}.png"))).any()
               for m, p in zip(refined, photos, strict=True))


def test_comparison_figure_has_a_column_per_pair(env, tmp_path):
    run(env, tmp_path, "--grid-runs", env["grid_runs"], "--compare", f"{env['cam']}:CAM",
        "ReCAM_minmax_lr0.0001:ReCAM", f"{env['cam']}:LayerCAM:relu", "-s", "0")
    figure = Image.open(tmp_path / "comparison_seed0.png")
    gap = max(2, SIZE // 64)
    assert figure.width == 4 * SIZE + 3 * gap and figure.height > 12 * SIZE + 11 * gap


def test_refined_mask_outline_is_drawn_on_the_comparison_maps(env, tmp_path):
    pairs = ["--compare", f"{env['cam']}:CAM", f"{env['cam']}:LayerCAM"]
    run(env, tmp_path / "plain", *pairs)
    run(env, tmp_path / "crf", *pairs, "--refine", "crf")
    plain = np.array(Image.open(tmp_path / "plain" / "comparison_seed0.png"))
    lined = np.array(Image.open(tmp_path / "crf" / "comparison_seed0.png"))
    gap = max(2, SIZE // 64)
    column = [lined[:, c * (SIZE + gap):c * (SIZE + gap) + SIZE] for c in range(3)]
    cyan = [((t[..., 0] == 0) & (t[..., 1] == 255) & (t[..., 2] == 255)).any() for t in column]
    assert cyan == [False, True, True]  # the maps' columns, not the images'
    assert (plain[:, :SIZE] == lined[:, :SIZE]).all()


def test_compare_pairs_parse_from_the_right():
    assert figures.parse_pair(r"C:\runs\best.pth:CAM") == (r"C:\runs\best.pth", "CAM", None)
    assert figures.parse_pair("a/b.pth:ReCAM:sigmoid") == ("a/b.pth", "ReCAM", "sigmoid")
    assert figures.parse_pair("x:y.pth:GradCAM++") == ("x:y.pth", "GradCAM++", None)
    with pytest.raises(core.UserError):
        figures.parse_pair("best.pth")


BAD_INPUTS = {
    "missing image": lambda e: ["-m", e["cam"], "--image", str(e["root"] / "nope.jpg")],
    "corrupt image": lambda e: ["-m", e["cam"], "--image", str(e["root"] / "corrupt.jpg")],
    "ReCAM on CAM head": lambda e: ["-m", e["cam"], "-t", "ReCAM"],
    "bad checkpoint": lambda e: ["-m", str(e["root"] / "garbage.pth")],
    "unknown option": lambda e: ["-m", e["cam"], "--no-such-option"],
    "bad compare pair": lambda e: ["--compare", e["cam"]],
    "alpha above 1": lambda e: ["-m", e["cam"], "--alpha", "1.5"],
    "mask threshold nan": lambda e: ["-m", e["cam"], "--mask-threshold", "nan"],
    "refine own images without masks": lambda e: ["-m", e["cam"], "--image", str(e["photos"]),
                                                  "--refine", "crf"],
    "unknown method": lambda e: ["-m", e["cam"], "-t", "NoSuchCAM"],
    "checkpoint and compare": lambda e: ["-m", e["cam"], "--compare", f"{e['cam']}:CAM"],
}


def test_method_choices_and_long_flags_are_the_reports():
    parser = inference_cli.get_args_parser()
    action = {a.dest: a for a in parser._actions}
    assert list(action["method"].choices) == list(methods.METHODS)
    args = parser.parse_args(["-m", "a.pth", "-t", "GradCAM", "-n", "relu", "-s", "4"])
    assert (args.checkpoint, args.method, args.normalize_by, args.seed) == (
        "a.pth", "GradCAM", "relu", 4)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(env, tmp_path, capsys, case):
    with pytest.raises(SystemExit) as exit_info:
        run(env, tmp_path / "out", *BAD_INPUTS[case](env))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bad_input_in_a_subprocess_has_no_traceback(env, tmp_path):
    missing = str(env["root"] / "missing.jpg")
    cmd = [sys.executable, "inference.py", "-m", env["cam"], "--image", missing, str(env["photos"]),
           "--output-dir", str(tmp_path), "--backbone-weights", env["weights"]]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot read 1 image(s): {missing} (missing): fix or remove them"]


def test_recam_maps_use_the_head_normaliser_unless_n_overrides(env, tmp_path):
    run(env, tmp_path, "-m", env["recam"], "--save-maps", str(tmp_path / "a.npz"))
    run(env, tmp_path, "-m", env["recam"], "-n", "relu", "--save-maps", str(tmp_path / "b.npz"))
    for name, norm in (("a.npz", "minmax"), ("b.npz", "relu")):
        with np.load(tmp_path / name) as npz:
            info = json.loads(npz["settings"].item())
        assert info["method"] == "ReCAM" and info["normalize_by"] == norm
        assert (tmp_path / f"ReCAM_run_ReCAM_{norm}_seed0_strip.png").is_file()


def test_scales_and_flip_are_recorded_and_named(env, tmp_path):
    run(env, tmp_path, "-m", env["cam"], "-t", "GradCAM", "--scales", "1", "2", "--flip",
        "--save-maps", str(tmp_path / "agg.npz"))
    run(env, tmp_path, "-m", env["cam"], "-t", "GradCAM", "--save-maps", str(tmp_path / "p.npz"))
    with np.load(tmp_path / "agg.npz") as agg, np.load(tmp_path / "p.npz") as plain:
        options = json.loads(agg["settings"].item())["options"]
        assert options["scales"] == [1.0, 2.0] and options["flip"] is True
        assert "scales" not in json.loads(plain["settings"].item())["options"]
        assert agg["maps"].shape == plain["maps"].shape and not np.allclose(agg["maps"],
                                                                            plain["maps"])
    assert (tmp_path / "CAM_run_GradCAM_minmax_x1-2_flip_seed0_strip.png").is_file()


def test_outline_masks_are_drawn_on_the_strip_maps_only(env, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for _, path, _ in figures.select_items(env["data"], 0)[::2]:  # every other image has one
        pixels = np.zeros((256, 256), np.uint8)  # as the Flower-17 masks: 256 px, 1 = flower
        pixels[64:192, 64:192], pixels[:8] = 1, 5
        Image.fromarray(pixels).save(masks / f"{Path(path).stem.rsplit('_', 1)[0]}.png")
    run(env, tmp_path / "plain", "-m", env["cam"])
    with pytest.raises(SystemExit):  # values 0, 1, 5 with nothing saying which is the flower
        run(env, tmp_path / "lined", "-m", env["cam"], "--outline-masks", str(masks))
    run(env, tmp_path / "lined", "-m", env["cam"], "--outline-masks", str(masks),
        "--outline-value", "1")
    name = "CAM_run_CAM_minmax_seed0_strip.png"
    plain = np.array(Image.open(tmp_path / "plain" / name))
    lined = np.array(Image.open(tmp_path / "lined" / name))
    changed = (plain != lined).any(-1)
    rows = changed.reshape(12, SIZE, 3, SIZE).any((1, 3))  # [image, column]
    assert rows[::2, 1:].all() and not rows[1::2].any() and not rows[:, 0].any()
    drawn = (lined[:SIZE, SIZE : 2 * SIZE] == 255).all(-1)  # white on image 0's red map tile
    assert drawn[16, 16:48].all() and drawn.sum() == 4 * 32 - 4  # the square's ring, not the 5s
    with pytest.raises(SystemExit):
        run(env, tmp_path / "none", "-m", env["cam"], "--outline-masks", str(tmp_path / "no"))


def test_refined_mask_outline_is_drawn_on_the_strip_overlays(env, tmp_path):
    run(env, tmp_path / "plain", "-m", env["cam"])
    run(env, tmp_path / "crf", "-m", env["cam"], "--refine", "crf", "--pseudo-masks-dir",
        str(tmp_path / "masks"))
    name = "CAM_run_CAM_minmax_seed0_strip.png"
    plain = np.array(Image.open(tmp_path / "plain" / name))
    lined = np.array(Image.open(tmp_path / "crf" / name))
    changed = (plain != lined).any(-1).reshape(12, SIZE, 3, SIZE).any((1, 3))  # [image, column]
    assert changed[:, 2].any() and not changed[:, :2].any()  # the overlays only
    cyan = (lined[..., 0] == 0) & (lined[..., 1] == 255) & (lined[..., 2] == 255)
    assert cyan.any()


@pytest.mark.parametrize("which", ["cam", "recam"])
def test_feature_reuse_in_compare_gives_the_same_maps(env, which):
    model, settings = registry.load_model(env[which], env["weights"])
    torch.manual_seed(0)
    images = torch.randn(3, 3, SIZE, SIZE)
    method = settings.model_type
    direct = figures.explain(model, settings, images, method, None, "cpu")
    cache = {}
    for _ in range(2):  # the second call takes the cached features
        reused = figures.explain(model, settings, images, method, None, "cpu", cache)
        torch.testing.assert_close(reused.maps, direct.maps, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(reused.logits, direct.logits)
    assert cache["feats"].shape == (3, 512, 7, 7)


# SS-CAM and IS-CAM (17 x 35 and 17 x 10 masked forwards per image on their defaults) run the
# same driver as ScoreCAM; their maps are tested in test_cam_family.py
FAMILY = [m for m in methods.METHODS if m not in methods.REPORT_METHODS + ("SSCAM", "ISCAM")]


@pytest.mark.parametrize("method", FAMILY)
def test_the_cam_family_draws_maps(env, tmp_path, method):
    run(env, tmp_path / "out", "-m", env["cam"], "-t", method, "--image",
        str(env["photos"] / "wide.png"))
    (overlay,) = (tmp_path / "out").glob(f"CAM_run_{method}_*_wide.png")
    assert Image.open(overlay).size == (90, 50)


def test_a_long_image_name_gives_its_overlay_and_mask(env, tmp_path):
    """Was: a 250-character image name failed with "choose a writable output folder" (the
    overlay's name, run + method + the image's, passed the file system's 255 bytes)."""
    photos = tmp_path / "long"
    photos.mkdir()
    stem = "f" * 246
    Image.new("RGB", (40, 40), (10, 200, 10)).save(photos / f"{stem}.png")  # a 250-byte name
    run(env, tmp_path / "out", "-m", env["cam"], "-t", "CAM", "--image", str(photos),
        "--pseudo-masks-dir", str(tmp_path / "masks"))
    (overlay,) = (tmp_path / "out").glob("CAM_run_CAM_*.png")
    assert len(overlay.name) == 255 and overlay.name.startswith("CAM_run_CAM_minmax_fff")
    assert Image.open(overlay).size == (40, 40)
    assert (tmp_path / "masks" / f"{stem}.png").is_file()  # masks keep the image's stem


def test_a_missing_model_says_a_run_folder_works_too(env, tmp_path, capsys):
    """Was: "checkpoint model/RUN not found: pass a .pth written by main.py"."""
    with pytest.raises(SystemExit) as stop:
        run(env, tmp_path / "out", "-m", str(env["root"] / "model" / "NO_SUCH_RUN"), "-t", "CAM")
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err
    assert "NO_SUCH_RUN not found: pass a run folder of main.py" in err and ".pth" in err
