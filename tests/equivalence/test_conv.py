"""Convolutions: ConvND, ConvNDTranspose, DepthwiseConvND, SeparableConvND; 'same' / 'causal'
padding with odd sizes (asymmetric padding), strides, dilation, groups, data_format."""
from __future__ import annotations

import pytest

from .harness import check, check_channels_first, keras, layers, rand, seq

pytestmark = pytest.mark.keras

# outputs are sums of up to ~100 products of N(0,0.5) x N(0,1): magnitude ~5, so float32
# accumulation-order differences reach a few 1e-6; 1e-4 absolute still catches any real error.
ATOL = 1e-4
RTOL = 1e-5

# spatial shapes: odd and different per axis, channels 4 (divisible by groups=2)
SPATIAL = {1: (11,), 2: (9, 11), 3: (5, 7, 6)}
CIN = 4

CONV_PADDINGS = {1: ["valid", "same", "causal"], 2: ["valid", "same"], 3: ["valid", "same"]}
STRIDE_DILATION = [(1, 1), (2, 1), (1, 2)]


def _conv_cases():
    for rank in (1, 2, 3):
        for padding in CONV_PADDINGS[rank]:
            for strides, dilation in STRIDE_DILATION:
                for groups in (1, 2):
                    for use_bias in (True, False):
                        yield pytest.param(
                            rank, padding, strides, dilation, groups, use_bias,
                            id=f"{rank}d-{padding}-s{strides}-d{dilation}-g{groups}-"
                               f"{'bias' if use_bias else 'nobias'}",
                        )


def _conv_cls(rank, kind=""):
    return getattr(layers(), f"{kind or 'Conv'}{rank}D")


@pytest.mark.parametrize("rank,padding,strides,dilation,groups,use_bias", list(_conv_cases()))
def test_conv(rank, padding, strides, dilation, groups, use_bias, tmp_path):
    Conv = _conv_cls(rank)
    layer = Conv(6, 3, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
                 use_bias=use_bias)
    shape = (*SPATIAL[rank], CIN)
    model = seq(shape, layer)
    check(model, rand(2, *shape), tmp_path, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "kernel,strides,padding,dilation",
    [
        ((3, 2), (2, 1), "same", 1),
        ((2, 4), (1, 3), "same", 1),
        ((4, 4), 2, "same", 1),
        ((1, 5), 1, "same", (1, 2)),
        ((2, 3), (2, 3), "valid", 1),
        ((5, 2), 1, "valid", (2, 1)),
    ],
    ids=["k3x2-s2x1-same", "k2x4-s1x3-same", "k4-s2-same", "k1x5-same-d1x2",
         "k2x3-s2x3-valid", "k5x2-valid-d2x1"],
)
def test_conv2d_asymmetric(kernel, strides, padding, dilation, tmp_path):
    L = layers()
    model = seq((9, 11, 3), L.Conv2D(5, kernel, strides=strides, padding=padding,
                                     dilation_rate=dilation, activation="tanh"))
    check(model, rand(2, 9, 11, 3), tmp_path, rtol=RTOL, atol=ATOL)


# Unequal padding done by the convolution itself (kconv.specs.conv._conv_input): torch pads the larger
# side on both, the output is cropped. (input shape, layers before the BatchNorm, the crop in model.py)
CROPPED = {
    # 'same', stride 2, even sizes: Keras pads (0, 1)
    "same-s2-even": ((8, 10, 3), lambda L: [L.Conv2D(4, 3, strides=2, padding="same")], "[:, :, 1:, 1:]"),
    # keras.applications' strided depthwise convolutions: ZeroPadding, then 'valid'
    "zeropad-depthwise": ((8, 8, 3), lambda L: [L.ZeroPadding2D(((0, 1), (1, 2))),
                                                L.DepthwiseConv2D(3, strides=2, depth_multiplier=2)], "[:, :, 1:, 1:]"),
    # more before than after: the extra outputs are at the end
    "zeropad-before": ((7, 9, 2), lambda L: [L.ZeroPadding2D(((2, 0), (0, 1))), L.Conv2D(3, 3)], "[:, :, :7, 1:]"),
    "same-s3-k4": ((9, 9, 2), lambda L: [L.Conv2D(2, 4, strides=3, padding="same")], "[:, :, 1:, 1:]"),
    "causal-d2": ((16, 4), lambda L: [L.Conv1D(2, 3, padding="causal", dilation_rate=2)], "[:, :, :16]"),
    "separable-same-s2": ((8, 8, 2), lambda L: [L.SeparableConv2D(3, 3, strides=2, padding="same")],
                          "[:, :, 1:, 1:]"),
    "conv3d-same-s2": ((4, 6, 8, 2), lambda L: [L.Conv3D(2, 3, strides=2, padding="same")], "[:, :, 1:, 1:, 1:]"),
}


