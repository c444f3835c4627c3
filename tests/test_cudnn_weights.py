"""CuDNN-layout RNN weights under an LSTM/GRU architecture, and LSTM/GRU weights under a CuDNN one (issue #16).

fixtures/legacy/tf215_cudnn_weights.*, written by tf.keras 2.15 (scripts/make_legacy_fixtures.py):
``.h5`` is ``save_weights`` of a model of real CuDNNLSTM/CuDNNGRU layers (also inside Bidirectional),
``.json`` the same model with LSTM/GRU, whose outputs after ``load_weights(.h5)`` (Keras's own
conversion) are ``.io.npz``; ``.lstm.h5`` + ``.cudnn.json`` are the reverse (the LSTM model's weights,
the CuDNN architecture), which Keras converts too.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES

import kconv
from kconv.cli import main
from kconv.errors import WeightMismatchError
from kconv.load import cudnn
from kconv.specs.legacy import CudnnInputKernel, GateBlocksStacked

LEGACY = FIXTURES / "legacy"
H5, JSON = LEGACY / "tf215_cudnn_weights.h5", LEGACY / "tf215_cudnn_weights.json"
LSTM_H5, CUDNN_JSON = LEGACY / "tf215_cudnn_weights.lstm.h5", LEGACY / "tf215_cudnn_weights.cudnn.json"
EXPECTED = json.loads((LEGACY / "tf215_cudnn_weights.expected.json").read_text())
IO = np.load(LEGACY / "tf215_cudnn_weights.io.npz")


def _outputs(model, tmp_path):
    kconv.convert(model, tmp_path / "out")
    net = kconv.load_converted(tmp_path / "out")
    with torch.no_grad():
        return net(torch.from_numpy(IO["input_0"])).numpy()


@pytest.mark.parametrize("weights, config", [(H5, JSON), (LSTM_H5, CUDNN_JSON)], ids=["cudnn-under-lstm", "lstm-under-cudnn"])
def test_converts_as_keras_and_matches_its_outputs(weights, config, tmp_path):
    model = kconv.load(weights, config=config)
    np.testing.assert_allclose(_outputs(model, tmp_path), IO["output_0"], rtol=1e-5, atol=1e-6)


def test_counts_are_those_of_the_loaded_keras_model():
    # CuDNN weights under LSTM: Keras's LSTM model (bias 4u); LSTM weights under CuDNN: the CuDNN model (8u)
    m = kconv.load(H5, config=JSON)
    assert m.param_counts() == (EXPECTED["trainable_params"], EXPECTED["non_trainable_params"])
    want = [(w["layer"], tuple(w["shape"])) for w in EXPECTED["weights"]]
    assert [(ly.name, w.shape) for ly in m.layers for w in ly.weights] == want
    r = kconv.load(LSTM_H5, config=CUDNN_JSON)
    assert sum(r.param_counts()) == EXPECTED["cudnn_model_count_params"]


def test_inspect_shows_the_stored_weight_and_what_keras_makes_of_it():
    r = CliRunner().invoke(main, ["inspect", str(H5), "--config", str(JSON), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["total_params"] == EXPECTED["total_params"]
    layers = {ly["name"]: ly for ly in rep["layers"]}
    bias = {w["role"]: w for w in layers["lstm"]["weights"]}["bias"]
    assert bias["shape"] == [24] and bias["stored_shape"] == [48]
    assert "CuDNNLSTM" in bias["note"] and "sum of the two halves" in bias["note"]
    assert any("written by CuDNNLSTM" in n and "_convert_rnn_weights" in n for n in layers["lstm"]["config_notes"])
    gru_bias = {w["role"]: w for w in layers["gru"]["weights"]}["bias"]
    assert gru_bias["shape"] == [2, 15] and gru_bias["stored_shape"] == [30]
    bidi = [w for w in layers["bidi_lstm"]["weights"] if w["role"] == "bias"]
    assert [w["stored_shape"] for w in bidi] == [[24], [24]] and [w["shape"] for w in bidi] == [[12], [12]]
    # the stored names and shapes are the ones the writer's CuDNN layers reported
    stored = [[w["name"], w.get("stored_shape", w["shape"])] for ly in rep["layers"] for w in ly["weights"]]
    assert stored == EXPECTED["stored_cudnn_weights"]
    text = CliRunner().invoke(main, ["inspect", str(H5), "--config", str(JSON), "--brief"]).output
    assert "note: stored (48,) by CuDNNLSTM; Keras 2 converts it on load: sum of the two halves" in text


def test_keras_relayout_agrees_with_the_cudnn_memory_order():
    # Keras's per-gate k.T.reshape(k.shape, order='F') and kconv's CuDNNLSTM declaration (gate block
    # k.reshape(u, in), read from cuDNN's memory order) are two derivations of the same relayout.
    m = kconv.load(H5, config=JSON)
    w = {x.key: x for x in m.layer("lstm").weights}
    with h5py.File(H5) as f:
        k, r, b = (f["lstm"][f"lstm/{n}:0"][()] for n in ("kernel", "recurrent_kernel", "bias"))
    np.testing.assert_array_equal(w["kernel"].read(), CudnnInputKernel(4).apply(k).T)
    np.testing.assert_array_equal(w["recurrent_kernel"].read(), GateBlocksStacked(4).apply(r).T)
    np.testing.assert_array_equal(w["bias"].read(), b[:24] + b[24:])


def test_without_the_relayout_the_outputs_are_wrong(tmp_path, monkeypatch):
    # the fixture tells the layouts apart: kernels read as if already in LSTM layout are far off
    monkeypatch.setattr(cudnn.PerGate, "_one", lambda self, k: k)
    got = _outputs(kconv.load(H5, config=JSON), tmp_path)
    assert np.max(np.abs(got - IO["output_0"])) > 1e-2


def test_cudnn_gru_weights_under_reset_after_false_are_refused_as_keras_refuses(tmp_path):
    cfg = json.loads(JSON.read_text())
    gru = next(ly for ly in cfg["config"]["layers"] if ly["name"] == "gru")
    gru["config"]["reset_after"] = False
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(WeightMismatchError) as e:
        kconv.load(H5, config=p)
    assert "CuDNNGRU is not compatible with GRU(reset_after=False)" in str(e.value)
    r = CliRunner().invoke(main, ["inspect", str(H5), "--config", str(p)])
    assert r.exit_code == 2 and "CuDNNGRU is not compatible with GRU(reset_after=False)" in r.output


def test_use_bias_false_and_own_layout_are_left_alone():
    # Keras converts only three-weight layers whose bias shape says another writer
    k, rk = np.zeros((5, 24), "f4"), np.zeros((6, 24), "f4")
    assert cudnn._plan("LSTM", {}, [k.shape, rk.shape, (24,)]) is None
    with pytest.raises(ValueError, match="Invalid bias shape"):
        cudnn._plan("LSTM", {}, [k.shape, rk.shape, (30,)])
    assert cudnn._convert_one("LSTM", {}, [("k", k), ("r", rk)], [], [], "x") == [("k", k), ("r", rk)]


def test_keras_224_cudnn_file_with_the_lstm_architecture_keras_loaded_it_into(tmp_path):
    # k22_cudnn.h5: written by Keras 2.2.4's CuDNNLSTM / Bidirectional(CuDNNGRU); k22_cudnn.lstm.json: the
    # LSTM/GRU model that Keras 2.2.4 loaded it into (load_weights, layers paired in order: cu_dnnlstm_1 ->
    # lstm_1) to compute k22_cudnn.io.npz
    exp = json.loads((LEGACY / "k22_cudnn.expected.json").read_text())
    model = kconv.load(LEGACY / "k22_cudnn.h5", config=LEGACY / "k22_cudnn.lstm.json")
    want = [(ly["layer"], [tuple(s) for _, s in ly["weights"]]) for ly in exp["reference_converted_weights"]]
    assert [(ly.name, [w.shape for w in ly.weights]) for ly in model.layers if ly.weights] == want
    assert sum(model.param_counts()) == sum(int(np.prod(s)) for _, shapes in want for s in shapes)
    io = np.load(LEGACY / "k22_cudnn.io.npz")
    kconv.convert(model, tmp_path / "out")
    net = kconv.load_converted(tmp_path / "out")
    with torch.no_grad():
        got = net(torch.from_numpy(io["input_0"])).numpy()
    np.testing.assert_allclose(got, io["output_0"], rtol=1e-5, atol=1e-6)
