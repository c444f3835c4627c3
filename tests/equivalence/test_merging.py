"""Merging layers: Add/Subtract/Multiply/Average/Maximum/Minimum, Concatenate (axis remapping on
conv outputs), Dot."""
from __future__ import annotations

import pytest

from .harness import check, check_channels_first, keras, rand

pytestmark = pytest.mark.keras

ATOL = 5e-5
ELEMENTWISE = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]
MULTI = ["Add", "Multiply", "Average", "Maximum", "Minimum"]  # Subtract takes exactly two


def _conv_pair(k, n=2):
    L = k.layers
    inp = k.Input((7, 9, 2))
    outs = [L.Conv2D(3, 3, padding="same", name=f"conv{i}")(inp) for i in range(n)]
    return inp, outs


@pytest.mark.parametrize("merge", ELEMENTWISE)
def test_elementwise_on_conv(merge, tmp_path):
    k = keras()
    inp, (a, b) = _conv_pair(k)
    model = k.Model(inp, getattr(k.layers, merge)()([a, b]))
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("merge", MULTI)
def test_elementwise_three_inputs(merge, tmp_path):
    k = keras()
    inp, outs = _conv_pair(k, 3)
    model = k.Model(inp, getattr(k.layers, merge)()(outs))
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("merge", ELEMENTWISE)
def test_elementwise_on_dense(merge, tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((5,))
    b = k.Input((6,))
    model = k.Model([a, b], getattr(L, merge)()([L.Dense(4)(a), L.Dense(4)(b)]))
    check(model, [rand(2, 5, seed=1), rand(2, 6, seed=2)], tmp_path, atol=ATOL)


@pytest.mark.parametrize("merge", ["Add", "Multiply", "Maximum"])
def test_elementwise_broadcast(merge, tmp_path):
    """Keras merge layers broadcast (e.g. (None,7,9,3) with (None,1,1,3))."""
    k = keras()
    L = k.layers
    inp, (a, b) = _conv_pair(k)
    pooled = L.GlobalAveragePooling2D(keepdims=True)(b)
    model = k.Model(inp, getattr(L, merge)()([a, pooled]))
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("merge", ["Add", "Concatenate"])
def test_merge_channels_first_option(merge, tmp_path):
    k = keras()
    inp, (a, b) = _conv_pair(k)
    model = k.Model(inp, getattr(k.layers, merge)()([a, b]))
    check_channels_first(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, 1, 2, 3, -3], ids=["axis-1", "axis1", "axis2", "axis3", "axis-3"])
def test_concatenate_conv(axis, tmp_path):
    k = keras()
    L = k.layers
    inp = k.Input((7, 9, 2))
    a = L.Conv2D(3, 3, padding="same")(inp)
    b = L.Conv2D(3, 3, padding="same")(inp)
    model = k.Model(inp, L.Concatenate(axis=axis)([a, b]))
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, 1, 2], ids=["axis-1", "axis1", "axis2"])
def test_concatenate_conv_then_conv(axis, tmp_path):
    """Unequal sizes along the concat axis, followed by more convs and a Flatten/Dense."""
    k = keras()
    L = k.layers
    inp = k.Input((7, 9, 2))
    sizes = {-1: ((3, 3), (3, 3)), 1: ((3, 3), (2, 3)), 2: ((3, 3), (3, 2))}[axis]
    a = L.Conv2D(4, sizes[0])(inp)
    b = L.Conv2D(2 if axis == -1 else 4, sizes[1])(inp)
    c = L.Concatenate(axis=axis)([a, b])
    y = L.Conv2D(3, 2)(c)
    model = k.Model(inp, L.Dense(2)(L.Flatten()(y)))
    check(model, rand(2, 7, 9, 2), tmp_path, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, 1], ids=["axis-1", "axis1"])
def test_concatenate_rank3(axis, tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((4, 5))
    b = k.Input((4, 5))
    model = k.Model([a, b], L.Concatenate(axis=axis)([L.Dense(3)(a), L.Dense(3)(b)]))
    check(model, [rand(2, 4, 5, seed=1), rand(2, 4, 5, seed=2)], tmp_path, atol=ATOL)


def test_concatenate_data_format_channels_first(tmp_path):
    """Concatenate(axis=1) of channels_first convs (reference: Keras on jax)."""
    k = keras()
    L = k.layers
    inp = k.Input((2, 7, 9))
    a = L.Conv2D(3, 3, data_format="channels_first")(inp)
    b = L.Conv2D(4, 3, data_format="channels_first")(inp)
    model = k.Model(inp, L.Concatenate(axis=1)([a, b]))
    check(model, rand(2, 2, 7, 9), tmp_path, atol=ATOL, reference="jax")


@pytest.mark.parametrize("axes,normalize", [(1, True), (1, False), (-1, True)],
                         ids=["axes1-norm", "axes1", "axes-1-norm"])
def test_dot_rank2(axes, normalize, tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((5,))
    b = k.Input((6,))
    out = L.Dot(axes=axes, normalize=normalize)([L.Dense(4)(a), L.Dense(4)(b)])
    model = k.Model([a, b], out)
    check(model, [rand(2, 5, seed=1), rand(2, 6, seed=2)], tmp_path, atol=ATOL)


@pytest.mark.parametrize(
    "axes,normalize,shapes",
    [
        (2, False, ((3, 4), (5, 4))),
        (1, False, ((3, 4), (3, 6))),
        ((2, 2), True, ((3, 4), (5, 4))),
        ((1, 2), False, ((3, 4), (6, 3))),
        (2, True, ((3, 4), (5, 4))),
    ],
    ids=["axes2", "axes1", "axes22-norm", "axes12", "axes2-norm"],
)
def test_dot_rank3(axes, normalize, shapes, tmp_path):
    k = keras()
    L = k.layers
    (la, da), (lb, db) = shapes
    a = k.Input((la, 5))
    b = k.Input((lb, 6))
    out = L.Dot(axes=axes, normalize=normalize)([L.Dense(da)(a), L.Dense(db)(b)])
    model = k.Model([a, b], out)
    check(model, [rand(2, la, 5, seed=1), rand(2, lb, 6, seed=2)], tmp_path, atol=ATOL)


@pytest.mark.parametrize("merge", ["Add", "Concatenate", "Multiply"])
def test_merge_conv_output_with_raw_input(merge, tmp_path):
    """One operand comes from a conv (NCHW inside a converted model), the other straight from the
    NHWC model input: the layouts must be reconciled."""
    k = keras()
    L = k.layers
    inp = k.Input((7, 9, 3))
    c = L.Conv2D(3, 3, padding="same")(inp)
    m = getattr(L, merge)()([c, inp])
    model = k.Model(inp, [m, L.Dense(2)(L.Flatten()(m))])
    check(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)


@pytest.mark.parametrize("merge", ["Add", "Concatenate"])
def test_merge_conv_output_with_dense_output(merge, tmp_path):
    """Dense on a rank-4 tensor (acts on the last axis) merged with a conv output."""
    k = keras()
    L = k.layers
    inp = k.Input((7, 9, 3))
    c = L.Conv2D(4, 3, padding="same")(inp)
    d = L.Dense(4)(inp)
    m = getattr(L, merge)()([c, d])
    model = k.Model(inp, L.Conv2D(2, 3)(m))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=ATOL)
