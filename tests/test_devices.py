"""The same maps on every device: the noise of SS-CAM and Smooth Grad-CAM++ is drawn on the CPU,
and (where a GPU is present) every method of the table gives the CPU's maps on CUDA in float64.

    .venv/bin/pytest tests/test_devices.py -q
"""

import copy
import importlib
import json

import pytest
import torch
from training_data import cheap, images, make_model

from flowercam.backbones import vgg16
from flowercam.cam import compute, methods, noise
from flowercam.model import heads

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_noise_comes_from_a_cpu_generator_in_the_tensors_dtype():
    like = torch.zeros(2, dtype=torch.float64)
    got = noise.seeded_normal(3, (4, 5), 2.0, 7, like)
    gen = torch.Generator().manual_seed(7)
    want = [torch.normal(0.0, 2.0, (4, 5), generator=gen).double() for _ in range(3)]
    assert all(g.dtype == torch.float64 for g in got)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert not torch.equal(got[0], got[1])  # one stream: the draws differ from each other


@CUDA
def test_noise_is_the_same_on_cuda():
    cpu = noise.seeded_normal(2, (3, 8, 8), 0.3, 0, torch.zeros(1))
    gpu = noise.seeded_normal(2, (3, 8, 8), 0.3, 0, torch.zeros(1, device="cuda"))
    assert all(g.is_cuda and torch.equal(g.cpu(), c) for g, c in zip(gpu, cpu, strict=True))


def _models():
    torch.manual_seed(0)
    published = heads.Classifier(vgg16.VGG16(), heads.PublishedReCAMHead(17)).eval()
    return [make_model("CAM"), make_model("ReCAM"), published]


@CUDA
def test_every_method_gives_the_cpus_maps_on_cuda():
    # 96 px: 3x3 class maps. At 32 px (1x1) or 64 px (2x2) FEM's test A > mean + 2 std is a tie
    # (std 0) or cannot hold (a z-score of 2 needs 6+ positions), and rounding decides it.
    x = images(2, 96, dtype=torch.float64)
    for model in _models():
        model = model.double()
        on_gpu = copy.deepcopy(model).cuda()  # moved once per head, not once per method
        for method in [m for m in methods.METHODS if m in methods.supported(model.head.model_type)]:
            cpu = compute.compute_maps(model, x, method, **cheap(method))
            gpu = compute.compute_maps(on_gpu, x.cuda(), method, **cheap(method))
            assert gpu.maps.is_cuda, method
            assert torch.allclose(gpu.maps.cpu(), cpu.maps, atol=1e-6), (method, model.head)
            assert torch.allclose(gpu.raw.cpu(), cpu.raw, rtol=1e-6, atol=1e-9), method


def test_the_devices_benchmark_finds_cpu_maps_equal_to_themselves(tmp_path):
    bench = importlib.import_module("benchmarks.cams")
    out = tmp_path / "devices.json"
    args = bench.get_args_parser().parse_args([
        "--only", "devices", "--random-backbone", "--synthetic", "--num-images", "2",
        "--size", "32", "--methods", "CAM", "SSCAM", "--output", str(out)])
    rows = bench.main(args)["devices"]
    assert [r["method"] for r in rows] == ["CAM", "SSCAM"]
    assert all(r["max_abs_diff"] == 0 and r["device_s_per_image"] > 0 for r in rows)
    assert json.loads(out.read_text())["results"]["devices"][1]["method"] == "SSCAM"
