"""Keras 3 RNN(cell) with the built-in cells (SimpleRNNCell, LSTMCell, GRUCell) and lists of cells
(StackedRNNCells): options, masks, return_state; a list whose cell names do not sort in list order
is refused (a .keras file stores the cells by name)."""
from __future__ import annotations

import numpy as np
import pytest

import kconv
from kconv.errors import UnsupportedError

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras

B, T, F = 4, 6, 3
GAPPY = np.array([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 1, 1]], bool)


def _x(masked):
    x = rand(B, T, F, seed=7)
    if masked:
        x[~GAPPY] = 0.5
    return x


def _cell(kind):
    L = layers()
    return {
        "lstm": lambda: L.LSTMCell(4),
        "gru": lambda: L.GRUCell(4),
        "gru-reset-before": lambda: L.GRUCell(4, reset_after=False, recurrent_activation="hard_sigmoid"),
        "simple-relu": lambda: L.SimpleRNNCell(4, activation="relu", use_bias=False),
        "stack": lambda: [L.GRUCell(3), L.SimpleRNNCell(2, activation="tanh")],
        "stack-lstm": lambda: [L.LSTMCell(4, name="a_cell"), L.LSTMCell(3, name="b_cell")],
    }[kind]()


CASES = [
    ("lstm", dict(return_sequences=True), False),
    ("lstm", dict(go_backwards=True), True),
    ("gru", dict(return_sequences=True, go_backwards=True), True),
    ("gru-reset-before", dict(return_sequences=True, zero_output_for_mask=True), True),
    ("simple-relu", dict(), False),
    ("stack", dict(return_sequences=True), True),
    ("stack", dict(go_backwards=True), False),
    ("stack-lstm", dict(return_sequences=True, go_backwards=True), True),
]


@pytest.mark.parametrize("kind,opts,masked", CASES, ids=[f"{c[0]}-{'-'.join(c[1]) or 'last'}-{'mask' if c[2] else 'nomask'}"
                                                        for c in CASES])
def test_rnn_cell(kind, opts, masked, tmp_path):
    L, k = layers(), keras()
    mid = [L.Masking(mask_value=0.5)] if masked else []
    model = k.Sequential([k.Input((T, F)), *mid, L.RNN(_cell(kind), **opts), L.Dense(2)])
    fmts = ("keras", "h5") if kind in ("lstm", "stack") else ("keras",)
    check(model, _x(masked), tmp_path, formats=fmts)


def test_rnn_cell_return_state(tmp_path):
    L, k = layers(), keras()
    inp = k.Input((T, F))
    y, h, c = L.RNN(L.LSTMCell(4), return_state=True, return_sequences=True)(inp)
    check(k.Model(inp, [y, h, c]), _x(False), tmp_path, formats=("keras",))


def test_cells_out_of_name_order_are_refused(tmp_path):
    L, k = layers(), keras()
    model = k.Sequential([k.Input((T, F)), L.RNN([L.LSTMCell(4, name="z_cell"), L.LSTMCell(3, name="a_cell")],
                                                 name="rnn")])
    model.save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedError) as err:
        kconv.convert(tmp_path / "m.keras", tmp_path / "out")
    assert [n for n, _ in err.value.by_class["RNN"]] == ["rnn"]
