"""Normalization layers: BatchNormalization (epsilon 1e-3, axis, center/scale), LayerNormalization
(axis lists), GroupNormalization, UnitNormalization, RMSNormalization."""
from __future__ import annotations

import pytest

from .harness import check, check_channels_first, keras, layers, rand, seq

pytestmark = pytest.mark.keras

ATOL = 5e-5


# -------------------------------------------------------------------------- BatchNormalization

@pytest.mark.parametrize(
    "kwargs",
    [{}, {"center": False}, {"scale": False}, {"center": False, "scale": False},
     {"epsilon": 1e-2}, {"momentum": 0.5, "epsilon": 0.3}],
    ids=["default", "center-False", "scale-False", "both-False", "eps1e-2", "mom0.5-eps0.3"],
)
def test_batchnorm_after_conv2d(kwargs, tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(**kwargs))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL, optimize=True, folded=1)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"center": False}, {"scale": False}, {"center": False, "scale": False}, {"epsilon": 1e-2}],
    ids=["default", "center-False", "scale-False", "both-False", "eps1e-2"],
)
def test_batchnorm_on_dense(kwargs, tmp_path):
    L = layers()
    model = seq((6,), L.Dense(5), L.BatchNormalization(**kwargs), L.Dense(3))
    check(model, rand(2, 6), tmp_path, atol=ATOL, optimize=True, folded=1)


@pytest.mark.parametrize("axis", [1, -1, 2], ids=["axis1", "axis-1", "axis2"])
def test_batchnorm_rank3(axis, tmp_path):
    L = layers()
    model = seq((4, 6), L.Dense(6), L.BatchNormalization(axis=axis, epsilon=1e-2))
    # folded only over the Dense's own output axis
    check(model, rand(2, 4, 6), tmp_path, atol=ATOL, optimize=True, folded=int(axis != 1))


@pytest.mark.parametrize("axis", [1, 2], ids=["axis1", "axis2"])
def test_batchnorm_conv_non_channel_axis(axis, tmp_path):
    """BatchNormalization over a spatial axis of an NHWC conv output."""
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(axis=axis))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL, optimize=True, folded=0)


def test_batchnorm_conv1d_conv3d(tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((11, 3))
    b = k.Input((5, 6, 7, 2))
    ya = L.BatchNormalization(scale=False)(L.Conv1D(4, 3)(a))
    yb = L.BatchNormalization(center=False)(L.Conv3D(3, 2)(b))
    model = k.Model([a, b], [ya, yb])
    check(model, [rand(2, 11, 3, seed=1), rand(2, 5, 6, 7, 2, seed=2)], tmp_path, atol=ATOL, optimize=True,
          folded=2)


def test_batchnorm_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(epsilon=0.1),
                L.ReLU())
    check_channels_first(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL, optimize=True, folded=1)


def test_batchnorm_data_format_channels_first(tmp_path):
    """BN(axis=1) after a channels_first conv (reference: Keras on jax)."""
    L = layers()
    model = seq((3, 7, 9), L.Conv2D(4, 3, data_format="channels_first"),
                L.BatchNormalization(axis=1))
    check(model, rand(2, 3, 7, 9), tmp_path, atol=ATOL, reference="jax", optimize=True, folded=1)


# -------------------------------------------------------------------------- LayerNormalization

@pytest.mark.parametrize(
    "shape,axis,kwargs",
    [
        ((6,), -1, {}),
        ((4, 6), -1, {}),
        ((4, 6), [1, 2], {}),
        ((4, 6), 1, {}),
        ((4, 5, 6), [1, 2], {}),
        ((4, 5, 6), [1, 2, 3], {}),
        ((4, 5, 6), [2, 3], {"epsilon": 0.1}),
        ((4, 5, 6), -1, {"center": False}),
        ((4, 6), -1, {"scale": False}),
        ((4, 6), [1, 2], {"center": False, "scale": False}),
        ((4, 6), -1, {"rms_scaling": True}),
    ],
    ids=["rank2", "rank3", "rank3-axis12", "rank3-axis1", "rank4-axis12", "rank4-axis123",
         "rank4-axis23-eps0.1", "rank4-center-False", "rank3-scale-False", "rank3-axis12-none",
         "rank3-rms_scaling"],
)
def test_layernorm(shape, axis, kwargs, tmp_path):
    L = layers()
    model = seq(shape, L.Dense(6), L.LayerNormalization(axis=axis, **kwargs))
    check(model, rand(2, *shape), tmp_path, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, [1, 2, 3], [1, 2]], ids=["axis-1", "axis123", "axis12"])
def test_layernorm_after_conv(axis, tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.LayerNormalization(axis=axis))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, [1, 2]], ids=["axis-1", "axis12"])
def test_layernorm_channels_first_option(axis, tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.LayerNormalization(axis=axis))
    check_channels_first(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)


# -------------------------------------------------------------------------- GroupNormalization

@pytest.mark.parametrize(
    "groups,kwargs",
    [(2, {}), (4, {}), (1, {}), (8, {}), (4, {"center": False}), (2, {"scale": False, "epsilon": 0.1})],
    ids=["g2", "g4", "g1", "g8-instance", "g4-center-False", "g2-scale-False-eps0.1"],
)
def test_groupnorm_after_conv(groups, kwargs, tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(8, 3, padding="same"), L.GroupNormalization(groups, **kwargs))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)


def test_groupnorm_rank3_and_rank2(tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((5, 6))
    b = k.Input((8,))
    model = k.Model([a, b], [L.GroupNormalization(2)(L.Dense(4)(a)),
                             L.GroupNormalization(4)(L.Dense(8)(b))])
    check(model, [rand(2, 5, 6, seed=1), rand(2, 8, seed=2)], tmp_path, atol=ATOL)


def test_groupnorm_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(8, 3, padding="same"), L.GroupNormalization(4))
    check_channels_first(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)


# ------------------------------------------------------------------ Unit / RMS normalization

@pytest.mark.parametrize("shape,axis", [((6,), -1), ((4, 6), -1), ((4, 6), 1), ((4, 6), [1, 2])],
                         ids=["rank2", "rank3", "rank3-axis1", "rank3-axis12"])
def test_unitnorm(shape, axis, tmp_path):
    L = layers()
    model = seq(shape, L.Dense(6), L.UnitNormalization(axis=axis))
    check(model, rand(2, *shape), tmp_path)


def test_unitnorm_after_conv(tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3), L.UnitNormalization())
    check(model, rand(2, 7, 9, 3), tmp_path)


@pytest.mark.parametrize("shape,axis,epsilon", [((6,), -1, 1e-6), ((4, 6), -1, 0.1),
                                                ((4, 6), [1, 2], 1e-3)],
                         ids=["rank2", "rank3-eps0.1", "rank3-axis12"])
def test_rmsnorm(shape, axis, epsilon, tmp_path):
    L = layers()
    model = seq(shape, L.Dense(6), L.RMSNormalization(axis=axis, epsilon=epsilon))
    check(model, rand(2, *shape), tmp_path, atol=ATOL)


def test_rmsnorm_after_conv_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.RMSNormalization())
    check_channels_first(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)
