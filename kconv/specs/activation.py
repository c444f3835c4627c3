"""Activation layers."""
from __future__ import annotations

from . import WeightDecl, declare
from .core import same_shape

declare(
    "Activation",
    family="activation",
    summary="applies a built-in activation function",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "ReLU",
    family="activation",
    summary="max(x, 0) with optional max_value, negative_slope and threshold",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "LeakyReLU",
    family="activation",
    summary="x if x > 0 else negative_slope * x",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
    notes=("Keras's LeakyReLU layer defaults to slope 0.3 (torch 0.01); keras.activations.leaky_relu to 0.2",),
)

declare(
    "PReLU",
    family="activation",
    summary="LeakyReLU with a learned slope per element (shared over shared_axes)",
    weights=(WeightDecl("alpha", torch="alpha"),),
    output_shape=same_shape,
    notes=("alpha has shape input_shape[1:] with shared axes set to 1; torch nn.PReLU covers only per-channel",),
)

declare(
    "ELU",
    family="activation",
    summary="x if x > 0 else alpha * (exp(x) - 1)",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "Softmax",
    family="activation",
    summary="softmax over axis",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "ThresholdedReLU",
    family="activation",
    summary="x if x > theta else 0 (Keras 2)",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)
