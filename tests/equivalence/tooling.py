"""What a PyTorch user does next with a converted model, as checks shared by the equivalence harness
(every case) and tests/test_tooling_matrix.py (fixtures, one model per family).

Each check takes the converted module and Keras-layout inputs (a list of numpy arrays) and raises
AssertionError (or torch's own error) when the converted model does not survive it:

- ``check_meta``: module and inputs on the ``meta`` device. Any tensor forward builds on the CPU
  (a mask made with torch.ones(...) without device=, a constant kept as a plain attribute) raises a
  device mismatch, as it would on CUDA; no GPU needed.
- ``check_double``: ``copy.deepcopy(net).double()`` computes what Keras computes (float64 inputs).
- ``check_pickle``: pickle round trip (model.py imported as a module) and deepcopy give the same outputs.
- ``check_backward``: train mode, a loss on every float output, ``backward()``; every trainable
  parameter gets a finite gradient, frozen ones (requires_grad=False) get none.
- ``check_bf16``: ``.to(torch.bfloat16)`` and ``torch.autocast`` run (finite outputs, right shapes).
- ``check_trace`` / ``check_export`` / ``check_script``: jit.trace on one batch, run on another
  (other batch size, other padding pattern); torch.export with a dynamic batch dimension (and a
  dynamic sequence length where the model allows it); torch.jit.script.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np


def tensors(arrays, dtype=None, device="cpu"):
    import torch

    out = []
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out.append(t.to(device))
    return out


def outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def run(net, arrays, dtype=None):
    import torch

    with torch.no_grad():
        return [o.detach().float().cpu().numpy() for o in outputs(net(*tensors(arrays, dtype)))]


def close(got, expected, rtol, atol, what):
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, np.asarray(e, dtype=np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{what}: output {i}")


def check_meta(net, arrays):
    import torch

    m = copy.deepcopy(net).to("meta")
    with torch.no_grad():
        outs = outputs(m(*tensors(arrays, device="meta")))
    for o in outs:
        assert o.device.type == "meta", f"an output lives on {o.device}"


def check_double(net, arrays, expected, rtol, atol):
    close(run(copy.deepcopy(net).double(), arrays, dtype=_torch().float64), expected, rtol, atol, ".double()")


def import_model_py(model_py: Path):
    """model.py imported as a real module (registered in sys.modules), as a user's `import model` would."""
    name = "kconv_tooling_" + hashlib.sha1(str(model_py).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, model_py)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_importable(out_dir: Path):
    """The converted model built from model.py imported as a module (picklable), weights loaded."""
    from safetensors.torch import load_file

    mod = import_model_py(Path(out_dir) / "model.py")
    net = mod.Model()
    net.load_state_dict(load_file(str(Path(out_dir) / "model.safetensors")), strict=True)
    return net.eval()


def check_pickle(out_dir, arrays, expected, rtol, atol):
    net = load_importable(out_dir)
    close(run(pickle.loads(pickle.dumps(net)), arrays), expected, rtol, atol, "pickle round trip")
    close(run(copy.deepcopy(net), arrays), expected, rtol, atol, "deepcopy")


def check_backward(net, arrays):
    import torch

    m = copy.deepcopy(net).train()
    m.zero_grad()
    outs = outputs(m(*tensors(arrays)))
    diff = [o for o in outs if o.requires_grad]
    if not diff:  # nothing trainable reaches an output (e.g. a fully quantized model)
        assert not any(p.requires_grad for p in m.parameters()), "trainable parameters but no gradient path"
        return
    loss = sum((o.float() * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in diff)
    loss.backward()
    for name, p in m.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"{name}: frozen but got a gradient"
        elif p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"


def check_bf16(net, arrays):
    import torch

    m = copy.deepcopy(net).to(torch.bfloat16)
    with torch.no_grad():
        for o in outputs(m(*tensors(arrays, torch.bfloat16))):
            if o.is_floating_point():
                assert o.dtype == torch.bfloat16, f"bfloat16 model returned {o.dtype}"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outs = outputs(net(*tensors(arrays)))
    ref = run(net, arrays)
    for o, r in zip(outs, ref):
        assert tuple(o.shape) == r.shape


def _torch():
    import torch

    return torch


def check_trace(net, trace_arrays, run_arrays, expected, rtol, atol):
    """jit.trace on ``trace_arrays``, then run on ``run_arrays`` (another batch / padding pattern)."""
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(net, tuple(tensors(trace_arrays)), check_trace=False)
    close(run(traced, run_arrays), expected, rtol, atol, "jit.trace run on other inputs")


def check_export(net, arrays, run_arrays, expected, rtol, atol, dynamic_seq=False):
    """torch.export with a dynamic batch (and axis-1 length with ``dynamic_seq``), run on other inputs."""
    import torch
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    seq = Dim("seq", min=1, max=4096)
    shapes = tuple({0: batch, **({1: seq} if dynamic_seq and a.ndim >= 2 else {})} for a in arrays)
    ep = torch.export.export(net, tuple(tensors(arrays)), dynamic_shapes=shapes)
    close(run(ep.module(), run_arrays), expected, rtol, atol, "torch.export run on other inputs")


def check_script(net, arrays, expected, rtol, atol):
    import torch

    scripted = torch.jit.script(net)
    close(run(scripted, arrays), expected, rtol, atol, "jit.script")


def check_cuda(net, arrays, expected, rtol, atol):
    """On CUDA in full float32 (TF32 off): Keras's numbers, and every output on the GPU."""
    import torch

    from kconv.verify import torch_side

    m = copy.deepcopy(net).to("cuda")
    with torch_side.precision("cuda", allow_tf32=False), torch.no_grad():
        outs = outputs(m(*tensors(arrays, device="cuda")))
    assert all(o.device.type == "cuda" for o in outs), [str(o.device) for o in outs]
    close([o.float().cpu().numpy() for o in outs], expected, rtol, atol, "cuda float32")
