"""Score-CAM averaged over perturbed masks: SS-CAM (Wang et al. 2020, noisy masks) and IS-CAM
(Naidu et al. 2020, masks integrated from the baseline), as torchcam 0.5.0 defines them.

    python -c "from flowercam.cam import noise; help(noise.sscam_weights)"
    .venv/bin/pytest tests/test_cam_family.py -q -k "sscam or iscam"

M_k = norm(up(A_k)) as Score-CAM's (flowercam/cam/scorecam.py). SS-CAM:
w = softmax_k(1/N sum_i Y_t(X * (M_k + d_ik))), d_ik ~ N(0, sigma^2) per pixel (torchcam: N = 35,
sigma = 2). IS-CAM: w = softmax_k(1/N sum_i Y_t(c_i X * M_k)), c_i = sum_{j<=i} j / N (torchcam's
coefficients, N = 10). Y_t of the baseline is the same for every k and cancels in the softmax, so it
is not computed. The noise is drawn from a CPU generator seeded with `noise_seed` (seeded_normal),
the same draws for every image of a batch and on every device: a map depends neither on the other
images of its batch nor on where it is computed.
"""

import torch
from tqdm import tqdm

from flowercam.cam.scorecam import channel_masks


def seeded_normal(count, shape, std, seed, like):
    """`count` draws [*shape] of N(0, std^2) from a CPU generator seeded with `seed`, moved to
    like's device and dtype. CUDA's generator gives other numbers for the same seed, so drawing
    there would make a GPU run's SS-CAM (Smooth Grad-CAM++) maps differ from the CPU's."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.normal(0.0, std, shape, generator=gen).to(like.device, like.dtype)
            for _ in range(count)]


def masked_scores(score_fn, x, acts, targets, batch_size, edit):
    """Target scores [B,K] of edit(x_b, M_k, k) for every image b and channel k.

    edit(images [n,3,H,W], masks [n,H,W], channels [n]) -> the inputs [n,3,H,W] to score."""
    batch, channels = acts.shape[:2]
    scores = torch.empty(batch * channels, dtype=x.dtype, device=x.device)
    for start in range(0, batch * channels, batch_size):
        pair = torch.arange(start, min(start + batch_size, batch * channels), device=x.device)
        b, k = pair // channels, pair % channels
        masks = channel_masks(acts[b, k].to(x.dtype), x.shape[-2:])
        scores[pair] = score_fn(edit(x[b], masks, k)).gather(1, targets[b][:, None])[:, 0]
    return scores.view(batch, channels)


def _mean_scores(score_fn, x, acts, targets, opts, edits, desc):
    total = 0
    with torch.no_grad():
        for edit in tqdm(edits, desc=desc, leave=False, disable=None):
            total = total + masked_scores(score_fn, x, acts, targets, opts["scorecam_batch"], edit)
    return torch.softmax(total / len(edits), dim=1)


def sscam_weights(model, x, acts, targets, opts, layer=None):
    """SS-CAM channel weights [B,K]; opts: ss_samples (N), ss_std (sigma), noise_seed,
    scorecam_batch (masked images per forward). B*K*N masked forwards."""
    shape = (acts.shape[1], *x.shape[-2:])  # one noise map per channel k: [K,H,W]
    noises = seeded_normal(opts["ss_samples"], shape, opts["ss_std"], opts["noise_seed"], x)

    def noisy(noise):
        return lambda images, masks, k: images * (masks + noise[k])[:, None]
    return _mean_scores(model, x, acts, targets, opts, [noisy(n) for n in noises], "SS-CAM")


def iscam_coefficients(samples):
    """IS-CAM's scales of the masked input, c_i = sum_{j=1..i} j / N for i = 1..N (torchcam)."""
    return [sum(j / samples for j in range(1, i + 1)) for i in range(1, samples + 1)]


def iscam_weights(model, x, acts, targets, opts, layer=None):
    """IS-CAM channel weights [B,K]; opts: is_samples (N), scorecam_batch. B*K*N forwards."""
    def scaled(c):
        return lambda images, masks, k: c * images * masks[:, None]
    edits = [scaled(c) for c in iscam_coefficients(opts["is_samples"])]
    return _mean_scores(model, x, acts, targets, opts, edits, "IS-CAM")
