#!/usr/bin/env python
"""Regenerate the committed test fixtures in ``fixtures/`` (deterministic: same bytes on every run).

    python scripts/make_fixtures.py            # everything
    python scripts/make_fixtures.py --only keras3   # or --only tf_keras

Needs tensorflow-cpu (Keras 3) and tf-keras (Keras 2, run with TF_USE_LEGACY_KERAS=1). Each Keras
flavour runs in its own subprocess (``--worker keras3|tf_keras``) so that layer auto-names start from
scratch, TF's C++ logging stays out of the way (shown only if a worker fails), and the two Keras
versions never share a process.

Fixtures (``<name>`` below; each a tiny model with seeded random, non-default weights):

=============  ==========================  =======================================================
name           files                       architecture
=============  ==========================  =======================================================
cnn            cnn.keras, cnn.h5           Conv2D(s2, same) BN PReLU(shared 1,2) Dropout Conv2D
                                           MaxPool Flatten Dense(softmax)
text_rnn       text_rnn.keras, .h5         Embedding(mask_zero) LSTM(seq) GRU Dense
multi_io       multi_io.keras, .h5         2 inputs, shared Dense, nested Sequential called twice
                                           (its first Dense frozen, BN inside), 2 outputs
<name>_k2      <name>_k2.h5                the same three, written by tf-keras (Keras 2)
=============  ==========================  =======================================================

For each name the script also writes, from Keras itself (never from kconv):

- ``<name>.expected.json``: ``files``, ``keras_version``, ``trainable_params``,
  ``non_trainable_params``, ``total_params`` (Keras's trainable_weights / non_trainable_weights /
  count_params), ``layers`` (every layer, nested ones as ``outer.inner`` — kconv's ``walk()`` paths —
  with its class), ``weights`` (per leaf layer: the weight path/name Keras reports, shape,
  trainable as Keras counts it), and ``output_shapes``: per top-level layer, per call (the layer's
  inbound nodes that belong to the model, in order: kconv's ``Layer.calls``), the list of output
  shapes Keras reports (``null`` for unknown dimensions).
- ``<name>.io.npz``: a seeded input batch of 2 (``input_0``, ...) and Keras's outputs for it in
  inference mode (``output_0``, ...).

Only volatile bytes of ``.keras`` archives are normalised: zip timestamps and ``metadata.json``'s
``date_saved`` (fixed to 1980-01-01), and ``config.json``'s ``shared_object_id`` values (memory
addresses, renumbered 1, 2, ... keeping which objects share one id).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",  # deterministic float results on CPU
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONHASHSEED": "0",
}
NAMES = ("cnn", "text_rnn", "multi_io")


# ---------------------------------------------------------------------------------------------
# Model definitions (the same code builds both the Keras 3 and the tf-keras version)

def build_cnn(keras):
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.Dropout(0.25)(x)
    x = L.Conv2D(4, 3)(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    out = L.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out)


def build_text_rnn(keras):
    L = keras.layers
    inp = keras.Input((None,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(inp)
    x = L.LSTM(6, return_sequences=True)(x)
    x = L.GRU(5)(x)
    out = L.Dense(3)(x)
    return keras.Model(inp, out)


def build_multi_io(keras):
    L = keras.layers
    a = keras.Input((6,))
    b = keras.Input((6,))
    shared = L.Dense(5, activation="relu")
    sa, sb = shared(a), shared(b)
    inner = keras.Sequential([
        keras.Input((5,)),
        L.Dense(4, activation="tanh"),
        L.BatchNormalization(),
        L.Dense(3),
    ])
    inner.layers[0].trainable = False  # a frozen layer inside a nested model
    ya, yb = inner(sa), inner(sb)
    out1 = L.Concatenate()([ya, yb])
    out2 = L.Dense(2)(yb)
    return keras.Model([a, b], [out1, out2])


BUILDERS = {"cnn": build_cnn, "text_rnn": build_text_rnn, "multi_io": build_multi_io}


def make_inputs(name, rng):
    import numpy as np

    if name == "cnn":
        return [rng.standard_normal((2, 16, 16, 3)).astype("float32")]
    if name == "text_rnn":
        x = rng.integers(1, 50, size=(2, 7)).astype("int32")
        x[0, 5:] = 0  # right-padded
        x[1, :2] = 0  # left-padded
        return [x]
    if name == "multi_io":
        return [rng.standard_normal((2, 6)).astype("float32") for _ in range(2)]
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Worker: runs inside one Keras flavour

def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def random_value(key: str, shape, rng):
    """A random, non-default value for a weight, by its Keras attribute name."""
    import numpy as np

    shape = tuple(int(d) for d in shape)
    if key == "moving_variance":
        v = rng.uniform(0.5, 2.0, shape)
    elif key == "moving_mean":
        v = rng.normal(0.0, 0.5, shape)
    elif key == "gamma":
        v = rng.uniform(0.5, 1.5, shape)
    elif key in ("beta", "bias"):
        v = rng.normal(0.0, 0.2, shape)
    elif key == "alpha":
        v = rng.uniform(0.05, 0.4, shape)
    elif key == "embeddings":
        v = rng.normal(0.0, 0.5, shape)
    else:  # kernels: roughly unit-variance outputs
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        v = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
    return v.astype("float32")


def _wkey(w) -> str:
    name = getattr(w, "path", None) or w.name
    return name.split("/")[-1].split(":")[0]


def _wname(w, legacy: bool) -> str:
    return w.name if legacy else w.path


def _shape(s):
    return [None if d is None else int(d) for d in s]


def _owned_nodes(model, layer, legacy: bool):
    """The layer's inbound nodes that belong to ``model``, in order (= calls in the saved config)."""
    out = []
    for i, node in enumerate(layer._inbound_nodes):
        if legacy:
            owned = f"{layer.name}_ib-{i}" in model._network_nodes
        else:
            from keras.src.ops.function import make_node_key

            owned = make_node_key(layer, i) in model._nodes
        if owned:
            out.append((i, node))
    return out


