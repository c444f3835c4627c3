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


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_export(converted, grad):
    """Exported with autograd off too: the in-place BatchNorm's branch is the one recorded then."""
    net, inputs, outputs = converted
    with torch.set_grad_enabled(grad):
        exported = torch.export.export(net, inputs)
    with torch.no_grad():
        _check(exported.module()(*inputs), outputs)


def test_cpu_autocast_inference(converted):
    """bfloat16 autocast at inference: convolutions hand bfloat16 tensors to float32 BatchNorms (the
    in-place one included); the result is Keras's within bfloat16's 8 bits of mantissa."""
    net, inputs, outputs = converted
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        result = net(*inputs)
    result = result if isinstance(result, (tuple, list)) else (result,)
    for r, o in zip(result, outputs):
        assert np.abs(r.float().numpy() - o).max() <= 0.05 * np.abs(o).max()


def test_compile(converted):
    net, inputs, outputs = converted
    compiled = torch.compile(net)
    with torch.no_grad():
        _check(compiled(*inputs), outputs)


def _kernels(net):
    return {name: m.weight for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_conv_kernels_are_channels_last_and_the_state_dict_still_saves(tmp_path):
    """NHWC inputs: Model() keeps its 2D kernels channels_last (kconv.emit.codegen
    Generator._channels_last_kernels); the state dict saves and loads as README says."""
    from safetensors.torch import load_file, save_file, save_model

    out = kconv.convert(FIXTURES / "cnn.keras", tmp_path / "out")
    net = kconv.load_converted(out)
    io = np.load(FIXTURES / "cnn.io.npz")
    x = torch.from_numpy(io["input_0"])
    kernels = _kernels(net)
    assert kernels and all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels.values())
    assert not all(w.is_contiguous() for w in kernels.values())  # the 3x3 ones differ
    with torch.no_grad():
        _check(net(x), [io["output_0"]])
    save_model(net, str(tmp_path / "saved.safetensors"))
    with pytest.raises(ValueError, match="contiguous"):
        save_file(net.state_dict(), str(tmp_path / "plain.safetensors"))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    for sd in (load_file(str(tmp_path / "saved.safetensors")), load_file(str(tmp_path / "plain.safetensors")),
               torch.load(tmp_path / "sd.pt", weights_only=True)):
        again = kconv.load_converted(out)
        again.load_state_dict(sd)
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _kernels(again).values())
        with torch.no_grad():
            _check(again(x), [io["output_0"]])


def test_channels_first_inputs_keep_contiguous_kernels(tmp_path):
    out = kconv.convert(FIXTURES / "cnn.keras", tmp_path / "out", channels_first=True)
    assert "channels_last" not in (out / "model.py").read_text()
    assert all(w.is_contiguous() for w in _kernels(kconv.load_converted(out)).values())
