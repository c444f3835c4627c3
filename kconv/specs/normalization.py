"""Normalization layers."""
from __future__ import annotations

import numpy as np

from ..transforms import IDENTITY, Reshape
from . import WeightDecl, declare
from ._shapes import dim, int_value
from .core import same_shape


def _axis_dims(cfg, shape, default_axis=-1):
    """(shape[a] for a in axis): the parameter shape of BatchNormalization, LayerNormalization,
    GroupNormalization, RMSNormalization."""
    axis = cfg.get("axis", default_axis)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    axes = [int_value(a) for a in axes]
    if shape is not None:
        rank = len(shape)
        axes = sorted(a + rank if a < 0 else a for a in axes)
    return tuple(dim(shape, a) for a in axes)


def _bn_param_shape(cfg, shape):
    """tf.keras 2 BatchNormalization with several axes creates its parameters with the broadcast
    shape (1 on the other axes, batch included: tf_keras batch_normalization.py build()); Keras 3
    accepts one axis only."""
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)) and len(axis) > 1:
        if shape is None:
            return None
        rank = len(shape)
        axes = {int_value(a) + rank if int_value(a) < 0 else int_value(a) for a in axis}
        return tuple(dim(shape, i) if i in axes else 1 for i in range(rank))
    return _axis_dims(cfg, shape)


def _key(k, default=True):
    return lambda cfg: cfg.get(k, default)


def _bn_flat(cfg):
    """Several axes (tf.keras 2): parameters stored with the broadcast shape, flattened for the
    BatchNorm1d the emitter runs over the flattened axes (row-major, the axes in order)."""
    axis = cfg.get("axis", -1)
    return Reshape((-1,)) if isinstance(axis, (list, tuple)) and len(axis) > 1 else IDENTITY


declare(
    "BatchNormalization",
    output_mask="keep",
    family="normalization",
    summary="y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta at inference",
    weights=(
        WeightDecl("gamma", when=_key("scale"), torch="weight", transform=_bn_flat, shape=_bn_param_shape),
        WeightDecl("beta", when=_key("center"), torch="bias", transform=_bn_flat, shape=_bn_param_shape),
        WeightDecl("moving_mean", trainable=False, torch="running_mean", transform=_bn_flat,
                   shape=_bn_param_shape),
        WeightDecl("moving_variance", trainable=False, torch="running_var", transform=_bn_flat,
                   shape=_bn_param_shape),
        # Batch renormalization (keras/src/layers/normalization/batch_normalization.py, renorm=True) adds
        # three statistics used and updated in training mode only; inference uses the moving ones.
        WeightDecl("moving_stddev", when=_key("renorm", False), trainable=False, torch="moving_stddev",
                   transform=_bn_flat),
        WeightDecl("renorm_mean", when=_key("renorm", False), trainable=False, torch="renorm_mean",
                   transform=_bn_flat),
        WeightDecl("renorm_stddev", when=_key("renorm", False), trainable=False, torch="renorm_stddev",
                   transform=_bn_flat),
    ),
    output_shape=same_shape,
    notes=("epsilon defaults to 1e-3 (torch 1e-5); momentum 0.99 is torch momentum 0.01",
           "axis may not be the channel axis torch assumes"),
)

declare(
    "LayerNormalization",
    output_mask="keep",
    family="normalization",
    summary="normalise over `axis` (int or list) per sample, then scale and shift",
    weights=(
        WeightDecl("gamma", when=lambda c: c.get("scale", True) or c.get("rms_scaling", False), torch="weight",
                   shape=_axis_dims),
        WeightDecl("beta", when=lambda c: c.get("center", True) and not c.get("rms_scaling", False), torch="bias",
                   shape=_axis_dims),
    ),
    output_shape=same_shape,
    notes=("epsilon defaults to 1e-3 (torch 1e-5)",),
)

