"""Activations: Keras's built-in activation functions by name, and the PReLU layer."""

import torch
import torch.nn.functional as F
from torch import nn


def keras_activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """Keras activations by name (as keras/src/activations/activations.py)."""
    if name == "celu":
        return F.celu(x)
    if name == "elu":
        return F.elu(x)
    if name == "exponential":
        return torch.exp(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "hard_sigmoid":
        return F.hardsigmoid(x)
    if name == "hard_silu":
        return F.hardswish(x)
    if name == "hard_swish":
        return F.hardswish(x)
    if name == "hard_tanh":
        return F.hardtanh(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.2)
    if name == "linear":
        return x
    if name == "log_sigmoid":
        return F.logsigmoid(x)
    if name == "mish":
        return F.mish(x)
    if name == "relu":
        return torch.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "selu":
        return F.selu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "silu":
        return F.silu(x)
    if name == "softplus":
        return F.softplus(x, threshold=1e9)
    if name == "softsign":
        return F.softsign(x)
    if name == "swish":
        return F.silu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "tanh_shrink":
        return F.tanhshrink(x)
    raise ValueError("unknown activation " + name)


class KerasPReLU(nn.Module):
    """keras.layers.PReLU: alpha has the input's non-batch shape, 1 on shared axes."""

    def __init__(self, shape, channels_first=False):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(shape))
        # Inside a channels-first conv stack, alpha's last (channel) axis moves to the front.
        self.perm = (len(shape) - 1, *range(len(shape) - 1)) if channels_first else None

    def forward(self, x):
        alpha = self.alpha if self.perm is None else self.alpha.permute(self.perm)
        return torch.relu(x) - alpha * torch.relu(-x)
