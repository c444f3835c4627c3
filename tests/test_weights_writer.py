"""The weights are written without torch, one tensor at a time (kconv.emit.stwriter), and checked
against the emitted module in a helper process (kconv.emit.checker): the same bytes as before.

The reference is the conversion as kconv did it before (issue #15): every tensor transformed in
memory, ``Model()`` built on the CPU, its state dict filled (``.to(module dtype)``; tensors with no
Keras weight keep the constructor's values), ``load_state_dict(strict=True)`` and
``safetensors.torch.save_file`` / ``torch.save``. It is written out here, independently of the new
code path, and each fixture's output must equal it byte for byte.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import kconv
from kconv.emit import _leaf_paths, _lora_merged, _weight_decl_pairs, check_state, modcheck, stwriter
from kconv.errors import KconvError, UnsupportedError, WeightMismatchError

from conftest import FIXTURES

REPO = FIXTURES.parent


def _whole_model(p) -> bool:
    """A model file (not a weights-only one, which needs its architecture passed separately)."""
    import h5py

    if p.suffix == ".keras":
        return True
    with h5py.File(p, "r") as f:
        return "model_config" in f.attrs


CASES = sorted(str(p.relative_to(FIXTURES)) for p in [*FIXTURES.glob("*.h5"), *FIXTURES.glob("*.keras"),
                                                       *(FIXTURES / "legacy").glob("*.h5")] if _whole_model(p))
EXTENSIONS = json.loads((FIXTURES / "custom" / "extensions.json").read_text())
CUSTOM = sorted(p.name for p in (FIXTURES / "custom").iterdir()
                if p.stem in EXTENSIONS and p.suffix in (".h5", ".keras"))


def _reference_state(model, out_dir):
    """The state dict as kconv built it before streaming (see the module docstring)."""
    arrays = {}
    for path, layer in _leaf_paths(model):
        for w, d in _weight_decl_pairs(layer):
            for name, t in d.targets(layer.config) or []:
                arrays[f"{path}.{name}"] = t.apply(np.asarray(_lora_merged(layer, w)))
    mod = modcheck.import_path(out_dir / "model.py", "kconv_reference_model")
    net = mod.Model()
    state = {}
    for k, v in net.state_dict().items():
        if k in arrays:
            a = arrays.pop(k)
            if a.dtype.name == "bfloat16":
                a = a.astype(np.float32)
            state[k] = torch.from_numpy(np.ascontiguousarray(a)).to(v.dtype)
        else:
            state[k] = v.detach().clone()
    assert not arrays, f"Keras weights with no place in the module: {sorted(arrays)}"
    net.load_state_dict(state, strict=True)
    return state


def _convert(src, out, **kw):
    try:
        return kconv.convert(src, out, **kw)
    except KconvError as e:
        if "--backend-of-writer" in str(e):
            return kconv.convert(src, out, backend_of_writer="theano" if "_th" in str(src) else "tensorflow", **kw)
        raise


@pytest.mark.parametrize("case", CASES)
def test_weights_equal_the_reference_conversion(case, tmp_path):
    src = FIXTURES / case
    out = tmp_path / "out"
    try:
        _convert(src, out)
    except UnsupportedError:
        pytest.skip(f"{case}: not convertible (an unsupported layer), nothing to compare")
    model = kconv.load(src, backend_of_writer=json.loads((out / "kconv.json").read_text())["writer_backend"] or None)
    state = _reference_state(model, out)
    assert (out / "model.safetensors").read_bytes() == st_save(dict(sorted(state.items())))
    # --format pt: the same tensors through torch.save
    _convert(src, tmp_path / "pt", fmt="pt")
    (tmp_path / "ref").mkdir()
    torch.save(dict(sorted(state.items())), tmp_path / "ref" / "model.pt")  # the archive is named after the file
    assert (tmp_path / "pt" / "model.pt").read_bytes() == (tmp_path / "ref" / "model.pt").read_bytes()


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_layer_weights_equal_the_reference(name, tmp_path):
    from kconv import extend

    src = FIXTURES / "custom" / name
    with extend.active([str(REPO / "examples" / "extensions" / EXTENSIONS[src.stem])]):
        kconv.convert(src, tmp_path / "out")
        state = _reference_state(kconv.load(src), tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == st_save(dict(sorted(state.items())))


# ------------------------------------------------------------------------------------------ writer

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.float8_e5m2, torch.float8_e4m3fn, torch.int16, torch.uint16,
          torch.float16, torch.bfloat16, torch.int32, torch.uint32, torch.float32, torch.float64, torch.int64,
          torch.uint64]


def _entries(tensors: dict):
    out = []
    for k, t in tensors.items():
        a = t.view(torch.uint8).numpy().view(stwriter.numpy_dtype(str(t.dtype)[6:])).reshape(t.shape) \
            if t.dtype in (torch.bfloat16, torch.float8_e5m2, torch.float8_e4m3fn) else t.numpy()
        out.append(stwriter.Entry(k, str(t.dtype)[6:], tuple(t.shape), lambda a=a: a))
    return out


def test_writer_lays_out_the_file_as_safetensors(tmp_path):
    """Every dtype, ties broken by key, empty and 0-d tensors, non-ASCII keys: safetensors' bytes."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, dt in enumerate(DTYPES):
        x = torch.randn(3, 5, generator=g) * 50
        tensors[f"t{i % 4}.{dt}"] = x.to(dt)
        tensors[f"a{i}"] = torch.zeros((), dtype=dt) if i % 2 else torch.zeros((0, 3), dtype=dt)
    tensors["clé.poids"] = torch.ones(2)
    sha = stwriter.write(tmp_path / "w.safetensors", _entries(tensors))
    expected = st_save(tensors)
    assert (tmp_path / "w.safetensors").read_bytes() == expected
    import hashlib

    assert sha == hashlib.sha256(expected).hexdigest()


