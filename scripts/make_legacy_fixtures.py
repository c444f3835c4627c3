#!/usr/bin/env python
"""Build ``fixtures/legacy/``: Keras files written by the *genuine* old writers (Keras 1 + Theano,
standalone Keras 2.2 + TensorFlow 1.15, tf.keras 2.4 and 2.15), with reference outputs from those writers.

    python scripts/make_legacy_fixtures.py                 # all writers
    python scripts/make_legacy_fixtures.py --only keras1   # keras1 | keras2 | keras21 | tfkeras2 | tf24
    python scripts/make_legacy_fixtures.py --venvs /tmp/kconv-legacy-venvs --out fixtures/legacy

The driver runs on any Python >= 3.8. For each writer it creates a throwaway virtual environment
(default under ``/tmp/kconv-legacy-venvs``, never in the repository) with an old interpreter from
pyenv (``/root/.pyenv/versions/<x.y.z>``, override with ``--pyenv``), pip-installs the pinned old
packages from the package index, then runs *this same file* inside that environment as a worker
(``--worker <writer> --model <name>``), one process per model so that auto-generated layer names
(``dense_1``, ``conv2d_1``...) start afresh. This file therefore stays Python-3.6 compatible.
If an installation fails, the next alternative pin set (then the next interpreter) is tried; what
failed is recorded in ``fixtures/legacy/MANIFEST.json`` (``writers.<name>.failures``).

Time (measured on this machine, 2 cores): a run from scratch with a warm pip cache takes ~3.5 minutes
(venv installs ~10-30 s each; Keras 1 models ~1.5 minutes, mostly Theano compiling C code); a cold pip
cache adds the download of ~0.8 GB of wheels (TensorFlow 1.15 and 2.15). Reruns reuse the venvs.
A venv is reused when its ``.kconv-ok`` marker matches the pins; delete ``--venvs`` to start over.

Writers and models (see fixtures/legacy/README.md for the traps each one exercises):

=========  ================================================  ===========================================
writer     packages                                          models
=========  ================================================  ===========================================
keras1     Python 3.7, keras==1.2.2, theano==1.0.5,          k1_cnn_th, k1_cnn_tf, k1_text_rnn,
           numpy==1.16.6, scipy==1.2.3, h5py==2.10.0         k1_merge, k1_renamed_cnn, k1_renamed_text,
                                                             k1_kinds, k1_convlstm
keras2     Python 3.7, keras==2.2.4, tensorflow==1.15.5,     k22_cnn, k22_text_rnn, k22_cudnn,
           h5py==2.10.0, numpy==1.16.6, protobuf==3.20.3     k22_by_order (+ k22_by_order_arch: its JSON)
keras21    as keras2 but keras==2.1.6                        k21_seq_cf, k21_seq_text (Sequential)
keras20    as keras2 but keras==2.0.8 (+ scipy==1.2.3)       k20_gru (GRU config without reset_after)
tfkeras2   Python 3.11, tensorflow-cpu==2.15.1 (Keras 2.15)  tf215_weights_only, tf215_savedmodel,
                                                             tf215_grouped, tf215_cudnn_weights, tf215_custom, tf215_by_order
                                                             (+ _arch), tf215_optimizer_savedmodel
keras3     Python 3.11, keras==3.15.1,                       k3_by_path (.weights.h5), k3_by_path_arch
           tensorflow-cpu==2.21.0                            (its JSON and Keras's load_weights outputs)
tf24       Python 3.8, tensorflow-cpu==2.4.4, numpy==1.19.5, tf24_savedmodel (SavedModel without
           protobuf==3.20.3, h5py==2.10.0                    keras_metadata.pb), tf24_custom, tf24_tfop
=========  ================================================  ===========================================

For every model the worker writes (all values from the writer itself, never from kconv):

- the model file(s): ``<name>.h5`` (full model), or ``<name>.weights.h5`` + ``<name>.json``
  (``save_weights`` + ``to_json``), or ``<name>.savedmodel/`` (TF SavedModel directory);
- ``*_by_order_arch`` writes only ``<name>.json``: ``to_json()`` of the same architecture, built in a
  fresh process after a few other layers, so that every auto-generated name differs from the
  weights file's (read by order, as Keras's ``load_weights`` does);
- ``<name>.io.npz``: a seeded input batch of 2 (``input_0``...) and the writer's own inference
  outputs (``output_0``...);
- ``<name>.expected.json``: the writer's versions, backend, image ordering, param counts
  (trainable_weights / non_trainable_weights / count_params), every layer with its class, every
  weight with the name and shape the writer reports, per-call output shapes, and the layer and
  weight names actually stored in the HDF5 file (``h5``).

All weights are replaced (``set_weights``) by seeded random, non-default values (BN statistics
away from 0/1, nonzero biases) before saving. Random numbers come from ``numpy.random.RandomState``
so that numpy 1.16 and 1.26 produce the same values.

CuDNN layers (``k22_cudnn``) cannot run without a GPU, and TensorFlow 1.15 cannot even open a session
on a graph that contains a ``CudnnRNN`` op with no CPU kernel. The worker therefore builds the model
with the real ``CuDNNLSTM``/``CuDNNGRU`` classes (real ``build()``: same variables, same config) but
with their ``_process_batch`` (the only code that creates the ``CudnnRNN`` op) replaced by a zero
stub while the graph is constructed; ``model.save()`` then writes exactly what Keras writes for
these layers (config and weights do not depend on that op). Reference outputs come from Keras's own
converter: an equivalent model with ``LSTM(recurrent_activation='sigmoid')`` and
``GRU(recurrent_activation='sigmoid', reset_after=True)`` loads the saved file with
``load_weights`` (which calls ``keras.engine.saving.preprocess_weights_for_loading`` ->
``_convert_rnn_weights``) and runs ``predict``.
"""
from __future__ import print_function

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "fixtures", "legacy")
DEFAULT_VENVS = "/tmp/kconv-legacy-venvs"
DEFAULT_PYENV = "/root/.pyenv/versions"
INSTALL_TIMEOUT = 15 * 60  # per attempt
WORKER_TIMEOUT = 10 * 60

