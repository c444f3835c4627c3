"""Property-based fuzzing of the loaders (issue 6): whatever the bytes, kconv.load / inspect / convert
either succeed or raise a KconvError, and a failed convert leaves nothing behind.

Bounded for the default suite (a few seconds, derandomized so CI is reproducible). For a long run
see docs/fuzzing.md: ``KCONV_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -p no:cacheprovider``.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kconv
from kconv.errors import KconvError
from kconv.inspect import report

from conftest import FIXTURES

EXAMPLES = int(os.environ.get("KCONV_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=EXAMPLES or 25,
    deadline=None,
    derandomize=not EXAMPLES,  # the default suite is reproducible; long runs explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SOURCES = ["cnn.keras", "cnn.h5", "cnn_k2.h5", "multi_io.keras", "multi_io_k2.h5", "text_rnn.keras"]
_BYTES = {name: (FIXTURES / name).read_bytes() for name in SOURCES}


def _exercise(path: Path, convert: bool):
    """Load, build the full report (reading every value) and maybe convert; only KconvError may escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = kconv.load(path)
            json.dumps(report(model, check_values=True))
        except KconvError:
            return
        if convert:
            out = path.parent / "out"
            try:
                kconv.convert(model, out)
            except KconvError:
                assert not out.exists()
            leftovers = [p.name for p in path.parent.iterdir() if ".kconv-" in p.name]
            assert not leftovers, leftovers


edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)


@SETTINGS
@given(source=st.sampled_from(SOURCES), edits=edits, cut=st.one_of(st.none(), st.floats(0, 1)),
       head=st.booleans(), convert=st.booleans())
def test_fuzz_bytes(source, edits, cut, head, convert):
    """Byte edits (biased to the first 4 KiB, where HDF5 and zip headers live), then maybe a truncation."""
    data = bytearray(_BYTES[source])
    span = min(len(data), 4096) if head else len(data)
    for where, value in edits:
        data[int(where * span)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / source
        path.write_bytes(bytes(data))
        _exercise(path, convert)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    """Every place in a JSON document: (path of keys/indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


_CONFIG = json.loads(zipfile.ZipFile(FIXTURES / "cnn.keras").read("config.json"))
_CONFIG_PATHS = [p for p in _paths(_CONFIG) if p]


def _replace(doc, path, value, delete):
    node = doc
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(_CONFIG_PATHS), json_values, st.booleans()), min_size=1,
                        max_size=3),
       convert=st.booleans())
def test_fuzz_config(changes, convert):
    """config.json of a .keras archive with values replaced by arbitrary JSON, or keys deleted."""
    doc = json.loads(json.dumps(_CONFIG))
    for path, value, delete in changes:
        try:
            _replace(doc, path, value, delete)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced the place
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.keras"
        with zipfile.ZipFile(FIXTURES / "cnn.keras") as src, zipfile.ZipFile(path, "w") as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == "config.json":
                    data = json.dumps(doc).encode()
                dst.writestr(info.filename, data)
        _exercise(path, convert)


def test_fuzz_harness_detects_failures(tmp_path, monkeypatch):
    """The property above can fail: an exception that is not a KconvError escapes _exercise."""
    def broken(path, **kw):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(kconv, "load", broken)
    with pytest.raises(ZeroDivisionError):
        _exercise(FIXTURES / "cnn.h5", convert=False)


@SETTINGS
@given(raw=st.binary(max_size=2048))
def test_fuzz_lambda_summary(raw):
    """The Lambda summary scans arbitrary bytes (never unmarshals them) without failing."""
    import base64

    from kconv.load.lambdas import describe, marshal_strings

    strings = marshal_strings(raw)
    assert all(isinstance(s, str) and s.isprintable() for s in strings)
    info = describe({"function": {"class_name": "__lambda__", "config": {"code": base64.b64encode(raw).decode()}}})
    assert info["executed"] is False and info["code_bytes"] == len(raw)
    info = describe({"function": [base64.b64encode(raw).decode(), None, None], "function_type": "lambda"})
    assert info["kind"] == "bytecode"
