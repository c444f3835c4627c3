"""TF 2.4 SavedModels with custom layers and tf.* calls (TFOpLambda) (issue #16).

fixtures/legacy/tf24_custom.savedmodel (written by TensorFlow 2.4.4, scripts/make_legacy_fixtures.py):
Dense -> Scale (custom, own weight) -> tf.nn.relu -> tf.math.multiply(x, 2.0) -> Residual (custom, owns a
Dense) -> Dense. tf24_tfop.savedmodel: d = Dense -> tf.nn.relu -> tf.math.multiply -> + d -> tf.math.sigmoid
-> Dense.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES

import kconv
from kconv.cli import main
from kconv.errors import UnsupportedError
from kconv.load.config import parse_nodes

LEGACY = FIXTURES / "legacy"
ROOT = Path(__file__).resolve().parent.parent


def _expected(stem):
    return json.loads((LEGACY / f"{stem}.expected.json").read_text())


def test_tfoplambda_nodes_are_tensor_references():
    # tf.keras 2 writes a TFOpLambda call on one tensor as the reference itself, not a list of them
    # (node.serialize with _preserve_input_structure_in_config); this used to fail with
    # "invalid literal for int() with base 10: 'e'"
    calls = parse_nodes("tf.math.multiply", [["tf.nn.relu", 0, 0, {"y": 2.0, "name": None}]])
    assert len(calls) == 1 and [str(r) for r in calls[0].inputs] == ["tf.nn.relu"]
    assert calls[0].kwargs == {"y": 2.0, "name": None} and not calls[0].input_is_list
    # a list first argument (tf.concat([a, b], axis=-1)) and a tensor keyword argument
    calls = parse_nodes("tf.concat", [[["a", 0, 0, {"axis": -1}], ["b", 1, 0, {"axis": -1}]]])
    assert [str(r) for r in calls[0].inputs] == ["a", "b[1][0]"] and calls[0].input_is_list
    calls = parse_nodes("tf.math.add", [["a", 0, 0, {"y": ["b", 0, 0]}]])
    assert str(calls[0].tensor_kwargs["y"]) == "b"
    # a constant first argument
    calls = parse_nodes("tf.math.add", [["_CONSTANT_VALUE", -1, 3.0, {"y": ["b", 0, 0]}]])
    assert calls[0].inputs == [] and calls[0].kwargs["_constants"] == [3.0]


@pytest.mark.keras
@pytest.mark.parametrize("stem, tf_version", [("tf24_custom", "2.4.4"), ("tf215_custom", "2.15.1")])
def test_custom_layers_inspect_with_keras_counts(stem, tf_version):
    # TF 2.4 (Keras config in saved_model.pb) and TF 2.15 (keras_metadata.pb)
    pytest.importorskip("tensorflow")
    exp = _expected(stem)
    assert exp["writer"]["tensorflow"] == tf_version
    m = kconv.load(LEGACY / f"{stem}.savedmodel")
    assert m.param_counts() == (exp["trainable_params"], exp["non_trainable_params"])
    assert [(ly.name, ly.class_name) for ly in m.layers] == [(x["path"], x["class_name"]) for x in exp["layers"]]
    # every weight Keras reports, with its shape; the custom layer's sub-layer Dense is found although
    # TF 2.4 stored its variables as trainable_variables/3 and /4 (the root's list), TF 2.15 as variables/3, /4
    ours = sorted((ly.name, w.name.split("/", 1)[1], w.shape) for ly in m.layers for w in ly.weights)
    theirs = sorted((w["layer"], w["path"].split("/", 1)[1].split(":")[0], tuple(w["shape"])) for w in exp["weights"])
    assert ours == theirs
    residual = {w.key: w for w in m.layer("residual").weights}
    assert residual["kernel"].role == "kernel" and residual["kernel"].name == "layer_with_weights-2/inner/kernel"
    assert residual["kernel"].read().shape == (8, 8)
    dense = {w.key: w for w in m.layer("dense").weights}
    assert dense["kernel"].role == "kernel" and dense["kernel"].shape == (6, 8)


@pytest.mark.keras
@pytest.mark.parametrize("stem", ["tf24_custom", "tf215_custom"])
def test_custom_layers_are_refused_by_name(stem, tmp_path):
    pytest.importorskip("tensorflow")
    with pytest.raises(UnsupportedError) as e:
        kconv.convert(kconv.load(LEGACY / f"{stem}.savedmodel"), tmp_path / "out")
    # the TFOpLambda calls (tf.nn.relu, tf.math.multiply) convert; the custom classes cannot
    assert {c: sorted(n for n, _ in v) for c, v in e.value.by_class.items()} == {
        "Scale": ["scale"], "Residual": ["residual"]}
    r = CliRunner().invoke(main, ["convert", str(LEGACY / f"{stem}.savedmodel"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 3, r.output
    assert "Residual: residual (unknown layer class)" in r.output and "Scale: scale (unknown layer class)" in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["inspect", str(LEGACY / f"{stem}.savedmodel"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["total_params"] == _expected(stem)["total_params"]
    known = {ly["name"]: ly["known_class"] for ly in rep["layers"]}
    assert known == {"input_1": True, "dense": True, "scale": False, "tf.nn.relu": True,
                     "tf.math.multiply": True, "residual": False, "dense_1": True}


def _clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.keras
def test_tensorflow_start_up_lines_do_not_reach_the_user(tmp_path):
    # TensorFlow's native start-up lines (absl's "WARNING: All log messages before absl::InitializeLog()",
    # cudart_stub, cpu_feature_guard's "To enable the following instructions: AVX2 FMA") go to fd 2
    pytest.importorskip("tensorflow")
    src = str(LEGACY / "tf24_custom.savedmodel")
    r = subprocess.run([sys.executable, "-m", "kconv", "inspect", src, "--brief"], capture_output=True, text=True, check=False,
                       env=_clean_env(), timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "residual (Residual)" in r.stdout
    out = tmp_path / "o"
    src = str(LEGACY / "tf215_savedmodel.savedmodel")
    r = subprocess.run([sys.executable, "-m", "kconv", "convert", src, "-o", str(out)], capture_output=True, check=False,
                       text=True, env=_clean_env(), timeout=300)
    assert r.returncode == 0 and r.stderr == f"{src} -> {out}\n", r.stderr


def test_native_stderr_is_captured(capfd, monkeypatch):
    from kconv.load.savedmodel import _NativeStderr

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    with _NativeStderr() as native:
        os.write(2, b"To enable the following instructions: AVX2 FMA\n")
    assert "AVX2 FMA" in native.tail()
    assert "AVX2" not in capfd.readouterr().err
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@pytest.mark.keras
def test_tf24_tfoplambda_converts_and_matches_tensorflow(tmp_path):
    # tf.nn.relu, tf.math.multiply(x, 2.0), x + d (tf.__operators__.add with a tensor y), tf.math.sigmoid
    pytest.importorskip("tensorflow")
    m = kconv.load(LEGACY / "tf24_tfop.savedmodel")
    exp = _expected("tf24_tfop")
    assert m.param_counts() == (exp["trainable_params"], exp["non_trainable_params"])
    assert [ly.class_name for ly in m.layers] == [x["class_name"] for x in exp["layers"]]
    assert [c.output_shapes for ly in m.layers for c in ly.calls] == [
        [tuple(s) for s in exp["output_shapes"][ly.name][0]] for ly in m.layers]
    kconv.convert(m, tmp_path / "out")
    io = np.load(LEGACY / "tf24_tfop.io.npz")
    net = kconv.load_converted(tmp_path / "out")
    with torch.no_grad():
        y = net(torch.from_numpy(io["input_0"])).numpy()
    np.testing.assert_allclose(y, io["output_0"], rtol=1e-5, atol=1e-6)


@pytest.mark.keras
def test_tfoplambda_of_other_functions_is_refused_by_name(tmp_path):
    pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import saved_model_pb2

    d = tmp_path / "m.savedmodel"
    shutil.copytree(LEGACY / "tf24_tfop.savedmodel", d)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((d / "saved_model.pb").read_bytes())
    root = sm.meta_graphs[0].object_graph_def.nodes[0].user_object
    meta = json.loads(root.metadata)
    layer = next(x for x in meta["config"]["layers"] if x["name"] == "tf.math.sigmoid")
    layer["config"]["function"] = "math.cumsum"
    root.metadata = json.dumps(meta)
    (d / "saved_model.pb").write_bytes(sm.SerializeToString())
    r = CliRunner().invoke(main, ["convert", str(d), "-o", str(tmp_path / "o")])
    assert r.exit_code == 3, r.output
    assert "TFOpLambda: tf.math.sigmoid (tf.math.cumsum is not converted)" in r.output


_TF_KERAS_SCRIPT = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, tf_keras as keras
L = keras.layers
inp = keras.Input((5, 6))
d = L.Dense(4)(inp)
v = L.Reshape((1, 4))(L.Dense(4)(L.Flatten()(inp)))
x = tf.nn.relu(d) * 0.5                      # tf.nn.relu, tf.math.multiply
x = tf.math.maximum(x, d) - 1.0              # tensor y, tf.math.subtract with a number
x = tf.math.add(tf.math.tanh(x) / 3.0, v)    # tf.math.truediv, a y that broadcasts over time
x = tf.math.sigmoid(tf.math.square(x)) - L.Dense(4)(inp)
model = keras.Model(inp, L.Dense(2)(tf.math.abs(x)))
rng = np.random.default_rng(0)
for w in model.weights:
    w.assign(rng.normal(0, 0.5, size=w.shape).astype("float32"))
model.save(os.path.join(sys.argv[1], "tfop.h5"))
xs = rng.standard_normal((2, 5, 6)).astype("float32")
np.savez(os.path.join(sys.argv[1], "tfop.npz"), x=xs, y=np.asarray(model(xs, training=False)))
"""


@pytest.mark.keras
def test_tfoplambda_in_a_tf_keras_h5_matches_keras(tmp_path):
    pytest.importorskip("tf_keras")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _TF_KERAS_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = kconv.load(tmp_path / "tfop.h5")
    fns = sorted(ly.config["function"] for ly in m.layers if ly.class_name == "TFOpLambda")
    assert fns == sorted(["nn.relu", "math.multiply", "math.maximum", "math.subtract", "math.tanh", "math.truediv",
                          "math.add", "math.square", "math.sigmoid", "math.subtract", "math.abs"])
    kconv.convert(m, tmp_path / "out")
    io = np.load(tmp_path / "tfop.npz")
    net = kconv.load_converted(tmp_path / "out")
    with torch.no_grad():
        y = net(torch.from_numpy(io["x"])).numpy()
    np.testing.assert_allclose(y, io["y"], rtol=1e-5, atol=1e-6)
