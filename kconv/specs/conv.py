"""Convolutions: ConvND, ConvNDTranspose, DepthwiseConvND, SeparableConvND."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..transforms import IDENTITY, Flip, Permute, Reshape, Transform
from . import PADDING, PADDING_CAUSAL, Choice, WeightDecl, declare
from ._shapes import assemble, channels_last, conv_length, deconv_length, dim, int_value, spatial, tup
from .quantization import LORA_EXTRAS


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def kernel_to_torch(n):
    """Keras (k1..kn, in, out) -> torch (out, in, k1..kn); also transpose (k.., out, in) -> (in, out, k..)."""
    return Permute((n + 1, n, *range(n)))


def _stored_kernel(n, to_torch):
    """The kernel as stored -> torch, for the writers whose files differ (flags set by kconv.load):

    - ``_kernel_layout: channels_first`` (Keras 1 ``dim_ordering='th'``): stored (out, in, k..) =
      torch's layout already; ``_keras1_conv1d_kernel``: Keras 1 Conv1D stores (k, 1, in, out).
    - ``_theano_kernels`` (written by Theano): a true convolution kernel; flipped on the spatial
      axes it becomes the cross-correlation kernel TF and torch use (keras conv_utils.convert_kernel).
    """
    def transform(cfg):
        if cfg.get("_kernel_layout") == "channels_first":
            return Flip(tuple(range(2, n + 2))) if cfg.get("_theano_kernels") else IDENTITY
        t = DropAxis1() if cfg.get("_keras1_conv1d_kernel") else IDENTITY
        if cfg.get("_theano_kernels"):
            t = t.then(Flip(tuple(range(n))))
        return t.then(to_torch if isinstance(to_torch, Transform) else to_torch(cfg))

    return transform


@dataclass(frozen=True)
class DropAxis1(Transform):
    """Keras 1 Conv1D kernel (k, 1, in, out) -> (k, in, out) (keras saving.py: ``weights[0][:, 0, :, :]``)."""

    def apply(self, a):
        return np.ascontiguousarray(a[:, 0])

    def shape(self, shape):
        return (shape[0], *shape[2:])

    def describe(self):
        return "[:, 0]"


def depthwise_to_torch(n):
    """Keras (k1..kn, in, mult) -> torch (in*mult, 1, k1..kn): output channel c*mult+m, groups=in."""
    return lambda cfg: Permute((n, n + 1, *range(n))).then(Reshape((-1, 1, *tup(cfg["kernel_size"], n))))


def conv_shape(n, channels_of=None):
    def shape(cfg, shapes):
        b, dims, c = spatial(shapes[0], cfg)
        k, s, d = tup(cfg["kernel_size"], n), tup(cfg.get("strides", 1), n), tup(cfg.get("dilation_rate", 1), n)
        out = [conv_length(dims[i], k[i], cfg.get("padding", "valid"), s[i], d[i]) for i in range(n)]
        ch = channels_of(cfg, c) if channels_of else cfg["filters"]
        return assemble(b, out, ch, cfg)

    return shape


def deconv_shape(n):
    def shape(cfg, shapes):
        b, dims, c = spatial(shapes[0], cfg)
        k, s, d = tup(cfg["kernel_size"], n), tup(cfg.get("strides", 1), n), tup(cfg.get("dilation_rate", 1), n)
        op = cfg.get("output_padding")
        op = tup(op, n) if op is not None else (None,) * n
        out = [deconv_length(dims[i], k[i], cfg.get("padding", "valid"), op[i], s[i], d[i]) for i in range(n)]
        return assemble(b, out, cfg["filters"], cfg)

    return shape


def _depth_channels(cfg, c):
    return None if c is None else c * cfg.get("depth_multiplier", 1)


# --- expected weight shapes (WeightDecl.shape): keras/src/layers/convolutional/base_*conv.py build()
def _in_channels(cfg, shape):
    return dim(shape, -1) if channels_last(cfg) else dim(shape, 1)


def _kernel_dims(cfg, n):
    return tuple(int_value(k) for k in tup(cfg["kernel_size"], n))


def _conv_kernel_shape(n):
    def f(cfg, shape):
        c = _in_channels(cfg, shape)
        groups = int_value(cfg.get("groups", 1) or 1)
        per_group = None if c is None else c // groups
        k = _kernel_dims(cfg, n)
        if cfg.get("_kernel_layout") == "channels_first":  # Keras 1 dim_ordering 'th': (out, in, k..)
            return (int_value(cfg["filters"]), per_group, *k)
        if cfg.get("_keras1_conv1d_kernel"):  # Keras 1.1+ Convolution1D: (k, 1, in, out)
            return (*k, 1, per_group, int_value(cfg["filters"]))
        return (*k, per_group, int_value(cfg["filters"]))
    return f


def _conv_transpose_kernel_shape(n):
    return lambda cfg, shape: (*_kernel_dims(cfg, n), int_value(cfg["filters"]), _in_channels(cfg, shape))


def _filters_shape(cfg, shape):
    return (int_value(cfg["filters"]),)


def _depthwise_kernel_shape(n):
    return lambda cfg, shape: (*_kernel_dims(cfg, n), _in_channels(cfg, shape),
                               int_value(cfg.get("depth_multiplier", 1)))


def _depthwise_out(cfg, shape):
    c = _in_channels(cfg, shape)
    return None if c is None else c * int_value(cfg.get("depth_multiplier", 1))


def _depthwise_bias_shape(cfg, shape):
    return (_depthwise_out(cfg, shape),)


def _pointwise_kernel_shape(n):
    return lambda cfg, shape: (*([1] * n), _depthwise_out(cfg, shape), int_value(cfg["filters"]))


for n in (1, 2, 3):
    declare(
        f"Conv{n}D",
        f"Convolution{n}D",
        family="conv",
        summary=f"{n}D convolution (cross-correlation) with strides, dilation, groups, padding valid/same"
        + ("/causal" if n == 1 else ""),
        weights=(
            # LoRA (lora_rank; keras/src/layers/convolutional/base_conv.py enable_lora) freezes the kernel.
            WeightDecl("kernel", torch="weight", transform=_stored_kernel(n, kernel_to_torch(n)),
                       shape=_conv_kernel_shape(n), trainable=lambda c: not c.get("lora_rank")),
            WeightDecl("bias", when=_has_bias, torch="bias", shape=_filters_shape),
            *LORA_EXTRAS,
        ),
        output_shape=conv_shape(n),
        required=("filters", "kernel_size"),
        choices={"padding": Choice(PADDING_CAUSAL if n == 1 else PADDING)},
        notes=("'same' with stride > 1 pads more on the right/bottom: torch needs explicit padding",
               "Theano-written kernels are true convolutions: flipped spatially (--backend-of-writer)"),
    )
    declare(
        f"Conv{n}DTranspose",
        f"Convolution{n}DTranspose",
        family="conv",
        summary=f"{n}D transposed convolution",
        weights=(
            WeightDecl("kernel", torch="weight", transform=_stored_kernel(n, kernel_to_torch(n)),
                       shape=_conv_transpose_kernel_shape(n)),
            WeightDecl("bias", when=_has_bias, torch="bias", shape=_filters_shape),
        ),
        output_shape=deconv_shape(n),
        required=("filters", "kernel_size"),
        choices={"padding": Choice(PADDING)},
        notes=("kernel is stored (k.., out, in): torch ConvTranspose wants (in, out, k..)",),
    )

for n in (1, 2):
    declare(
        f"DepthwiseConv{n}D",
        family="conv",
        summary=f"{n}D depthwise convolution: each input channel convolved with depth_multiplier filters",
        weights=(
            # Keras 2 stores 'depthwise_kernel:0'; Keras 3 names the same variable 'kernel'.
            WeightDecl("depthwise_kernel", torch="weight", transform=_stored_kernel(n, depthwise_to_torch(n)),
                       aliases=("kernel",), shape=_depthwise_kernel_shape(n)),
            WeightDecl("bias", when=_has_bias, torch="bias", shape=_depthwise_bias_shape),
        ),
        output_shape=conv_shape(n, _depth_channels),
        required=("kernel_size",),
        choices={"padding": Choice(PADDING)},
    )
    declare(
        f"SeparableConv{n}D",
        f"SeparableConvolution{n}D",
        family="conv",
        summary=f"{n}D depthwise convolution followed by a pointwise (1x1) convolution",
        required=("filters", "kernel_size"),
        weights=(
            WeightDecl("depthwise_kernel", torch="depthwise.weight", transform=_stored_kernel(n, depthwise_to_torch(n)),
                       shape=_depthwise_kernel_shape(n)),
            WeightDecl("pointwise_kernel", torch="pointwise.weight", transform=kernel_to_torch(n),
                       shape=_pointwise_kernel_shape(n)),
            WeightDecl("bias", when=_has_bias, torch="pointwise.bias", shape=_filters_shape),
        ),
        output_shape=conv_shape(n),
        choices={"padding": Choice(PADDING)},
    )


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402


def same_pads(dims, k, s, d):
    """TF/Keras 'same': total = max((ceil(i/s)-1)*s + (k-1)*d + 1 - i, 0), extra on the right.

    None when a spatial size is unknown (then the emitted model pads at run time).
    """
    if any(i is None for i in dims):
        return None
    out = []
    for i, kk, ss, dd in zip(dims, k, s, d):
        total = max((-(-i // ss) - 1) * ss + (kk - 1) * dd + 1 - i, 0)
        out.append((total // 2, total - total // 2))
    return out


def theano_same_pads(dims, k, s, d):
    """Theano 'half' mode (Keras 1.2.2 theano_backend, 'same'): k//2 zeros on both sides, output
    cropped to ceil(i/s) (_postprocess_conv2d_output). As explicit padding: k//2 before, and after
    only what the cropped output still reads (for even kernels or strides that is less than k//2)."""
    if any(i is None for i in dims):
        return None
    out = []
    for i, kk, ss, dd in zip(dims, k, s, d):
        ek = (kk - 1) * dd + 1
        before = ek // 2
        total = (-(-i // ss) - 1) * ss + ek - i
        out.append((before, max(total - before, 0)))
    return out


def _value_src(value: float) -> str:
    return "float('-inf')" if value == float("-inf") else repr(float(value))


def _tf_pads(e, k, s, d, padding):
    """(before, after) per spatial axis of 'causal' or TF 'same' padding (None: 'same' with an
    unknown spatial size, padded at run time)."""
    if padding == "causal":
        return [((k[0] - 1) * d[0], 0)]
    return same_pads(spatial_dims(e), k, s, d)


def padded_input(e, x, n, k, s, d, padding, value=0.0):
    """(input expression, symmetric padding for the torch op) implementing Keras ``padding``."""
    if padding == "valid":
        return x, (0,) * n
    if padding != "causal" and e.cfg.get("_theano_padding"):
        from . import get

        spec = get(e.layer.class_name)
        if spec is not None and spec.family == "pooling":
            e.unsupported("'same' pooling written by Theano (its own padding and cropping) is not converted")
        pads = theano_same_pads(spatial_dims(e), k, s, d)
        if pads is None:
            e.unsupported("Theano 'same' padding needs known spatial sizes")
    else:
        pads = _tf_pads(e, k, s, d, padding)
        if pads is None:
            e.runtime("same_pad")
            extra = f", value={_value_src(value)}" if value else ""
            return f"same_pad({x}, {k}, {s}, {d}{extra})", (0,) * n
    if all(lo == hi for lo, hi in pads) and value == 0.0:
        return x, tuple(lo for lo, _ in pads)
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]
    extra = f", value={_value_src(value)}" if value else ""
    return f"F.pad({x}, {flat}{extra})", (0,) * n


# Extra multiply-adds a convolution may spend, per element of the padded copy it avoids, to pad
# unequal sides itself (_cropped): a padded element costs a fill and a copy, about as much time as 8-20
# multiply-adds at batch 1 on one core (probes on MobileNetV2: its five F.pad took 8% of a call).
PAD_COPY_MACS = 8


def _cropped(pairs, dims, k, s, d):
    """Zero padding (before, after) per spatial axis done by the convolution itself: (torch
    padding, (start, size, full size) per axis of its output). Padding P >= both sides on each side,
    with P - before a multiple of the stride: output start + j then reads what output j of the padded
    input reads (the same elements, the extra zeros only ones it reads anyway), for j < size."""
    pad, crop = [], []
    for (lo, hi), i, kk, ss, dd in zip(pairs, dims, k, s, d):
        p = lo + -(-(max(lo, hi) - lo) // ss) * ss
        ek = (kk - 1) * dd + 1
        pad.append(p)
        crop.append(((p - lo) // ss, (i + lo + hi - ek) // ss + 1, (i + 2 * p - ek) // ss + 1))
    return tuple(pad), crop


def _conv_input(e, n, k, s, d, cin, macs):
    """(input expression, torch padding, output crop or "") of a convolution making ``macs``
    multiply-adds per output position.

    Keras's 'same' padding pads one more on the right/bottom where the total is odd (stride 2 on an
    even size), 'causal' only on the left, and a ZeroPadding layer read only by a 'valid' convolution
    (ResNet's stem, MobileNetV2's and EfficientNet's strided depthwise convolutions) pads what it was
    told: equal sides become the convolution's own padding; unequal ones too (the larger side, the
    output cropped: _cropped) where its extra multiply-adds cost less than the padded copy they avoid
    (PAD_COPY_MACS), else an F.pad copy."""
    padding = e.cfg.get("padding", "valid")
    v = e.value(e.call.inputs[0])
    dims = spatial_dims(e)
    if padding == "valid" and v.padded is not None and e.reads(0) == 1 and len(v.padded[1]) == n:
        src, pairs = v.padded  # (a padded tensor other layers read too is made anyway)
        x = e.as_layout(src, e.conv_layout())
        dims = [None if i is None else i - lo - hi for i, (lo, hi) in zip(dims, pairs)]
    else:
        x = e.input(0, e.conv_layout())
        theano = padding != "causal" and e.cfg.get("_theano_padding")
        pairs = None if padding == "valid" or theano else _tf_pads(e, k, s, d, padding)
        if pairs is None:
            return (*padded_input(e, x, n, k, s, d, padding), "")
    if all(lo == hi for lo, hi in pairs):
        return x, tuple(lo for lo, _ in pairs), ""
    if None not in dims:
        pad, crop = _cropped(pairs, dims, k, s, d)
        extra = (np.prod([f for _, _, f in crop]) - np.prod([o for _, o, _ in crop])) * macs
        copy = cin * np.prod([i + lo + hi for i, (lo, hi) in zip(dims, pairs)])
        if extra <= PAD_COPY_MACS * copy:
            axes = [f"{a or ''}:{'' if a + o == f else a + o}" for a, o, f in crop]
            while axes[-1] == ":":
                axes.pop()
            sides = ", ".join(str(tuple(p)) for p in pairs)
            e.line(f"# Keras pads {sides}: the same as padding={pad[0] if len(set(pad)) == 1 else pad} and this crop")
            return x, pad, "[:, :, " + ", ".join(axes) + "]"
    if padding == "valid":  # the ZeroPadding's own output
        return e.input(0, e.conv_layout()), (0,) * n, ""
    return (*padded_input(e, x, n, k, s, d, padding), "")


def spatial_dims(e):
    shape = e.in_shapes[0]
    return list(shape[1:-1]) if e.channels_last() else list(shape[2:])


def _channels_in(e):
    shape = e.in_shapes[0]
    c = shape[-1] if e.channels_last() else shape[1]
    if c is None:
        e.unsupported("unknown number of input channels")
    return int(c)


def _conv_args(e, n):
    k = tuple(int(v) for v in tup(e.cfg["kernel_size"], n))
    s = tuple(int(v) for v in tup(e.cfg.get("strides", 1), n))
    d = tuple(int(v) for v in tup(e.cfg.get("dilation_rate", 1), n))
    return k, s, d


# torch's defaults for nn.ConvNd / nn.ConvTransposeNd: left out of the emitted constructors
CONV_DEFAULTS = dict(stride=1, padding=0, dilation=1, groups=1, bias=True, output_padding=0)


def _conv_src(e, n, cin, cout, k, s, pad, d, groups, bias) -> str:
    return e.ctor(f"nn.Conv{n}d", cin, cout, k, stride=s, padding=pad, dilation=d, groups=groups, bias=bias,
                  defaults=CONV_DEFAULTS)


def _emit_conv(n, kind="conv"):
    """Conv (groups from the config), depthwise (groups = in channels) or separable (depthwise + 1x1)."""

    def emit(e):
        k, s, d = _conv_args(e, n)
        cin = _channels_in(e)
        mult = int(e.cfg.get("depth_multiplier", 1))
        bias = bool(e.cfg.get("use_bias", True))
        groups = int(e.cfg.get("groups", 1)) if kind == "conv" else cin
        cout = int(e.cfg["filters"]) if kind == "conv" else cin * mult
        macs = cout * (cin // groups) * int(np.prod(k))
        if kind == "separable":  # and the pointwise part, on every position the depthwise part makes
            macs += cout * int(e.cfg["filters"])
        x, pad, crop = _conv_input(e, n, k, s, d, cin, macs)
        if kind == "separable":
            e.runtime("SeparableConv")
            src = (f"SeparableConv({_conv_src(e, n, cin, cout, k, s, pad, d, cin, False)}, "
                   f"{_conv_src(e, n, cout, int(e.cfg['filters']), 1, 1, 0, 1, 1, bias)})")
        else:
            src = _conv_src(e, n, cin, cout, k, s, pad, d, groups, bias)
        e.output(f"{e.module(src)}({x}){crop}", layout=e.conv_layout(), activation=True, fresh=True)

    return emit


def _emit_transpose(n):
    def emit(e):
        k, s, d = _conv_args(e, n)
        cin = _channels_in(e)
        dims = spatial_dims(e)
        outs = list(e.out_shapes[0][1:-1]) if e.channels_last() else list(e.out_shapes[0][2:])
        if any(v is None for v in dims + outs):
            e.unsupported("transposed convolution with unknown spatial size")
        # torch computes the full transposed output (i-1)*s + (k-1)*d + 1 (plus output_padding at the end);
        # Keras (TF conv_transpose) crops it to its output size, taking pad_total // 2 from the start.
        op, crops = [], []
        for i, kk, ss, dd, o in zip(dims, k, s, d, outs):
            full = (i - 1) * ss + (kk - 1) * dd + 1
            extra = max(o - full, 0)
            if extra >= max(ss, dd):
                e.unsupported(f"output size {o} needs more output padding than torch allows")
            op.append(extra)
            start = (full - o) // 2 if (full > o and e.cfg.get("padding") == "same") else 0
            crops.append((start, o))

        m = e.module(e.ctor(f"nn.ConvTranspose{n}d", cin, int(e.cfg["filters"]), k, stride=s,
                          output_padding=tuple(op), dilation=d, bias=bool(e.cfg.get("use_bias", True)),
                          defaults=CONV_DEFAULTS))
        y = f"{m}({e.input(0, e.conv_layout())})"
        full_sizes = [(i - 1) * ss + (kk - 1) * dd + 1 + p for i, kk, ss, dd, p in zip(dims, k, s, d, op)]
        if any(st != 0 or o != f for (st, o), f in zip(crops, full_sizes)):
            y = y + "[:, :, " + ", ".join(f"{st}:{st + o}" for st, o in crops) + "]"
        e.output(y, layout=e.conv_layout(), activation=True, fresh=True)

    return emit


for _n in (1, 2, 3):
    emits(f"Conv{_n}D")(_emit_conv(_n))
    emits(f"Conv{_n}DTranspose")(_emit_transpose(_n))
for _n in (1, 2):
    emits(f"DepthwiseConv{_n}D")(_emit_conv(_n, "depthwise"))
    emits(f"SeparableConv{_n}D")(_emit_conv(_n, "separable"))
