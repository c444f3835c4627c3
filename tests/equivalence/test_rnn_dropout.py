"""RNN dropout / recurrent_dropout (keras/src/layers/rnn/dropout_rnn_cell.py and the cells in
simple_rnn.py, lstm.py, gru.py): identity in eval mode; in train mode one mask per sequence, drawn at
the start of the call and applied at every step to the input (dropout) and to h (recurrent_dropout),
one mask per gate for LSTM/GRU with recurrent_dropout (implementation 1).

Both frameworks draw their own random numbers, so train mode is checked (1) against Keras with the
converted module's masks injected into the Keras cell, and (2) statistically (same units dropped at
every step, rate, scaling)."""
from __future__ import annotations

import numpy as np
import pytest

from .harness import check, compare, convert_and_load, keras, layers, rand, randomize_weights, save

pytestmark = pytest.mark.keras

B, T, F, U = 4, 6, 3, 5

CONFIGS = [
    dict(dropout=0.4),
    dict(recurrent_dropout=0.3),
    dict(dropout=0.4, recurrent_dropout=0.3),
]
CLASSES = [("SimpleRNN", {}), ("LSTM", {}), ("GRU", {}), ("GRU", dict(reset_after=False))]
CLASS_IDS = ["SimpleRNN", "LSTM", "GRU", "GRU-reset_before"]


def _model(cls, kw, drop, go_backwards=False, units=U, feats=F):
    k, L = keras(), layers()
    return k.Sequential([k.Input((T, feats)),
                         getattr(L, cls)(units, return_sequences=True, go_backwards=go_backwards, **kw, **drop),
                         L.Dense(2)])


# ---------------------------------------------------------------------------- eval mode

@pytest.mark.parametrize("drop", CONFIGS, ids=["dropout", "recurrent", "both"])
@pytest.mark.parametrize("cls,kw", CLASSES, ids=CLASS_IDS)
def test_eval_mode_is_identity(cls, kw, drop, tmp_path):
    check(_model(cls, kw, drop), rand(B, T, F), tmp_path, formats=("keras",))


def test_eval_mode_bidirectional(tmp_path):
    k, L = keras(), layers()
    model = k.Sequential([k.Input((T, F)),
                          L.Bidirectional(L.LSTM(U, dropout=0.3, recurrent_dropout=0.2, return_sequences=True))])
    check(model, rand(B, T, F), tmp_path, formats=("keras",))


# ---------------------------------------------------------------------------- train mode, same masks

def _rnn_modules(module):
    return [m for m in module.modules() if hasattr(m, "last_dropout_masks")]


def _inject(cell, masks, n_masks):
    """Make the Keras cell use the given masks (Keras gate order) instead of drawing its own."""
    import tensorflow as tf

    def value(ms):
        if ms is None:
            return None
        ts = [tf.constant(m.detach().numpy()) for m in ms]
        return ts if n_masks > 1 else ts[0]

    dp, rec = (value(m) for m in masks)
    cell.get_dropout_mask = lambda step_input: dp
    cell.get_recurrent_dropout_mask = lambda step_input: rec


def _train_check(model, layer, x, tmp_path, n_expected_masks):
    import torch

    randomize_weights(model)
    module = convert_and_load(save(model, tmp_path, "keras"), tmp_path / "out")
    module.train()
    torch.manual_seed(0)
    got = module(torch.from_numpy(x))
    rnn = _rnn_modules(module)
    assert len(rnn) == 1
    masks = rnn[0].last_dropout_masks
    assert masks is not None, "train mode with dropout drew no masks"
    for ms in masks:
        if ms is not None:
            assert len(ms) == n_expected_masks
            assert all(tuple(m.shape)[0] == x.shape[0] for m in ms)
    _inject(layer.cell, masks, n_expected_masks)
    expected = model(x, training=True)
    compare([np.asarray(expected)], [got.detach().numpy()], 1e-5, 1e-5, what="train mode")
    # the masks really change the output (else the check above proves nothing)
    module.eval()
    assert not np.allclose(module(torch.from_numpy(x)).detach().numpy(), got.detach().numpy())


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "backwards"])
@pytest.mark.parametrize("drop", CONFIGS, ids=["dropout", "recurrent", "both"])
@pytest.mark.parametrize("cls,kw", CLASSES, ids=CLASS_IDS)
def test_train_mode_with_injected_masks(cls, kw, drop, go_backwards, tmp_path):
    model = _model(cls, kw, drop, go_backwards)
    n = 1 if cls == "SimpleRNN" or not drop.get("recurrent_dropout") else (4 if cls == "LSTM" else 3)
    _train_check(model, model.layers[0], rand(B, T, F), tmp_path, n)


def test_train_mode_rnn_cell(tmp_path):
    k, L = keras(), layers()
    model = k.Sequential([k.Input((T, F)), L.RNN(L.LSTMCell(U, dropout=0.3, recurrent_dropout=0.25),
                                                 return_sequences=True)])
    _train_check(model, model.layers[0], rand(B, T, F), tmp_path, 4)