def _call_output_shapes(model, layer, legacy: bool):
    calls = []
    for i, node in _owned_nodes(model, layer, legacy):
        if legacy:
            s = layer.get_output_shape_at(i)
            shapes = s if isinstance(s, list) else [s]
        else:
            shapes = [t.shape for t in node.output_tensors]
        calls.append([_shape(s) for s in shapes])
    # Anchor to the public API: the first call is what layer.output.shape / layer.output_shape reports.
    public = layer.output_shape if legacy else [t.shape for t in _as_list(layer.output)]
    public = [_shape(s) for s in (public if isinstance(public, list) else [public])]
    assert calls and calls[0] == public, (layer.name, calls, public)
    return calls


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _walk(model, prefix=""):
    for layer in model.layers:
        path = prefix + layer.name
        yield path, layer
        if _is_model(layer):
            yield from _walk(layer, path + ".")


def _is_model(layer):
    return hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Functional", "Model")


def expected_of(model, keras, legacy: bool, files):
    import numpy as np

    trainable_ids = {id(w) for w in model.trainable_weights}
    t = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    n = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    total = int(model.count_params())
    assert t + n == total, (t, n, total)
    weights = []
    layers = []
    for path, layer in _walk(model):
        layers.append({"path": path, "class_name": layer.__class__.__name__})
        if _is_model(layer):
            continue
        for w in layer.weights:
            weights.append({"layer": path, "path": _wname(w, legacy), "shape": _shape(w.shape),
                            "trainable": id(w) in trainable_ids})
    return {
        "files": files,
        "keras_version": keras.__version__,
        "trainable_params": t,
        "non_trainable_params": n,
        "total_params": total,
        "layers": layers,
        "weights": weights,
        "output_shapes": {layer.name: _call_output_shapes(model, layer, legacy) for layer in model.layers},
    }


def dump_json(obj) -> str:
    """Indented JSON with innermost lists of scalars (shapes) on one line."""
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[\s*([^\[\]{}\s][^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    return text + "\n"


def worker(flavour: str, out: Path):
    import numpy as np

    legacy = flavour == "tf_keras"
    if legacy:
        import tf_keras as keras
    else:
        import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    for name in NAMES:
        keras.backend.clear_session()  # auto-names (conv2d, conv2d_1, ...) start afresh
        keras.utils.set_random_seed(_seed(name))
        model = BUILDERS[name](keras)
        rng = np.random.default_rng(_seed(name))
        model.set_weights([random_value(_wkey(w), w.shape, rng) for w in model.weights])
        stem = f"{name}_k2" if legacy else name
        files = [f"{stem}.h5"] if legacy else [f"{stem}.keras", f"{stem}.h5"]
        for f in files:
            model.save(out / f)
        inputs = make_inputs(name, np.random.default_rng(_seed(name) + 1))
        outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        arrays = {f"input_{i}": x for i, x in enumerate(inputs)}
        arrays.update({f"output_{i}": np.asarray(y) for i, y in enumerate(outputs)})
        with open(out / f"{stem}.io.npz", "wb") as fh:
            np.savez(fh, **arrays)
        exp = expected_of(model, keras, legacy, files)
        (out / f"{stem}.expected.json").write_text(dump_json(exp))


# ---------------------------------------------------------------------------------------------
# Driver

def _renumber_shared_ids(text: str) -> str:
    """Keras writes ``shared_object_id`` as ``id(obj)`` (a memory address): renumber 1, 2, ... in order
    of first appearance, which keeps what Keras needs (equal ids for one shared object)."""
    ids: dict = {}
    return re.sub(r'("shared_object_id": )(\d+)', lambda m: m.group(1) + str(ids.setdefault(m.group(2), len(ids) + 1)),
                  text)


def normalise_keras_zip(path: Path):
    """Fix the volatile bytes of a .keras archive: entry timestamps, metadata.json's date_saved and the
    memory addresses Keras uses as ``shared_object_id`` in config.json."""
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zout:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                if "date_saved" in meta:
                    meta["date_saved"] = "1980-01-01@00:00:00"
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = _renumber_shared_ids(data.decode("utf8")).encode("utf8")
            new = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE)
            new.compress_type = info.compress_type
            new.external_attr = info.external_attr
            zout.writestr(new, data)
    path.write_bytes(buf.getvalue())


def run_worker(flavour: str, out: Path):
    env = dict(os.environ, **QUIET_ENV)
    if flavour == "tf_keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, __file__, "--worker", flavour, "--out", str(out)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"make_fixtures: the {flavour} worker failed (exit {proc.returncode})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("keras3", "tf_keras"))
    ap.add_argument("--worker", choices=("keras3", "tf_keras"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=FIXTURES)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker, args.out)
        return
    for flavour in ("keras3", "tf_keras"):
        if args.only in (None, flavour):
            run_worker(flavour, args.out)
    for p in sorted(args.out.glob("*.keras")):
        normalise_keras_zip(p)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"fixtures written to {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
