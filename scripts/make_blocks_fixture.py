#!/usr/bin/env python
"""Write ``fixtures/blocks/resblocks.keras`` (kconv convert --blocks), from Keras itself.

    python scripts/make_blocks_fixture.py

A tiny residual network whose layers are named as keras.applications names them (``stage1_block1_*``):
a stem Conv2D, then blocks of Conv2D BatchNormalization ReLU Conv2D Dropout Add(shortcut) ReLU.
stage1_block1 and stage1_block2 are identical (one class with --blocks); stage2_block1 downsamples
(stride 2, a 1x1 projection shortcut); stage2_block2 and stage2_block3 differ only in their Dropout
rate (two classes). Seeded random, non-default weights (BatchNormalization statistics included), and
``resblocks.io.npz``: a seeded input batch (``input_0``) and Keras's output for it (``output_0``).
Deterministic bytes (the .keras archive normalised as in scripts/make_fixtures.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "blocks"
sys.path.insert(0, str(ROOT / "scripts"))

from make_fixtures import QUIET_ENV, _seed, _wkey, normalise_keras_zip, random_value  # noqa: E402


def block(L, x, name, filters, stride=1, rate=0.0):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, name=f"{name}_0_conv")(x)
    y = L.Conv2D(filters, 3, strides=stride, padding="same", name=f"{name}_1_conv")(x)
    y = L.BatchNormalization(name=f"{name}_1_bn")(y)
    y = L.ReLU(name=f"{name}_1_relu")(y)
    y = L.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y)
    y = L.Dropout(rate, name=f"{name}_drop")(y)
    y = L.Add(name=f"{name}_add")([shortcut, y])
    return L.ReLU(name=f"{name}_out")(y)


def build(keras):
    L = keras.layers
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem_conv")(inp)
    x = block(L, x, "stage1_block1", 8)
    x = block(L, x, "stage1_block2", 8)
    x = block(L, x, "stage2_block1", 16, stride=2)
    x = block(L, x, "stage2_block2", 16, rate=0.1)
    x = block(L, x, "stage2_block3", 16, rate=0.2)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    out = L.Dense(4, name="logits")(x)
    return keras.Model(inp, out, name="resblocks")


def main():
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    import numpy as np
    import keras

    keras.utils.set_random_seed(_seed("resblocks"))
    model = build(keras)
    rng = np.random.default_rng(_seed("resblocks"))
    model.set_weights([random_value(_wkey(w), w.shape, rng) for w in model.weights])
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "resblocks.keras"
    model.save(path)
    normalise_keras_zip(path)
    x = np.random.default_rng(_seed("resblocks") + 1).standard_normal((2, 8, 8, 3)).astype("float32")
    y = np.asarray(model(x, training=False))
    with open(OUT / "resblocks.io.npz", "wb") as fh:
        np.savez(fh, input_0=x, output_0=y)
    print(f"written {path} and resblocks.io.npz")


if __name__ == "__main__":
    main()
