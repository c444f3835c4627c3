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


def _noise_shape_dropout(e, noise_shape):
    """NoiseShapeDropout with Keras's mask shape ``noise_shape`` (Keras layout, None = the input's
    size), run in the layout the input already has: the mask shape is permuted instead of the tensor."""
    dims = tuple(None if d is None else int(d) for d in noise_shape)
    layout = e.layout(0) if len(dims) == len(e.in_shapes[0]) else "keras"
    if layout == "cf":
        dims = (dims[0], dims[-1], *dims[1:-1])
    e.runtime("NoiseShapeDropout")
    m = e.module(f"NoiseShapeDropout({_rate(e)!r}, noise_shape={dims})")
    e.output(f"{m}({e.input(0, layout)})", layout=layout)


@emits("Dropout")
def _emit_dropout(e):
    noise_shape = e.cfg.get("noise_shape")
    if noise_shape is None:
        m = e.module(f"nn.Dropout({_rate(e)!r})")
        e.output(f"{m}({e.input(0, None)})", layout=e.layout(0))
        return
    _noise_shape_dropout(e, noise_shape)


@emits("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def _emit_spatial(e):
    n = int(e.layer.class_name[-2])
    rank = len(e.in_shapes[0])
    if e.cfg.get("data_format", "channels_last") == "channels_first" and n > 1:
        _noise_shape_dropout(e, (None, None, *([1] * (rank - 2))))  # whole channels: (batch, channels, 1..)
    elif n == 1 or e.layout(0) != "cf":
        _noise_shape_dropout(e, (None, *([1] * (rank - 2)), None))  # (batch, 1.., channels)
    else:
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