def test_writer_copies_strided_views_in_slices(tmp_path, monkeypatch):
    """Transposed, flipped and sliced views are written slice by slice (CHUNK made tiny), big rows
    split within the row, and the bytes are those of the contiguous array."""
    monkeypatch.setattr(stwriter, "CHUNK", 40)
    a = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    views = {"t": a.transpose(2, 1, 0), "f": np.flip(a, (0, 2)), "s": a[:, ::2], "c": a, "0": a[0, 0, 0],
             "e": a[:0]}
    entries = [stwriter.Entry(k, "float32", v.shape, lambda v=v: v) for k, v in views.items()]
    # a dtype cast on the way (as tensor.to(dtype)): float32 -> float64 of the same values
    entries.append(stwriter.Entry("d", "float64", a.shape, lambda: a.transpose(0, 2, 1).reshape(4, 6, 5)))
    stwriter.write(tmp_path / "w.safetensors", entries)
    expected = {k: torch.from_numpy(np.array(v, order="C")) for k, v in views.items()}
    expected["d"] = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1).reshape(4, 6, 5))).double()
    assert (tmp_path / "w.safetensors").read_bytes() == st_save(expected)


def test_writer_refuses_a_shape_it_did_not_plan(tmp_path):
    with pytest.raises(ValueError, match="planned"):
        stwriter.write(tmp_path / "w", [stwriter.Entry("x", "float32", (2,), lambda: np.zeros(3, np.float32))])


# ------------------------------------------------------------------------------------ import check

def test_check_state_reports_as_a_strict_load():
    e = [stwriter.Entry("a.weight", "float32", (2, 3), None), stwriter.Entry("b.bias", "float32", (4,), None),
         stwriter.Entry("c.x", "float64", (1,), None)]
    spec = {"a.weight": ((3, 2), "float32"), "c.x": ((1,), "float32"), "d.weight": ((1,), "float32")}
    with pytest.raises(WeightMismatchError) as err:
        check_state(spec, e)
    text = str(err.value)
    assert "torch key 'd.weight' has no Keras weight" in text
    assert "Keras weight for 'b.bias' has no place in the emitted module" in text
    assert "a.weight: Keras weight gives shape (2, 3), the module expects (3, 2)" in text
    # dtypes follow the module (as load_state_dict's copy would)
    assert [x.dtype for x in check_state({"c.x": ((1,), "float32")}, e[2:])] == ["float32"]


HELPER_SCRIPT = r"""
import json, sys
import kconv
import kconv.emit as emit
mode, src, out = sys.argv[1:4]
if mode == "stray":  # a module with a tensor no Keras weight fills: the check must refuse it
    from kconv.emit import codegen
    generate = codegen.Generator.generate
    codegen.Generator.generate = lambda self: generate(self).replace(
        "super().__init__()", "super().__init__()\n        self.stray = nn.Linear(2, 2)", 1)
if mode == "dtype":  # the stored dtype is not the module's: written again in the module's
    emit._planned_dtype = lambda w: "float64"
if mode == "after_failure":  # a conversion that fails while writing leaves the helper's answer unread
    write = emit.write_weights
    def failing(*a):
        raise kconv.errors.ModelFileError(src, "damaged (test)")
    emit.write_weights = failing
    try:
        kconv.convert(src, out + "-failed")
    except kconv.errors.KconvError:
        pass
    emit.write_weights = write
    helper = emit.checker._helper.pid
try:
    kconv.convert(src, out)
    if mode == "after_failure":  # the same helper answered, the abandoned answer skipped
        assert emit.checker._helper.pid == helper and emit.checker._unread == 0
    print(json.dumps({"ok": True, "torch": "torch" in sys.modules}))
except kconv.errors.KconvError as e:
    print(json.dumps({"ok": False, "error": str(e), "torch": "torch" in sys.modules}))
"""


def _in_fresh_process(mode, src, out):
    proc = subprocess.run([sys.executable, "-c", HELPER_SCRIPT, mode, str(src), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_convert_in_a_fresh_process_checks_in_the_helper(tmp_path):
    """A process without torch converts without importing it; the helper's check still refuses a
    model.py whose state dict the weights do not fill, and nothing is written."""
    src = FIXTURES / "cnn.h5"
    r = _in_fresh_process("plain", src, tmp_path / "a")
    assert r == {"ok": True, "torch": False}
    kconv.convert(src, tmp_path / "b")  # in process (this one has torch)
    for name in ("model.py", "model.safetensors", "kconv.json"):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b or name == "kconv.json"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kconv.json", "model.py", "model.safetensors"]
    r = _in_fresh_process("stray", src, tmp_path / "c")
    assert not r["ok"] and not r["torch"] and "stray.weight' has no Keras weight" in r["error"], r
    assert not (tmp_path / "c").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_failed_conversion_keeps_the_helper_in_step(tmp_path):
    src = FIXTURES / "cnn.h5"
    assert _in_fresh_process("after_failure", src, tmp_path / "a") == {"ok": True, "torch": False}
    kconv.convert(src, tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_dtype_the_module_does_not_hold_is_converted(tmp_path):
    src = FIXTURES / "cnn.keras"
    r = _in_fresh_process("dtype", src, tmp_path / "a")
    assert r == {"ok": True, "torch": False}
    kconv.convert(src, tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
