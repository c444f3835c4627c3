"""ConvLSTM1D/2D/3D: valid/'same' input padding (the recurrent conv is always 'same'), strides,
dilation, even kernels, return_sequences/return_state/go_backwards, activations, no bias."""
from __future__ import annotations

import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras

CASES = [
    # class, input shape (T, spatial..., C), kwargs
    ("ConvLSTM1D", (4, 7, 3), dict(filters=2, kernel_size=3, return_sequences=True)),
    ("ConvLSTM1D", (4, 8, 3), dict(filters=3, kernel_size=2, padding="same", strides=2, go_backwards=True)),
    ("ConvLSTM2D", (3, 6, 5, 2), dict(filters=2, kernel_size=(3, 2), padding="same", return_sequences=True)),
    ("ConvLSTM2D", (3, 7, 7, 2), dict(filters=3, kernel_size=3, dilation_rate=2, activation="relu",
                                     recurrent_activation="hard_sigmoid", use_bias=False)),
    ("ConvLSTM2D", (3, 7, 6, 2), dict(filters=2, kernel_size=3, strides=(2, 1), padding="same",
                                     return_sequences=True, go_backwards=True)),
    ("ConvLSTM3D", (2, 4, 5, 4, 2), dict(filters=2, kernel_size=2, padding="same", return_sequences=True)),
]


@pytest.mark.parametrize("cls,shape,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_convlstm(cls, shape, kw, tmp_path):
    L, k = layers(), keras()
    model = k.Sequential([k.Input(shape), getattr(L, cls)(**kw)])
    fmts = ("keras", "h5") if cls == "ConvLSTM2D" and kw.get("padding") == "same" and "strides" not in kw else ("keras",)
    check(model, rand(2, *shape, seed=5), tmp_path, formats=fmts)


def test_convlstm_return_state(tmp_path):
    L, k = layers(), keras()
    inp = k.Input((3, 5, 5, 2))
    y, h, c = L.ConvLSTM2D(2, 3, padding="same", return_state=True, return_sequences=True)(inp)
    check(k.Model(inp, [y, h, c]), rand(2, 3, 5, 5, 2, seed=6), tmp_path, formats=("keras",))
