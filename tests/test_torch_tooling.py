"""The emitted model works with torch.jit.trace, torch.export.export and torch.compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kconv

from conftest import FIXTURES


@pytest.fixture(scope="module", params=["cnn.keras", "multi_io.keras"])
def converted(request, tmp_path_factory):
    out = kconv.convert(FIXTURES / request.param, tmp_path_factory.mktemp("conv") / "out")
    io = np.load(FIXTURES / (request.param.rsplit(".", 1)[0] + ".io.npz"))
    inputs = tuple(torch.from_numpy(io[k]) for k in sorted(io.files) if k.startswith("input_"))
    outputs = [io[k] for k in sorted(io.files) if k.startswith("output_")]
    return kconv.load_converted(out), inputs, outputs


def _check(result, outputs):
    result = result if isinstance(result, (tuple, list)) else (result,)
    assert len(result) == len(outputs)
    for r, o in zip(result, outputs):
        np.testing.assert_allclose(r.detach().numpy(), o, rtol=1e-5, atol=1e-5)


def test_eager(converted):
    net, inputs, outputs = converted
    with torch.no_grad():
        _check(net(*inputs), outputs)


def test_jit_trace(converted):
    net, inputs, outputs = converted
    traced = torch.jit.trace(net, inputs)
    with torch.no_grad():
        _check(traced(*inputs), outputs)


def test_export(converted):
    net, inputs, outputs = converted
    exported = torch.export.export(net, inputs)
    with torch.no_grad():
        _check(exported.module()(*inputs), outputs)


def test_compile(converted):
    net, inputs, outputs = converted
    compiled = torch.compile(net)
    with torch.no_grad():
        _check(compiled(*inputs), outputs)