# writer -> interpreters to try (pyenv versions), alternative pin sets (tried in order),
# extra environment, models
WRITERS = {
    "keras1": {
        "pythons": ["3.7.16", "3.6.15"],
        "attempts": [
            ["numpy==1.16.6", "scipy==1.2.3", "h5py==2.10.0", "theano==1.0.5", "keras==1.2.2"],
            ["numpy==1.16.6", "scipy==1.2.3", "h5py==2.10.0", "theano==0.9.0", "keras==1.2.2"],
        ],
        "env": {"KERAS_BACKEND": "theano"},
        "models": ["k1_cnn_th", "k1_cnn_tf", "k1_text_rnn", "k1_merge", "k1_renamed_cnn", "k1_renamed_text",
                   "k1_kinds", "k1_convlstm"],
    },
    "keras2": {
        "pythons": ["3.7.16", "3.6.15"],
        "attempts": [
            ["tensorflow==1.15.5", "keras==2.2.4", "h5py==2.10.0", "numpy==1.16.6", "protobuf==3.20.3"],
            ["tensorflow==1.14.0", "keras==2.2.4", "h5py==2.10.0", "numpy==1.16.6", "protobuf==3.20.3"],
            ["tensorflow==1.15.5", "keras==2.3.1", "h5py==2.10.0", "numpy==1.16.6", "protobuf==3.20.3"],
        ],
        "env": {"KERAS_BACKEND": "tensorflow"},
        "models": ["k22_cnn", "k22_text_rnn", "k22_cudnn", "k22_by_order", "k22_by_order_arch"],
    },
    "keras21": {
        "pythons": ["3.7.16", "3.6.15"],
        "attempts": [
            ["tensorflow==1.15.5", "keras==2.1.6", "h5py==2.10.0", "numpy==1.16.6", "protobuf==3.20.3"],
            ["tensorflow==1.15.5", "keras==2.0.8", "h5py==2.10.0", "numpy==1.16.6", "protobuf==3.20.3"],
        ],
        "env": {"KERAS_BACKEND": "tensorflow"},
        "worker": "keras2",
        "models": ["k21_seq_cf", "k21_seq_text"],
    },
    "keras20": {
        "pythons": ["3.7.16", "3.6.15"],
        "attempts": [
            ["tensorflow==1.15.5", "keras==2.0.8", "h5py==2.10.0", "numpy==1.16.6", "scipy==1.2.3",
             "protobuf==3.20.3"],
            ["tensorflow==1.4.0", "keras==2.0.8", "h5py==2.10.0", "numpy==1.16.6", "scipy==1.2.3",
             "protobuf==3.20.3"],
        ],
        "env": {"KERAS_BACKEND": "tensorflow"},
        "worker": "keras2",
        "models": ["k20_gru"],
    },
    "tfkeras2": {
        "pythons": ["3.11.7", "3.10.13", "3.9.18"],
        "attempts": [["tensorflow-cpu==2.15.1"], ["tensorflow-cpu==2.13.1"]],
        "env": {"TF_USE_LEGACY_KERAS": "0"},
        "models": ["tf215_weights_only", "tf215_savedmodel", "tf215_grouped", "tf215_cudnn_weights", "tf215_by_order",
                   "tf215_by_order_arch", "tf215_optimizer_savedmodel", "tf215_custom"],
    },
    "keras3": {
        "pythons": ["3.11.7"],
        "attempts": [["tensorflow-cpu==2.21.0", "keras==3.15.1"]],
        "env": {"KERAS_BACKEND": "tensorflow"},
        "models": ["k3_by_path", "k3_by_path_arch"],
    },
    "tf24": {
        "pythons": ["3.8.18"],
        "attempts": [
            ["tensorflow-cpu==2.4.4", "numpy==1.19.5", "protobuf==3.20.3", "h5py==2.10.0"],
            ["tensorflow-cpu==2.3.4", "numpy==1.18.5", "protobuf==3.20.3", "h5py==2.10.0"],
        ],
        "env": {},
        "models": ["tf24_savedmodel", "tf24_custom", "tf24_tfop"],
    },
}
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONHASHSEED": "0",
    "PYTHONWARNINGS": "ignore",
}


# =============================================================================================
# Worker side (runs inside the old environments: keep Python 3.6 / numpy 1.16 compatible)

