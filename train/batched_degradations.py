"""Training degradations as batched torch operations, on whatever device the batch lives on.

The same tasks, strength distributions and pixel operations as `lm4lv_core.corruptions` (which `degrade` keeps using
for users): Gaussian noise, Gaussian blur (OpenCV's sigma for a k x k kernel, borders reflected as scipy's "reflect"),
rain streaks, pepper, 4x4 masks, and the rotate / flip targets. Exact where the operation allows (blur, masks'
geometry, rotate, flip, the uint8 rounding), the same distributions elsewhere (random draws come from a torch
generator, not numpy's; rain streaks are rasterised by sampling points along each segment instead of PIL's line
drawing). Selected with `train_lm4lv --degradations torch`; on the CPU the numpy path costs about 4% of a training step
(bench/training_speed.py), on a GPU at the paper's batch of 256 it would starve the step.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch.nn import functional as F

from lm4lv_core import corruptions
from lm4lv_core.tasks import get_task


def degrade_batch(
    clean: torch.Tensor, tasks: list[str], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """clean (B, 3, S, S) in [0, 1], one task per image -> (inputs, targets), both (B, 3, S, S) in [0, 1], rounded to
    uint8 levels as `degrade` / `target` produce them. Strengths are drawn from each task's training distribution."""
    clean = quantize(clean)
    inputs, targets = clean.clone(), clean.clone()
    for name in dict.fromkeys(tasks):  # each task once, on its rows
        rows = torch.tensor([i for i, t in enumerate(tasks) if t == name], device=clean.device)
        inputs[rows], targets[rows] = apply_task(clean[rows], name, generator)
    return quantize(inputs), targets


def apply_task(x: torch.Tensor, task: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, 3, S, S) clean images of one task -> (degraded, target), read from the task's registry entry: its
    corruption (the torch twin of its `corruptions` function) and its target geometry."""
    spec = get_task(task)
    uniform = torch.rand(x.shape[0], generator=generator, device=x.device)  # (b,): one strength draw per image
    target = TRANSPOSES[spec.transpose](x) if spec.transpose is not None else x
    if spec.corrupt is None:
        return x, target
    return CORRUPTIONS[spec.corrupt](x, spec, uniform, generator), target


def _noise(x, spec, uniform, generator):
    sigma = spec.level_strength(uniform)  # (b,): U[0, 50/255], the dial's range is the paper's training range
    return x + sigma[:, None, None, None] * torch.randn(x.shape, generator=generator, device=x.device)


def _blur(x, spec, uniform, generator):
    sizes = torch.tensor([1, 3, 5, 7], device=x.device)[(uniform * 4).long().clamp(max=3)]  # uniform over the four
    return blur_by_size(x, sizes)


def _rain(x, spec, uniform, generator):
    return add_rain(x, spec.level_strength(uniform), generator)  # U[0, 20] streaks per 64 x 64 pixels


def _pepper(x, spec, uniform, generator):
    fraction = spec.level_strength(uniform)  # U[0, 0.1]
    draws = torch.rand(x.shape[0], 1, *x.shape[-2:], generator=generator, device=x.device)  # (b, 1, S, S)
    return x.masked_fill(draws < fraction[:, None, None, None], 0.0)


def _mask(x, spec, uniform, generator):  # the paper trains at the fixed rate (the registry's random strength)
    return mask_blocks(x, spec.fixed_strength, generator)


CORRUPTIONS = {
    corruptions.add_noise: _noise,
    corruptions.gaussian_blur: _blur,
    corruptions.add_rain: _rain,
    corruptions.add_pepper: _pepper,
    corruptions.mask_blocks: _mask,
}
TRANSPOSES = {
    Image.Transpose.ROTATE_90: lambda x: torch.rot90(x, 1, dims=(-2, -1)),  # counter-clockwise, as PIL
    Image.Transpose.FLIP_LEFT_RIGHT: lambda x: x.flip(-1),
}


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the 256 levels of a uint8 image, as `degrade` returns it."""
    return (x.clamp(0, 1) * 255).round() / 255


