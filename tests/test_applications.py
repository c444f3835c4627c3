"""kconv.load on real keras.applications models, saved by Keras 3 as .keras and .h5 (needs tensorflow).

Each model is built once (weights=None: shapes are what is checked) and its Keras facts recorded:
parameter counts (trainable_weights / non_trainable_weights / count_params), per-layer weight shapes
and trainable flags, and every layer's ``layer.output.shape``. ResNet50 runs at the default 224x224;
the others at smaller inputs to stay fast.
"""
from __future__ import annotations

import gc
import os
import shutil
from collections import Counter

import pytest

pytestmark = [
    pytest.mark.keras,
    # Keras's own numpy-2 DeprecationWarnings while saving, thousands of them: not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow", reason="keras.applications tests need tensorflow (pip install -e .[test])")
keras = pytest.importorskip("keras", minversion="3", reason="needs Keras 3 (installed with tensorflow>=2.16)")

import numpy as np  # noqa: E402

import kconv  # noqa: E402

APPS = {
    "ResNet50": None,  # default 224x224x3
    "MobileNetV2": (96, 96, 3),
    "EfficientNetB0": (96, 96, 3),
    "DenseNet121": (96, 96, 3),
    "InceptionV3": (75, 75, 3),  # its minimum
}
FORMATS = ("keras", "h5")


def _shape(s):
    return tuple(None if d is None else int(d) for d in s)


def _keras_facts(model):
    trainable_ids = {id(w) for w in model.trainable_weights}
    weights = {}
    for layer in model.layers:
        for w in layer.weights:
            weights.setdefault(layer.name, []).append((_shape(w.shape), id(w) in trainable_ids))
    return {
        "trainable": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        "non_trainable": sum(int(np.prod(w.shape)) for w in model.non_trainable_weights),
        "total": int(model.count_params()),
        "classes": {layer.name: type(layer).__name__ for layer in model.layers},
        "weights": weights,
        "output_shapes": {layer.name: _shape(layer.output.shape) for layer in model.layers},
    }


@pytest.fixture(scope="module", params=list(APPS))
def app(request, tmp_path_factory):
    name = request.param
    keras.backend.clear_session()
    kw = {} if APPS[name] is None else {"input_shape": APPS[name]}
    model = getattr(keras.applications, name)(weights=None, **kw)
    folder = tmp_path_factory.mktemp(name)
    files = {fmt: folder / f"{name}.{fmt}" for fmt in FORMATS}
    for path in files.values():
        model.save(path)
    facts = _keras_facts(model)
    del model
    keras.backend.clear_session()
    gc.collect()
    state = {"name": name, "files": files, "keras": facts, "kconv": {}}
    yield state
    state["kconv"].clear()  # drop kconv's open file handles before removing the files
    gc.collect()
    shutil.rmtree(folder, ignore_errors=True)


def _load(app, fmt):
    """kconv's model for this app and format, loaded once (a load error fails the test, not setup)."""
    if fmt not in app["kconv"]:
        app["kconv"][fmt] = kconv.load(app["files"][fmt])
    return app["kconv"][fmt], app["keras"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_param_counts(app, fmt):
    m, k = _load(app, fmt)
    assert m.param_counts() == (k["trainable"], k["non_trainable"])
    assert m.total_params == k["total"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_layers(app, fmt):
    m, k = _load(app, fmt)
    got = {layer.name: layer.class_name for layer in m.layers}
    assert got == k["classes"]


def _per_layer(items, pick):
    return {name: Counter(pick(x) for x in ws) for name, ws in items if ws}


@pytest.mark.parametrize("fmt", FORMATS)
def test_weight_shapes(app, fmt):
    m, k = _load(app, fmt)
    got = _per_layer(((ly.name, [(tuple(w.shape), w.trainable) for w in ly.weights]) for ly in m.layers),
                     lambda x: x[0])
    want = _per_layer(k["weights"].items(), lambda x: x[0])
    assert got == want


@pytest.mark.parametrize("fmt", FORMATS)
def test_weight_trainable(app, fmt):
    m, k = _load(app, fmt)
    got = _per_layer(((ly.name, [(tuple(w.shape), w.trainable) for w in ly.weights]) for ly in m.layers),
                     lambda x: x)
    want = _per_layer(k["weights"].items(), lambda x: x)
    assert got == want


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_shapes(app, fmt):
    m, k = _load(app, fmt)
    got = {}
    for layer in m.layers:
        assert len(layer.calls) == 1, layer.name
        outs = layer.calls[0].output_shapes
        got[layer.name] = None if outs[0] is None else tuple(outs[0])
    assert got == k["output_shapes"]