def test_train_mode_masked_input(tmp_path):
    k, L = keras(), layers()
    x = rand(B, T, F)
    x[1, 3:] = 0.0
    x[2, :2] = 0.0
    model = k.Sequential([k.Input((T, F)), L.Masking(0.0), L.GRU(U, dropout=0.3, return_sequences=True)])
    _train_check(model, model.layers[1], x, tmp_path, 1)


def test_rate_one_lstm_is_not_applied(tmp_path):
    """LSTMCell applies dropout only for 0 < rate < 1: rate 1 is identity even in train mode."""
    import torch

    model = _model("LSTM", {}, dict(dropout=1.0))
    randomize_weights(model)
    module = convert_and_load(save(model, tmp_path, "keras"), tmp_path / "out")
    x = rand(B, T, F)
    module.train()
    expected = np.asarray(model(x, training=True))
    compare([expected], [module(torch.from_numpy(x)).detach().numpy()], 1e-5, 1e-5)


# ---------------------------------------------------------------------------- statistics

def _identity_rnn(tmp_path, **drop):
    """SimpleRNN with linear activation, kernel I, recurrent kernel I (or 0), no bias."""
    k, L = keras(), layers()
    n = 8
    model = k.Sequential([k.Input((T, n)), L.SimpleRNN(n, activation="linear", use_bias=False,
                                                       return_sequences=True, **drop)])
    rec = np.eye(n) if drop.get("recurrent_dropout") else np.zeros((n, n))
    model.layers[0].set_weights([np.eye(n, dtype="float32"), rec.astype("float32")])
    module = convert_and_load(save(model, tmp_path, "keras"), tmp_path / "out")
    return model, module, n


def _per_sequence_stats(y, rate, scale_power=None):
    """y: (batch, time, units), each step = the mask (to some power): same zeros at every step."""
    zeros = y == 0
    assert (zeros == zeros[:, :1]).all(), "the dropped units change between steps"
    frac = zeros[:, 0].mean()
    assert abs(frac - rate) < 0.05, f"dropped fraction {frac}, rate {rate}"
    assert len({tuple(r) for r in zeros[:, 0]}) > 1, "every sequence has the same mask"


def test_input_dropout_statistics(tmp_path):
    import torch

    rate = 0.5
    model, module, n = _identity_rnn(tmp_path, dropout=rate)
    x = np.ones((512, T, n), np.float32)
    module.train()
    torch.manual_seed(1)
    y = module(torch.from_numpy(x)).detach().numpy()
    _per_sequence_stats(y, rate)
    assert set(np.unique(y)) <= {0.0, 1 / (1 - rate)}
    y2 = module(torch.from_numpy(x)).detach().numpy()
    assert not np.array_equal(y, y2), "the same mask for two calls"
    # Keras shows the same structure (one mask per sequence)
    yk = np.asarray(model(x, training=True))
    _per_sequence_stats(yk, rate)
    assert set(np.unique(yk)) <= {0.0, np.float32(1 / (1 - rate))}


def test_recurrent_dropout_statistics(tmp_path):
    """x_0 = 1, later inputs 0, kernel = recurrent kernel = I: h_t = m ** t, so the zeros from t = 1
    on are the recurrent mask's, the same at every step."""
    import torch

    rate = 0.5
    model, module, n = _identity_rnn(tmp_path, recurrent_dropout=rate)
    x = np.zeros((512, T, n), np.float32)
    x[:, 0] = 1.0
    module.train()
    torch.manual_seed(2)
    y = module(torch.from_numpy(x)).detach().numpy()
    assert (y[:, 0] == 1).all()
    _per_sequence_stats(y[:, 1:], rate)
    yk = np.asarray(model(x, training=True))
    _per_sequence_stats(yk[:, 1:], rate)


@pytest.mark.parametrize("drop", [dict(dropout=0.3, recurrent_dropout=0.2), dict(dropout=0.3)],
                         ids=["both", "dropout"])
@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_train_mode_bidirectional(cls, drop, tmp_path):
    """Each direction draws its own masks (two cells in Keras); masked steps. With input dropout
    only, the two directions' step loops run as one (KerasBidirectional._together)."""
    import torch

    n = (4 if cls == "LSTM" else 3) if drop.get("recurrent_dropout") else 1
    k, L = keras(), layers()
    model = k.Sequential([k.Input((T, F)), L.Masking(0.0), L.Bidirectional(
        getattr(L, cls)(U, return_sequences=True, **drop))])
    randomize_weights(model)
    module = convert_and_load(save(model, tmp_path, "keras"), tmp_path / "out")
    x = rand(B, T, F)
    x[1, 3:] = 0.0
    x[2, :2] = 0.0
    module.train()
    torch.manual_seed(3)
    got = module(torch.from_numpy(x)).detach().numpy()
    bi = next(m for m in module.modules() if hasattr(m, "forward_layer"))
    layer = model.layers[1]
    _inject(layer.forward_layer.cell, bi.forward_layer.last_dropout_masks, n)
    _inject(layer.backward_layer.cell, bi.backward_layer.last_dropout_masks, n)
    compare([np.asarray(model(x, training=True))], [got], 1e-5, 1e-5, what="train mode")
    module.eval()  # the masks really change the output
    assert not np.allclose(module(torch.from_numpy(x)).detach().numpy(), got)