def _seed(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _role(layer, wname):
    """The role of a weight, from the name the writer gave it."""
    cls = layer.__class__.__name__
    base = wname.split("/")[-1].split(":")[0]
    prefix = layer.name + "_"
    if base.startswith(prefix):  # Keras 1: '<layer>_W', '<layer>_running_std', '<layer>_U_i'...
        base = base[len(prefix):]
    if base in ("moving_variance", "running_std"):
        return "variance"
    if base in ("moving_mean", "running_mean"):
        return "mean"
    if base in ("gamma", "beta", "alpha"):
        return base
    if base == "bias" or base == "b" or base.startswith("b_") or base.startswith("bias"):
        return "bias"
    if cls == "Embedding" or base == "embeddings":
        return "embedding"
    return "kernel"


def random_value(role, shape, rng):
    import numpy as np

    shape = tuple(int(d) for d in shape)
    if role == "variance":
        v = rng.uniform(0.5, 2.0, shape)
    elif role == "mean":
        v = rng.normal(0.0, 0.5, shape)
    elif role == "gamma":
        v = rng.uniform(0.5, 1.5, shape)
    elif role in ("beta", "bias"):
        v = rng.normal(0.0, 0.2, shape)
    elif role == "alpha":
        v = rng.uniform(0.05, 0.4, shape)
    elif role == "embedding":
        v = rng.normal(0.0, 0.5, shape)
    else:
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        v = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
    return v.astype("float32")


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Model", "Functional"):
            for sub in _leaf_layers(layer):
                yield sub
        else:
            yield layer


def randomise(model, name):
    """Replace every weight by a seeded random value (per layer, so orderings never get mixed)."""
    rng = __import__("numpy").random.RandomState(_seed(name))
    for layer in _leaf_layers(model):
        ws = layer.weights
        if not ws:
            continue
        shapes = [tuple(int(d) for d in v.shape) for v in layer.get_weights()]
        layer.set_weights([random_value(_role(layer, _wname(w)), s, rng) for w, s in zip(ws, shapes)])


def _wname(w):
    return str(w.name)


def _shape(s):
    if s is None:
        return None
    return [None if d is None else int(d) for d in s]


def _nodes(layer):
    for attr in ("_inbound_nodes", "inbound_nodes"):
        n = getattr(layer, attr, None)
        if n is not None:
            return n
    return []


def _owned_node_indices(model, layer):
    keys = None
    for m in (model, getattr(model, "model", None)):
        if m is None:
            continue
        for attr in ("_network_nodes", "_container_nodes", "container_nodes"):
            s = getattr(m, attr, None)
            if s:
                keys = s
                break
        if keys:
            break
    n = len(_nodes(layer))
    if keys is None:
        return list(range(n))
    return [i for i in range(n) if "%s_ib-%d" % (layer.name, i) in keys]


def _output_shapes(model, layer):
    calls = []
    for i in _owned_node_indices(model, layer):
        s = layer.get_output_shape_at(i)
        shapes = s if isinstance(s, list) else [s]
        calls.append([_shape(x) for x in shapes])
    return calls


def _h5_names(path):
    """Layer and weight names as stored in an HDF5 file (full model or weights-only)."""
    import h5py

    def dec(x):
        return x.decode("utf8") if isinstance(x, bytes) else str(x)

    out = {}
    with h5py.File(path, "r") as f:
        out["root_attrs"] = sorted(f.attrs.keys())
        g = f["model_weights"] if "model_weights" in f else f
        out["weights_group"] = "model_weights" if g is not f else "/"
        out["weights_group_attrs"] = sorted(g.attrs.keys())
        out["layer_names"] = [dec(n) for n in g.attrs["layer_names"]]
        out["weight_names"] = {}
        for ln in out["layer_names"]:
            names = [dec(n) for n in g[ln].attrs["weight_names"]]
            out["weight_names"][ln] = [[n, list(g[ln][n].shape)] for n in names]
        for key in ("keras_version", "backend"):
            if key in f.attrs:
                out[key] = dec(f.attrs[key])
        if "optimizer_weights" in f:
            og = f["optimizer_weights"]
            out["optimizer_weight_names"] = [dec(n) for n in og.attrs["weight_names"]]
    return out


def expected_of(model, keras, writer_info, files, h5file=None):
    import numpy as np

    def size(w):
        return int(np.prod([int(d) for d in keras.backend.int_shape(w)]))

    trainable = model.trainable_weights
    non_trainable = model.non_trainable_weights
    tids = set(id(w) for w in trainable)
    t = sum(size(w) for w in trainable)
    n = sum(size(w) for w in non_trainable)
    total = int(model.count_params())
    layers, weights = [], []

    def walk(m, prefix):
        for layer in m.layers:
            path = prefix + layer.name
            layers.append({"path": path, "class_name": layer.__class__.__name__})
            if hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Model", "Functional"):
                walk(layer, path + ".")
                continue
            for w in layer.weights:
                weights.append({"layer": path, "path": _wname(w), "shape": _shape(keras.backend.int_shape(w)),
                                "trainable": id(w) in tids})

    walk(model, "")
    exp = {
        "files": files,
        "writer": writer_info,
        "keras_version": writer_info["keras_version"],
        "model_class": model.__class__.__name__,
        "trainable_params": t,
        "non_trainable_params": n,
        "total_params": total,
        "count_params_matches_sum": t + n == total,
        "layers": layers,
        "weights": weights,
        "output_shapes": {layer.name: _output_shapes(model, layer) for layer in model.layers},
    }
    if h5file is not None:
        exp["h5"] = _h5_names(h5file)
    return exp


def dump_json(obj):
    text = json.dumps(obj, indent=1, sort_keys=False)
    text = re.sub(r"\[\s*([^\[\]{}\s][^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    return text + "\n"


def write_io(out, name, inputs, outputs):
    import numpy as np

    arrays = {}
    for i, x in enumerate(inputs):
        arrays["input_%d" % i] = x
    for i, y in enumerate(outputs if isinstance(outputs, list) else [outputs]):
        arrays["output_%d" % i] = np.asarray(y)
    with open(os.path.join(out, name + ".io.npz"), "wb") as fh:
        np.savez(fh, **arrays)


def text_inputs(rng, length=7, vocab=50):
    x = rng.randint(1, vocab, size=(2, length)).astype("int32")
    x[0, length - 2:] = 0  # right-padded
    x[1, :2] = 0  # left-padded
    return x


def _versions():
    import numpy
    import h5py

    return {"python": sys.version.split()[0], "numpy": numpy.__version__, "h5py": h5py.__version__}


# ---------------------------------------------------------------- Keras 1.2.2 (Theano backend)

def keras1_worker(name, out):
    import numpy as np
    import keras
    import theano
    import theano.ifelse  # noqa: F401 -- Keras 1.2.2 uses theano.ifelse, which Theano 1.0 no longer imports
    from keras import backend as K
    from keras.layers import (GRU, LSTM, Activation, BatchNormalization, Convolution2D, Dense,
                              Dropout, Embedding, Flatten, Input, MaxPooling2D, merge)
    from keras.models import Model, Sequential

    rng = np.random.RandomState(_seed(name) + 1)
    order = "tf" if name == "k1_cnn_tf" else "th"
    K.set_image_dim_ordering(order)
    info = dict(_versions(), keras_version=keras.__version__, backend=K.backend(),
                theano=theano.__version__, image_dim_ordering=K.image_dim_ordering(), floatx=K.floatx())

    if name == "k1_cnn_th":
        model = Sequential([
            Convolution2D(8, 3, 3, border_mode="same", subsample=(2, 2), dim_ordering="th",
                          input_shape=(3, 16, 16)),
            BatchNormalization(axis=1),
            Activation("relu"),
            Convolution2D(4, 3, 3, border_mode="valid", dim_ordering="th"),
            MaxPooling2D((2, 2), dim_ordering="th"),
            Flatten(),
            Dropout(0.25),
            Dense(10, activation="softmax"),
        ])
        inputs = [rng.standard_normal((2, 3, 16, 16)).astype("float32")]
    elif name == "k1_cnn_tf":
        model = Sequential([
            Convolution2D(8, 3, 3, border_mode="same", subsample=(2, 2), dim_ordering="tf",
                          input_shape=(16, 16, 3)),
            BatchNormalization(axis=-1),
            Activation("relu"),
            Convolution2D(4, 2, 2, border_mode="same", dim_ordering="tf"),  # even kernel, 'same'
            Convolution2D(4, 3, 3, border_mode="valid", subsample=(2, 2), dim_ordering="tf"),
            Flatten(),
            Dense(6),
        ])
        inputs = [rng.standard_normal((2, 16, 16, 3)).astype("float32")]
    elif name == "k1_text_rnn":
        model = Sequential([
            Embedding(50, 8, mask_zero=True, input_length=7),
            LSTM(6, return_sequences=True),                       # consume_less='cpu': 12 arrays
            GRU(5, return_sequences=True),                        # 9 arrays
            LSTM(4, consume_less="gpu"),                          # 3 concatenated arrays (i,f,c,o)
            Dense(3),
        ])
        inputs = [text_inputs(rng)]
    elif name == "k1_merge":
        a = Input(shape=(6,), name="in_a")
        b = Input(shape=(6,), name="in_b")
        shared = Dense(5, activation="relu", name="shared")
        sa, sb = shared(a), shared(b)
        cat = merge([sa, sb], mode="concat", concat_axis=-1, name="cat")
        s = merge([sa, sb], mode="sum", name="add")
        m = merge([sa, sb], mode="mul", name="mul")
        ave = merge([s, m], mode="ave", name="ave")
        out1 = Dense(3, activation="tanh", name="head1")(cat)
        bn = BatchNormalization(name="bn")(ave)
        out2 = Dense(2, name="head2")(bn)
        model = Model(input=[a, b], output=[out1, out2])
        model.compile(optimizer="sgd", loss="mse")  # files in the wild carry a training_config
        inputs = [rng.standard_normal((2, 6)).astype("float32") for _ in range(2)]
    elif name == "k1_renamed_cnn":
        from keras.layers import PReLU

        model = Sequential([
            Convolution2D(6, 3, 3, border_mode="same", dim_ordering="th", input_shape=(3, 10, 10)),
            BatchNormalization(axis=1),
            PReLU(),
            Convolution2D(4, 3, 3, border_mode="valid", subsample=(2, 2), dim_ordering="th"),
            Flatten(),
            Dense(8, activation="relu"),
            Dense(3),
        ])
        inputs = [rng.standard_normal((2, 3, 10, 10)).astype("float32")]
    elif name == "k1_renamed_text":
        from keras.layers import Convolution1D, SimpleRNN

        model = Sequential([
            Embedding(50, 8, input_length=7),
            Convolution1D(6, 3, border_mode="same"),
            SimpleRNN(5, return_sequences=True),
            LSTM(4, return_sequences=True),                       # 12 per-gate arrays
            GRU(3),                                               # 9 per-gate arrays
            Dense(2),
        ])
        inputs = [text_inputs(rng)]
    elif name == "k1_kinds":
        from keras.layers import AtrousConvolution2D, Bidirectional, TimeDistributed

        a = Input(shape=(5, 4), name="seq")
        x = Bidirectional(LSTM(3, return_sequences=True), merge_mode="concat")(a)   # forward_/backward_ arrays
        x = Bidirectional(GRU(2), merge_mode="sum")(x)
        b = Input(shape=(3, 8, 8), name="img")
        y = AtrousConvolution2D(4, 3, 3, atrous_rate=(2, 2), dim_ordering="th")(b)
        y = Flatten()(y)
        c = Input(shape=(4, 5), name="steps")
        z = Flatten()(TimeDistributed(Dense(3))(c))
        out_ = Dense(2)(merge([x, y, z], mode="concat"))
        model = Model(input=[a, b, c], output=out_)
        inputs = [rng.standard_normal((2,) + s).astype("float32") for s in ((5, 4), (3, 8, 8), (4, 5))]
    elif name == "k1_convlstm":
        from keras.layers import ConvLSTM2D

        model = Sequential([
            ConvLSTM2D(3, 3, 3, dim_ordering="tf", border_mode="same", return_sequences=True,
                       input_shape=(4, 6, 6, 2)),                  # 12 per-gate arrays, Theano-flipped
            ConvLSTM2D(2, 3, 3, dim_ordering="tf", border_mode="valid"),
            Flatten(),
            Dense(2),
        ])
        inputs = [rng.standard_normal((2, 4, 6, 6, 2)).astype("float32")]
    else:
        raise KeyError(name)

    randomise(model, name)
    if name.startswith("k1_renamed"):
        # Weight names are made from the layer's name when the weight is created ('dense_1_W'); a layer
        # renamed afterwards (as fine-tuning scripts do to avoid clashes) is saved under its new name
        # with the old weight names. Keras's loader pairs weights by position, so Keras reads the file.
        for i, layer in enumerate(model.layers):
            layer.name = "%s_%d" % (("conv", "bn", "act", "conv", "flat", "fc", "out")[i]
                                    if name == "k1_renamed_cnn" else
                                    ("emb", "conv", "rnn", "lstm", "gru", "out")[i], i)
    path = os.path.join(out, name + ".h5")
    model.save(path)
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], batch_size=2)
    write_io(out, name, inputs, outputs)
    exp = expected_of(model, keras, info, [name + ".h5"], path)
    with open(os.path.join(out, name + ".expected.json"), "w") as fh:
        fh.write(dump_json(exp))


