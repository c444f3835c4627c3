"""`kconv inspect` as a process (issue 15: its start-up and exit are part of its speed) says what the
in-process command says, and h5safe's fast attribute reads give what h5py's attribute manager gives."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from kconv.cli import main
from kconv.cli.inspect import json_text
from kconv.load import h5safe

def _whole_model(p) -> bool:
    """A .keras archive, or an HDF5 file with its architecture (not a weights-only file)."""
    if p.suffix == ".keras":
        return True
    with h5py.File(p, "r") as f:
        return "model_config" in f.attrs


MODELS = sorted(p for p in [*FIXTURES.glob("*.h5"), *FIXTURES.glob("*.keras"), *(FIXTURES / "legacy").glob("*.h5")]
                if _whole_model(p))


def test_there_are_models():
    assert len(MODELS) > 10


@pytest.mark.parametrize("args", [[], ["--json"], ["--summary"]], ids=["text", "json", "summary"])
@pytest.mark.parametrize("model", MODELS[:: max(1, len(MODELS) // 6)], ids=lambda p: p.name)
def test_process_prints_what_main_prints(model, args):
    """`python -m kconv inspect` ends without the interpreter's teardown (kconv.cli.entry): all of the
    output is still written, and the exit status is the command's."""
    inproc = CliRunner().invoke(main, ["inspect", str(model), *args])
    proc = subprocess.run([sys.executable, "-m", "kconv", "inspect", str(model), *args], capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (inproc.exit_code, inproc.stdout), proc.stderr[-2000:]
    assert proc.stdout.endswith("\n") and len(proc.stdout) > 500


def test_failing_process_keeps_its_exit_status(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    proc = subprocess.run([sys.executable, "-m", "kconv", "inspect", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("kconv: error:"), proc.stderr


@pytest.fixture
def attrs_file(tmp_path):
    f = h5py.File(tmp_path / "a.h5", "w")
    a = f.attrs
    a["vlen"] = np.array(["conv/kernel:0", "conv/bias:0", "é/ü"], dtype=h5py.string_dtype("utf-8"))
    a["vlen_ascii"] = np.array([b"a", b"bc"], dtype=h5py.string_dtype("ascii"))
    a["fixed"] = np.array([b"dense", b"dense_1"])
    a["fixed_utf8"] = np.array(["x".encode(), "é".encode()], dtype=h5py.string_dtype("utf-8", 2))
    a["scalar_fixed"] = np.bytes_(b"one")
    a["scalar_vlen"] = "one"
    a["empty"] = np.array([], dtype=h5py.string_dtype("utf-8"))
    a["empty_float"] = np.array([])  # Keras's weight_names of a weightless layer
    a["numbers"] = np.arange(3)
    a["matrix"] = np.array([[b"a", b"b"], [b"c", b"d"]])
    a["null"] = h5py.Empty("S5")
    yield f
    f.close()


@pytest.mark.parametrize("key", ["vlen", "vlen_ascii", "fixed", "fixed_utf8", "scalar_fixed", "scalar_vlen", "empty",
                                 "empty_float", "numbers", "matrix", "null", "absent"])
def test_string_list_attr_reads_as_h5py(attrs_file, key):
    """What kconv.load.weights made of h5py's reading, or None where it does not apply."""
    fast = h5safe.string_list_attr(attrs_file, key)
    slow = attrs_file.attrs.get(key, [])
    if key in ("numbers", "matrix", "null"):
        assert fast is None
        return
    expected = [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in np.asarray(slow).reshape(-1)]
    assert fast == expected and all(type(x) is str for x in fast)
    assert fast or key in ("empty", "empty_float", "absent")


def test_dataset_dtype_is_read_once(attrs_file):
    attrs_file.create_dataset("w", data=np.zeros((2, 3), np.float16))
    ds = h5safe.child(attrs_file, "w")
    assert isinstance(ds, h5py.Dataset) and ds.dtype == np.float16 and ds.dtype is ds.dtype
    assert ds.shape == (2, 3) and ds[()].dtype == np.float16


NUMBERS = ["<f2", "<f4", ">f4", "<f8", ">f8", "|i1", "|u1", "<i2", ">u2", "<i4", "<u4", ">i4", "<i8", "<u8", "|b1"]


def test_dataset_dtypes_are_h5pys(attrs_file):
    """Each dataset's dtype, told from the HDF5 types seen before (h5safe), is the one h5py makes of
    its type; the types differ by one property at a time (byte order, sign, size; a 4-byte float
    with another exponent bias, which h5py reads as float64), and a bool is an HDF5 enum."""
    for i, dt in enumerate(NUMBERS * 2):
        attrs_file.create_dataset(f"n{i}", data=np.ones(3, dt))
    custom = h5py.h5t.IEEE_F32LE.copy()
    custom.set_ebias(100)
    h5py.h5d.create(attrs_file.id, b"custom", custom, h5py.h5s.create_simple((2,)))
    for name in ["n1", "custom"] + [f"n{i}" for i in range(2 * len(NUMBERS))]:
        fast = h5safe.child(attrs_file, name)
        assert fast.dtype == h5py.Dataset(fast.id).dtype == fast.id.dtype, name
        assert str(fast.dtype) == str(fast.id.dtype) and fast.dtype.byteorder == fast.id.dtype.byteorder, name
    assert h5safe.child(attrs_file, "custom").dtype == np.float64


def test_datasets_stored_elsewhere_are_refused(attrs_file, tmp_path):
    """A dataset with an address in the file passes the checks without its creation property list;
    virtual and external storage (no such address) are still refused, as are chunked datasets checked."""
    from kconv.load.limits import DEFAULT

    attrs_file.create_dataset("plain", data=np.ones(4, "f4"))
    attrs_file.create_dataset("chunked", data=np.ones(4, "f4"), chunks=(2,), compression="gzip")
    attrs_file.create_dataset("late", shape=(4,), dtype="f4")  # no storage allocated
    (tmp_path / "raw.bin").write_bytes(b"\0" * 16)
    attrs_file.create_dataset("external", shape=(4,), dtype="f4", external=[(str(tmp_path / "raw.bin"), 0, 16)])
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource(attrs_file.filename, "plain", shape=(4,))
    attrs_file.create_virtual_dataset("virtual", layout)
    for name in ("plain", "chunked", "late"):
        assert h5safe.check_dataset(h5safe.child(attrs_file, name), DEFAULT).shape == (4,)
    assert h5safe.child(attrs_file, "plain").id.get_offset() is not None
    with pytest.raises(Exception, match="stored in external files"):
        h5safe.check_dataset(h5safe.child(attrs_file, "external"), DEFAULT)
    with pytest.raises(Exception, match="a virtual dataset"):
        h5safe.check_dataset(h5safe.child(attrs_file, "virtual"), DEFAULT)


def test_child_refuses_a_dataset_on_the_way(attrs_file):
    attrs_file.create_dataset("g/d", data=np.zeros(2))
    assert isinstance(h5safe.child(attrs_file, "g/d"), h5py.Dataset)
    assert h5safe.child(attrs_file, "g/d/x", missing_ok=True) is None
    assert h5safe.child(attrs_file, "g/nope", missing_ok=True) is None
    with pytest.raises(Exception, match="/g/d: is a dataset, expected a group"):
        h5safe.child(attrs_file, "g/d/x")
    with pytest.raises(Exception, match="'g/nope' is missing"):
        h5safe.child(attrs_file, "g/nope")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text() | st.integers() | st.floats() | st.booleans() | st.none(), inner, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_text_is_json_dumps_indent_2(value):
    assert json_text(value) == json.dumps(value, indent=2)


@pytest.mark.parametrize("value", [{"a": object()}, [1, {2, 3}], {(1, 2): 3}, np.float32(1.0)])
def test_json_text_refuses_as_json_dumps(value):
    with pytest.raises(TypeError) as fast:
        json_text(value)
    with pytest.raises(TypeError) as slow:
        json.dumps(value, indent=2)
    assert str(fast.value) == str(slow.value)


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_json_text_of_every_fixture_report(model):
    from kconv import inspect as report
    from kconv.load import load

    rep = report.report(load(model))
    assert json_text(rep) == json.dumps(rep, indent=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts the process's threads in /proc")
def test_inspect_imports_numpy_without_blas_threads():
    """The console process imports numpy with one OpenBLAS thread (its pool's threads spin on a core
    waiting for work inspect never gives), and leaves the environment as it found it; a numpy
    imported the ordinary way in the same Python starts more threads (else this test proves nothing)."""
    code = ("import os, sys; from kconv.cli.inspect import _import_numpy_one_blas_thread as f; f(); "
            "print(len(os.listdir('/proc/self/task')), 'OPENBLAS_NUM_THREADS' in os.environ)")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    plain = subprocess.run([sys.executable, "-c", "import os, numpy; print(len(os.listdir('/proc/self/task')))"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert ours.stdout.split() == ["1", "False"], ours.stderr
    if (os.cpu_count() or 1) > 1:
        assert int(plain.stdout) > 1, plain.stderr