@pytest.mark.parametrize("name", sorted(CROPPED))
def test_unequal_padding_cropped(name, tmp_path):
    """No padded copy: the convolution pads, its output cropped; a BatchNorm and an activation then
    overwrite the cropped view in place at inference (tooling checks: autograd, pickle, .double())."""
    shape, body, crop = CROPPED[name]
    L = layers()
    model = seq(shape, *body(L), L.BatchNormalization(), L.ReLU())
    check(model, rand(2, *shape), tmp_path, rtol=RTOL, atol=ATOL, formats=("keras",))
    source = (tmp_path / "converted_keras" / "model.py").read_text()
    flat = "".join(source.split())  # (where the formatter breaks a line depends on the names)
    assert "F.pad" not in source and ")" + "".join(crop.split()) in flat, source


def test_unequal_padding_copied_where_cheaper(tmp_path):
    """A convolution with many outputs on a small input: the extra outputs a crop computes cost more
    than the padded copy (PAD_COPY_MACS), which stays."""
    L = layers()
    model = seq((8, 8, 3), L.Conv2D(64, 3, strides=2, padding="same"), L.ReLU())
    check(model, rand(2, 8, 8, 3), tmp_path, rtol=RTOL, atol=ATOL, formats=("keras",))
    source = (tmp_path / "converted_keras" / "model.py").read_text()
    assert "F.pad(" in source and "[:, :," not in source, source


@pytest.mark.parametrize("kernel,strides,dilation", [(4, 1, 1), (3, 2, 1), (2, 1, 3), (5, 3, 1)],
                         ids=["k4", "k3-s2", "k2-d3", "k5-s3"])
def test_conv1d_causal_more(kernel, strides, dilation, tmp_path):
    L = layers()
    model = seq((10, 3), L.Conv1D(4, kernel, strides=strides, dilation_rate=dilation,
                                  padding="causal"))
    check(model, rand(2, 10, 3), tmp_path, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("padding,strides", [("valid", 1), ("same", 2), ("same", 1)],
                         ids=["valid-s1", "same-s2", "same-s1"])
def test_conv2d_channels_first_option(padding, strides, tmp_path):
    L = layers()
    model = seq((9, 11, 3), L.Conv2D(4, 3, strides=strides, padding=padding), L.ReLU(),
                L.Conv2D(2, 2))
    check_channels_first(model, rand(2, 9, 11, 3), tmp_path, rtol=RTOL, atol=ATOL)


def test_conv1d_conv3d_channels_first_option(tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((11, 3))
    b = k.Input((5, 7, 6, 2))
    ya = L.Conv1D(4, 3, padding="causal")(a)
    yb = L.Conv3D(3, 3, strides=2, padding="same")(b)
    model = k.Model([a, b], [ya, yb])
    check_channels_first(model, [rand(2, 11, 3, seed=1), rand(2, 5, 7, 6, 2, seed=2)], tmp_path,
                         rtol=RTOL, atol=ATOL)


# --------------------------------------------------- data_format="channels_first" in the model
# The reference comes from Keras on the jax backend (see harness.jax_forward).

@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": "valid"},
        {"padding": "same", "strides": 2},
        {"padding": "same", "dilation_rate": 2},
        {"padding": "valid", "groups": 2, "use_bias": False},
    ],
    ids=["valid", "same-s2", "same-d2", "groups2-nobias"],
)
def test_conv2d_data_format_channels_first(kwargs, tmp_path):
    L = layers()
    model = seq((4, 9, 11), L.Conv2D(6, 3, data_format="channels_first", **kwargs),
                L.Flatten(), L.Dense(3))
    check(model, rand(2, 4, 9, 11), tmp_path, rtol=RTOL, atol=ATOL, reference="jax")


def test_conv_family_data_format_channels_first(tmp_path):
    k = keras()
    L = k.layers
    cf = {"data_format": "channels_first"}
    a = k.Input((4, 11))
    b = k.Input((4, 7, 9))
    ya = L.Conv1D(3, 3, padding="same", strides=2, **cf)(a)
    yb = L.Conv2DTranspose(3, 3, strides=2, padding="same", **cf)(b)
    yc = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", **cf)(b)
    yd = L.SeparableConv2D(5, 3, depth_multiplier=2, **cf)(b)
    model = k.Model([a, b], [ya, yb, yc, yd])
    check(model, [rand(2, 4, 11, seed=1), rand(2, 4, 7, 9, seed=2)], tmp_path,
          rtol=RTOL, atol=ATOL, reference="jax")


# ------------------------------------------------------------------------------- transposed

TRANSPOSE_SPATIAL = {1: (7,), 2: (5, 7), 3: (3, 4, 5)}
# (strides, output_padding, dilation); output_padding must be < strides, and Keras forbids
# strides > 1 with dilation > 1. output_padding=0 differs from None for 'same' (2i-1 vs 2i).
TRANSPOSE_SOD = [(1, None, 1), (1, 0, 1), (2, None, 1), (2, 0, 1), (2, 1, 1), (3, None, 1),
                 (3, 1, 1), (3, 2, 1), (1, None, 2)]


def _transpose_cases():
    for rank in (1, 2, 3):
        for padding in ("valid", "same"):
            for s, op, d in TRANSPOSE_SOD:
                yield pytest.param(rank, padding, s, op, d,
                                   id=f"{rank}d-{padding}-s{s}-op{op}-d{d}")


