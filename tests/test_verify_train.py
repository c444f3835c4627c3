"""`kconv verify --mode train`: BatchNormalization in training mode, and its updated statistics."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import kconv
from kconv.cli import main

pytestmark = pytest.mark.keras


def _model(frozen=False, dropout=0.0):
    import keras

    L = keras.layers
    rng = np.random.default_rng(0)
    i = keras.Input((9, 9, 3))
    x = L.Conv2D(4, 3)(i)
    x = L.BatchNormalization(momentum=0.9, trainable=not frozen, name="bn_conv")(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)
    if dropout:
        x = L.Dropout(dropout)(x)
    x = L.Dense(5)(x)
    x = L.BatchNormalization(center=False, epsilon=1e-2, name="bn_dense")(x)
    m = keras.Model(i, x)
    for v in m.weights:
        a = rng.normal(0, 0.5, v.shape).astype("float32")
        if "variance" in v.path:
            a = np.abs(a) + 0.5
        v.assign(a)
    return m


def _convert(model, tmp_path):
    path = tmp_path / "m.keras"
    model.save(path)
    out = kconv.convert(path, tmp_path / "out")
    return path, out


@pytest.mark.parametrize("frozen", [False, True])
def test_train_mode_matches_keras(frozen, tmp_path):
    path, out = _convert(_model(frozen), tmp_path)
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train", "--json"])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads(r.output)
    names = [o["name"] for o in rep["outputs"]]
    assert "bn_conv.moving_variance (updated)" in names
    assert "grad bn_dense.gamma -> bn_dense.weight" in names
    assert sum(n.startswith("grad ") and n.endswith(".weight") for n in names) >= 2 + (not frozen)  # conv, dense
    # a frozen layer: no gradient on either side, unchanged by the step
    assert ("grad bn_conv.gamma -> bn_conv.weight" in names) == (not frozen)
    assert "bn_conv.gamma -> bn_conv.weight after SGD step" in names


def test_torch_batchnorm_semantics_are_caught(tmp_path):
    """Plain nn.BatchNorm updates the running variance with the unbiased batch variance: caught."""
    path, out = _convert(_model(), tmp_path)
    src = (out / "model.py").read_text()
    (out / "model.py").write_text(src.replace("= KerasBatchNorm2d(", "= nn.BatchNorm2d(").replace(
        "= KerasBatchNorm1d(", "= nn.BatchNorm1d(").replace(", inplace=True)", ")"))
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train"])
    assert r.exit_code == 1, r.output
    assert "moving_variance (updated)" in r.output


def test_train_mode_refuses_random_layers(tmp_path):
    path, out = _convert(_model(dropout=0.3), tmp_path)
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train"])
    assert r.exit_code == 2
    assert "deterministic" in r.output and "dropout" in r.output


# --- gradients and one SGD step against Keras, per layer family with weights ---------------------------

def _family_model(case):
    import keras

    L = keras.layers
    seq3 = (5, 4)
    img = (6, 6, 3)
    builders = {
        "Dense": (seq3, lambda x: L.Dense(3)(x)),
        "Dense-frozen": (seq3, lambda x: L.Dense(3, activation="tanh")(L.Dense(4, trainable=False)(x))),
        "EinsumDense": (seq3, lambda x: L.EinsumDense("abc,cd->abd", output_shape=(None, 3), bias_axes="d")(x)),
        "Embedding": ((5,), lambda x: L.Dense(2)(L.Embedding(7, 3)(x))),
        "Conv1D": (seq3, lambda x: L.Conv1D(3, 2, padding="same")(x)),
        "Conv2D": (img, lambda x: L.Conv2D(4, 3, strides=2, padding="same")(x)),
        "Conv3D": ((4, 4, 4, 2), lambda x: L.Conv3D(2, 2)(x)),
        "Conv2DTranspose": (img, lambda x: L.Conv2DTranspose(2, 3, strides=2)(x)),
        "DepthwiseConv2D": (img, lambda x: L.DepthwiseConv2D(3, depth_multiplier=2)(x)),
        "SeparableConv2D": (img, lambda x: L.SeparableConv2D(4, 3)(x)),
        "BatchNormalization": (img, lambda x: L.BatchNormalization(momentum=0.8)(L.Conv2D(3, 1)(x))),
        "LayerNormalization": (seq3, lambda x: L.Dense(2)(L.LayerNormalization()(x))),
        "GroupNormalization": (img, lambda x: L.GroupNormalization(groups=3)(x)),
        "PReLU": (seq3, lambda x: L.PReLU()(x)),
        "SimpleRNN": (seq3, lambda x: L.SimpleRNN(3, return_sequences=True)(x)),
        "LSTM": (seq3, lambda x: L.LSTM(3)(x)),
        "GRU": (seq3, lambda x: L.GRU(3, return_sequences=True)(x)),
        "GRU-reset_before": (seq3, lambda x: L.GRU(3, reset_after=False)(x)),
        "Bidirectional": (seq3, lambda x: L.Bidirectional(L.LSTM(2, return_sequences=True))(x)),
        "ConvLSTM1D": ((3, 5, 2), lambda x: L.ConvLSTM1D(2, 2)(x)),
        "MultiHeadAttention": (seq3, lambda x: L.MultiHeadAttention(2, 3)(x, x, use_causal_mask=True)),
        "Attention": (seq3, lambda x: L.Attention(use_scale=True)([x, x])),
        "AdditiveAttention": (seq3, lambda x: L.AdditiveAttention()([x, x])),
    }
    shape, build = builders[case]
    dtype = "int32" if case == "Embedding" else "float32"
    i = keras.Input(shape, dtype=dtype)
    m = keras.Model(i, build(i))
    rng = np.random.default_rng(1)
    for v in m.weights:
        a = rng.normal(0, 0.5, v.shape)
        if "variance" in v.path:
            a = np.abs(a) + 0.5
        v.assign(a.astype(str(v.dtype)))
    return m


FAMILIES = ["Dense", "Dense-frozen", "EinsumDense", "Embedding", "Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose",
            "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization", "LayerNormalization", "GroupNormalization",
            "PReLU", "SimpleRNN", "LSTM", "GRU", "GRU-reset_before", "Bidirectional", "ConvLSTM1D",
            "MultiHeadAttention", "Attention", "AdditiveAttention"]


@pytest.mark.parametrize("case", FAMILIES)
def test_gradients_and_sgd_step_match_keras(case, tmp_path):
    """verify --mode train: the gradient of the same loss w.r.t. every trainable weight, and every
    weight after one SGD step, agree with Keras's (GradientTape); frozen weights stay frozen."""
    from kconv.verify import verify

    m = _family_model(case)
    path, out = _convert(m, tmp_path)
    n_trainable = len(m.trainable_weights)
    r = verify(path, out, mode="train", atol=1e-5, rtol=1e-4)
    grads = [c for c in r.outputs if c.name.startswith("grad ")]
    steps = [c for c in r.outputs if c.name.endswith("after SGD step")]
    assert r.passed, r.summary() + "\n" + "\n".join(f"{c.name}: {c.max_abs_err:.3g} {c.problem}"
                                                     for c in r.outputs if not c.passed)
    assert len(grads) >= n_trainable, [c.name for c in grads]  # every trainable Keras weight, at least once
    assert len(steps) >= len(m.weights)
    assert not [n for n in r.notes if n.startswith("gradients not compared")], r.notes


