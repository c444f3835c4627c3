"""Old files written by the genuine old writers (fixtures/legacy, see its README): Keras 1.2.2 + Theano,
Keras 2.1.6 / 2.2.4 + TF 1.15, tf.keras 2.15 (weights-only, Keras 3 layout weights, grouped/list-axis
layers, SavedModel) and tf.keras 2.4 (a SavedModel without keras_metadata.pb). Each must inspect with
the writer's own parameter counts and weight shapes, convert, and reproduce the writer's own outputs
(``<name>.io.npz``). No old Keras is needed here; tensorflow only for the SavedModels (marked ``keras``).
"""
from __future__ import annotations

import json
import shutil
from collections import Counter

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import kconv
from conftest import FIXTURES
from kconv.cli import main

LEGACY = FIXTURES / "legacy"

# case id: (file, load options). k1_cnn_tf was written by Theano with dim_ordering 'tf': Keras 1 files
# do not record the backend, so only the explicit option can say it (convert refuses a guess, issue 10).
CASES = {
    "k1_cnn_th": ("k1_cnn_th.h5", {"backend_of_writer": "theano"}),
    "k1_cnn_tf": ("k1_cnn_tf.h5", {"backend_of_writer": "theano"}),
    "k1_text_rnn": ("k1_text_rnn.h5", {}),
    "k1_merge": ("k1_merge.h5", {}),
    "k21_seq_cf": ("k21_seq_cf.h5", {}),
    "k21_seq_text": ("k21_seq_text.h5", {}),
    "k22_cnn": ("k22_cnn.h5", {}),
    "k22_text_rnn": ("k22_text_rnn.h5", {}),
    "k22_cudnn": ("k22_cudnn.h5", {}),
    "tf215_grouped": ("tf215_grouped.h5", {}),
    "tf215_weights_only": ("tf215_weights_only.h5", {"config": LEGACY / "tf215_weights_only.json"}),
    "tf215_weights_only.weights": ("tf215_weights_only.weights.h5", {"config": LEGACY / "tf215_weights_only.json"}),
    # issue #12: Keras 1 layers renamed after their weights were made; Keras 2.0.8 GRUs (no reset_after)
    "k1_renamed_cnn": ("k1_renamed_cnn.h5", {"backend_of_writer": "theano"}),
    "k1_renamed_text": ("k1_renamed_text.h5", {"backend_of_writer": "theano"}),  # Convolution1D: no dim_ordering
    "k20_gru": ("k20_gru.h5", {}),
    # Keras 1 wrappers around per-gate RNNs (Bidirectional: 24 / 18 arrays), TimeDistributed, AtrousConvolution2D
    "k1_kinds": ("k1_kinds.h5", {"backend_of_writer": "theano"}),
    # Keras 1 ConvLSTM2D ('tf' ordering, Theano-written): 12 per-gate arrays, both kernels flipped
    "k1_convlstm": ("k1_convlstm.h5", {"backend_of_writer": "theano"}),
}
# Weights-only files whose architecture JSON was written by a fresh process (other auto-names):
# read in order, as Keras's load_weights does (issue #12.1).
BY_ORDER = {"k22_by_order": "Keras 2.2.4", "tf215_by_order": "tf.keras 2.15"}
SAVEDMODEL = ("tf215_savedmodel.savedmodel", {})
# float32 on both sides; the writers computed in float32 (Theano, TF) too.
RTOL, ATOL = 1e-5, 1e-6


def _stem(case: str) -> str:
    return case.split(".")[0]


def _expected(case: str) -> dict:
    return json.loads((LEGACY / f"{_stem(case)}.expected.json").read_text())


def _leaves(model):
    for layer in model.layers:
        if layer.model is not None:
            yield from _leaves(layer.model)
        else:
            yield layer


