"""Recurrent layers: SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed; Keras masks (Embedding
mask_zero, Masking) with right-, left-padded and gappy batches; Keras 2 (tf-keras) files; fixtures."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from .harness import check, compare, convert_and_load, keras, layers, rand, torch_forward

pytestmark = pytest.mark.keras

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
B, T, F = 4, 6, 3

#: Masks per batch row (1 = valid step): right-padded, left-padded, gappy (holes, a fully masked row).
MASKS = {
    "right": [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]],
    "left": [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1]],
    "gappy": [[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 1, 1]],
    "mixed": [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]],
}


def masked_floats(kind, mask_value=0.0, seed=0):
    x = rand(B, T, F, seed=seed)
    if kind != "none":
        m = np.array(MASKS[kind], bool)
        x[~m] = mask_value
    return x


def token_ids(kind, vocab=20, seed=0):
    ids = np.random.default_rng(seed).integers(1, vocab, size=(B, T)).astype(np.int32)
    if kind != "none":
        ids[~np.array(MASKS[kind], bool)] = 0
    return ids


def _rnn(cls, units=5, **kw):
    return getattr(layers(), cls)(units, **kw)


# ---------------------------------------------------------------------------- fixtures (no TF)

@pytest.mark.parametrize("name", ["text_rnn.keras", "text_rnn.h5", "text_rnn_k2.h5"])
def test_text_rnn_fixture(name, tmp_path):
    io = np.load(FIXTURES / (name.split(".")[0] + ".io.npz"))
    module = convert_and_load(FIXTURES / name, tmp_path / "out")
    got = torch_forward(module, [io["input_0"]])
    compare([io["output_0"]], got, 1e-5, 1e-5, what=name)


# ---------------------------------------------------------------------------- options x masks

OPTIONS = [
    dict(return_sequences=True),
    dict(return_sequences=False, go_backwards=True),
    dict(return_sequences=True, go_backwards=True, unroll=True),
]


@pytest.mark.parametrize("mask", ["none", "right", "left", "gappy"])
@pytest.mark.parametrize("opts", OPTIONS, ids=["seq", "last-backwards", "seq-backwards-unroll"])
@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
def test_rnn_masking_sequential(cls, opts, mask, tmp_path):
    """Sequential models: the Masking layer's mask travels implicitly (mask_value non-zero)."""
    L = layers()
    k = keras()
    model = k.Sequential([k.Input((T, F)), L.Masking(mask_value=0.5), _rnn(cls, **opts), L.Dense(2)])
    check(model, masked_floats(mask, 0.5), tmp_path, formats=("keras",))


@pytest.mark.parametrize("mask", ["right", "left", "gappy", "mixed"])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_rnn_return_state_functional(cls, mask, tmp_path):
    """Functional: Embedding(mask_zero) -> explicit NotEqual mask input; every output of return_state."""
    L = layers()
    k = keras()
    inp = k.Input((T,), dtype="int32")
    x = L.Embedding(20, F, mask_zero=True)(inp)
    outs = _rnn(cls, return_sequences=True, return_state=True)(x)
    y = L.Dense(3)(outs[0])  # the output mask goes on through Dense to the pooling
    pooled = L.GlobalAveragePooling1D()(y)
    model = k.Model(inp, [pooled, *outs])
    ids = token_ids(mask)
    if mask == "gappy":  # a fully masked row makes the masked mean 0/0 = nan (in Keras too)
        ids[2, 0] = 3
    check(model, ids, tmp_path)