declare(
    "GroupNormalization",
    output_mask="keep",
    family="normalization",
    summary="normalise over groups of channels per sample, then scale and shift per channel",
    weights=(
        WeightDecl("gamma", when=_key("scale"), torch="weight", shape=_axis_dims),
        WeightDecl("beta", when=_key("center"), torch="bias", shape=_axis_dims),
    ),
    output_shape=same_shape,
)

declare(
    "RMSNormalization",
    family="normalization",
    summary="x / sqrt(mean(x^2) + epsilon) * scale over `axis`",
    weights=(WeightDecl("scale", torch="weight", shape=_axis_dims),),
    output_shape=same_shape,
)

declare(
    "UnitNormalization",
    output_mask="keep",
    family="normalization",
    summary="x / ||x||_2 over `axis`",
    output_shape=same_shape,
    no_weights_reason="normalisation without parameters",
)


# --- PyTorch emission ------------------------------------------------------------------------------
from . import activation_name, emits  # noqa: E402
from ._shapes import axis_index  # noqa: E402

# torch's defaults for nn.BatchNormNd (and kconv's KerasBatchNormNd): left out of the emitted constructors
BN_DEFAULTS = dict(eps=1e-5, momentum=0.1)


def _axes(e):
    axis = e.cfg.get("axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    rank = len(e.in_shapes[0])
    return sorted(axis_index(int(a), rank) for a in axes), rank


def _dims_in(e, axes, layout):
    """torch dims of Keras ``axes`` for the input held in ``layout``."""
    return [e.torch_dim(a, 0, layout) for a in axes]


@emits("BatchNormalization")
def _emit_bn(e):
    axes, rank = _axes(e)
    if len(axes) != 1:
        _emit_bn_axes(e, axes)
        return
    a = axes[0]
    c = e.in_shapes[0][a]
    if c is None:
        e.unsupported("unknown number of channels")
    dim = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
    if dim is None:
        e.unsupported(f"rank-{rank} input")
    eps = float(e.cfg.get("epsilon", 1e-3))
    momentum = round(1.0 - float(e.cfg.get("momentum", 0.99)), 12)  # torch momentum = 1 - Keras momentum
    # Train mode as Keras: the running variance follows the biased batch variance, and a frozen
    # (trainable=False) BatchNormalization keeps using its moving statistics (keras BN call:
    # `if training and self.trainable`).
    frozen = not e.layer.trainable or (bool(e.layer.weights) and not any(w.trainable for w in e.layer.weights)
                                       and (e.cfg.get("scale", True) or e.cfg.get("center", True)))
    cls = f"KerasBatchRenorm{dim}d" if e.cfg.get("renorm") else f"KerasBatchNorm{dim}d"
    e.runtime(cls)
    extra = ", frozen=True" if frozen else ""
    if e.cfg.get("renorm"):
        extra += f", renorm={_renorm_args(e)!r}"
    elif len(e.layer.calls) == 1 and e.overwritable(0):  # inference overwrites the input (one pass)
        extra += ", inplace=True"
    m = e.module(e.ctor(cls, int(c), eps=eps, momentum=momentum, defaults=BN_DEFAULTS)[:-1] + f"{extra})")
    _bn_defaults(e, int(c))
    if _folds(e, a, m):
        return
    # torch normalises over dim 1: use the layout where the Keras axis is dim 1, else move it there.
    for layout in (e.layout(0), "cf" if rank >= 3 else "keras", "keras"):
        if _dims_in(e, [a], layout) == [1]:
            e.output(f"{m}({e.input(0, layout)})", layout=layout, fresh=True)
            return
    x = e.input(0, "keras")
    e.output(f"{m}({x}.movedim({a}, 1)).movedim(1, {a})", fresh=True)


# the convolutions conv_bn folds a BatchNorm into (kconv/runtime/normalization.py: torch's nn.ConvNd)
_FOLDED = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D"}


def _folds(e, a: int, m: str) -> bool:
    """Emit ``conv_bn(self.conv, self.bn, x)`` in place of ``conv = self.conv(x)`` and ``bn =
    self.bn(conv)`` when this BatchNorm alone reads a convolution's output over its channel axis (a
    plain call: no activation, no crop): at inference it runs as one convolution with the BatchNorm
    folded in. Only where the kernel has fewer elements than the output at batch 1: folding makes one
    pass over the kernel at every call and saves two over the output (ResNet50's deep 3x3 kernels
    would be slower folded)."""
    conv = e.producer_call(0)
    if conv is None or conv.class_name not in _FOLDED:
        return False
    if e.layout(0) != "cf" or _dims_in(e, [a], "cf") != [1]:
        return False
    if activation_name(conv.config.get("activation")) != "linear":
        return False
    kernel = sum(int(np.prod(w.shape)) for w in conv.weights if w.key in ("kernel", "depthwise_kernel"))
    shape = e.in_shapes[0][1:]
    if not kernel or None in shape or kernel >= int(np.prod(shape)):
        return False
    mod, arg = e.take_producer_call(0)
    e.runtime("conv_bn")
    e.output(f"conv_bn({mod}, {m}, {arg})", layout="cf", fresh=True)
    return True


def _bn_defaults(e, c: int):
    e.default_ok("num_batches_tracked", (), 0, "int64")
    if not e.cfg.get("scale", True):
        e.default_ok("weight", (c,), 1.0)  # torch initialises weight to 1: Keras scale=False
    if not e.cfg.get("center", True):
        e.default_ok("bias", (c,), 0.0)  # torch initialises bias to 0: Keras center=False


def _renorm_args(e):
    """(torch renorm momentum, rmin, rmax, dmax) of a renorm=True BatchNormalization; the clipping
    values are None where Keras leaves them unset (renorm_clipping keys rmax, rmin, dmax)."""
    clip = e.cfg.get("renorm_clipping") or {}
    if not isinstance(clip, dict) or set(clip) - {"rmax", "rmin", "dmax"}:
        e.unsupported(f"renorm_clipping {clip!r}")
    vals = []
    for k in ("rmin", "rmax", "dmax"):
        v = clip.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            e.unsupported(f"renorm_clipping {k} {v!r} is not a number")
        vals.append(None if v is None else float(v))
    m = e.cfg.get("renorm_momentum", 0.99)
    if isinstance(m, bool) or not isinstance(m, (int, float)):
        e.unsupported(f"renorm_momentum {m!r} is not a number")
    return (round(1.0 - float(m), 12), *vals)


def _emit_bn_axes(e, axes):
    """BatchNormalization over several axes (tf.keras 2; Keras 3 refuses it): the axes moved behind
    the batch axis and flattened into one channel axis of a BatchNorm1d (parameters flattened
    row-major by the declaration), then moved back."""
    dims = [e.in_shapes[0][a] for a in axes]
    if any(d is None for d in dims) or 0 in axes:
        e.unsupported(f"BatchNormalization over axes {axes} with unknown sizes")
    if e.cfg.get("renorm"):
        e.unsupported("renorm=True")
    c = 1
    for d in dims:
        c *= int(d)
    eps = float(e.cfg.get("epsilon", 1e-3))
    momentum = round(1.0 - float(e.cfg.get("momentum", 0.99)), 12)
    m = e.module(e.ctor("nn.BatchNorm1d", c, eps=eps, momentum=momentum, defaults=BN_DEFAULTS))
    _bn_defaults(e, c)
    x = e.input(0, "keras")
    src, dst = tuple(axes), tuple(range(1, len(axes) + 1))
    moved, y = e.temp("moved"), e.temp("flat")
    e.line(f"{moved} = {x}.movedim({src}, {dst})")
    e.line(f"{y} = {m}({moved}.reshape({moved}.shape[0], {c}, -1))")
    e.output(f"{y}.reshape({moved}.shape).movedim({dst}, {src})")


def _trailing_layout(e, axes, rank):
    """A layout in which the Keras ``axes`` are the trailing torch dims, in order (None if none)."""
    want = list(range(rank - len(axes), rank))
    for layout in (e.layout(0), "keras", "cf"):
        if layout == "cf" and rank < 3:
            continue
        if _dims_in(e, axes, layout) == want:
            return layout
    return None


@emits("LayerNormalization")
def _emit_ln(e):
    axes, rank = _axes(e)
    shape = tuple(e.in_shapes[0][a] for a in axes)
    if any(d is None for d in shape):
        e.unsupported("unknown normalised dimensions")
    shape = tuple(int(d) for d in shape)
    scale, center = e.cfg.get("scale", True), e.cfg.get("center", True)
    eps = float(e.cfg.get("epsilon", 1e-3))
    if e.cfg.get("rms_scaling"):
        # Keras 3 (deprecated option): x * rsqrt(var(x) + eps) * gamma, no mean subtraction, no beta.
        e.runtime("VarianceScaling")
        m = e.module(f"VarianceScaling({shape}, eps={eps!r})")
    elif not (scale or center):
        m = e.module(f"nn.LayerNorm({shape}, eps={eps!r}, elementwise_affine=False)")
    else:
        m = e.module(f"nn.LayerNorm({shape}, eps={eps!r}{'' if center else ', bias=False'})")
        if not scale:
            e.default_ok("weight", shape, 1.0)
    layout = _trailing_layout(e, axes, rank)
    if layout is not None:
        e.output(f"{m}({e.input(0, layout)})", layout=layout)
        return
    # Move the normalised axes (in Keras's sorted order: gamma's order) to the end and back.
    src, dst = tuple(axes), tuple(range(rank - len(axes), rank))
    e.output(f"{m}({e.input(0, 'keras')}.movedim({src}, {dst})).movedim({dst}, {src})")


@emits("GroupNormalization")
def _emit_gn(e):
    axes, rank = _axes(e)
    if axes != [rank - 1] and axes != [1]:
        e.unsupported(f"GroupNormalization on axis {axes}")
    layout = "cf" if axes == [rank - 1] and rank >= 3 else "keras"
    c = int(e.in_shapes[0][axes[0]])
    eps = float(e.cfg.get("epsilon", 1e-3))
    m = e.module(f"nn.GroupNorm({int(e.cfg.get('groups', 32))}, {c}, eps={eps!r})")
    if not e.cfg.get("scale", True):
        e.default_ok("weight", (c,), 1.0)
    if not e.cfg.get("center", True):
        e.default_ok("bias", (c,), 0.0)
    # .contiguous(): torch 2.13's CPU GroupNorm backward crashes (segfault) on a channels_last-strided
    # input that does not require grad, which a permuted NHWC tensor is; a no-op when contiguous.
    e.output(f"{m}({e.input(0, layout)}.contiguous())", layout=layout)


@emits("UnitNormalization")
def _emit_unit(e):
    x = e.input(0, None)
    axis = e.cfg.get("axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    dims = tuple(e.torch_dim(int(a)) for a in axes)
    # keras ops.normalize: x * min(rsqrt(sum(x^2)), 1/1e-12)
    e.output(f"{x} * torch.clamp(torch.rsqrt({x}.square().sum(dim={dims}, keepdim=True)), max=1e12)",
             layout=e.layout(0))


@emits("RMSNormalization")
def _emit_rms(e):
    axes, rank = _axes(e)
    if axes != list(range(rank - len(axes), rank)):
        e.unsupported(f"RMSNormalization over non-trailing axes {axes}")
    shape = tuple(int(e.in_shapes[0][a]) for a in axes)
    eps = float(e.cfg.get("epsilon", 1e-6) or 1e-7)
    m = e.module(f"nn.RMSNorm({shape}, eps={eps!r})")
    e.output(f"{m}({e.input(0, 'keras')})")
