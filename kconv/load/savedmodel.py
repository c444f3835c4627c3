"""TF SavedModel directories written by tf.keras 2.x (``model.save(dir)`` / ``save_format="tf"``).

The only format that needs tensorflow to be *read*: it is imported here, lazily, and nowhere else in
kconv.load. What is read:

- ``keras_metadata.pb`` (tf.keras >= 2.5; a ``SavedMetadata`` proto): one node per Keras object,
  each with its path in the object graph (``root.layer_with_weights-0``) and a JSON document; the
  root's JSON holds the model config (tuples serialised as ``{"class_name": "__tuple__"}``).
- ``variables/variables.*`` (a TF checkpoint): ``tf.train.load_checkpoint`` lists the variables by
  object path, e.g. ``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``; a variable belongs
  to the layer whose node path is its prefix, and its last path component is the Keras attribute
  (``kernel``, ``moving_variance``), as in a legacy HDF5 weight name.
- ``saved_model.pb``: only the TensorFlow version that wrote it (tf.keras 2.x = TensorFlow's version).
"""
from __future__ import annotations

import json

import numpy as np
from pathlib import Path

from ..errors import ModelFileError
from ..ir import Model
from .config import build_model
from .weights import Context, assign

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
MAX_METADATA_BYTES = 64 << 20


def _tf(path):
    try:
        import tensorflow as tf  # noqa: F401  (only for SavedModel directories)
    except ImportError:
        raise ModelFileError(path, "reading a TF SavedModel directory needs tensorflow (pip install "
                                   "tensorflow-cpu); or re-save the model as .keras / .h5") from None
    return tf


def _untuple(v):
    """tf.keras SavedModel metadata serialises tuples as {"class_name": "__tuple__", "items": [...]}."""
    if isinstance(v, dict):
        if v.get("class_name") == "__tuple__" and "items" in v:
            return [_untuple(x) for x in v["items"]]
        return {k: _untuple(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_untuple(x) for x in v]
    return v


class _CkptTensor:
    """One checkpoint variable, looking like the h5py dataset kconv.load.weights reads (shape, dtype, [()])."""

    prechecked = True  # not an HDF5 dataset: nothing of h5safe applies
    attrs: dict = {}

    def __init__(self, reader, key, shape, dtype):
        self.reader, self.key, self.shape, self.dtype = reader, key, tuple(int(d) for d in shape), dtype

    def __getitem__(self, item):
        return self.reader.get_tensor(self.key)[item]


def _leaves(model: Model, chain=()):
    for layer in model.layers:
        if layer.model is not None:
            yield from _leaves(layer.model, chain + (layer.name,))
        else:
            yield chain + (layer.name,), layer


def load_savedmodel(path: Path, ctx: Context) -> Model:
    meta_file = path / "keras_metadata.pb"
    if not meta_file.exists():
        raise ModelFileError(path, "a TF SavedModel without keras_metadata.pb (written by TensorFlow < 2.5, or not "
                                   "by Keras): the Keras layer configs are not in it. Load it with that TensorFlow "
                                   "and re-save it as .h5 or .keras")
    if meta_file.stat().st_size > MAX_METADATA_BYTES:
        raise ModelFileError(path, f"keras_metadata.pb is over {MAX_METADATA_BYTES} bytes")
    tf = _tf(path)
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.keras.protobuf import saved_metadata_pb2

    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString(meta_file.read_bytes())
    nodes = {}
    for n in meta.nodes:
        try:
            nodes[n.node_path] = json.loads(n.metadata)
        except ValueError:
            raise ModelFileError(path, f"keras_metadata.pb: node {n.node_path!r} metadata is not JSON") from None
    root = nodes.get("root")
    if not isinstance(root, dict) or "config" not in root or "class_name" not in root:
        raise ModelFileError(path, "keras_metadata.pb has no root model config (a subclassed model? only "
                                   "Sequential and functional models can be read)")
    if not isinstance(root["config"], dict) or "layers" not in root["config"]:
        raise ModelFileError(path, f"the root object is a {root.get('class_name')!r} without a layer list (a "
                                   "subclassed model): its architecture is code, not config")
    model = build_model({"class_name": root["class_name"], "config": _untuple(root["config"])})

    tf_version = ""
    pb = path / "saved_model.pb"
    if pb.exists():
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString(pb.read_bytes())
        if sm.meta_graphs:
            tf_version = sm.meta_graphs[0].meta_info_def.tensorflow_version

    prefix = path / "variables" / "variables"
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        var_shapes = reader.get_variable_to_shape_map()
        var_dtypes = reader.get_variable_to_dtype_map()
    except Exception as e:  # noqa: BLE001 - tf raises NotFoundError, DataLossError...
        raise ModelFileError(path, f"variables/ checkpoint unreadable ({type(e).__name__})") from None

    # node path -> chain of layer names from the root ('root.layer-1.layer_with_weights-0' -> (outer, inner))
    chains = {}
    for p in nodes:
        if p == "root":
            continue
        parts = p.split(".")
        chain = []
        for i in range(2, len(parts) + 1):
            sub = nodes.get(".".join(parts[:i]))
            chain.append(sub.get("name") if isinstance(sub, dict) else None)
        chains[tuple(chain)] = p
    for chain, layer in _leaves(model):
        node = chains.get(chain)
        stored = []
        if node is not None:
            pre = node[len("root."):].replace(".", "/") + "/"
            spec = _spec(layer.class_name)
            order = spec.keras_subobjects if spec else ()
            for key in var_shapes:
                if not key.startswith(pre) or not key.endswith(SUFFIX):
                    continue
                rest = key[len(pre):-len(SUFFIX)]
                if rest.startswith(("layer-", "layer_with_weights-")):
                    continue  # a nested layer's own variable
                stored.append((key[:-len(SUFFIX)], _CkptTensor(reader, key, var_shapes[key],
                                                    np.dtype(var_dtypes[key].as_numpy_dtype))))
            stored.sort(key=lambda kv: (_rank(kv[0][len(pre):], order), kv[0]))
        elif layer.class_name != "InputLayer" and _expects(layer):
            ctx.problems.append(f"layer {layer.name!r}: not found in keras_metadata.pb")
            continue
        assign(layer, stored, by_name=True, trainable_scope=True, where=str(path), ctx=ctx)
    model.keras_version = tf_version
    model.backend = "tensorflow"
    return model


def _spec(cls):
    from .. import specs

    return specs.get(cls)


def _expects(layer) -> bool:
    spec = _spec(layer.class_name)
    return spec is None or bool(spec.weight_decls(layer.config))


def _rank(name: str, order: tuple) -> int:
    first = name.split("/")[0]
    return order.index(first) if first in order else len(order)
