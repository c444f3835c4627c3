"""Reshaping layers after convolutions (so the NHWC/NCHW layout question is exercised): Flatten,
Reshape, Permute, RepeatVector, Cropping, ZeroPadding, UpSampling."""
from __future__ import annotations

import pytest

from .harness import check, check_channels_first, layers, rand, seq

pytestmark = pytest.mark.keras

ATOL = 5e-5


# ----------------------------------------------------------------------------------- Flatten

@pytest.mark.parametrize("rank", [1, 2, 3])
def test_flatten_after_conv_then_dense(rank, tmp_path):
    """The NHWC trap: Flatten after a conv flattens in H,W,C order."""
    L = layers()
    spatial = {1: (9,), 2: (7, 9), 3: (5, 6, 7)}[rank]
    Conv = getattr(L, f"Conv{rank}D")
    model = seq((*spatial, 2), Conv(3, 2, padding="same"), L.Flatten(), L.Dense(4))
    check(model, rand(2, *spatial, 2), tmp_path, atol=ATOL)


def test_flatten_output_directly(tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 3), L.Flatten())
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


def test_flatten_after_conv_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 3), L.Flatten(), L.Dense(4))
    check_channels_first(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


def test_flatten_after_pooling_bn_chain(tmp_path):
    L = layers()
    model = seq((9, 11, 3), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(),
                L.MaxPooling2D(2, padding="same"), L.Conv2D(5, 3, strides=2), L.Flatten(),
                L.Dense(6, activation="relu"), L.Dense(2))
    check(model, rand(2, 9, 11, 3), tmp_path, atol=ATOL)


# ----------------------------------------------------------------------------------- Reshape

@pytest.mark.parametrize(
    "target",
    [(63,), (9, 7), (7, 3, 3), (-1, 3), (3, -1, 7), (21, 1, 3)],
    ids=["flat", "9x7", "7x3x3", "m1x3", "3xm1x7", "21x1x3"],
)
def test_reshape_after_conv(target, tmp_path):
    L = layers()
    # conv output (2, 3, 7, 3): 63 values per sample
    model = seq((5, 9, 2), L.Conv2D(3, 3), L.Reshape(target), L.Dense(2))
    check(model, rand(2, 5, 9, 2), tmp_path, atol=ATOL)


def test_reshape_to_image_then_conv(tmp_path):
    L = layers()
    model = seq((12,), L.Dense(30), L.Reshape((3, 5, 2)), L.Conv2D(4, 2, padding="same"),
                L.Flatten(), L.Dense(3))
    check(model, rand(2, 12), tmp_path, atol=ATOL)


def test_reshape_channels_first_option(tmp_path):
    L = layers()
    model = seq((5, 9, 2), L.Conv2D(3, 3), L.Reshape((7, 3, 3)), L.Conv2D(2, 2))
    check_channels_first(model, rand(2, 5, 9, 2), tmp_path, atol=ATOL)


# ----------------------------------------------------------------------------------- Permute

@pytest.mark.parametrize("dims", [(2, 1, 3), (3, 1, 2), (1, 3, 2), (3, 2, 1)],
                         ids=["213", "312", "132", "321"])
def test_permute_after_conv(dims, tmp_path):
    L = layers()
    model = seq((5, 7, 2), L.Conv2D(3, 2), L.Permute(dims), L.Conv2D(2, 2))
    check(model, rand(2, 5, 7, 2), tmp_path, atol=ATOL)


def test_permute_rank3(tmp_path):
    L = layers()
    model = seq((4, 6), L.Dense(5), L.Permute((2, 1)), L.Dense(3))
    check(model, rand(2, 4, 6), tmp_path, atol=ATOL)


def test_permute_channels_first_option(tmp_path):
    L = layers()
    model = seq((5, 7, 2), L.Conv2D(3, 2), L.Permute((3, 1, 2)), L.Flatten(), L.Dense(2))
    check_channels_first(model, rand(2, 5, 7, 2), tmp_path, atol=ATOL)


# ------------------------------------------------------------------------------ RepeatVector

def test_repeat_vector(tmp_path):
    L = layers()
    model = seq((5,), L.Dense(4), L.RepeatVector(3), L.Conv1D(2, 2))
    check(model, rand(2, 5), tmp_path, atol=ATOL)


# ----------------------------------------------------------------------------------- Cropping

@pytest.mark.parametrize("cropping", [1, (2, 0), (0, 3)], ids=["1", "2-0", "0-3"])
def test_cropping1d(cropping, tmp_path):
    L = layers()
    model = seq((11, 2), L.Conv1D(3, 2), L.Cropping1D(cropping))
    check(model, rand(2, 11, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("cropping", [1, (1, 2), ((0, 2), (3, 1)), ((2, 1), (0, 0))],
                         ids=["1", "1-2", "0-2-3-1", "2-1-0-0"])
def test_cropping2d(cropping, tmp_path):
    L = layers()
    model = seq((9, 11, 2), L.Conv2D(3, 2), L.Cropping2D(cropping))
    check(model, rand(2, 9, 11, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("cropping", [1, ((1, 0), (0, 2), (1, 1))], ids=["1", "asym"])
def test_cropping3d(cropping, tmp_path):
    L = layers()
    model = seq((5, 6, 7, 2), L.Conv3D(3, 1), L.Cropping3D(cropping))
    check(model, rand(2, 5, 6, 7, 2), tmp_path, atol=ATOL)


def test_cropping2d_channels_first_option(tmp_path):
    L = layers()
    model = seq((9, 11, 2), L.Conv2D(3, 2), L.Cropping2D(((0, 2), (3, 1))))
    check_channels_first(model, rand(2, 9, 11, 2), tmp_path, atol=ATOL)


# ------------------------------------------------------------------------------- ZeroPadding

@pytest.mark.parametrize("padding", [1, (2, 0), (0, 3)], ids=["1", "2-0", "0-3"])
def test_zeropadding1d(padding, tmp_path):
    L = layers()
    model = seq((9, 2), L.Conv1D(3, 2), L.ZeroPadding1D(padding), L.Conv1D(2, 3))
    check(model, rand(2, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("padding", [1, (1, 2), ((0, 2), (3, 1)), ((2, 1), (0, 0))],
                         ids=["1", "1-2", "0-2-3-1", "2-1-0-0"])
def test_zeropadding2d(padding, tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 2), L.ZeroPadding2D(padding), L.Conv2D(2, 3))
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("padding", [1, ((1, 0), (0, 2), (2, 1))], ids=["1", "asym"])
def test_zeropadding3d(padding, tmp_path):
    L = layers()
    model = seq((4, 5, 6, 2), L.Conv3D(3, 2), L.ZeroPadding3D(padding))
    check(model, rand(2, 4, 5, 6, 2), tmp_path, atol=ATOL)


def test_zeropadding2d_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 2), L.ZeroPadding2D(((0, 2), (3, 1))), L.Conv2D(2, 3))
    check_channels_first(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


# ------------------------------------------------------------------------------- UpSampling

@pytest.mark.parametrize("size", [2, 3])
def test_upsampling1d(size, tmp_path):
    L = layers()
    model = seq((5, 2), L.Conv1D(3, 2), L.UpSampling1D(size))
    check(model, rand(2, 5, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize(
    "size,interpolation",
    [(2, "nearest"), ((2, 3), "nearest"), (2, "bilinear"), ((3, 2), "bilinear")],
    ids=["2-nearest", "2x3-nearest", "2-bilinear", "3x2-bilinear"],
)
def test_upsampling2d(size, interpolation, tmp_path):
    L = layers()
    model = seq((5, 7, 2), L.Conv2D(3, 2), L.UpSampling2D(size, interpolation=interpolation),
                L.Conv2D(2, 2))
    check(model, rand(2, 5, 7, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("size", [2, (1, 2, 3)], ids=["2", "1x2x3"])
def test_upsampling3d(size, tmp_path):
    L = layers()
    model = seq((3, 4, 5, 2), L.Conv3D(3, 2), L.UpSampling3D(size))
    check(model, rand(2, 3, 4, 5, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling2d_channels_first_option(interpolation, tmp_path):
    L = layers()
    model = seq((5, 7, 2), L.Conv2D(3, 2), L.UpSampling2D((2, 3), interpolation=interpolation))
    check_channels_first(model, rand(2, 5, 7, 2), tmp_path, atol=ATOL)


def test_reshaping_data_format_channels_first(tmp_path):
    """Cropping/ZeroPadding/UpSampling with data_format="channels_first" (reference: jax)."""
    L = layers()
    cf = {"data_format": "channels_first"}
    model = seq((2, 7, 9),
                L.Conv2D(3, 2, **cf),
                L.ZeroPadding2D(((0, 2), (3, 1)), **cf),
                L.Cropping2D(((1, 0), (0, 2)), **cf),
                L.UpSampling2D((2, 3), interpolation="bilinear", **cf),
                L.Flatten(),
                L.Dense(3))
    check(model, rand(2, 2, 7, 9), tmp_path, atol=ATOL, reference="jax")