def test_frozen_layers_have_no_gradient(tmp_path):
    """Keras trainable=False -> requires_grad=False in the emitted constructor, recorded in the manifest;
    an LSTM's bias_hh (Keras has no such term) is frozen too."""
    import json

    import keras

    L = keras.layers
    i = keras.Input((5, 4))
    x = L.LSTM(3, return_sequences=True, name="lstm")(i)
    x = L.Dense(2, trainable=False, name="frozen")(x)
    path, out = _convert(keras.Model(i, x), tmp_path)
    net = kconv.load_converted(out)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"frozen.weight", "frozen.bias", "lstm.bias_hh_l0"}
    rows = json.loads((out / "kconv.json").read_text())["weights"]
    assert {r["torch_key"]: r["trainable"] for r in rows} == {
        "lstm.weight_ih_l0": True, "lstm.weight_hh_l0": True, "lstm.bias_ih_l0": True, "lstm.bias_hh_l0": False,
        "frozen.weight": False, "frozen.bias": False}


def test_a_trained_bias_hh_is_caught(tmp_path):
    """Without the freeze, one SGD step gives the LSTM a second bias that Keras does not have: caught."""
    import keras

    L = keras.layers
    i = keras.Input((5, 4))
    path, out = _convert(keras.Model(i, L.LSTM(3, name="lstm")(i)), tmp_path)
    src = (out / "model.py").read_text()
    assert "self.lstm.bias_hh_l0.requires_grad_(False)" in src
    (out / "model.py").write_text(src.replace("self.lstm.bias_hh_l0.requires_grad_(False)", "pass"))
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train"])
    assert r.exit_code == 1, r.output
    assert "lstm.bias -> lstm.bias_hh_l0 after SGD step" in r.output
