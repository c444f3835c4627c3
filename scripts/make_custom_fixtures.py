#!/usr/bin/env python
"""Write the custom-layer fixtures in ``fixtures/custom/`` (issue #14), from Keras itself.

    python scripts/make_custom_fixtures.py            # Keras 3 and tf-keras 2
    python scripts/make_custom_fixtures.py --worker keras3|tf_keras

Each fixture is a tiny model with seeded random, non-default weights, plus ``<name>.io.npz``: a seeded
input batch (``input_0``) and Keras's output for it (``output_0``).

============== ========================================================================================
attn_pool      Embedding(mask_zero) LSTM(seq) AttentionPooling (weights, uses the mask) Dense — Keras 3
scaled_tanh    Dense ScaledTanh (weightless, config alpha/beta) Dense — Keras 3
standardize    FixedStandardize (non-trainable mean/var, trainable gain) Dense — Keras 3
lambda_squash  Dense Lambda(squash, a registered named function) Dense — Keras 3
lambda_args    Dense Lambda(scale_shift, arguments={'factor': 2.5, 'shift': -0.25}) Dense — Keras 3
k2_scale       Dense ChannelScale (one weight) Dense, legacy .h5 from tf-keras 2
============== ========================================================================================

The Keras classes live in ``examples/extensions/keras_layers.py`` (Keras 3) and
``examples/extensions/keras2_layers.py`` (tf-keras 2): ``kconv verify --keras-objects`` loads them.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "custom"
EXAMPLES = ROOT / "examples" / "extensions"


def _randomize(model, rng):
    for layer in model.layers:
        new = []
        for v in layer.weights:  # get_weights() order (trainable ones first)
            r = rng.normal(0, 0.5, tuple(v.shape)).astype("float32")
            if v.name.split("/")[-1].split(":")[0] == "var":
                r = np.abs(r) + 0.5  # a variance
            new.append(r)
        if new:
            layer.set_weights(new)


def _save_io(model, name, x):
    y = model.predict(x, verbose=0)
    np.savez(OUT / f"{name}.io.npz", input_0=x, output_0=y)


def keras3():
    import keras

    sys.path.insert(0, str(EXAMPLES))
    import keras_layers as kl

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    L = keras.layers

    inp = keras.Input((6,), dtype="int32", name="tokens")
    h = L.Embedding(20, 8, mask_zero=True, name="embed")(inp)
    h = L.LSTM(5, return_sequences=True, name="lstm")(h)
    h = kl.AttentionPooling(units=4, name="pool")(h)
    out = L.Dense(3, name="head")(h)
    m = keras.Model(inp, out, name="attn_pool")
    _randomize(m, rng)
    m.save(OUT / "attn_pool.keras")
    x = rng.integers(1, 20, (3, 6)).astype("int32")
    x[0, 4:] = 0
    x[1, 2:] = 0
    _save_io(m, "attn_pool", x)

    inp = keras.Input((10,), name="x")
    h = L.Dense(6, name="dense")(inp)
    h = kl.ScaledTanh(alpha=1.5, beta=0.8, name="act")(h)
    out = L.Dense(2, name="head")(h)
    m = keras.Model(inp, out, name="scaled_tanh")
    _randomize(m, rng)
    m.save(OUT / "scaled_tanh.keras")
    _save_io(m, "scaled_tanh", rng.normal(size=(3, 10)).astype("float32"))

    inp = keras.Input((7,), name="x")
    h = kl.FixedStandardize(epsilon=1e-3, name="standardize")(inp)
    out = L.Dense(3, name="head")(h)
    m = keras.Model(inp, out, name="standardize")
    _randomize(m, rng)
    m.save(OUT / "standardize.keras")
    _save_io(m, "standardize", rng.normal(size=(3, 7)).astype("float32"))

    inp = keras.Input((8,), name="x")
    h = L.Dense(4, name="dense")(inp)
    h = L.Lambda(kl.squash, name="squash")(h)
    out = L.Dense(2, name="head")(h)
    m = keras.Model(inp, out, name="lambda_squash")
    _randomize(m, rng)
    m.save(OUT / "lambda_squash.keras")
    _save_io(m, "lambda_squash", rng.normal(size=(3, 8)).astype("float32"))
    keras3_lambda_args()


def keras3_lambda_args():
    import keras

    sys.path.insert(0, str(EXAMPLES))
    import keras_layers as kl

    rng = np.random.default_rng(2)
    L = keras.layers
    inp = keras.Input((6,), name="x")
    h = L.Dense(4, name="dense")(inp)
    h = L.Lambda(kl.scale_shift, arguments={"factor": 2.5, "shift": -0.25}, name="affine")(h)
    out = L.Dense(2, name="head")(h)
    m = keras.Model(inp, out, name="lambda_args")
    _randomize(m, rng)
    m.save(OUT / "lambda_args.keras")
    _save_io(m, "lambda_args", rng.normal(size=(3, 6)).astype("float32"))


def tf_keras():
    import tf_keras as keras

    sys.path.insert(0, str(EXAMPLES))
    import keras2_layers as kl

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    L = keras.layers
    inp = keras.Input((5,), name="x")
    h = L.Dense(4, name="dense")(inp)
    h = kl.ChannelScale(name="scale")(h)
    out = L.Dense(2, name="head")(h)
    m = keras.Model(inp, out, name="k2_scale")
    _randomize(m, rng)
    m.save(OUT / "k2_scale.h5")
    _save_io(m, "k2_scale", rng.normal(size=(3, 5)).astype("float32"))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        OUT.mkdir(parents=True, exist_ok=True)
        {"keras3": keras3, "keras3_lambda_args": keras3_lambda_args, "tf_keras": tf_keras}[sys.argv[2]]()
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, __file__, "--worker", "keras3"], check=True, env={**env, "KERAS_BACKEND": "tensorflow"})
    subprocess.run([sys.executable, __file__, "--worker", "tf_keras"], check=True, env={**env, "TF_USE_LEGACY_KERAS": "1"})


if __name__ == "__main__":
    main()