# ---------------------------------------------------------------- Keras 2.2.x (TensorFlow 1.x)

def _stub_cudnn(keras):
    """Replace the CudnnRNN op by zeros *during graph construction* (see module docstring)."""
    from keras import backend as K
    from keras.layers import cudnn_recurrent as cr

    def fake_process_batch(self, inputs, initial_state):
        h = initial_state[0]
        if self.return_sequences:
            output = K.zeros_like(inputs[:, :, :1]) + K.expand_dims(h, 1)
        else:
            output = h + 0.0
        return output, list(initial_state)

    saved = {}
    for cls in (cr.CuDNNLSTM, cr.CuDNNGRU):
        saved[cls] = cls._process_batch
        cls._process_batch = fake_process_batch
    return saved


def by_order_model(L, Model, Sequential, rng):
    """For weights-only files read by order: weightless layers between weighted ones, a nested
    Sequential holding BatchNormalization (its group stores the trainable weights of all its layers
    first, then the moving statistics), a frozen layer and a frozen nested model."""
    inp = L.Input((6,))
    x = L.Dense(8, activation="relu")(inp)
    x = L.Dropout(0.3)(x)
    x = L.BatchNormalization()(x)
    inner = Sequential([L.Dense(5, input_shape=(8,)), L.BatchNormalization(), L.Activation("tanh"), L.Dense(4)])
    x = inner(x)
    frozen = L.Dense(4)
    frozen.trainable = False
    x = frozen(x)
    # a frozen nested model whose first layer has non-trainable weights: Keras 2.2 stores the trainable
    # weights of all its layers first, tf.keras 2 (and Keras 3) each layer's weights in turn
    frozen_inner = Sequential([L.BatchNormalization(input_shape=(4,)), L.Dense(4)])
    frozen_inner.trainable = False
    x = frozen_inner(x)
    x = L.Activation("relu")(x)
    out_ = L.Dense(3)(x)
    return Model(inp, out_), [rng.standard_normal((2, 6)).astype("float32")]