def _check_counts(model, expected):
    assert model.param_counts() == (expected["trainable_params"], expected["non_trainable_params"])
    layers = {ly.name: ly for ly in _leaves(model)}
    for want in expected["layers"]:
        ly = layers[want["path"].split("/")[-1]]
        if want["class_name"] == "Merge":  # Keras 1 Merge(mode=...) is read as the Keras 2 class
            assert any(n.startswith("Keras 1 Merge(mode=") for n in ly.notes), ly.notes
        elif want["class_name"].startswith("Atrous"):  # Keras 1 AtrousConvolution2D is Keras 2's Conv2D
            assert f"Keras 1 {want['class_name']} -> {ly.class_name}" in ly.notes, ly.notes
        else:
            assert ly.class_name == want["class_name"]
    # every stored weight of the writer is there, with its shape (Keras 1 per-gate arrays: assembled)
    ours = Counter()
    for ly in layers.values():
        for w in ly.weights:
            ours[ly.name] += w.size
    theirs = Counter()
    for w in expected["weights"]:
        theirs[w["layer"]] += int(np.prod(w["shape"]))
    assert ours == theirs


def _run(out_dir, io):
    net = kconv.load_converted(out_dir)
    xs = [torch.from_numpy(io[k]) for k in sorted(k for k in io.files if k.startswith("input_"))]
    with torch.no_grad():
        y = net(*xs)
    return [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]


def _outputs(io):
    return [io[k] for k in sorted(k for k in io.files if k.startswith("output_"))]


@pytest.mark.parametrize("case", list(CASES))
def test_inspects_converts_and_matches_the_writer(case, tmp_path):
    name, opts = CASES[case]
    model = kconv.load(LEGACY / name, **opts)
    _check_counts(model, _expected(case))
    kconv.convert(model, tmp_path / "out")
    io = np.load(LEGACY / f"{_stem(case)}.io.npz")
    got, want = _run(tmp_path / "out", io), _outputs(io)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.keras
@pytest.mark.parametrize("stem", ["tf215_savedmodel", "tf24_savedmodel"])
def test_savedmodel(stem, tmp_path):
    pytest.importorskip("tensorflow")
    model = kconv.load(LEGACY / f"{stem}.savedmodel")
    assert model.format == "savedmodel" and model.backend == "tensorflow"
    expected = _expected(stem)
    assert model.keras_version == expected["writer"]["tensorflow"]
    _check_counts(model, expected)
    kconv.convert(model, tmp_path / "out")
    io = np.load(LEGACY / f"{stem}.io.npz")
    got, want = _run(tmp_path / "out", io), _outputs(io)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_tf24_savedmodel_has_no_keras_metadata():
    d = LEGACY / "tf24_savedmodel.savedmodel"
    assert (d / "saved_model.pb").exists() and not (d / "keras_metadata.pb").exists()
    assert _expected("tf24_savedmodel")["writer"]["tensorflow"].startswith("2.4.")


