"""The Keras reference: tensorflow/keras are imported here, inside functions, and nowhere else in kconv.

Models are loaded with ``safe_mode=True`` and ``compile=False``: no code stored in the file runs
(a ``Lambda`` layer's bytecode is refused by Keras itself), and no optimizer is rebuilt.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import KerasUnavailableError, VerifyInputError


def keras():
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    # TF enables oneDNN by default only on some CPUs (Intel); without it the CPU kernels refuse e.g.
    # dilated transposed convolutions (AMD EPYC). Must be set before tensorflow is first imported.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    try:
        with _quiet_stderr():  # absl logs written before TF_CPP_MIN_LOG_LEVEL is read (TF 2.21)
            import keras as _keras
    except ImportError as e:
        raise KerasUnavailableError(
            f"verify needs Keras to compute the reference ({e}); install it with pip install tensorflow-cpu "
            "(from a kconv clone: pip install -e '.[keras]'), "
            "or compute the reference elsewhere and pass --reference FILE.npz") from None
    return _keras


class _quiet_stderr:
    """Silence file descriptor 2 (C++ logging) for a moment; Python exceptions still propagate.
    Set KCONV_TF_LOGS=1 to see TensorFlow's start-up logs."""

    def __enter__(self):
        self.saved = None
        if os.environ.get("KCONV_TF_LOGS") == "1":
            return self
        try:
            import sys

            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def load_model(path):
    k = keras()
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            return k.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError... all mean "cannot load"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise KerasUnavailableError(
            f"{path}: the installed Keras {k.__version__} cannot load it ({type(e).__name__}: {msg[:300]}); "
            "compute the reference where it loads and pass --reference FILE.npz (see README)"
            + ("; custom layers or functions: pass --keras-objects FILE.py" if _custom_lookup_failed(msg) else "")
        ) from None


def _custom_lookup_failed(msg: str) -> bool:
    """Whether Keras failed to find a class or function by name (custom objects not given)."""
    return any(s in msg for s in ("could not be deserialized", "Unknown layer", "Could not locate",
                                  "Unknown object", "custom_objects"))


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _to_numpy(t):
    return np.asarray(keras().ops.convert_to_numpy(t))


def _call(model, inputs, training: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # input-structure name warnings
        arg = inputs[0] if len(inputs) == 1 else list(inputs)
        return _as_list(model(arg, training=training))


def run(model, inputs, training: bool = False) -> list:
    """Outputs (inference mode unless ``training``), as numpy arrays in Keras output order.
    Keras failing to run the model (e.g. a CPU kernel TensorFlow lacks) is exit 2, not a kconv bug."""
    try:
        return [_to_numpy(t) for t in _call(model, inputs, training)]
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        k = keras()
        raise KerasUnavailableError(
            f"Keras {k.__version__} ({k.backend.backend()}) could not compute the reference "
            f"({type(e).__name__}: {msg[:300]}); compute it where Keras runs this model and pass "
            "--reference FILE.npz (see README)") from None


def batchnorm_statistics(model) -> dict:
    """{(layer name, 'moving_mean'|'moving_variance'): array} of every BatchNormalization, nested too."""
    out = {}

    def walk(m):
        for layer in getattr(m, "layers", []):
            if type(layer).__name__ == "BatchNormalization":
                out[(layer.name, "moving_mean")] = _to_numpy(layer.moving_mean)
                out[(layer.name, "moving_variance")] = _to_numpy(layer.moving_variance)
            if hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return out


def _graph(model):
    # Keras 3 Sequential keeps its graph in a wrapped Functional
    return getattr(model, "_functional", None) or model


def _owned_nodes(model, layer) -> list:
    """The layer's calls that belong to ``model`` (kconv's ``Layer.calls``), in order."""
    nodes = list(getattr(layer, "_inbound_nodes", []))
    graph_nodes = getattr(_graph(model), "_nodes", None)
    if graph_nodes is None:
        return nodes
    try:
        from keras.src.ops.function import make_node_key
    except ImportError:
        return nodes
    return [n for i, n in enumerate(nodes) if make_node_key(layer, i) in graph_nodes]


def _is_nested_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs") and type(layer).__name__ in (
        "Functional", "Sequential", "Model")