def keras2_worker(name, out):
    import numpy as np
    import keras
    import tensorflow as tf
    from keras import backend as K
    from keras import layers as L
    from keras.models import Model

    try:
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    except AttributeError:
        pass
    rng = np.random.RandomState(_seed(name) + 1)
    info = dict(_versions(), keras_version=keras.__version__, backend=K.backend(),
                tensorflow=tf.__version__, image_data_format=K.image_data_format(), floatx=K.floatx())
    np.random.seed(_seed(name))

    if name == "k22_cnn":
        inp = L.Input((16, 16, 3))
        x = L.Conv2D(8, 3, strides=2, padding="same")(inp)
        x = L.BatchNormalization()(x)
        x = L.LeakyReLU()(x)  # default alpha=0.3
        x = L.Conv2D(4, 3, padding="valid")(x)
        x = L.MaxPooling2D()(x)
        x = L.Flatten()(x)
        out_ = L.Dense(10, activation="softmax")(x)
        model = Model(inp, out_)
        inputs = [rng.standard_normal((2, 16, 16, 3)).astype("float32")]
        # a file from the wild: compiled and trained one step, so it has training_config and
        # optimizer_weights (Adam moments)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.train_on_batch(inputs[0], np.eye(10, dtype="float32")[[1, 2]])
    elif name == "k22_text_rnn":
        inp = L.Input((None,), dtype="int32")
        x = L.Embedding(50, 8, mask_zero=True)(inp)
        x = L.LSTM(6, return_sequences=True, recurrent_activation="hard_sigmoid")(x)
        x = L.GRU(5, return_sequences=True)(x)  # 2.2.4 defaults: reset_after=False, hard_sigmoid
        x = L.Bidirectional(L.LSTM(4), merge_mode="concat")(x)
        out_ = L.Dense(3)(x)
        model = Model(inp, out_)
        inputs = [text_inputs(rng)]
    elif name == "k21_seq_cf":
        from keras.models import Sequential

        model = Sequential([
            L.Conv2D(6, 3, strides=2, padding="same", data_format="channels_first", input_shape=(3, 10, 10)),
            L.BatchNormalization(axis=1),
            L.Activation("relu"),
            L.Conv2D(4, 3, data_format="channels_first"),
            L.Flatten(),  # flattens (C, H, W)
            L.Dense(5),
        ])
        inputs = [rng.standard_normal((2, 3, 10, 10)).astype("float32")]
    elif name == "k21_seq_text":
        from keras.models import Sequential

        model = Sequential([
            L.Embedding(50, 8, mask_zero=True),
            L.GRU(5, return_sequences=True),  # 2.1 defaults: hard_sigmoid, reset_after=False
            L.LSTM(4, implementation=2),
            L.Dense(3),
        ])
        inputs = [text_inputs(rng)]
    elif name == "k22_cudnn":
        saved = _stub_cudnn(keras)
        inp = L.Input((7, 5))
        x = L.CuDNNLSTM(6, return_sequences=True)(inp)
        x = L.Bidirectional(L.CuDNNGRU(4), merge_mode="sum")(x)
        out_ = L.Dense(3)(x)
        model = Model(inp, out_)
        inputs = [rng.standard_normal((2, 7, 5)).astype("float32")]
    elif name == "k20_gru":
        inp = L.Input((None,), dtype="int32")
        x = L.Embedding(50, 8, mask_zero=True)(inp)
        x = L.GRU(5, return_sequences=True, implementation=1)(x)  # no reset_after key before 2.1.5
        x = L.Bidirectional(L.GRU(4, return_sequences=True, implementation=2))(x)
        x = L.LSTM(3, implementation=2)(x)
        out_ = L.Dense(3)(x)
        model = Model(inp, out_)
        inputs = [text_inputs(rng)]
    elif name in ("k22_by_order", "k22_by_order_arch"):
        from keras.models import Sequential

        if name == "k22_by_order_arch":
            # a fresh process that first makes a few layers: every auto-generated name differs
            for _ in range(2):
                L.Dense(1), L.BatchNormalization(), Sequential(), Model
        model, inputs = by_order_model(L, Model, Sequential, rng)
        if name == "k22_by_order_arch":
            with open(os.path.join(out, "k22_by_order.json"), "w") as fh:
                fh.write(model.to_json(indent=1) + "\n")
            return
    else:
        raise KeyError(name)

    randomise(model, name)
    path = os.path.join(out, name + ".h5")
    if name == "k22_by_order":
        model.save_weights(path)  # weights only: layer_names / weight_names at the root
        outputs = model.predict(inputs[0], batch_size=2)
        write_io(out, name, inputs, outputs)
        exp = expected_of(model, keras, info, [name + ".h5"], path)
        with open(os.path.join(out, name + ".expected.json"), "w") as fh:
            fh.write(dump_json(exp))
        return
    model.save(path)
    exp = expected_of(model, keras, info, [name + ".h5"], path)

    if name == "k22_cudnn":
        from keras.layers import cudnn_recurrent as cr

        for cls, fn in saved.items():
            cls._process_batch = fn
        K.clear_session()
        inp = L.Input((7, 5))
        x = L.LSTM(6, return_sequences=True, recurrent_activation="sigmoid")(inp)
        x = L.Bidirectional(L.GRU(4, recurrent_activation="sigmoid", reset_after=True), merge_mode="sum")(x)
        out_ = L.Dense(3)(x)
        ref = Model(inp, out_)
        ref.load_weights(path)  # Keras's converter: preprocess_weights_for_loading -> _convert_rnn_weights
        outputs = ref.predict(inputs[0], batch_size=2)
        # that architecture (its auto-names lstm_1, ... differ from the file's cu_dnnlstm_1: load_weights
        # pairs layers in order), to read the CuDNN file's weights with: k22_cudnn.h5 --config <this>
        with open(os.path.join(out, name + ".lstm.json"), "w") as fh:
            fh.write(ref.to_json(indent=1) + "\n")
        exp["files"].append(name + ".lstm.json")
        exp["reference_outputs"] = (
            "Not from CuDNN (no GPU): an equivalent model LSTM(6, return_sequences=True, "
            "recurrent_activation='sigmoid') -> Bidirectional(GRU(4, recurrent_activation='sigmoid', "
            "reset_after=True), merge_mode='sum') -> Dense(3) loaded this file with Keras "
            + keras.__version__ + "'s load_weights (preprocess_weights_for_loading -> _convert_rnn_weights) "
            "and ran predict. The CudnnRNN op was stubbed during graph construction only; config and "
            "weights are written by the real CuDNNLSTM/CuDNNGRU classes.")
        exp["reference_converted_weights"] = [
            {"layer": l.name, "class_name": l.__class__.__name__,
             "weights": [[_wname(w), _shape(K.int_shape(w))] for w in l.weights]}
            for l in ref.layers if l.weights]
    else:
        outputs = model.predict(inputs[0] if len(inputs) == 1 else inputs, batch_size=2)
    write_io(out, name, inputs, outputs)
    with open(os.path.join(out, name + ".expected.json"), "w") as fh:
        fh.write(dump_json(exp))


