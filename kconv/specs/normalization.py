"""Normalization layers."""
from __future__ import annotations

from . import WeightDecl, declare
from .core import same_shape


def _key(k, default=True):
    return lambda cfg: cfg.get(k, default)


declare(
    "BatchNormalization",
    family="normalization",
    summary="y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta at inference",
    weights=(
        WeightDecl("gamma", when=_key("scale"), torch="weight"),
        WeightDecl("beta", when=_key("center"), torch="bias"),
        WeightDecl("moving_mean", trainable=False, torch="running_mean"),
        WeightDecl("moving_variance", trainable=False, torch="running_var"),
        # Batch renormalization (training-time technique) adds three more statistics.
        WeightDecl("moving_stddev", when=_key("renorm", False), trainable=False, why_no_torch="training only"),
        WeightDecl("renorm_mean", when=_key("renorm", False), trainable=False, why_no_torch="training only"),
        WeightDecl("renorm_stddev", when=_key("renorm", False), trainable=False, why_no_torch="training only"),
    ),
    output_shape=same_shape,
    notes=("epsilon defaults to 1e-3 (torch 1e-5); momentum 0.99 is torch momentum 0.01",
           "axis may not be the channel axis torch assumes"),
)

declare(
    "LayerNormalization",
    family="normalization",
    summary="normalise over `axis` (int or list) per sample, then scale and shift",
    weights=(
        WeightDecl("gamma", when=lambda c: c.get("scale", True) or c.get("rms_scaling", False), torch="weight"),
        WeightDecl("beta", when=lambda c: c.get("center", True) and not c.get("rms_scaling", False), torch="bias"),
    ),
    output_shape=same_shape,
    notes=("epsilon defaults to 1e-3 (torch 1e-5)",),
)

declare(
    "GroupNormalization",
    family="normalization",
    summary="normalise over groups of channels per sample, then scale and shift per channel",
    weights=(
        WeightDecl("gamma", when=_key("scale"), torch="weight"),
        WeightDecl("beta", when=_key("center"), torch="bias"),
    ),
    output_shape=same_shape,
)

declare(
    "RMSNormalization",
    family="normalization",
    summary="x / sqrt(mean(x^2) + epsilon) * scale over `axis`",
    weights=(WeightDecl("scale", torch="weight"),),
    output_shape=same_shape,
)

declare(
    "UnitNormalization",
    family="normalization",
    summary="x / ||x||_2 over `axis`",
    output_shape=same_shape,
    no_weights_reason="normalisation without parameters",
)
