"""Convolutions: ConvND, ConvNDTranspose, DepthwiseConvND, SeparableConvND."""
from __future__ import annotations

from ..transforms import Permute, Reshape
from . import WeightDecl, declare
from ._shapes import assemble, conv_length, deconv_length, spatial, tup


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def kernel_to_torch(n):
    """Keras (k1..kn, in, out) -> torch (out, in, k1..kn); also transpose (k.., out, in) -> (in, out, k..)."""
    return Permute((n + 1, n, *range(n)))


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


for n in (1, 2, 3):
    declare(
        f"Conv{n}D",
        f"Convolution{n}D",
        family="conv",
        summary=f"{n}D convolution (cross-correlation) with strides, dilation, groups, padding valid/same"
        + ("/causal" if n == 1 else ""),
        weights=(
            WeightDecl("kernel", torch="weight", transform=kernel_to_torch(n)),
            WeightDecl("bias", when=_has_bias, torch="bias"),
        ),
        output_shape=conv_shape(n),
        notes=("'same' with stride > 1 pads more on the right/bottom: torch needs explicit padding",),
    )
    declare(
        f"Conv{n}DTranspose",
        f"Convolution{n}DTranspose",
        family="conv",
        summary=f"{n}D transposed convolution",
        weights=(
            WeightDecl("kernel", torch="weight", transform=kernel_to_torch(n)),
            WeightDecl("bias", when=_has_bias, torch="bias"),
        ),
        output_shape=deconv_shape(n),
        notes=("kernel is stored (k.., out, in): torch ConvTranspose wants (in, out, k..)",),
    )

for n in (1, 2):
    declare(
        f"DepthwiseConv{n}D",
        family="conv",
        summary=f"{n}D depthwise convolution: each input channel convolved with depth_multiplier filters",
        weights=(
            WeightDecl("depthwise_kernel", torch="weight", transform=depthwise_to_torch(n)),
            WeightDecl("bias", when=_has_bias, torch="bias"),
        ),
        output_shape=conv_shape(n, _depth_channels),
    )
    declare(
        f"SeparableConv{n}D",
        f"SeparableConvolution{n}D",
        family="conv",
        summary=f"{n}D depthwise convolution followed by a pointwise (1x1) convolution",
        weights=(
            WeightDecl("depthwise_kernel", torch="depthwise.weight", transform=depthwise_to_torch(n)),
            WeightDecl("pointwise_kernel", torch="pointwise.weight", transform=kernel_to_torch(n)),
            WeightDecl("bias", when=_has_bias, torch="pointwise.bias"),
        ),
        output_shape=conv_shape(n),
    )
