"""verify on a device: full float32 unless --allow-tf32 (said in the report); a converted model that raises
on the device is a clear failure naming the layer (exit 1), never an internal error.

No GPU here: the ``meta`` device stands in for one (a tensor forward builds on the CPU raises a device
mismatch there, as on CUDA); tests/test_tooling_matrix.py has the ``gpu``-marked CUDA runs."""
from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

import kconv
from kconv.cli import main
from kconv.verify import torch_side

pytestmark = pytest.mark.keras


@pytest.fixture(scope="module")
def rescaling(tmp_path_factory):
    """A model whose Rescaling has per-channel constants, converted, then broken as kconv once emitted it:
    the constants as plain tensor attributes (CPU tensors that .to(device) does not move)."""
    import keras

    L = keras.layers
    tmp = tmp_path_factory.mktemp("resc")
    i = keras.Input((4, 3))
    m = keras.Model(i, L.Dense(2, name="head")(L.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.2, 0.3], name="resc")(i)))
    path = tmp / "m.keras"
    m.save(path)
    good = kconv.convert(path, tmp / "good")
    bad = kconv.convert(path, tmp / "bad")
    src = (bad / "model.py").read_text()
    # the constants as plain attributes (a CPU tensor that .to() does not move)
    src, n = re.subn(r'self\.register_buffer\(\s*"(resc_\w+)",\s*(.*?),\s*persistent=False,?\s*\)',
                     r"self.\1 = \2", src, flags=re.S)
    assert n == 2
    (bad / "model.py").write_text(src)
    return path, good, bad


def test_cpu_constant_is_a_clear_failure_naming_the_layer(rescaling):
    path, _, bad = rescaling
    r = CliRunner().invoke(main, ["verify", str(path), str(bad), "--device", "meta"])
    assert r.exit_code == 1, r.output
    assert "internal error" not in r.output
    assert "raised RuntimeError on meta in layer resc (Rescaling)" in r.output


def test_per_layer_names_the_failing_layer(rescaling):
    path, _, bad = rescaling
    r = CliRunner().invoke(main, ["verify", str(path), str(bad), "--device", "meta", "--per-layer", "--json"])
    assert r.exit_code == 1, r.output
    rep = json.loads(r.stdout)
    assert rep["first_divergence"]["name"] == "resc"
    assert rep["first_divergence"]["class_name"] == "Rescaling"
    assert "RuntimeError" in rep["first_divergence"]["problem"]


def test_the_emitted_constants_follow_the_module(rescaling):
    _, good, _ = rescaling
    net = kconv.load_converted(good).to("meta")
    assert net(torch.zeros(2, 4, 3, device="meta")).device.type == "meta"
    net = kconv.load_converted(good).double()
    assert net(torch.zeros(2, 4, 3, dtype=torch.float64)).dtype == torch.float64


def test_float32_by_default_tf32_on_request(rescaling):
    path, good, _ = rescaling
    from kconv.verify import verify

    r = verify(path, good)
    assert r.passed and r.precision == "float32" and r.atol == 1e-4
    assert verify(path, good, allow_tf32=True).atol == 5e-3
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with torch_side.precision("cuda", allow_tf32=False) as p:
        assert p.label == "float32, TF32 off"
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with torch_side.precision("cuda:0", allow_tf32=True) as p:
        assert p.label == "TF32 allowed" and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_verify_says_float32(rescaling):
    path, good, _ = rescaling
    r = CliRunner().invoke(main, ["verify", str(path), str(good), "--device", "cuda"])
    assert r.exit_code == 0, r.output
    assert "torch on cuda (float32, TF32 off)" in r.output
    r = CliRunner().invoke(main, ["verify", str(path), str(good), "--device", "cuda", "--allow-tf32"])
    assert r.exit_code == 0, r.output
    assert "(TF32 allowed)" in r.output and "atol 0.005" in r.output