@pytest.mark.parametrize(
    "cls,kw",
    [
        ("LSTM", dict(recurrent_activation="hard_sigmoid", activation="relu")),
        ("LSTM", dict(use_bias=False, activation="elu", recurrent_activation="tanh")),
        ("LSTM", dict(unit_forget_bias=False, stateful=False)),
        ("GRU", dict(reset_after=False)),
        ("GRU", dict(reset_after=False, use_bias=False)),
        ("GRU", dict(reset_after=True, use_bias=False, recurrent_activation="hard_sigmoid")),
        ("GRU", dict(reset_after=False, activation="softsign", go_backwards=True)),
        ("SimpleRNN", dict(activation="relu")),
        ("SimpleRNN", dict(activation="sigmoid", use_bias=False)),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{a}={b}" for a, b in v.items()),
)
@pytest.mark.parametrize("mask", ["none", "mixed"])
def test_rnn_cells(cls, kw, mask, tmp_path):
    L = layers()
    k = keras()
    model = k.Sequential([k.Input((T, F)), L.Masking(), _rnn(cls, return_sequences=True, **kw),
                          _rnn(cls, 4, **kw)])  # stacked
    check(model, masked_floats(mask), tmp_path, formats=("keras", "h5"))


def test_initial_state_input(tmp_path):
    L = layers()
    k = keras()
    inp = k.Input((T, F))
    h0, c0 = k.Input((5,)), k.Input((5,))
    y, h, c = L.LSTM(5, return_sequences=True, return_state=True)(inp, initial_state=[h0, c0])
    g = L.GRU(5, go_backwards=True)(y, initial_state=h)
    model = k.Model([inp, h0, c0], [g, c])
    check(model, [rand(B, T, F), rand(B, 5, seed=1), rand(B, 5, seed=2)], tmp_path)


@pytest.mark.parametrize("mask", ["left", "gappy"])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_initial_state_masked(cls, mask, tmp_path):
    """A given initial state and masked first steps: the states are kept, the output is zeros up to
    the first unmasked step (KerasRNNMixin._mask_output); one layer and Bidirectional. The mask is
    passed explicitly: Keras 3 drops the implicit one of a call with more than one tensor argument
    (keras/src/layers/layer.py, "Populate mask argument(s)")."""
    L = layers()
    k = keras()
    n = 2 if cls == "LSTM" else 1
    inp = k.Input((T,), dtype="int32")
    s0 = [k.Input((5,)) for _ in range(2 * n)]
    x = L.Embedding(20, F)(inp)
    m = k.ops.not_equal(inp, 0)
    seq = _rnn(cls, return_sequences=True, return_state=True)(x, initial_state=s0[:n], mask=m)
    last = _rnn(cls, go_backwards=True)(x, initial_state=s0[n:], mask=m)
    bi = L.Bidirectional(_rnn(cls, return_sequences=True))(x, initial_state=s0, mask=m)
    model = k.Model([inp, *s0], [*seq, last, bi])
    states = [rand(B, 5, seed=i + 1) for i in range(2 * n)]
    check(model, [token_ids(mask), *states], tmp_path, formats=("keras",))


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_initial_state_drops_the_implicit_mask(cls, tmp_path):
    """Keras 3 passes a call its input's mask only when the call has one tensor argument
    (keras/src/layers/layer.py, "Populate mask argument(s)"): with initial_state tensors the layer
    runs unmasked (every step counts, the masked ones too), while its output still carries the mask
    (the Dense after it, and the second RNN without initial_state, see it). kconv used to pass the
    mask (as Keras 2 does, whose files list the initial states as further inputs)."""
    L = layers()
    k = keras()
    n = 2 if cls == "LSTM" else 1
    inp = k.Input((T,), dtype="int32")
    s0 = [k.Input((5,)) for _ in range(2 * n)]
    x = L.Embedding(20, F, mask_zero=True)(inp)
    seq = _rnn(cls, return_sequences=True)(x, initial_state=s0[:n])
    after = _rnn(cls)(L.Dense(5)(seq))
    bi = L.Bidirectional(_rnn(cls, return_sequences=True))(x, initial_state=s0)
    model = k.Model([inp, *s0], [seq, after, bi])
    states = [rand(B, 5, seed=i + 1) for i in range(2 * n)]
    check(model, [token_ids("gappy"), *states], tmp_path, formats=("keras", "h5"))


# ---------------------------------------------------------------------------- Bidirectional

@pytest.mark.parametrize("mask", ["none", "right", "left", "gappy"])
@pytest.mark.parametrize("merge", ["concat", "sum", "ave", "mul", None])
def test_bidirectional(merge, mask, tmp_path):
    L = layers()
    k = keras()
    inp = k.Input((T,), dtype="int32")
    x = L.Embedding(20, F, mask_zero=True)(inp)
    y = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode=merge)(x)
    ys = y if isinstance(y, (list, tuple)) else [y]
    z = L.Bidirectional(L.GRU(3), merge_mode="concat")(ys[0])
    model = k.Model(inp, [*ys, z])
    check(model, token_ids(mask), tmp_path, formats=("keras",))


