"""Differentiable image preprocessing: resize, centre crop and normalise in torch, so a reward's gradient
reaches the pixels (the feedback loop backpropagates through it into the diffusion model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor B x 3 x H x W with values in [0, 1], got {shape}")
    return images if images.is_floating_point() else images.float() / 255.0


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Scale the shorter side to `size` (bilinear, antialiased when shrinking), then cut the centre square."""
    images = check_images(images)
    height, width = images.shape[-2:]
    if (height, width) != (size, size):
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        if (new_h, new_w) != (height, width):
            shrinking = new_h < height or new_w < width
            images = F.interpolate(
                images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=shrinking
            )
        top, left = (new_h - size) // 2, (new_w - size) // 2
        images = images[:, :, top : top + size, left : left + size]
    return images


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] (any H, W) -> B x 3 x size x size, normalised; differentiable throughout."""
    return normalize(resize_center_crop(images, size), mean, std)