def custom_model(tf, keras, rng):
    """Custom layers (one with its own weight, one owning a Dense) and tf.* calls on Keras tensors,
    which tf.keras 2.4+ records as TFOpLambda layers ('tf.nn.relu', 'tf.math.multiply')."""
    L = keras.layers

    class Scale(L.Layer):
        def __init__(self, init=1.0, **kwargs):
            super(Scale, self).__init__(**kwargs)
            self.init = init

        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),),
                                         initializer=keras.initializers.Constant(self.init))

        def call(self, x):
            return x * self.scale

        def get_config(self):
            cfg = super(Scale, self).get_config()
            cfg["init"] = self.init
            return cfg

    class Residual(L.Layer):
        def __init__(self, units, **kwargs):
            super(Residual, self).__init__(**kwargs)
            self.units = units
            self.inner = L.Dense(units, name="inner")

        def call(self, x):
            return x + tf.nn.tanh(self.inner(x))

        def get_config(self):
            cfg = super(Residual, self).get_config()
            cfg["units"] = self.units
            return cfg

    inp = L.Input((6,))
    x = L.Dense(8)(inp)
    x = Scale(0.5, name="scale")(x)
    x = tf.nn.relu(x)
    x = tf.math.multiply(x, 2.0)
    x = Residual(8, name="residual")(x)
    out_ = L.Dense(3)(x)
    model = keras.Model(inp, out_)
    inputs = [rng.standard_normal((2, 6)).astype("float32")]
    return model, inputs


# ---------------------------------------------------------------- tf.keras 2.15 (TensorFlow 2.15)

def tfkeras2_worker(name, out):
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    L = keras.layers
    tf.get_logger().setLevel("ERROR")
    keras.backend.clear_session()
    keras.utils.set_random_seed(_seed(name))
    rng = np.random.RandomState(_seed(name) + 1)
    import keras as keras_pkg  # tf.keras in TF 2.15 is the keras 2.15 package, without __version__

    info = dict(_versions(), keras_version=keras_pkg.__version__, backend=keras.backend.backend(),
                tensorflow=tf.__version__, image_data_format=keras.backend.image_data_format(),
                floatx=keras.backend.floatx())

    if name == "tf215_weights_only":
        inp = L.Input((None,), dtype="int32")
        x = L.Embedding(50, 8, mask_zero=True)(inp)
        x = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="ave")(x)  # reset_after=True
        x = L.LSTM(4)(x)
        out_ = L.Dense(3)(x)
        model = keras.Model(inp, out_)
        inputs = [text_inputs(rng)]
    elif name == "tf215_savedmodel":
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            L.Conv2D(4, 3, strides=2, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(5),
        ])
        inputs = [rng.standard_normal((2, 8, 8, 3)).astype("float32")]
    elif name == "tf215_grouped":
        inp = L.Input((8, 8, 4))
        x = L.Conv2D(6, 3, padding="same", groups=2)(inp)
        x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)
        x = L.BatchNormalization(axis=[1, 3])(x)  # list axis: params of shape (1, 4, 1, 12)
        x = L.LayerNormalization(axis=[2, 3])(x)
        x = L.GlobalAveragePooling2D()(x)
        out_ = L.Dense(3)(x)
        model = keras.Model(inp, out_)
        inputs = [rng.standard_normal((2, 8, 8, 4)).astype("float32")]
    elif name == "tf215_custom":
        model, inputs = custom_model(tf, keras, rng)
    elif name == "tf215_cudnn_weights":
        # Trained on a GPU with CuDNN layers, shipped as weights-only HDF5 + the CPU architecture JSON
        # (LSTM/GRU, same layer names). The CuDNN layers are the real tf.compat.v1 classes: build()
        # creates their variables on a CPU too (only calling the CudnnRNN op needs a GPU).
        cudnn = tf.compat.v1.keras.layers

        def build(lstm, gru):
            inp = L.Input((7, 5), name="x")
            x = lstm(6, return_sequences=True, name="lstm")(inp)
            x = L.Bidirectional(gru(4, return_sequences=True), merge_mode="concat", name="bidi_gru")(x)
            x = gru(5, return_sequences=True, name="gru")(x)
            x = L.Bidirectional(lstm(3), merge_mode="sum", name="bidi_lstm")(x)
            return keras.Model(inp, L.Dense(3, name="head")(x))

        gpu = build(cudnn.CuDNNLSTM, cudnn.CuDNNGRU)
        randomise(gpu, name)
        h5file = os.path.join(out, name + ".h5")
        gpu.save_weights(h5file, save_format="h5")
        # tf.keras 2 defaults: recurrent_activation sigmoid, GRU reset_after=True (CuDNN-compatible)
        model = build(L.LSTM, L.GRU)
        model.load_weights(h5file)  # Keras's converter: preprocess_weights_for_loading -> _convert_rnn_weights
        with open(os.path.join(out, name + ".json"), "w") as fh:
            fh.write(model.to_json(indent=1) + "\n")
        # The reverse, which Keras converts too: LSTM/GRU weights (save_weights of the CPU model) under the
        # CuDNN architecture; Keras's round trip must give back the CuDNN weights.
        lstm_h5 = os.path.join(out, name + ".lstm.h5")
        model.save_weights(lstm_h5, save_format="h5")
        with open(os.path.join(out, name + ".cudnn.json"), "w") as fh:
            fh.write(gpu.to_json(indent=1) + "\n")
        before = gpu.get_weights()
        gpu.load_weights(lstm_h5)
        # (LSTM biases: Keras keeps only the sum of the two halves, then splits it evenly)
        roundtrip = [_wname(w) for w, a, b in zip(gpu.weights, before, gpu.get_weights()) if not np.array_equal(a, b)]
        inputs = [rng.standard_normal((2, 7, 5)).astype("float32")]
        outputs = model(inputs[0], training=False)
        write_io(out, name, inputs, [np.asarray(outputs)])
        exp = expected_of(model, keras, info, [name + ".h5", name + ".json", name + ".lstm.h5",
                                               name + ".cudnn.json"], h5file)
        exp["cudnn_roundtrip_changed"] = roundtrip
        exp["cudnn_model_count_params"] = int(gpu.count_params())
        exp["reference_outputs"] = (
            "The weights were written by CuDNNLSTM/CuDNNGRU layers (save_weights); the outputs are those of "
            "the LSTM/GRU architecture in " + name + ".json after load_weights of that file, i.e. of Keras's "
            "own conversion (tf.keras hdf5_format.preprocess_weights_for_loading -> _convert_rnn_weights).")
        exp["stored_cudnn_weights"] = [[_wname(w), _shape(w.shape)] for w in gpu.weights]
        with open(os.path.join(out, name + ".expected.json"), "w") as fh:
            fh.write(dump_json(exp))
        return
    elif name in ("tf215_by_order", "tf215_by_order_arch"):
        if name == "tf215_by_order_arch":
            for _ in range(2):  # a fresh process that first makes a few layers: every auto-name differs
                L.Dense(1), L.BatchNormalization(), keras.Sequential()
        model, inputs = by_order_model(L, keras.Model, keras.Sequential, rng)
        if name == "tf215_by_order_arch":
            with open(os.path.join(out, "tf215_by_order.json"), "w") as fh:
                fh.write(model.to_json(indent=1) + "\n")
            return
    elif name == "tf215_optimizer_savedmodel":
        inp = L.Input((6,))
        x = L.Dense(5, activation="relu")(inp)
        x = L.BatchNormalization()(x)
        out_ = L.Dense(3)(x)
        model = keras.Model(inp, out_)
        inputs = [rng.standard_normal((2, 6)).astype("float32")]
    else:
        raise KeyError(name)

    randomise(model, name)
    h5file = None
    if name == "tf215_optimizer_savedmodel":
        # a file from the wild: compiled and trained, so the checkpoint holds the Adam slot variables
        # (m, v per weight: '<weight>/.OPTIMIZER_SLOT/optimizer/m') and the optimizer's own variables
        # ('optimizer/iter', ...). The legacy optimizer is what tf.keras <= 2.10 compiled with by
        # default; the 2.11+ one keeps its slots under 'optimizer/_variables/<i>' instead.
        model.compile(optimizer=keras.optimizers.legacy.Adam(), loss="mse")
        model.fit(inputs[0], np.ones((2, 3), "float32"), epochs=1, verbose=0)
        randomise(model, name)  # BN statistics moved by training: non-trivial again
    if name == "tf215_by_order":
        h5file = os.path.join(out, name + ".h5")
        model.save_weights(h5file, save_format="h5")
        files = [name + ".h5"]
    elif name == "tf215_optimizer_savedmodel":
        model.save(os.path.join(out, name + ".savedmodel"), save_format="tf")
        files = [name + ".savedmodel"]
    elif name == "tf215_weights_only":
        # legacy HDF5 weights layout (root attrs layer_names / backend / keras_version)
        h5file = os.path.join(out, name + ".h5")
        model.save_weights(h5file, save_format="h5")
        # the same weights as Keras 2.13+ writes them for a '.weights.h5' suffix: the Keras-3 style
        # layout (layers/<name>/vars/<i>, no weight names), not the legacy one
        model.save_weights(os.path.join(out, name + ".weights.h5"))
        with open(os.path.join(out, name + ".json"), "w") as fh:
            fh.write(model.to_json(indent=1) + "\n")
        files = [name + ".h5", name + ".weights.h5", name + ".json"]
    elif name in ("tf215_savedmodel", "tf215_custom"):
        model.save(os.path.join(out, name + ".savedmodel"), save_format="tf")
        files = [name + ".savedmodel"]
    else:
        h5file = os.path.join(out, name + ".h5")
        model.save(h5file, save_format="h5")
        files = [name + ".h5"]
    outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    write_io(out, name, inputs, outputs)
    exp = expected_of(model, keras, info, files, h5file)
    with open(os.path.join(out, name + ".expected.json"), "w") as fh:
        fh.write(dump_json(exp))