@pytest.mark.keras
def test_tf24_savedmodel_cli_inspect_and_convert(tmp_path):
    pytest.importorskip("tensorflow")
    run = CliRunner()
    src = str(LEGACY / "tf24_savedmodel.savedmodel")
    r = run.invoke(main, ["inspect", src, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{"):])
    assert rep["total_params"] == _expected("tf24_savedmodel")["total_params"]
    r = run.invoke(main, ["convert", src, "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output


@pytest.mark.keras
def test_savedmodel_without_keras_metadata_is_refused_clearly(tmp_path):
    # a 2.5+ SavedModel that lost its keras_metadata.pb: saved_model.pb holds no Keras configs any more
    pytest.importorskip("tensorflow")
    d = tmp_path / "old.savedmodel"
    shutil.copytree(LEGACY / SAVEDMODEL[0], d)
    (d / "keras_metadata.pb").unlink()
    r = CliRunner().invoke(main, ["inspect", str(d)])
    assert r.exit_code == 2
    assert "keras_metadata.pb" in r.output and "TensorFlow < 2.5" in r.output
    # what can be read is still shown: the checkpoint's variables
    assert "8 variables (453 values)" in r.output and "layer_with_weights-0/kernel  (3, 3, 3, 4)  float32" in r.output


@pytest.mark.keras
def test_pre25_savedmodel_without_model_config_lists_the_checkpoint(tmp_path):
    # as a subclassed model written by TF < 2.5: the root's embedded metadata has no config
    pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import saved_model_pb2

    d = tmp_path / "sub.savedmodel"
    shutil.copytree(LEGACY / "tf24_savedmodel.savedmodel", d)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((d / "saved_model.pb").read_bytes())
    root = sm.meta_graphs[0].object_graph_def.nodes[0].user_object
    assert root.identifier == "_tf_keras_network"
    meta = json.loads(root.metadata)
    del meta["config"]
    root.identifier, root.metadata = "_tf_keras_model", json.dumps(meta)
    (d / "saved_model.pb").write_bytes(sm.SerializeToString())
    r = CliRunner().invoke(main, ["inspect", str(d)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "saved_model.pb" in r.output and "subclassed" in r.output
    assert "8 variables (453 values)" in r.output and "layer_with_weights-2/kernel  (64, 5)  float32" in r.output


# --- the traps: getting one wrong must fail ---------------------------------------------------------

def _max_rel(case, tmp_path, **opts):
    name = CASES[case][0]
    kconv.convert(kconv.load(LEGACY / name, **opts), tmp_path / "x")
    io = np.load(LEGACY / f"{_stem(case)}.io.npz")
    g, w = _run(tmp_path / "x", io)[0], _outputs(io)[0]
    return float(np.max(np.abs(g - w)))


def test_theano_kernels_unflipped_do_not_match(tmp_path):
    # written by Theano: without the flip (TF assumed, as for any Keras 1 'tf'-ordering file) it is wrong
    assert _max_rel("k1_cnn_tf", tmp_path, backend_of_writer="tensorflow") > 1e-2
    assert _max_rel("k1_cnn_th", tmp_path, backend_of_writer="tensorflow") > 1e-2


def test_keras1_convlstm_theano_flip_needed_and_th_ordering_refused(tmp_path):
    assert _max_rel("k1_convlstm", tmp_path, backend_of_writer="tensorflow") > 1e-2
    m = kconv.load(LEGACY / "k1_convlstm.h5", backend_of_writer="theano")
    k = {w.key: w for w in m.layer("convlstm2d_1").weights}
    assert k["kernel"].name == "convlstm2d_1_W_i+convlstm2d_1_W_f+convlstm2d_1_W_c+convlstm2d_1_W_o"
    assert k["kernel"].shape == (3, 3, 2, 12)

    def th(c):
        c["config"][0]["config"]["dim_ordering"] = "th"
    r = CliRunner().invoke(main, ["inspect", str(_edited(tmp_path, "k1_convlstm.h5", th))])
    assert r.exit_code == 2 and "convlstm2d_1" in r.output and "'dim_ordering' is 'th'" in r.output


def test_theano_detection_and_notes():
    th = kconv.load(LEGACY / "k1_cnn_th.h5")
    assert th.keras_version == "1.2.2" and th.backend == "theano"
    assert "dim_ordering 'th'" in th.backend_note
    conv = th.layer("convolution2d_1")
    assert conv.config["_theano_kernels"] and conv.config["_theano_padding"]
    assert conv.config["data_format"] == "channels_first" and conv.config["kernel_size"] == [3, 3]
    assert conv.config["strides"] == [2, 2] and conv.config["filters"] == 8
    bn = th.layer("batchnormalization_1")
    assert any("running_std holds the variance" in n for n in bn.notes)
    assert {w.key: w.name for w in bn.weights}["moving_variance"] == "batchnormalization_1_running_std"
    tf = kconv.load(LEGACY / "k1_cnn_tf.h5")
    assert tf.backend == "tensorflow" and "--backend-of-writer theano" in tf.backend_note
    assert "_theano_kernels" not in tf.layer("convolution2d_1").config
    k2 = kconv.load(LEGACY / "k22_cnn.h5")
    assert k2.backend == "tensorflow" and k2.backend_note == ""


def test_keras1_rnn_gates_assembled_in_keras2_order():
    m = kconv.load(LEGACY / "k1_text_rnn.h5")
    lstm = m.layer("lstm_1")
    k = {w.key: w for w in lstm.weights}["kernel"]
    assert k.name == "lstm_1_W_i+lstm_1_W_f+lstm_1_W_c+lstm_1_W_o" and k.shape == (8, 24)
    with h5py.File(LEGACY / "k1_text_rnn.h5") as f:
        g = f["model_weights/lstm_1"]
        want = np.concatenate([g[f"lstm_1_W_{x}"][()] for x in "ifco"], axis=-1)
    np.testing.assert_array_equal(k.read(), want)
    assert lstm.config["units"] == 6 and lstm.config["recurrent_activation"] == "hard_sigmoid"
    assert m.layer("gru_1").config["reset_after"] is False
    assert "_keras1_gates" not in m.layer("lstm_2").config  # consume_less='gpu': 3 concatenated arrays


def test_keras1_merge_read_as_keras2_classes():
    m = kconv.load(LEGACY / "k1_merge.h5")
    assert [m.layer(n).class_name for n in ("add", "mul", "ave", "cat")] == ["Add", "Multiply", "Average",
                                                                              "Concatenate"]
    assert m.layer("cat").config["axis"] == -1
    assert len(m.layer("shared").calls) == 2


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_inspect_shows_writer_and_normalisation():
    r = CliRunner().invoke(main, ["inspect", str(LEGACY / "k1_cnn_th.h5"), "--brief"])
    assert r.exit_code == 0, r.output
    head = r.output.splitlines()[0]
    assert "Keras 1.2.2" in head and "backend theano" in head and "assumed from dim_ordering 'th'" in head
    assert "normalised: Keras 1 config:" in r.output and "nb_filter -> filters" in r.output
    assert "by flip(2,3)" in r.output
    r = CliRunner().invoke(main, ["inspect", str(LEGACY / "k1_cnn_tf.h5"), "--backend-of-writer", "theano", "--json"])
    rep = json.loads(r.output)
    assert rep["backend"] == "theano" and rep["backend_note"] == "given with --backend-of-writer"
    assert rep["total_params"] == _expected("k1_cnn_tf")["total_params"]


def test_cli_convert_backend_option_and_verify_reference(tmp_path):
    run = CliRunner()
    out = tmp_path / "o"
    r = run.invoke(main, ["convert", str(LEGACY / "k1_cnn_tf.h5"), "--backend-of-writer", "theano", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = run.invoke(main, ["verify", str(LEGACY / "k1_cnn_tf.h5"), str(out), "--reference",
                          str(LEGACY / "k1_cnn_tf.io.npz"), "--atol", "1e-6", "--rtol", "1e-5"])
    assert r.exit_code == 0, r.output
    r = run.invoke(main, ["convert", str(LEGACY / "k1_cnn_tf.h5"), "--backend-of-writer", "tensorflow",
                          "-o", str(tmp_path / "p")])
    r = run.invoke(main, ["verify", str(LEGACY / "k1_cnn_tf.h5"), str(tmp_path / "p"), "--reference",
                          str(LEGACY / "k1_cnn_tf.io.npz")])
    assert r.exit_code == 1  # the unflipped conversion disagrees with the writer


def test_cli_weights_only(tmp_path):
    run = CliRunner()
    for name in ("tf215_weights_only.h5", "tf215_weights_only.weights.h5"):
        r = run.invoke(main, ["inspect", str(LEGACY / name), "--config", str(LEGACY / "tf215_weights_only.json")])
        assert r.exit_code == 0, r.output
        assert "Total params: " + f"{_expected('tf215_weights_only')['total_params']:,}" in r.output
        r = run.invoke(main, ["inspect", str(LEGACY / name)])
        assert r.exit_code == 2 and "--config" in r.output


# --- damaged or unknown dialects: one error naming the layer and the key -----------------------------

def _edited(tmp_path, name, edit):
    dst = tmp_path / name
    shutil.copy(LEGACY / name, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg)
        f.attrs["model_config"] = json.dumps(cfg).encode()
    return dst


@pytest.mark.parametrize("edit, layer, key", [
    (lambda c: c["config"][1]["config"].update(mode=2), "batchnormalization_1", "'mode'"),
    (lambda c: c["config"][0]["config"].update(border_mode="full"), "convolution2d_1", "'border_mode'"),
    (lambda c: c["config"][0]["config"].update(dim_ordering="default"), "convolution2d_1", "'dim_ordering'"),
])
def test_bad_keras1_configs_name_layer_and_key(tmp_path, edit, layer, key):
    path = _edited(tmp_path, "k1_cnn_th.h5", edit)
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 2
    assert layer in r.output and key in r.output and "Traceback" not in r.output


def test_bad_merge_mode_and_cos(tmp_path):
    def bad(c):
        c["config"]["layers"][3]["config"]["mode"] = "blend"
    r = CliRunner().invoke(main, ["inspect", str(_edited(tmp_path, "k1_merge.h5", bad))])
    assert r.exit_code == 2 and "'add'" in r.output and "'mode'" in r.output

    def cos(c):
        c["config"]["layers"][3]["config"]["mode"] = "cos"
    path = _edited(tmp_path, "k1_merge.h5", cos)
    r = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "o")])
    assert r.exit_code == 3 and "Merge" in r.output and "cos" in r.output


@pytest.mark.parametrize("name", ["k1_cnn_tf.h5", "k1_cnn_th.h5"])
def test_guessed_writer_backend_is_refused_where_it_matters(tmp_path, name):
    """Keras 1 files do not record their backend; a wrong guess flips every kernel (max rel err 30 on
    k1_cnn_tf), so convert needs --backend-of-writer when a layer depends on it (issue 10)."""
    r = CliRunner().invoke(main, ["convert", str(LEGACY / name), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--backend-of-writer" in r.output and "convolution2d_1" in r.output
    assert not (tmp_path / "o").exists()
    # where no layer depends on it (no convolution), a Keras 1 file converts as before
    r = CliRunner().invoke(main, ["convert", str(LEGACY / "k1_text_rnn.h5"), "-o", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output


def test_theano_same_pooling_is_refused(tmp_path):
    def same_pool(c):
        c["config"][4]["config"]["border_mode"] = "same"
    path = _edited(tmp_path, "k1_cnn_th.h5", same_pool)
    assert kconv.load(path).layer("maxpooling2d_1").config["_theano_padding"]
    r = CliRunner().invoke(main, ["convert", str(path), "--backend-of-writer", "theano", "-o", str(tmp_path / "o")])
    assert r.exit_code == 3 and "Theano" in r.output


# --- issue #12: files Keras reads that kconv did not ----------------------------------------------

def _weighted_top_layers(expected):
    """The writer's top-level layers with weights, in its order, and their parameter sizes."""
    sizes = {}
    for w in expected["weights"]:
        top = w["layer"].split(".")[0]
        sizes[top] = sizes.get(top, 0) + int(np.prod(w["shape"]))
    return sizes


@pytest.mark.parametrize("stem", list(BY_ORDER))
def test_weights_only_paired_by_order_as_keras(stem, tmp_path):
    h5, arch = LEGACY / f"{stem}.h5", LEGACY / f"{stem}.json"
    expected = _expected(stem)
    with h5py.File(h5) as f:
        stored = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        stored = [n for n in stored if len(f[n].attrs["weight_names"])]
    model = kconv.load(h5, config=arch)
    ours = [ly for ly in model.layers if ly.stored_as is not None]
    # the architecture names its layers differently; some of its names are other layers' in the file
    assert all(ly.name != n for ly, n in zip(ours, stored))
    assert {ly.name for _, ly in model.walk()} & set(stored)
    assert [ly.stored_as for ly in ours] == stored
    sizes = _weighted_top_layers(expected)
    assert [sum(ly.param_counts()) for ly in ours] == [sizes[n] for n in stored]
    t, n = expected["trainable_params"], expected["non_trainable_params"]
    if stem == "k22_by_order":
        # Keras 2.2's Sequential.get_config has no 'trainable': the JSON cannot say that the nested
        # Sequential was frozen (its BatchNormalization gamma/beta and Dense: 8 + 20 values), so a model
        # built from it, by Keras as by kconv, counts them as trainable.
        t, n = t + 28, n - 28
    assert model.param_counts() == (t, n)
    kconv.convert(model, tmp_path / "out")
    io = np.load(LEGACY / f"{stem}.io.npz")
    np.testing.assert_allclose(_run(tmp_path / "out", io)[0], _outputs(io)[0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stem", list(BY_ORDER))
def test_weights_only_by_order_cli_shows_pairing_and_by_name_refuses(stem, tmp_path):
    run = CliRunner()
    h5, arch = str(LEGACY / f"{stem}.h5"), str(LEGACY / f"{stem}.json")
    r = run.invoke(main, ["inspect", h5, "--config", arch, "--brief"])
    assert r.exit_code == 0, r.output
    assert "(weights: the file's layer 'sequential" in r.output
    rep = json.loads(run.invoke(main, ["inspect", h5, "--config", arch, "--json"]).output)
    first = "dense" if stem.startswith("tf215") else "dense_1"  # the writer's first Dense
    assert next(ly["stored_as"] for ly in rep["layers"] if "stored_as" in ly) == first
    # Keras's other mode: by name. The names differ, so the layers are not found (Keras would leave
    # them at their initial values): refused, never converted with wrong weights.
    r = run.invoke(main, ["convert", h5, "--config", arch, "--by-name", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not in the file's layer_names" in r.output
    assert not (tmp_path / "o").exists()


def test_by_name_with_matching_names_and_default_agree(tmp_path):
    name, opts = CASES["tf215_weights_only"]
    a = kconv.load(LEGACY / name, by_name=True, **opts)
    b = kconv.load(LEGACY / name, **opts)
    assert [(w.name, w.shape) for _, ly in a.walk() for w in ly.weights] == \
        [(w.name, w.shape) for _, ly in b.walk() for w in ly.weights]
    r = CliRunner().invoke(main, ["inspect", str(LEGACY / "k22_cnn.h5"), "--by-name"])
    assert r.exit_code == 2 and "--by-name applies to legacy HDF5 weights files read with --config" in r.output


def test_by_name_convert_and_verify_with_reference(tmp_path):
    run = CliRunner()
    name, arch = str(LEGACY / "tf215_weights_only.h5"), str(LEGACY / "tf215_weights_only.json")
    out = str(tmp_path / "o")
    r = run.invoke(main, ["convert", name, "--config", arch, "--by-name", "-o", out])
    assert r.exit_code == 0, r.output
    r = run.invoke(main, ["verify", name, out, "--config", arch, "--by-name", "--reference",
                          str(LEGACY / "tf215_weights_only.io.npz"), "--atol", "1e-6", "--rtol", "1e-5"])
    assert r.exit_code == 0, r.output


def _edited_json(tmp_path, stem, edit):
    cfg = json.loads((LEGACY / f"{stem}.json").read_text())
    edit(cfg["config"]["layers"])
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(cfg))
    return p


def test_by_order_layer_count_mismatch_as_keras(tmp_path):
    def drop_last_dense(layers):  # the final Dense becomes a weightless Activation
        layers[-1]["class_name"] = "Activation"
        layers[-1]["config"] = {"name": layers[-1]["config"]["name"], "activation": "linear"}
    arch = _edited_json(tmp_path, "k22_by_order", drop_last_dense)
    r = CliRunner().invoke(main, ["inspect", str(LEGACY / "k22_by_order.h5"), "--config", str(arch)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Layer count mismatch" in r.output and "the model has 5 layers with weights" in r.output
    assert "the file 6 saved layers with weights" in r.output


def test_by_order_weight_count_mismatch_as_keras(tmp_path):
    def no_center(layers):
        bn = next(ly for ly in layers if ly["class_name"] == "BatchNormalization")
        bn["config"]["center"] = False
    arch = _edited_json(tmp_path, "k22_by_order", no_center)
    r = CliRunner().invoke(main, ["inspect", str(LEGACY / "k22_by_order.h5"), "--config", str(arch)])
    assert r.exit_code == 2
    assert "Weight count mismatch for layer #1 (named 'batch_normalization_3' in the model, " \
           "'batch_normalization_1' in the file): the layer expects 3 weight(s), the file has 4" in r.output


def test_keras1_bidirectional_gates_assembled_per_direction():
    m = kconv.load(LEGACY / "k1_kinds.h5", backend_of_writer="theano")
    names = [w.name for w in m.layer("bidirectional_2").weights]
    assert names[0] == "forward_gru_1_W_z+forward_gru_1_W_r+forward_gru_1_W_h"
    assert names[3] == "backward_gru_1_W_z+backward_gru_1_W_r+backward_gru_1_W_h"
    assert [w.key for w in m.layer("timedistributed_1").weights] == ["kernel", "bias"]


def test_keras1_renamed_layers_read_by_weight_name_suffix():
    m = kconv.load(LEGACY / "k1_renamed_cnn.h5")
    fc = m.layer("fc_5")
    assert {w.key: w.name for w in fc.weights} == {"kernel": "dense_1_W", "bias": "dense_1_b"}
    bn = m.layer("bn_1")
    assert {w.key: w.name for w in bn.weights}["moving_variance"] == "batchnormalization_1_running_std"
    t = kconv.load(LEGACY / "k1_renamed_text.h5")
    lstm = t.layer("lstm_3")
    assert {w.key: w.name for w in lstm.weights}["kernel"] == "lstm_1_W_i+lstm_1_W_f+lstm_1_W_c+lstm_1_W_o"


def test_pre_215_gru_reads_as_reset_before():
    m = kconv.load(LEGACY / "k20_gru.h5")
    assert m.keras_version == "2.0.8"
    gru = m.layer("gru_1")
    assert gru.config["reset_after"] is False and gru.config["implementation"] == 1
    assert any("no reset_after" in n for n in gru.notes)
    inner = m.layer("bidirectional_1").config["layer"]["config"]
    assert inner["reset_after"] is False
    assert {w.key: w.shape for w in gru.weights}["bias"] == (15,)


def test_keras3_h5_weight_without_attribute_name_paired_by_position(tmp_path):
    """ConvNeXt's LayerScale makes its weight without a name: Keras 3 stores it as '<layer>/variable'."""
    path = tmp_path / "ls.h5"
    with h5py.File(LEGACY / "k22_cnn.h5") as src, h5py.File(path, "w") as f:
        for k, v in src.attrs.items():
            f.attrs[k] = v
        src.copy("model_weights", f)
        g = f["model_weights/dense_1"]
        g.attrs["weight_names"] = [b"dense_1/variable", b"dense_1/variable_1"]
        g.move("dense_1/kernel:0", "dense_1/variable")
        g.move("dense_1/bias:0", "dense_1/variable_1")
    m = kconv.load(path)
    d = m.layer("dense_1")
    assert [(w.key, w.name) for w in d.weights] == [("kernel", "dense_1/variable"), ("bias", "dense_1/variable_1")]
    assert any("paired by position" in n for n in d.notes)


@pytest.mark.keras
def test_savedmodel_with_optimizer_slots(tmp_path):
    """A compiled, trained tf.keras model: Adam's m and v under every weight ('.OPTIMIZER_SLOT') and
    'optimizer/...' variables in the checkpoint; ignored for conversion, mentioned by inspect."""
    pytest.importorskip("tensorflow")
    stem = "tf215_optimizer_savedmodel"
    src = LEGACY / f"{stem}.savedmodel"
    model = kconv.load(src)
    expected = _expected(stem)
    _check_counts(model, expected)
    # Adam: m and v for each of the 8 weights (6 trainable, BN's 2 moving statistics have none): 12 slots
    # of the 6 trainable weights' sizes, plus iterations, beta_1, beta_2, decay, learning_rate
    assert model.optimizer_state["variables"] == 12 + 5
    assert model.optimizer_state["values"] == 2 * expected["trainable_params"] + 5
    kconv.convert(model, tmp_path / "out")
    io = np.load(LEGACY / f"{stem}.io.npz")
    np.testing.assert_allclose(_run(tmp_path / "out", io)[0], _outputs(io)[0], rtol=RTOL, atol=ATOL)
    r = CliRunner().invoke(main, ["inspect", str(src)])
    assert r.exit_code == 0, r.output
    assert "optimizer state: 17 variables" in r.output and "not parameters (not counted, as in Keras)" in r.output
    assert f"Total params: {expected['total_params']:,}" in r.output


def test_h5_optimizer_weights_mentioned_not_counted():
    m = kconv.load(LEGACY / "k22_cnn.h5")
    names = _expected("k22_cnn")["h5"]["optimizer_weight_names"]
    assert m.optimizer_state["variables"] == len(names) and m.optimizer_state["where"] == "optimizer_weights group"
    assert kconv.load(LEGACY / "k21_seq_text.h5").optimizer_state is None


def test_keras3_weights_file_found_by_path_not_by_recorded_name(tmp_path):
    """Keras 3's load_weights finds a layer's group by its path (layers/dense_2: the third Dense of the
    model), not by the name it also records there; the architecture came from a fresh process whose
    names are shifted by one, so the file's 'dense_4' is the architecture's 'dense_3'... (genuine Keras
    3.15 files; the outputs are that process's after Keras's own load_weights)."""
    w, arch = LEGACY / "k3_by_path.weights.h5", LEGACY / "k3_by_path.json"
    with h5py.File(w) as f:
        recorded = {k: f[f"layers/{k}/vars"].attrs["name"] for k in f["layers"]}
    model = kconv.load(w, config=arch)
    # the architecture's 'dense_4' (the Dense(4) after the nested model: path layers/dense_1) is the name
    # the file records for layers/dense_2 (the final Dense(3))
    assert recorded["dense_2"] == "dense_4" and recorded["dense_1"] == "dense_3"
    assert [w.name for w in model.layer("dense_4").weights] == ["layers/dense_1/vars/0", "layers/dense_1/vars/1"]
    expected = _expected("k3_by_path")
    assert model.param_counts() == (expected["trainable_params"], expected["non_trainable_params"])
    kconv.convert(model, tmp_path / "out")
    io = np.load(LEGACY / "k3_by_path.io.npz")
    np.testing.assert_allclose(_run(tmp_path / "out", io)[0], _outputs(io)[0], rtol=RTOL, atol=ATOL)


_TIME_MAJOR_SCRIPT = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tf_keras as keras
L = keras.layers
inp = keras.Input((4, 3))  # time-major: (time, batch 4, features 3)
x = L.LSTM(5, time_major=True, return_sequences=True, recurrent_activation="hard_sigmoid")(inp)
x = L.GRU(4, time_major=True, return_sequences=True, reset_after=False)(x)
seq = L.SimpleRNN(3, time_major=True, return_sequences=True)(x)
last, h, c = L.LSTM(2, time_major=True, return_state=True)(x)
model = keras.Model(inp, [seq, L.Dense(2)(last), c])
rng = np.random.default_rng(0)
for w in model.weights:
    w.assign(rng.normal(0, 0.5, size=w.shape).astype("float32"))
model.save(os.path.join(sys.argv[1], "tm.h5"))
xs = rng.standard_normal((6, 4, 3)).astype("float32")
ys = model(xs, training=False)
np.savez(os.path.join(sys.argv[1], "tm.npz"), x=xs, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
"""


@pytest.mark.keras
def test_tf_keras_time_major_rnns_convert(tmp_path):
    """tf.keras 2 time_major=True: (time, batch, features) in and out, states (batch, units)."""
    pytest.importorskip("tf_keras")
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _TIME_MAJOR_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = kconv.load(tmp_path / "tm.h5")
    assert [ly.config.get("time_major") for ly in m.layers if ly.class_name in ("LSTM", "GRU", "SimpleRNN")] == \
        [True] * 4
    kconv.convert(m, tmp_path / "out")
    io = np.load(tmp_path / "tm.npz")
    net = kconv.load_converted(tmp_path / "out")
    with torch.no_grad():
        ys = net(torch.from_numpy(io["x"]))
    assert [tuple(y.shape) for y in ys] == [(6, 4, 3), (4, 2), (4, 2)]
    for i, y in enumerate(ys):
        np.testing.assert_allclose(y.numpy(), io[f"y{i}"], rtol=1e-5, atol=1e-6)


def test_keras1_weights_only_read_by_order(tmp_path):
    """A Keras 1 save_weights file (the genuine k1_kinds weights, laid out at the root as Keras 1.2.2's
    save_weights writes them: layer_names only, no keras_version) with its architecture JSON (here
    without the keras_version that to_json adds: the Keras 1 dialect says it). Per-gate arrays inside
    Bidirectional count as Keras counts; hard_sigmoid is Keras 1's."""
    w, arch = tmp_path / "w.h5", tmp_path / "m.json"
    with h5py.File(LEGACY / "k1_kinds.h5") as src, h5py.File(w, "w") as f:
        for k, v in src["model_weights"].attrs.items():
            f.attrs[k] = v
        for k in src["model_weights"]:
            src.copy(f"model_weights/{k}", f, name=k)
        cfg = src.attrs["model_config"]
        arch.write_text(cfg.decode() if isinstance(cfg, bytes) else cfg)
    m = kconv.load(w, config=arch, backend_of_writer="theano")
    assert m.layer("bidirectional_1").stored_as == "bidirectional_1" and m.keras_version == "1"
    kconv.convert(m, tmp_path / "out")
    io = np.load(LEGACY / "k1_kinds.io.npz")
    np.testing.assert_allclose(_run(tmp_path / "out", io)[0], _outputs(io)[0], rtol=RTOL, atol=ATOL)