def layer_outputs(model, inputs, prefix: str = "", notes: list | None = None) -> dict:
    """Every layer output, keyed like the torch trace: 'name', 'name[call][index]', 'outer/inner'.

    Top-level layers: one extra ``keras.Model`` exposing every call's outputs. Layers inside a nested
    model: best effort, only for a nested model called once (its inputs come from the outer run).
    """
    k = keras()
    notes = notes if notes is not None else []
    keys, tensors, nested = [], [], []
    graph = _graph(model)
    for layer in getattr(graph, "layers", model.layers):
        if type(layer).__name__ == "InputLayer":
            continue
        calls = _owned_nodes(graph, layer)
        for ci, node in enumerate(calls):
            for oi, t in enumerate(_as_list(node.output_tensors)):
                keys.append(prefix + layer.name + ("" if (ci, oi) == (0, 0) else f"[{ci}][{oi}]"))
                tensors.append(t)
        if _is_nested_model(layer):
            if len(calls) == 1:
                nested.append((layer, _as_list(calls[0].input_tensors)))
            elif calls:
                notes.append(f"layers inside nested model {prefix}{layer.name!r} not compared: it is called "
                             f"{len(calls)} times (the outputs of the nested model itself are compared per call)")
    if not tensors:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = k.Model(inputs=_graph(model).inputs, outputs=tensors + [t for _, ts in nested for t in ts])
    values = _call(probe, inputs)
    out = {key: _to_numpy(v) for key, v in zip(keys, values[: len(keys)])}
    pos = len(keys)
    for layer, ins in nested:
        sub_inputs = [_to_numpy(v) for v in values[pos: pos + len(ins)]]
        pos += len(ins)
        try:
            out.update(layer_outputs(layer, sub_inputs, prefix=f"{prefix}{layer.name}/", notes=notes))
        except Exception as e:  # best effort: a nested model Keras cannot re-enter on its own
            notes.append(f"layers inside nested model {prefix}{layer.name!r} not compared ({type(e).__name__}: "
                         f"{str(e)[:200]})")
    return out


def _leaf_layers(model, prefix=()):
    """(path tuple, layer) of every layer that is not a nested model, as kconv's IR walks them."""
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        if _is_nested_model(layer):
            yield from _leaf_layers(layer, prefix + (layer.name,))
        else:
            yield prefix + (layer.name,), layer


def train_step(model, inputs, coefficients, lr: float):
    """One SGD step as kconv verify --mode train takes it on both sides: a training-mode call,
    loss = sum_i sum(output_i * coefficients(i, shape_i)), gradients by tf.GradientTape, w -= lr * grad on
    every trainable weight. Returns (outputs, {(layer path, index in layer.weights): gradient},
    {(layer path, index): value after the step}); gradients only for trainable weights."""
    k = keras()
    if k.backend.backend() != "tensorflow":
        raise VerifyInputError("--mode train compares gradients with tf.GradientTape: run Keras with the "
                               f"tensorflow backend (KERAS_BACKEND is {k.backend.backend()!r})")
    import tensorflow as tf

    where = {}
    for path, layer in _leaf_layers(model):
        for i, v in enumerate(layer.weights):
            where.setdefault(id(v), (path, i))
    trainable = list(model.trainable_weights)
    with tf.GradientTape() as tape:
        outs = _call(model, inputs, training=True)
        loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32) * tf.constant(coefficients(i, tuple(o.shape)),
                                                                              tf.float32))
                         for i, o in enumerate(outs)])
    grads = tape.gradient(loss, trainable)
    out_grads = {}
    for v, g in zip(trainable, grads):
        g = np.zeros(tuple(v.shape), np.float32) if g is None else _to_numpy(tf.convert_to_tensor(g))
        if id(v) in where:
            out_grads[where[id(v)]] = g
        v.assign(_to_numpy(v) - lr * g)
    after = {}
    for path, layer in _leaf_layers(model):
        for i, v in enumerate(layer.weights):
            after[(path, i)] = _to_numpy(v)
    return [_to_numpy(o) for o in outs], out_grads, after


class KerasObjectsError(VerifyInputError):
    """A --keras-objects file or module cannot be imported."""


def custom_objects(names):
    """Import the user's Keras-side code (``--keras-objects``: files or module names) and return a
    ``keras.saving.custom_object_scope`` of its ``custom_objects`` dicts. Classes it registers with
    ``register_keras_serializable`` are found by Keras through its registry anyway. User code, run
    only because the user named it; the model file's own code still never runs (safe_mode=True)."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    k = keras()  # environment set before the user's file imports TensorFlow
    objects = {}
    for name in names:
        path = Path(name)
        try:
            if str(name).endswith(".py") or path.is_file():
                if not path.is_file():
                    raise KerasObjectsError(f"--keras-objects {name}: no such file")
                modname = "kconv_keras_objects_" + path.stem
                spec = importlib.util.spec_from_file_location(modname, path)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[modname] = mod
                with _quiet_stderr():
                    spec.loader.exec_module(mod)
            else:
                with _quiet_stderr():
                    mod = importlib.import_module(name)
        except KerasObjectsError:
            raise
        except Exception as e:
            raise KerasObjectsError(f"--keras-objects {name} failed to import: {type(e).__name__}: {e}") from None
        extra = getattr(mod, "custom_objects", None)
        if isinstance(extra, dict):
            objects.update(extra)
    return k.saving.custom_object_scope(objects)
