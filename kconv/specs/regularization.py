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
        output_mask="keep",
        no_weights_reason="identity at inference, no parameters",
    )


# --- PyTorch emission -----------------------------------------------------------------------------
# Identity in eval mode (what Keras does at inference); in train mode the emitted modules follow
# keras/src/layers/regularization/*.py: same distributions and scaling, not the same random numbers.
from . import emits  # noqa: E402


def _rate(e, key="rate"):
    return float(e.cfg.get(key, 0.0) or 0.0)


@emits("ActivityRegularization")
def _emit_activity(e):
    e.passthrough()  # only adds a penalty to Keras's training loss


@emits("Dropout")
def _emit_dropout(e):
    noise_shape = e.cfg.get("noise_shape")
    if noise_shape is None:
        m = e.module(f"nn.Dropout({_rate(e)!r})")
        e.output(f"{m}({e.input(0, None)})", layout=e.layout(0))
        return
    # noise_shape: Keras shape of the dropout mask (None = the input's size), in Keras layout.
    dims = tuple(None if d is None else int(d) for d in noise_shape)
    e.runtime("NoiseShapeDropout")
    m = e.module(f"NoiseShapeDropout({_rate(e)!r}, noise_shape={dims})")
    e.output(f"{m}({e.input(0, 'keras')})")


@emits("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def _emit_spatial(e):
    n = int(e.layer.class_name[-2])
    rank = len(e.in_shapes[0])
    if n == 1 or e.cfg.get("data_format", "channels_last") == "channels_first":
        # Whole channels dropped: mask shape (batch, 1.., channels) in Keras layout.
        if n == 1:
            shape = (None, 1, None)
        else:
            shape = (None, None, *([1] * (rank - 2)))
        e.runtime("NoiseShapeDropout")
        m = e.module(f"NoiseShapeDropout({_rate(e)!r}, noise_shape={shape})")
        e.output(f"{m}({e.input(0, 'keras')})")
        return
    m = e.module(f"nn.Dropout{n}d({_rate(e)!r})")  # channels at dim 1 of the cf layout
    e.output(f"{m}({e.input(0, 'cf')})", layout="cf")


@emits("GaussianDropout", "GaussianNoise")
def _emit_gaussian(e):
    cls = e.layer.class_name
    value = _rate(e) if cls == "GaussianDropout" else _rate(e, "stddev")
    e.runtime(cls)
    m = e.module(f"{cls}({value!r})")
    e.output(f"{m}({e.input(0, None)})", layout=e.layout(0))


@emits("AlphaDropout")
def _emit_alpha(e):
    if e.cfg.get("noise_shape") is not None:
        e.unsupported("AlphaDropout with noise_shape")
    # torch's alpha_dropout is Keras's formula: a = ((1-p)(1+p*alpha_p^2))^-1/2, b = -a*alpha_p*p.
    m = e.module(f"nn.AlphaDropout({_rate(e)!r})")
    e.output(f"{m}({e.input(0, None)})", layout=e.layout(0))
