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
    assert len(names) == 5


def test_torch_batchnorm_semantics_are_caught(tmp_path):
    """Plain nn.BatchNorm updates the running variance with the unbiased batch variance: caught."""
    path, out = _convert(_model(), tmp_path)
    src = (out / "model.py").read_text()
    (out / "model.py").write_text(src.replace("= KerasBatchNorm2d(", "= nn.BatchNorm2d(").replace(
        "= KerasBatchNorm1d(", "= nn.BatchNorm1d("))
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train"])
    assert r.exit_code == 1, r.output
    assert "moving_variance (updated)" in r.output


def test_train_mode_refuses_random_layers(tmp_path):
    path, out = _convert(_model(dropout=0.3), tmp_path)
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train"])
    assert r.exit_code == 2
    assert "deterministic" in r.output and "dropout" in r.output
