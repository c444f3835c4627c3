"""Convolutions: TensorFlow's 'same' padding, separable convolution."""

import torch.nn.functional as F
from torch import nn


def same_pad(x, kernel, stride, dilation, value=0.0):
    """TensorFlow/Keras 'same' padding of the trailing len(kernel) dims: extra padding goes last."""
    pads = []
    n = len(kernel)
    for j in reversed(range(n)):
        i, k, s, d = x.shape[x.dim() - n + j], kernel[j], stride[j], dilation[j]
        total = max((-(-i // s) - 1) * s + (k - 1) * d + 1 - i, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class SeparableConv(nn.Module):
    """Depthwise convolution followed by a pointwise (1x1) convolution."""

    def __init__(self, depthwise, pointwise):
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x):
        return self.pointwise(self.depthwise(x))
