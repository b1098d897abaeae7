"""SS-CAM and IS-CAM weights against torchcam 0.5.0 (test-only dependency, requirements.txt) on a
tiny classifier where the two codebases' masks coincide."""

import torch
from test_cam_family import close
from torch import nn
from torchcam.methods import ISCAM, SSCAM

from flowercam.cam import noise


class Toy(nn.Module):
    """A tiny classifier whose layer "act" has the input's size (Score-CAM's masks need no
    upsampling there, where our masks and torchcam's coincide)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def torchcam_weights(cls, model, x, targets, **kwargs):
    with cls(model, "act", batch_size=5, input_shape=tuple(x.shape[1:]), **kwargs) as cam:
        with torch.no_grad():
            model(x)
            acts = cam.hook_a[0].clone()
            return cam._get_weights(targets), acts


def test_sscam_weights_equal_torchcams_for_the_same_noise():
    model, x = Toy(), torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)  # torchcam draws from the global generator, one [1,K,H,W] per sample
    (theirs,), acts = torchcam_weights(SSCAM, model, x, [2], num_samples=3, std=0.5)
    opts = {"ss_samples": 3, "ss_std": 0.5, "noise_seed": 7, "scorecam_batch": 3}
    got = noise.sscam_weights(model, x, acts, torch.tensor([2]), opts)
    close(got, theirs)
    assert not torch.allclose(got, noise.sscam_weights(model, x, acts, torch.tensor([2]),
                                                       {**opts, "noise_seed": 8}))


def test_iscam_weights_equal_torchcams():
    model, x = Toy(), torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    (theirs,), acts = torchcam_weights(ISCAM, model, x, [0, 1, 2], num_samples=4)
    got = noise.iscam_weights(model, x, acts, torch.tensor([0, 1, 2]),
                              {"is_samples": 4, "scorecam_batch": 5})
    close(got, theirs)
    assert noise.iscam_coefficients(4) == [0.25, 0.75, 1.5, 2.5]
