"""BatchNormalization(renorm=True) (keras/src/layers/normalization/batch_normalization.py).

Inference uses moving_mean/moving_variance as without renorm; the three renorm statistics
(moving_stddev, renorm_mean, renorm_stddev) are kept as buffers so that train mode follows Keras:
r/d corrections (with renorm_clipping), the renorm statistics and moving_stddev updated, and
moving_variance derived as relu(moving_stddev^2 - epsilon). Train mode is compared with
`kconv verify --mode train` (outputs and updated moving statistics).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import kconv
from kconv.cli import main

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras


def _model(clipping, momentum=0.9, renorm_momentum=0.8, center=True, scale=True):
    k, L = keras(), layers()
    inp = k.Input((5, 5, 3))
    x = L.Conv2D(4, 3, name="conv")(inp)
    x = L.BatchNormalization(renorm=True, renorm_clipping=clipping, momentum=momentum,
                             renorm_momentum=renorm_momentum, center=center, scale=scale, name="bn")(x)
    x = L.Flatten()(x)
    x = L.Dense(3)(x)
    x = L.BatchNormalization(renorm=True, epsilon=0.01, name="bn_dense")(x)
    model = k.Model(inp, x)
    rng = np.random.default_rng(7)
    for v in model.weights:
        a = rng.normal(0, 0.5, v.shape)
        if any(s in v.path for s in ("variance", "stddev")):  # positive, and not at the initial values
            a = np.abs(a) + 0.5
        v.assign(a.astype("float32"))
    return model


CLIPS = [None, {"rmax": 1.5, "rmin": 0.8, "dmax": 0.3}, {"rmax": 1.1}]


@pytest.mark.parametrize("clipping", CLIPS)
def test_renorm_inference(clipping, tmp_path):
    model = _model(clipping)
    n = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    model.save(tmp_path / "c.keras")
    assert kconv.load(tmp_path / "c.keras").param_counts()[1] == n
    check(model, rand(4, 5, 5, 3, seed=3), tmp_path, randomize=False)


@pytest.mark.parametrize("clipping,center,scale", [(None, True, True), (CLIPS[1], True, True),
                                                   (CLIPS[2], False, False)])
def test_renorm_train_mode(clipping, center, scale, tmp_path):
    model = _model(clipping, center=center, scale=scale)
    path = tmp_path / "m.keras"
    model.save(path)
    out = kconv.convert(path, tmp_path / "out")
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--mode", "train", "--json"])
    assert r.exit_code == 0, r.output
    names = [o["name"] for o in json.loads(r.output)["outputs"]]
    assert "bn.moving_variance (updated)" in names and "bn_dense.moving_mean (updated)" in names