@pytest.mark.parametrize("rank,padding,strides,output_padding,dilation", list(_transpose_cases()))
def test_conv_transpose(rank, padding, strides, output_padding, dilation, tmp_path):
    Conv = getattr(layers(), f"Conv{rank}DTranspose")
    layer = Conv(5, 3, strides=strides, padding=padding, output_padding=output_padding,
                 dilation_rate=dilation)
    shape = (*TRANSPOSE_SPATIAL[rank], 3)
    model = seq(shape, layer)
    check(model, rand(2, *shape), tmp_path, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "kernel,strides,padding,output_padding,use_bias",
    [
        (4, 2, "same", None, True),
        (2, 2, "same", None, False),
        (4, 3, "same", 2, True),
        ((3, 2), (2, 1), "same", None, True),
        ((2, 5), (3, 2), "valid", (1, 1), False),
        ((1, 4), (1, 2), "same", (0, 1), True),
        (5, 2, "valid", None, True),
    ],
    ids=["k4-s2-same", "k2-s2-same-nobias", "k4-s3-same-op2", "k3x2-s2x1-same",
         "k2x5-s3x2-valid-op1", "k1x4-s1x2-same-op0x1", "k5-s2-valid"],
)
def test_conv2d_transpose_more(kernel, strides, padding, output_padding, use_bias, tmp_path):
    L = layers()
    model = seq((5, 6, 2), L.Conv2DTranspose(4, kernel, strides=strides, padding=padding,
                                             output_padding=output_padding, use_bias=use_bias))
    check(model, rand(2, 5, 6, 2), tmp_path, rtol=RTOL, atol=ATOL)


def test_conv2d_transpose_channels_first_option(tmp_path):
    L = layers()
    model = seq((5, 6, 2), L.Conv2DTranspose(4, 3, strides=2, padding="same"),
                L.Conv2D(3, 3, strides=2, padding="same"))
    check_channels_first(model, rand(2, 5, 6, 2), tmp_path, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------- depthwise

def _depthwise_cases():
    for rank in (1, 2):
        for mult in (1, 2):
            for strides, padding in ((1, "valid"), (1, "same"), (2, "same"), (2, "valid")):
                yield pytest.param(rank, mult, strides, padding,
                                   id=f"{rank}d-m{mult}-s{strides}-{padding}")


@pytest.mark.parametrize("rank,mult,strides,padding", list(_depthwise_cases()))
def test_depthwise(rank, mult, strides, padding, tmp_path):
    Conv = getattr(layers(), f"DepthwiseConv{rank}D")
    shape = (*SPATIAL[rank], 3)
    model = seq(shape, Conv(3, strides=strides, padding=padding, depth_multiplier=mult))
    check(model, rand(2, *shape), tmp_path, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("rank", [1, 2])
def test_depthwise_dilation_nobias(rank, tmp_path):
    Conv = getattr(layers(), f"DepthwiseConv{rank}D")
    shape = (*SPATIAL[rank], 3)
    model = seq(shape, Conv(3, padding="same", dilation_rate=2, depth_multiplier=2,
                            use_bias=False, activation="relu"))
    check(model, rand(2, *shape), tmp_path, rtol=RTOL, atol=ATOL)


def test_depthwise_channels_first_option(tmp_path):
    L = layers()
    model = seq((9, 11, 3), L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2))
    check_channels_first(model, rand(2, 9, 11, 3), tmp_path, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------- separable

@pytest.mark.parametrize(
    "rank,strides,padding,use_bias,dilation",
    [(1, 1, "valid", True, 1), (1, 2, "same", False, 1), (1, 1, "same", True, 2),
     (2, 1, "valid", True, 1), (2, 2, "same", True, 1), (2, 1, "same", False, 2)],
    ids=["1d-valid", "1d-same-s2-nobias", "1d-same-d2", "2d-valid", "2d-same-s2",
         "2d-same-d2-nobias"],
)
def test_separable(rank, strides, padding, use_bias, dilation, tmp_path):
    Conv = getattr(layers(), f"SeparableConv{rank}D")
    shape = (*SPATIAL[rank], 3)
    model = seq(shape, Conv(5, 3, strides=strides, padding=padding, depth_multiplier=2,
                            use_bias=use_bias, dilation_rate=dilation))
    check(model, rand(2, *shape), tmp_path, rtol=RTOL, atol=ATOL)


def test_separable_channels_first_option(tmp_path):
    L = layers()
    model = seq((9, 11, 3), L.SeparableConv2D(5, 3, padding="same", depth_multiplier=2),
                L.Flatten(), L.Dense(2))
    check_channels_first(model, rand(2, 9, 11, 3), tmp_path, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------- stacks

def test_conv_stack_with_activations(tmp_path):
    L = layers()
    model = seq((9, 11, 3),
                L.Conv2D(6, 3, padding="same", activation="relu"),
                L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"),
                L.Conv2D(4, 1, activation="swish"),
                L.SeparableConv2D(3, 3, padding="same", activation="gelu"),
                L.Flatten(),
                L.Dense(2))
    check(model, rand(2, 9, 11, 3), tmp_path, rtol=RTOL, atol=ATOL)