# ---------------------------------------------------------------- tf.keras 2.4 (TensorFlow 2.4)

def tf24_worker(name, out):
    """A SavedModel as TF < 2.5 writes it: no keras_metadata.pb; the Keras configs are in saved_model.pb
    (the ``metadata`` JSON of each ``user_object`` node of the object graph)."""
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    L = keras.layers
    tf.get_logger().setLevel("ERROR")
    keras.backend.clear_session()
    tf.random.set_seed(_seed(name))
    np.random.seed(_seed(name))
    rng = np.random.RandomState(_seed(name) + 1)
    info = dict(_versions(), keras_version=keras.__version__, backend=keras.backend.backend(),
                tensorflow=tf.__version__, image_data_format=keras.backend.image_data_format(),
                floatx=keras.backend.floatx())

    if name == "tf24_savedmodel":
        inp = L.Input((8, 8, 3))
        x = L.Conv2D(4, 3, strides=2, padding="same")(inp)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.Flatten()(x)
        out_ = L.Dense(5)(x)
        model = keras.Model(inp, out_)
        inputs = [rng.standard_normal((2, 8, 8, 3)).astype("float32")]
    elif name == "tf24_custom":
        model, inputs = custom_model(tf, keras, rng)
    elif name == "tf24_tfop":
        # built-in layers and TFOpLambda only: a constant operand, a tensor operand (x + d is recorded as
        # tf.__operators__.add), a unary function
        inp = L.Input((6,))
        d = L.Dense(8)(inp)
        x = tf.nn.relu(d)
        x = tf.math.multiply(x, 2.0)
        x = tf.math.sigmoid(x + d)
        out_ = L.Dense(3)(x)
        model = keras.Model(inp, out_)
        inputs = [rng.standard_normal((2, 6)).astype("float32")]
    else:
        raise KeyError(name)

    randomise(model, name)
    sm = os.path.join(out, name + ".savedmodel")
    model.save(sm, save_format="tf")
    if os.path.exists(os.path.join(sm, "keras_metadata.pb")):
        raise SystemExit("this TensorFlow wrote keras_metadata.pb: not a pre-2.5 SavedModel")
    outputs = model(inputs[0], training=False)
    outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    write_io(out, name, inputs, outputs)
    exp = expected_of(model, keras, info, [name + ".savedmodel"])
    with open(os.path.join(out, name + ".expected.json"), "w") as fh:
        fh.write(dump_json(exp))


# ---------------------------------------------------------------- Keras 3.15 (.weights.h5)

def keras3_worker(name, out):
    """A Keras 3 ``.weights.h5`` and the architecture rebuilt by a fresh process (other auto-names, some
    of them other layers' names in the file): Keras 3's load_weights finds each layer by its path
    (``layers/dense_2``: the third Dense), not by the name it also records there. The reference
    outputs come from the architecture process after Keras's own ``load_weights``."""
    import numpy as np
    import keras

    L = keras.layers
    info = dict(_versions(), keras_version=keras.__version__, backend=keras.backend.backend(),
                image_data_format=keras.backend.image_data_format(), floatx=keras.backend.floatx())
    rng = np.random.RandomState(_seed("k3_by_path") + 1)
    stem = "k3_by_path"
    if name == "k3_by_path_arch":
        L.Dense(1)  # shifts every Dense auto-name by one: dense_3 here is the file's 'dense_4'
    inp = keras.Input((6,))
    x = L.Dense(8, activation="relu")(inp)
    x = L.BatchNormalization()(x)
    x = keras.Sequential([keras.Input((8,)), L.Dense(5), L.BatchNormalization(), L.Dense(4)])(x)
    x = L.Dense(4)(x)
    model = keras.Model(inp, L.Dense(3)(x))
    if name == "k3_by_path":
        randomise(model, stem)
        model.save_weights(os.path.join(out, stem + ".weights.h5"))
        return
    with open(os.path.join(out, stem + ".json"), "w") as fh:
        fh.write(model.to_json(indent=1) + "\n")
    model.load_weights(os.path.join(os.environ["KCONV_FIXTURES_OUT"], stem + ".weights.h5"))
    inputs = [rng.standard_normal((2, 6)).astype("float32")]
    write_io(out, stem, inputs, [np.asarray(model(inputs[0], training=False))])
    tids = set(id(w) for w in model.trainable_weights)
    layers, weights = [], []
    for layer in model.layers:
        layers.append({"path": layer.name, "class_name": layer.__class__.__name__})
        for w in layer.weights:
            weights.append({"layer": layer.name, "path": w.path, "shape": _shape(w.shape), "trainable": id(w) in tids})
    exp = {"files": [stem + ".weights.h5", stem + ".json"], "writer": info, "keras_version": keras.__version__,
           "model_class": model.__class__.__name__,
           "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
           "non_trainable_params": sum(int(np.prod(w.shape)) for w in model.non_trainable_weights),
           "total_params": int(model.count_params()), "layers": layers, "weights": weights}
    with open(os.path.join(out, stem + ".expected.json"), "w") as fh:
        fh.write(dump_json(exp))