def gaussian_kernel(size: int, device=None) -> torch.Tensor:
    """The normalised 1-D Gaussian of `corruptions.gaussian_blur` (OpenCV's sigma for a size-k kernel), (k,)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    r = torch.arange(size, device=device, dtype=torch.float64) - size // 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def blur_by_size(x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each image (b, 3, S, S) with its own odd kernel size (b,) (1: unchanged)."""
    out = x.clone()
    for size in sizes.unique().tolist():
        if size > 1:
            rows = (sizes == size).nonzero().flatten()
            out[rows] = separable_blur(x[rows], gaussian_kernel(int(size), x.device))
    return out


def separable_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) convolved with kernel (k,) along H and W, borders as scipy's "reflect" (d c b a | a b c d)."""
    p, channels = kernel.numel() // 2, x.shape[1]
    for dim in (-2, -1):
        start, end = x.narrow(dim, 0, p).flip(dim), x.narrow(dim, x.shape[dim] - p, p).flip(dim)
        padded = torch.cat([start, x, end], dim=dim)
        shape = (1, 1, kernel.numel(), 1) if dim == -2 else (1, 1, 1, kernel.numel())
        weight = kernel.reshape(shape).expand(channels, -1, -1, -1).contiguous().to(x.dtype)  # (C, 1, kh, kw)
        x = F.conv2d(padded, weight, groups=channels)
    return x


def mask_blocks(x: torch.Tensor, rate: float, generator: torch.Generator, block: int = 4) -> torch.Tensor:
    """Each block x block cell of a grid set to black with probability `rate` (`corruptions.mask_blocks`)."""
    b, _, h, w = x.shape
    grid = torch.rand(b, 1, -(-h // block), -(-w // block), generator=generator, device=x.device) < rate
    mask = grid.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :h, :w]
    return x.masked_fill(mask, 0.0)


def add_rain(x: torch.Tensor, amounts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rain streaks as `corruptions.add_rain` draws them (a shared direction per image in U[-30, 30] degrees, each
    streak +-5 degrees, length U[0.1, 0.25] x the shorter side, brightness U[0.5, 0.9], 1 px wide, a 3 x 3 box blur,
    screen-blended), `amounts` (b,) streaks per 64 x 64 pixels, rasterised as points every half pixel along each."""
    b, _, h, w = x.shape
    device, short = x.device, min(h, w)
    counts = (amounts * h * w / (64 * 64)).round().long()  # (b,)
    most = int(counts.max()) if b else 0
    if most == 0:
        return x

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=generator, device=device)

    angle = torch.deg2rad(uniform(-30, 30, b, 1) + uniform(-5, 5, b, most))  # (b, most)
    length = uniform(0.1, 0.25, b, most) * short
    x0, y0 = uniform(0, w, b, most), uniform(0, h, b, most)
    brightness = uniform(0.5, 0.9, b, most)
    steps = math.ceil(0.25 * short * 2) + 1
    t = torch.linspace(0, 1, steps, device=device)  # (P,): points along each streak
    px = (x0[..., None] + t * (length * torch.sin(angle))[..., None]).floor().long()  # (b, most, P)
    py = (y0[..., None] + t * (length * torch.cos(angle))[..., None]).floor().long()
    valid = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    valid &= (torch.arange(most, device=device)[None, :] < counts[:, None])[..., None]  # only each image's count
    index = torch.arange(b, device=device)[:, None, None] * h * w + py.clamp(0, h - 1) * w + px.clamp(0, w - 1)
    values = torch.where(valid, brightness[..., None].expand_as(index).float(), torch.zeros((), device=device))
    layer = torch.zeros(b * h * w, device=device).scatter_reduce(0, index.flatten(), values.flatten(), "amax")
    layer = (layer.reshape(b, 1, h, w) * 255).round() / 255  # an 8-bit layer, as PIL draws it
    layer = F.avg_pool2d(F.pad(layer, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # PIL's BoxBlur(1)
    return x + layer * (1 - x)
