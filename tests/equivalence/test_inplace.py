"""Activations in place (kconv.emit.codegen Emit.overwritable): an activation overwrites its input only
where nothing else reads that tensor, and never one whose backward needs it.

Every case is compared with Keras (default and --optimize output, with the harness's tooling checks:
backward, export, pickle...), and the number of in-place activations in model.py is counted, so a
rule that overwrote a tensor another layer still reads fails on the numbers, and a rule that stopped
applying fails on the count."""
from __future__ import annotations

import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras


def _model(build):
    L = layers()
    inp = L.Input((6, 6, 3))
    outs = build(L, inp)
    return keras().Model(inp, outs)


def _conv_bn(L, x, name):
    return L.BatchNormalization(name=f"{name}_bn")(L.Conv2D(4, 3, padding="same", name=f"{name}_conv")(x))


def _shared(L, x):
    b = _conv_bn(L, x, "a")
    return L.Add()([b, L.ReLU()(b)])  # the BatchNorm output is read twice: its ReLU must not overwrite it


def _also_output(L, x):
    b = _conv_bn(L, x, "a")
    return [b, L.Activation("relu")(b)]  # a model output


def _after_sigmoid(L, x):
    c = L.Conv2D(4, 3, padding="same", activation="sigmoid")(x)
    return L.ReLU()(c)  # sigmoid's backward reads its output: not overwritten


def _through_dropout(L, x):
    b = _conv_bn(L, x, "a")
    d = L.Dropout(0.3)(b)  # identity at inference: the same tensor under another name
    return L.Add()([L.Activation("swish")(d), b])


def _chain(L, x):
    r = L.ReLU(6.0)(_conv_bn(L, x, "a"))
    r = L.Activation("swish")(_conv_bn(L, r, "b"))
    s = L.Add()([r, _conv_bn(L, r, "c")])
    y = L.LeakyReLU(0.1)(s)
    y = L.Activation("elu")(L.Dense(5)(y))
    return L.Dense(3, activation="relu")(L.GlobalAveragePooling2D()(y))


CASES = {  # name: (builder, in-place BatchNorms and activations in the default output, in the optimized one)
    # each conv -> BatchNorm (its conv's only reader): KerasBatchNorm2d(..., inplace=True) in the default
    # output; --optimize folds them away
    "shared": (_shared, 1, 0),
    "also_output": (_also_output, 1, 0),
    "after_sigmoid": (_after_sigmoid, 0, 0),
    "through_dropout": (_through_dropout, 1, 0),
    # 3 BatchNorms; ReLU6, swish, LeakyReLU (after an Add), elu (after a Dense), the last Dense's own relu
    "chain": (_chain, 3 + 5, 5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_activation_in_place_only_where_safe(case, tmp_path):
    build, n_default, n_optimized = CASES[case]
    check(_model(build), rand(2, 6, 6, 3), tmp_path, formats=("keras",), optimize=True)
    for out, n in (("converted_keras", n_default), ("optimized_keras", n_optimized)):
        src = (tmp_path / out / "model.py").read_text()
        model = src[src.index("class Model("):]  # not the runtime classes' docstrings
        assert model.count("inplace=True") == n, f"{out}/model.py:\n{model}"


def test_per_layer_trace_sees_the_batch_norm_before_its_relu(tmp_path):
    """verify --per-layer records each layer's output; the ones a BatchNorm or a ReLU then overwrites
    are copied first."""
    import kconv
    from kconv.verify import verify

    from .harness import randomize_weights, save

    m = _model(lambda L, x: L.ReLU(name="relu")(_conv_bn(L, x, "a")))
    randomize_weights(m)
    path = save(m, tmp_path, "keras")
    out = kconv.convert(path, tmp_path / "out")
    src = (out / "model.py").read_text()
    assert "F.relu(a_bn, inplace=True)" in src and "momentum=0.01, inplace=True)" in src
    r = verify(path, out, per_layer=True)
    assert r.passed and r.first_divergence is None
    assert [c.name for c in r.layers] == ["a_conv", "a_bn", "relu"]