WORKERS = {"keras3": keras3_worker, "keras1": keras1_worker, "keras2": keras2_worker, "tfkeras2": tfkeras2_worker, "tf24": tf24_worker}


# =============================================================================================
# Driver (Python >= 3.8)

def _log(msg):
    print("[make_legacy_fixtures] " + msg, flush=True)


def _venv_for(writer, python, pins, venvs):
    key = hashlib.sha1((python + "|" + " ".join(pins)).encode()).hexdigest()[:10]
    return os.path.join(venvs, "%s-py%s-%s" % (writer, python, key))


def ensure_venv(writer, spec, venvs, pyenv, failures):
    """Create (or reuse) a venv with one of the pin sets; returns (venv, python, pins) or None."""
    for python in spec["pythons"]:
        exe = os.path.join(pyenv, python, "bin", "python")
        if not os.path.exists(exe):
            failures.append({"python": python, "error": "interpreter not found: " + exe})
            continue
        for pins in spec["attempts"]:
            venv = _venv_for(writer, python, pins, venvs)
            marker = os.path.join(venv, ".kconv-ok")
            if os.path.exists(marker):
                return venv, python, pins
            shutil.rmtree(venv, ignore_errors=True)
            _log("%s: creating venv with Python %s: %s" % (writer, python, " ".join(pins)))
            t0 = time.time()
            try:
                subprocess.run([exe, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
                proc = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install",
                                       "--disable-pip-version-check", "--no-input"] + pins,
                                      capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                failures.append({"python": python, "pins": pins, "error": "pip install timed out"})
                continue
            except subprocess.CalledProcessError as e:
                failures.append({"python": python, "pins": pins, "error": "venv failed: %s" % e})
                continue
            if proc.returncode != 0:
                tail = [l for l in (proc.stdout + proc.stderr).splitlines()
                        if l.strip() and "is ignored: it is neither a file nor a directory" not in l][-8:]
                failures.append({"python": python, "pins": pins, "error": "\n".join(tail)})
                _log("%s: install failed (%.0fs)" % (writer, time.time() - t0))
                continue
            with open(marker, "w") as fh:
                fh.write(" ".join(pins) + "\n")
            _log("%s: installed in %.0fs" % (writer, time.time() - t0))
            return venv, python, pins
    return None


def run_writer(writer, spec, args, manifest):
    failures = []
    got = ensure_venv(writer, spec, args.venvs, args.pyenv, failures)
    entry = {"failures": failures, "models": dict(manifest["writers"].get(writer, {}).get("models", {}))}
    manifest["writers"][writer] = entry
    if got is None:
        _log("%s: no installable writer; skipped" % writer)
        return
    venv, python, pins = got
    entry.update(python=python, pins=pins)
    home = os.path.join(args.venvs, "home-" + writer)  # Keras 1/2 write ~/.keras, Theano ~/.theano
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, **QUIET_ENV)
    env.update(spec["env"])
    env["HOME"] = home
    env["THEANO_FLAGS"] = "floatX=float32,device=cpu,base_compiledir=" + os.path.join(home, "theano")
    env.pop("PYTHONPATH", None)
    env["KCONV_FIXTURES_OUT"] = args.out  # a worker may read what an earlier one wrote (keras3)
    stage = os.path.join(args.venvs, "stage-" + writer)
    for model in spec["models"]:
        if args.models and model not in args.models:
            continue
        shutil.rmtree(stage, ignore_errors=True)
        os.makedirs(stage)
        t0 = time.time()
        proc = subprocess.run([os.path.join(venv, "bin", "python"), os.path.abspath(__file__),
                               "--worker", spec.get("worker", writer), "--model", model, "--out", stage],
                              env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT, cwd=stage)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
            entry["models"][model] = {"error": "\n".join(tail)}
            _log("%s/%s FAILED:\n%s" % (writer, model, "\n".join(tail)))
            continue
        produced = []
        for fn in sorted(os.listdir(stage)):
            src, dst = os.path.join(stage, fn), os.path.join(args.out, fn)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            if os.path.isdir(src):
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
            produced.append(fn)
        entry["models"][model] = {"files": produced}
        _log("%s/%s: %s (%.0fs)" % (writer, model, ", ".join(produced), time.time() - t0))


def _tree_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(WRITERS), action="append")
    ap.add_argument("--model", dest="models", action="append", help="only these models (repeatable)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--venvs", default=DEFAULT_VENVS, help="where the throwaway venvs go")
    ap.add_argument("--pyenv", default=DEFAULT_PYENV, help="folder of pyenv interpreter versions")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        WORKERS[args.worker](args.models[0], args.out)
        return
    if sys.version_info < (3, 8):
        raise SystemExit("the driver needs Python >= 3.8")
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.venvs, exist_ok=True)
    manifest_path = os.path.join(args.out, "MANIFEST.json")
    manifest = {"writers": {}}
    if os.path.exists(manifest_path):
        with open(manifest_path) as fh:
            manifest = json.load(fh)
    t0 = time.time()
    for writer, spec in WRITERS.items():
        if args.only and writer not in args.only:
            continue
        run_writer(writer, spec, args, manifest)
    manifest["files"] = {fn: _tree_size(os.path.join(args.out, fn)) for fn in sorted(os.listdir(args.out))
                         if fn not in ("MANIFEST.json", "README.md")}
    with open(manifest_path, "w") as fh:
        fh.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(manifest["files"].values())
    _log("done in %.0fs; %s holds %.0f KiB" % (time.time() - t0, args.out, total / 1024))


if __name__ == "__main__":
    main()