@pytest.mark.parametrize("mask", ["none", "mixed"])
def test_bidirectional_backward_layer_return_state(mask, tmp_path):
    L = layers()
    k = keras()
    model = k.Sequential([
        k.Input((T, F)), L.Masking(),
        L.Bidirectional(L.SimpleRNN(4, return_sequences=True),
                        backward_layer=L.SimpleRNN(4, activation="relu", return_sequences=True, go_backwards=True)),
        L.Dense(3),
        L.Bidirectional(L.GRU(3, reset_after=False, return_sequences=True)),
    ])
    check(model, masked_floats(mask), tmp_path)
    inp = k.Input((T, F))
    outs = L.Bidirectional(L.LSTM(4, return_state=True))(L.Masking()(inp))
    (tmp_path / "state").mkdir()
    check(k.Model(inp, list(outs)), masked_floats(mask), tmp_path / "state")


# ---------------------------------------------------------------------------- TimeDistributed

def test_time_distributed(tmp_path):
    L = layers()
    k = keras()
    model = k.Sequential([k.Input((T, 6, 6, 2)), L.TimeDistributed(L.Conv2D(3, 3, padding="same", strides=2)),
                          L.TimeDistributed(L.Flatten()), L.TimeDistributed(L.Dense(4)), L.LSTM(3)])
    check(model, rand(2, T, 6, 6, 2), tmp_path)


def test_time_distributed_dense_masked(tmp_path):
    L = layers()
    k = keras()
    model = k.Sequential([k.Input((T, F)), L.Masking(), L.TimeDistributed(L.Dense(4, activation="tanh")),
                          L.Dropout(0.5), L.GRU(3)])
    check(model, masked_floats("gappy"), tmp_path)


# ---------------------------------------------------------------------------- Keras 2 (tf-keras)

_K2_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tf_keras as keras
    L = keras.layers
    out = sys.argv[1]
    T, F = 6, 3
    m = np.array(%(masks)r, bool)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, T, F)).astype("float32")
    x[~m] = 0.0

    def save(name, model, inputs):
        for v in model.weights:
            v.assign(rng.normal(0, 0.5, size=v.shape).astype("float32"))
        model.save(os.path.join(out, name + ".h5"))
        y = model(inputs, training=False)
        y = y if isinstance(y, (list, tuple)) else [y]
        np.savez(os.path.join(out, name + ".npz"), x=inputs, **{"y%%d" %% i: np.asarray(v) for i, v in enumerate(y)})

    # Keras 2 hard_sigmoid (clip(0.2x+0.5)), the pre-2.3 GRU (reset_after=False), masks, Bidirectional
    save("k2_seq", keras.Sequential([
        keras.Input((T, F)), L.Masking(),
        L.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="ave"),
        L.GlobalAveragePooling1D()]), x)
    inp = keras.Input((T,), dtype="int32")
    e = L.Embedding(20, F, mask_zero=True)(inp)
    a = L.Dense(4)(e)
    b = L.Bidirectional(L.GRU(4, return_sequences=True))(e)
    s = L.Concatenate()([a, b])
    y, h, c = L.LSTM(3, return_state=True, go_backwards=True)(s)
    ids = rng.integers(1, 20, size=(4, T)).astype("int32")
    ids[~m] = 0
    save("k2_func", keras.Model(inp, [y, h, c]), ids)
    """
)


@pytest.fixture(scope="module")
def keras2_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("k2")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _K2_SCRIPT % {"masks": MASKS["mixed"]}, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", ["k2_seq", "k2_func"])
def test_keras2_files(keras2_models, name, tmp_path):
    data = np.load(keras2_models / f"{name}.npz")
    module = convert_and_load(keras2_models / f"{name}.h5", tmp_path / "out")
    expected = [data[f"y{i}"] for i in range(len(data.files) - 1)]
    compare(expected, torch_forward(module, [data["x"]]), 1e-5, 1e-5, what=name)


# ---------------------------------------------------------------------------- refusals

def test_masked_softmax_is_refused(tmp_path):
    import kconv
    from kconv.errors import UnsupportedError

    L = layers()
    k = keras()
    model = k.Sequential([k.Input((T, F)), L.Masking(), L.Softmax(axis=1)])
    model.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedError, match="mask"):
        kconv.convert(tmp_path / "m.keras", tmp_path / "out")
    assert not (tmp_path / "out").exists()
