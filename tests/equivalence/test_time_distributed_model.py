"""TimeDistributed around a whole model (Sequential or Functional): shapes, weights (.keras, Keras 3
.h5, tf-keras 2 .h5), inspect's tree and parameter counts, and equivalence with Keras."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .harness import check, compare, convert_and_load, keras, layers, rand, torch_forward

pytestmark = pytest.mark.keras

B, T = 3, 5


def _seq_model():
    k, L = keras(), layers()
    inner = k.Sequential([k.Input((4,)), L.Dense(6, activation="relu"), L.BatchNormalization(),
                          L.Dense(3)], name="step")
    return k.Sequential([k.Input((T, 4)), L.TimeDistributed(inner), L.GRU(2)])


def _func_model():
    k, L = keras(), layers()
    i = k.Input((6, 6, 2))
    x = L.Conv2D(3, 3, padding="same", activation="relu")(i)
    y = L.Conv2D(3, 1)(i)
    x = L.Add()([x, y])
    x = L.BatchNormalization()(x)
    x = L.Flatten()(L.MaxPooling2D()(x))
    inner = k.Model(i, L.Dense(4)(x), name="frame")
    inp = k.Input((T, 6, 6, 2))
    out = L.TimeDistributed(inner)(inp)
    return k.Model(inp, L.Dense(2)(out))


CASES = {"sequential": (_seq_model, (B, T, 4)), "functional": (_func_model, (B, T, 6, 6, 2))}


@pytest.mark.parametrize("case", list(CASES))
def test_time_distributed_model(case, tmp_path):
    build, shape = CASES[case]
    model = build()
    check(model, rand(*shape), tmp_path, atol=2e-5)

    import kconv
    from kconv.inspect import report

    for fmt in ("keras", "h5"):
        ir = kconv.load(tmp_path / f"model.{fmt}")
        rep = report(ir)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        assert trainable + frozen == model.count_params()
        assert (rep["trainable_params"], rep["non_trainable_params"]) == (trainable, frozen), fmt
        td = next(ly for ly in rep["layers"] if ly["class_name"] == "TimeDistributed")
        assert td["model_class"] in ("Sequential", "Functional")
        assert any(ly["class_name"] == "BatchNormalization" for ly in td["layers"])
        assert td["output_shape"] == [None, *model.get_layer(td["name"]).output.shape[1:]]


_K2_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tf_keras as keras
    L = keras.layers
    rng = np.random.default_rng(0)
    inner = keras.Sequential([keras.Input((4,)), L.Dense(6, activation="tanh"), L.BatchNormalization(),
                              L.Dense(3)])
    model = keras.Sequential([keras.Input((5, 4)), L.TimeDistributed(inner), L.LSTM(2)])
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32") if "variance" in v.name
                 else rng.normal(0, 0.5, size=v.shape).astype("float32"))
    x = rng.standard_normal((3, 5, 4)).astype("float32")
    model.save(os.path.join(sys.argv[1], "k2.h5"))
    np.savez(os.path.join(sys.argv[1], "k2.npz"), x=x, y=np.asarray(model(x, training=False)))
    """
)


def test_time_distributed_model_tf_keras(tmp_path):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _K2_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = np.load(tmp_path / "k2.npz")
    module = convert_and_load(tmp_path / "k2.h5", tmp_path / "out")
    compare([data["y"]], torch_forward(module, [data["x"]]), 1e-5, 1e-5, what="tf-keras")
    import kconv

    ir = kconv.load(tmp_path / "k2.h5")
    assert ir.param_counts() == (4 * 6 + 6 + 2 * 6 + 6 * 3 + 3 + 4 * (3 * 2 + 2 * 2 + 2), 2 * 6)
