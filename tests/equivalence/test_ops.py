"""keras.ops calls recorded in Keras 3 functional graphs (pseudo-layers 'ops.<Class>') convert exactly."""
from __future__ import annotations

import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras


def _model():
    k, L = keras(), layers()
    ops = k.ops
    a = k.Input((6,), name="a")
    b = k.Input((6,), name="b")
    x = L.Dense(6, name="d")(a)
    y = ops.abs(x) + 1.0                       # ops.Absolute, ops.Add with a constant
    z = ops.sqrt(y) * ops.log(y) - ops.exp(-y)   # Sqrt, Log, Negative, Exp, Multiply, Subtract
    z = ops.square(z) / 3.0 + ops.power(y, 2.0)  # Square, TrueDivide, Power
    z = ops.maximum(z, 0.5) + ops.minimum(b, -0.25)
    z = ops.sigmoid(z) + ops.tanh(b) + ops.relu(b)
    z = ops.divide(z, y)
    return k.Model([a, b], L.Dense(3, name="out")(z))


def test_keras_ops_in_functional_graph(tmp_path):
    model = _model()
    classes = {type(op).__name__ for op in model.operations}
    assert {"Absolute", "Sqrt", "Log", "Exp", "Negative", "Square", "Power", "Maximum", "Minimum", "Sigmoid",
            "Tanh", "Relu", "Divide", "TrueDivide"} <= classes, classes
    check(model, [rand(4, 6, seed=1), rand(4, 6, seed=2)], tmp_path)


def test_constant_operand_is_not_dropped(tmp_path):
    """x + 3.0 is ops.Add with one tensor: the Add *layer* would silently drop the constant."""
    k = keras()
    inp = k.Input((5,))
    model = k.Model(inp, layers().Dense(2)(inp * (1.0 / 6.0) + 3.0))
    check(model, rand(3, 5), tmp_path)
