"""kconv.load against what Keras itself reported for the committed fixtures (no tensorflow needed).

The fixtures and their ``*.expected.json`` come from ``scripts/make_fixtures.py``, which asks Keras
(Keras 3 and tf-keras) for parameter counts, weights and output shapes.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

import kconv
from conftest import FIXTURES


def _cases():
    cases = []
    for exp_path in sorted(FIXTURES.glob("*.expected.json")):
        expected = json.loads(exp_path.read_text())
        for name in expected["files"]:
            cases.append(pytest.param(FIXTURES / name, expected, id=name))
    return cases


CASES = _cases()


def test_fixtures_exist():
    names = {c.id for c in CASES}
    want = {f"{n}.{ext}" for n in ("cnn", "text_rnn", "multi_io") for ext in ("keras", "h5")}
    want |= {f"{n}_k2.h5" for n in ("cnn", "text_rnn", "multi_io")}
    assert want <= names, f"missing fixtures (run scripts/make_fixtures.py): {sorted(want - names)}"
    for c in CASES:
        assert c.values[0].exists(), c.values[0]


def _key(path: str) -> str:
    """'lstm/lstm_cell/kernel:0' -> 'kernel' (the Keras attribute name)."""
    return path.split("/")[-1].split(":")[0]


def _keras_weights(expected, fields):
    out: dict = {}
    for w in expected["weights"]:
        item = tuple({"shape": tuple(w["shape"]), "key": _key(w["path"]), "trainable": w["trainable"]}[f]
                     for f in fields)
        out.setdefault(w["layer"], Counter())[item] += 1
    return out


def _kconv_weights(model, fields):
    out: dict = {}
    for path, layer in model.walk():
        if layer.model is not None:
            continue
        for w in layer.weights:
            item = tuple({"shape": tuple(w.shape), "key": w.key, "trainable": w.trainable}[f] for f in fields)
            out.setdefault(path, Counter())[item] += 1
    return out


@pytest.fixture(scope="module")
def _loaded():
    return {}


def load(path, cache):
    if path not in cache:
        cache[path] = kconv.load(path)
    return cache[path]


@pytest.mark.parametrize("path,expected", CASES)
def test_param_counts(path, expected, _loaded):
    m = load(path, _loaded)
    assert m.param_counts() == (expected["trainable_params"], expected["non_trainable_params"])
    assert m.trainable_params == expected["trainable_params"]
    assert m.non_trainable_params == expected["non_trainable_params"]
    assert m.total_params == expected["total_params"]


@pytest.mark.parametrize("path,expected", CASES)
def test_layers_present(path, expected, _loaded):
    """Every layer Keras lists (nested ones as outer.inner) is in kconv's walk, with its class."""
    m = load(path, _loaded)
    got = {p: layer.class_name for p, layer in m.walk()}
    want = {e["path"]: e["class_name"] for e in expected["layers"]}
    assert {p: got.get(p) for p in want} == want


@pytest.mark.parametrize("fields", [("shape",), ("key", "shape"), ("key", "shape", "trainable")],
                         ids=["shape", "key", "trainable"])
@pytest.mark.parametrize("path,expected", CASES)
def test_weights(path, expected, fields, _loaded):
    """Per layer, the multiset of weight shapes (then with the Keras attribute name, then with the
    trainable flag as Keras counts it) equals what Keras reports."""
    m = load(path, _loaded)
    assert _kconv_weights(m, fields) == _keras_weights(expected, fields)


@pytest.mark.parametrize("path,expected", CASES)
def test_weights_readable(path, expected, _loaded):
    m = load(path, _loaded)
    for p, layer in m.walk():
        for w in layer.weights:
            a = w.read()
            assert tuple(a.shape) == tuple(w.shape), (p, w.name)
            assert str(a.dtype) == w.dtype, (p, w.name)


def _norm(shape):
    return None if shape is None else [None if d is None else int(d) for d in shape]


@pytest.mark.parametrize("path,expected", CASES)
def test_output_shapes(path, expected, _loaded):
    """Per top-level layer and per call, the inferred output shapes equal Keras's."""
    m = load(path, _loaded)
    got = {}
    for name in expected["output_shapes"]:
        layer = m.layer(name)
        got[name] = [[_norm(s) for s in call.output_shapes] for call in layer.calls]
    assert got == expected["output_shapes"]


@pytest.mark.parametrize("path,expected", CASES)
def test_model_outputs_and_version(path, expected, _loaded):
    m = load(path, _loaded)
    io = __import__("numpy").load(FIXTURES / path.name.replace(path.suffix, ".io.npz"))
    n_in = sum(k.startswith("input_") for k in io.files)
    n_out = sum(k.startswith("output_") for k in io.files)
    assert len(m.inputs) == n_in
    assert len(m.outputs) == n_out
    for i, shape in enumerate(m.output_shapes()):
        assert _norm(shape)[1:] == list(io[f"output_{i}"].shape[1:])
    assert m.keras_version == expected["keras_version"]
