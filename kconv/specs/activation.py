"""Activation layers."""
from __future__ import annotations

from . import WeightDecl, declare
from ._shapes import dim, int_value
from .core import same_shape


def _prelu_alpha_shape(cfg, shape):
    """input_shape[1:], 1 on the shared_axes (keras/src/layers/activations/prelu.py build())."""
    if shape is None:
        return None
    out = list(dim(shape, i) for i in range(1, len(shape)))
    shared = cfg.get("shared_axes")
    if shared is not None:
        for a in (shared if isinstance(shared, (list, tuple)) else [shared]):
            out[int_value(a) - 1] = 1
    return tuple(out)


declare(
    "Activation",
    output_mask="keep",
    family="activation",
    summary="applies a built-in activation function",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "ReLU",
    output_mask="keep",
    family="activation",
    summary="max(x, 0) with optional max_value, negative_slope and threshold",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "LeakyReLU",
    output_mask="keep",
    family="activation",
    summary="x if x > 0 else negative_slope * x",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
    notes=("Keras's LeakyReLU layer defaults to slope 0.3 (torch 0.01); keras.activations.leaky_relu to 0.2",),
)

declare(
    "PReLU",
    output_mask="keep",
    family="activation",
    summary="LeakyReLU with a learned slope per element (shared over shared_axes)",
    weights=(WeightDecl("alpha", torch="alpha", shape=_prelu_alpha_shape),),
    output_shape=same_shape,
    notes=("alpha has shape input_shape[1:] with shared axes set to 1; torch nn.PReLU covers only per-channel",),
)

declare(
    "ELU",
    output_mask="keep",
    family="activation",
    summary="x if x > 0 else alpha * (exp(x) - 1)",
    output_shape=same_shape,
    no_weights_reason="activation function, no parameters",
)

declare(
    "Softmax",
    uses_mask=True, output_mask="keep",
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


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402


# An activation layer reading the only reference to a tensor that a convolution, a batch norm or a sum
# made (Emit.overwritable) overwrites it, as torchvision's inplace=True modules do: one allocation and
# one memory pass fewer (MobileNetV2 at batch 1 on CPU: 11%, docs/cpu-inference.md section 7).
_INPLACE = ", inplace=True"


@emits("Activation")
def _emit_activation(e):
    x = e.input(0, None)
    e.output(e.activation(x, e.layout(0), e.in_shapes[0], inplace=e.overwritable(0)), layout=e.layout(0))


def relu_expr(x: str, negative_slope=0.0, max_value=None, threshold=0.0, inplace: bool = False) -> str:
    """keras/src/activations/activations.py ReLU.static_call, step by step; ``inplace``: overwriting
    ``x`` is safe (used where torch's in-place form computes the same)."""
    negative_slope, threshold = float(negative_slope or 0.0), float(threshold or 0.0)
    ip = _INPLACE if inplace else ""
    if negative_slope != 0.0 and max_value is None and threshold == 0.0:
        # in place only with a positive slope: torch's in-place backward refuses the others
        return f"F.leaky_relu({x}, {negative_slope!r}{ip if negative_slope > 0 else ''})"
    if threshold != 0.0:
        pos = f"{x} * ({x} > {threshold!r}).to({x}.dtype)"
    elif max_value is not None and float(max_value) == 6.0:
        pos, max_value = f"F.relu6({x}{ip})", None
    elif max_value is None and negative_slope == 0.0 and inplace:
        pos = f"F.relu({x}{ip})"
    else:
        pos = f"torch.relu({x})"
    if max_value is not None:
        pos = f"torch.clamp({pos}, 0.0, {float(max_value)!r})"
    if negative_slope != 0.0:
        neg = f"torch.relu({threshold!r} - {x})" if threshold != 0.0 else f"torch.relu(-{x})"
        return f"{pos} - {negative_slope!r} * {neg}"
    return pos


@emits("ReLU")
def _emit_relu(e):
    x = e.input(0, None)
    e.output(relu_expr(x, e.cfg.get("negative_slope", 0.0), e.cfg.get("max_value"), e.cfg.get("threshold", 0.0),
                       inplace=e.overwritable(0)), layout=e.layout(0))


@emits("LeakyReLU")
def _emit_leaky(e):
    slope = e.cfg.get("negative_slope", e.cfg.get("alpha", 0.3))  # Keras 2 calls it alpha; default 0.3
    ip = _INPLACE if float(slope) > 0 and e.overwritable(0) else ""  # torch's in-place backward: slope > 0
    e.output(f"F.leaky_relu({e.input(0, None)}, {float(slope)!r}{ip})", layout=e.layout(0))


@emits("ELU")
def _emit_elu(e):
    alpha = float(e.cfg.get("alpha", 1.0))
    ip = _INPLACE if alpha > 0 and e.overwritable(0) else ""  # torch's in-place backward: alpha > 0
    e.output(f"F.elu({e.input(0, None)}, {alpha!r}{ip})", layout=e.layout(0))


@emits("ThresholdedReLU")
def _emit_thresholded(e):
    x = e.input(0, None)
    theta = float(e.cfg.get("theta", 1.0))
    e.output(f"{x} * ({x} > {theta!r}).to({x}.dtype)", layout=e.layout(0))


@emits("Softmax")
def _emit_softmax(e):
    x = e.input(0, None)
    axis = e.cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        dims = tuple(e.torch_dim(int(a)) for a in axis)
        e.output(f"torch.exp({x} - torch.logsumexp({x}, dim={dims}, keepdim=True))", layout=e.layout(0))
    else:
        e.output(f"torch.softmax({x}, dim={e.torch_dim(int(axis))})", layout=e.layout(0))


@emits("PReLU")
def _emit_prelu(e):
    shape = e.in_shapes[0][1:]
    if any(d is None for d in shape):
        e.unsupported("PReLU on an input with unknown dimensions")
    shared = e.cfg.get("shared_axes") or []
    shared = [shared] if isinstance(shared, int) else shared
    alpha = tuple(1 if (i + 1) in shared else int(d) for i, d in enumerate(shape))
    e.runtime("KerasPReLU")
    cf = e.layout(0) == "cf"
    m = e.module(f"KerasPReLU({alpha}, channels_first=True)" if cf else f"KerasPReLU({alpha})")
    e.output(f"{m}({e.input(0, None)})", layout=e.layout(0))
