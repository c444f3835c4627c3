"""Dropout and noise layers in train mode follow Keras's semantics (distribution and scaling).

Random numbers differ between Keras and torch, so these tests compare statistics against the
formulas in keras/src/layers/regularization/*.py on large inputs, and check that eval mode is the
identity (exactness against Keras in eval mode is covered by the per-family equivalence tests).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kconv

from .harness import keras, layers

pytestmark = pytest.mark.keras


def _convert(model, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.keras"
    model.save(path)
    net = kconv.load_converted(kconv.convert(path, tmp_path / "out"))
    return net


def _seq(shape, layer):
    return keras().Sequential([keras().Input(shape), layer])


def test_dropout_train_mode(tmp_path):
    net = _convert(_seq((4000,), layers().Dropout(0.3)), tmp_path)
    x = torch.ones(8, 4000)
    net.eval()
    assert torch.equal(net(x), x)
    net.train()
    torch.manual_seed(0)
    y = net(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.02
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.7))


def test_dropout_noise_shape_drops_whole_rows(tmp_path):
    net = _convert(_seq((50, 40), layers().Dropout(0.5, noise_shape=(None, 1, 40))), tmp_path)
    net.train()
    torch.manual_seed(1)
    y = net(torch.ones(16, 50, 40))
    # the mask has size 1 on the time axis: every time step sees the same mask
    assert torch.equal(y, y[:, :1, :].expand_as(y))
    assert 0.3 < (y == 0).float().mean().item() < 0.7


@pytest.mark.parametrize("n", [1, 2, 3])
def test_spatial_dropout_drops_whole_channels(n, tmp_path):
    shape = (6,) * n + (64,)
    layer = getattr(layers(), f"SpatialDropout{n}D")(0.5)
    net = _convert(_seq(shape, layer), tmp_path)
    x = torch.ones(4, *shape)
    net.eval()
    assert torch.equal(net(x), x)
    net.train()
    torch.manual_seed(2)
    y = net(x)
    per_channel = y.reshape(4, -1, 64)
    # each (sample, channel) is either all zero or all 2.0
    first = per_channel[:, :1, :]
    assert torch.equal(per_channel, first.expand_as(per_channel))
    assert set(torch.unique(first).tolist()) <= {0.0, 2.0}


def test_gaussian_dropout_and_noise_train_mode(tmp_path):
    rate, stddev = 0.2, 0.7
    net = _convert(_seq((20000,), layers().GaussianDropout(rate)), tmp_path)
    net.train()
    torch.manual_seed(3)
    y = net(torch.ones(4, 20000))
    assert abs(y.mean().item() - 1.0) < 0.01
    assert abs(y.std().item() - (rate / (1 - rate)) ** 0.5) < 0.01
    net = _convert(_seq((20000,), layers().GaussianNoise(stddev)), tmp_path / "n")
    net.train()
    y = net(torch.zeros(4, 20000))
    assert abs(y.mean().item()) < 0.02 and abs(y.std().item() - stddev) < 0.02


def test_alpha_dropout_keeps_selu_statistics(tmp_path):
    net = _convert(_seq((20000,), layers().AlphaDropout(0.2)), tmp_path)
    net.train()
    torch.manual_seed(4)
    x = torch.randn(4, 20000)
    y = net(x)
    # Keras's affine correction keeps zero mean / unit variance for standard normal inputs
    assert abs(y.mean().item()) < 0.03 and abs(y.std().item() - 1.0) < 0.03
    net.eval()
    assert torch.equal(net(x), x)
