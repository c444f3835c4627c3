"""Regularization layers in train mode: Dropout with noise_shape, GaussianDropout, GaussianNoise."""

import torch
from torch import nn


class NoiseShapeDropout(nn.Module):
    """keras Dropout with noise_shape (and SpatialDropout): one keep/drop draw per mask position,
    broadcast over the axes where the mask has size 1; identity in eval mode."""

    def __init__(self, rate, noise_shape):
        super().__init__()
        self.rate = rate
        self.noise_shape = noise_shape

    def forward(self, x):
        if not self.training or self.rate <= 0:
            return x
        shape = [x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape)]
        keep = (torch.rand(shape, device=x.device) >= self.rate).to(x.dtype)
        return x * keep / (1.0 - self.rate)


class GaussianDropout(nn.Module):
    """keras GaussianDropout: x * N(1, rate / (1 - rate)) in training; identity in eval mode."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate <= 0:
            return x
        return x * (1.0 + (self.rate / (1.0 - self.rate)) ** 0.5 * torch.randn_like(x))


class GaussianNoise(nn.Module):
    """keras GaussianNoise: x + N(0, stddev) in training; identity in eval mode."""

    def __init__(self, stddev):
        super().__init__()
        self.stddev = stddev

    def forward(self, x):
        if not self.training or self.stddev <= 0:
            return x
        return x + self.stddev * torch.randn_like(x)
