"""Activation layers: Activation(name), ReLU, LeakyReLU (default slope 0.3), PReLU, ELU, Softmax."""
from __future__ import annotations

import pytest

from .harness import ACTIVATIONS, check, check_channels_first, layers, rand, seq

pytestmark = pytest.mark.keras

# Activations Keras 3 offers beyond the common list: kconv must either convert them exactly or
# refuse them with UnsupportedError -- never produce wrong numbers.
EXTRA_ACTIVATIONS = [
    "celu", "hard_swish", "hard_tanh", "log_sigmoid", "tanh_shrink", "squareplus", "sparse_plus",
    "soft_shrink", "hard_shrink", "sparse_sigmoid",
]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_layer(name, tmp_path):
    L = layers()
    model = seq((4, 6), L.Dense(6), L.Activation(name))
    # spread values across the interesting ranges (saturation of hard_sigmoid, relu6 at 6, ...)
    x = rand(2, 4, 6) * 3
    check(model, x, tmp_path, atol=2e-5)


@pytest.mark.parametrize("name", EXTRA_ACTIVATIONS)
def test_activation_layer_extra_exact_or_refused(name, tmp_path):
    from kconv.errors import UnsupportedError

    L = layers()
    model = seq((4, 6), L.Dense(6), L.Activation(name))
    try:
        check(model, rand(2, 4, 6) * 3, tmp_path, atol=2e-5)
    except UnsupportedError as e:
        assert "Activation" in e.by_class or name in str(e), str(e)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "relu6", "gelu"])
def test_activation_on_conv_output(name, tmp_path):
    """Softmax on a rank-4 conv output reduces over channels (last Keras axis)."""
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(5, 3, padding="same"), L.Activation(name))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=2e-5)


def test_activation_softmax_conv_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(5, 3, padding="same"), L.Activation("softmax"))
    check_channels_first(model, rand(2, 7, 9, 3), tmp_path)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_value": 1.5},
        {"negative_slope": 0.2},
        {"threshold": 0.5},
        {"max_value": 2.0, "negative_slope": 0.1},
        {"max_value": 2.0, "threshold": 0.3},
        {"negative_slope": 0.25, "threshold": 0.4},
        {"max_value": 1.0, "negative_slope": 0.05, "threshold": 0.3},
        {"max_value": 6.0},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_relu_layer(kwargs, tmp_path):
    L = layers()
    model = seq((5, 4), L.Dense(4), L.ReLU(**kwargs))
    check(model, rand(2, 5, 4) * 2, tmp_path)


@pytest.mark.parametrize("kwargs", [{}, {"negative_slope": 0.05}, {"negative_slope": 1.7}],
                         ids=["default0.3", "0.05", "1.7"])
def test_leaky_relu_layer(kwargs, tmp_path):
    L = layers()
    model = seq((7, 7, 2), L.Conv2D(3, 3), L.LeakyReLU(**kwargs))
    check(model, rand(2, 7, 7, 2), tmp_path)


def test_leaky_relu_activation_string_default(tmp_path):
    """The activation *function* leaky_relu defaults to 0.2, the layer to 0.3."""
    L = layers()
    model = seq((6,), L.Dense(5, activation="leaky_relu"), L.LeakyReLU(), L.Dense(3))
    check(model, rand(2, 6), tmp_path)


@pytest.mark.parametrize("shared_axes", [None, [1, 2], [1], [2]],
                         ids=["none", "shared12", "shared1", "shared2"])
def test_prelu_after_conv(shared_axes, tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 3, padding="same"), L.PReLU(shared_axes=shared_axes))
    check(model, rand(2, 7, 9, 2), tmp_path)


@pytest.mark.parametrize("shared_axes", [None, [1, 2], [1, 2, 3]],
                         ids=["none", "shared12", "shared123"])
def test_prelu_after_conv_channels_first_option(shared_axes, tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 3, padding="same"), L.PReLU(shared_axes=shared_axes))
    check_channels_first(model, rand(2, 7, 9, 2), tmp_path)


@pytest.mark.parametrize("shape,shared_axes", [((6,), None), ((4, 6), None), ((4, 6), [1])],
                         ids=["rank2", "rank3", "rank3-shared1"])
def test_prelu_after_dense(shape, shared_axes, tmp_path):
    L = layers()
    model = seq(shape, L.Dense(6), L.PReLU(shared_axes=shared_axes))
    check(model, rand(2, *shape), tmp_path)


@pytest.mark.parametrize("alpha", [1.0, 0.3, 2.5])
def test_elu_layer(alpha, tmp_path):
    L = layers()
    model = seq((5,), L.Dense(6), L.ELU(alpha=alpha))
    check(model, rand(2, 5) * 2, tmp_path)


@pytest.mark.parametrize("axis", [-1, 1], ids=["axis-1", "axis1"])
def test_softmax_rank3(axis, tmp_path):
    L = layers()
    model = seq((4, 6), L.Dense(6), L.Softmax(axis=axis))
    check(model, rand(2, 4, 6), tmp_path)


@pytest.mark.parametrize("axis", [-1, 1, 2, (1, 2)], ids=["axis-1", "axis1", "axis2", "axis12"])
def test_softmax_on_conv(axis, tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 3, padding="same"), L.Softmax(axis=axis))
    check(model, rand(2, 7, 9, 2), tmp_path)


@pytest.mark.parametrize("axis", [-1, 1], ids=["axis-1", "axis1"])
def test_softmax_on_conv_channels_first_option(axis, tmp_path):
    L = layers()
    model = seq((7, 9, 2), L.Conv2D(3, 3, padding="same"), L.Softmax(axis=axis))
    check_channels_first(model, rand(2, 7, 9, 2), tmp_path)
