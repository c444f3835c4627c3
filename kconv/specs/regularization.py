"""Layers that are identity at inference: dropout and noise, activity regularization."""
from __future__ import annotations

from . import declare
from .core import same_shape

for cls, summary in [
    ("Dropout", "zeroes a random fraction `rate` of inputs in training, scales the rest by 1/(1-rate)"),
    ("SpatialDropout1D", "Dropout of whole channels (1D)"),
    ("SpatialDropout2D", "Dropout of whole channels (2D)"),
    ("SpatialDropout3D", "Dropout of whole channels (3D)"),
    ("GaussianDropout", "multiplies inputs by N(1, rate/(1-rate)) noise in training"),
    ("GaussianNoise", "adds N(0, stddev) noise in training"),
    ("AlphaDropout", "dropout keeping SELU's mean and variance, in training"),
    ("ActivityRegularization", "adds an activity penalty to the training loss"),
]:
    declare(
        cls,
        family="regularization",
        summary=summary + "; identity at inference",
        output_shape=same_shape,
        no_weights_reason="identity at inference, no parameters",
    )


# --- PyTorch emission: identity at inference -------------------------------------------------------
from . import emits  # noqa: E402


@emits("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise",
       "AlphaDropout", "ActivityRegularization")
def _emit_identity(e):
    e.passthrough()
