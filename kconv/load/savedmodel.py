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
- ``saved_model.pb``: the TensorFlow version that wrote it (tf.keras 2.x = TensorFlow's version). Parsed
  with tensorflow's protobuf classes only (never ``tf.saved_model.load``, which may refuse old files).
  TensorFlow 2.0-2.4 wrote no ``keras_metadata.pb``: the same per-object JSON is the ``metadata`` of the
  ``user_object`` nodes (identifier ``_tf_keras_network`` / ``_tf_keras_model`` / ``_tf_keras_layer`` ...)
  of ``meta_graphs[0].object_graph_def``, whose node paths (breadth-first from the root, children in
  stored order) are the checkpoint's. When it is missing, read from there, identically.

When no model config can be had (a subclassed model, or a SavedModel not written by Keras), the error
(exit 2) still lists what can be read: the checkpoint's variables with shapes and dtypes.
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


def _read_saved_model(path: Path, tf):
    """saved_model.pb as a SavedModel proto, or None when absent."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    if not pb.exists():
        return None
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
    except Exception as e:  # noqa: BLE001 - google.protobuf.message.DecodeError
        raise ModelFileError(path, f"saved_model.pb cannot be parsed by tensorflow {tf.__version__} "
                                   f"({type(e).__name__}): damaged, or written by a TensorFlow this one "
                                   "cannot read") from None
    return sm


def _object_graph_nodes(path: Path, sm) -> dict:
    """Keras metadata embedded in saved_model.pb (TF 2.0-2.4 write no keras_metadata.pb): node path ->
    the JSON of every ``_tf_keras_*`` user object of the object graph. Paths are those of the checkpoint
    (breadth-first from the root, children in stored order, first path wins), so that
    ``root.layer_with_weights-0`` names the same object as checkpoint key ``layer_with_weights-0/...``."""
    if sm is None or not sm.meta_graphs or not sm.meta_graphs[0].HasField("object_graph_def"):
        return {}
    graph = sm.meta_graphs[0].object_graph_def.nodes
    paths = {0: "root"}
    queue = [0]
    while queue:
        i = queue.pop(0)
        for child in graph[i].children:
            if child.node_id not in paths and 0 <= child.node_id < len(graph):
                paths[child.node_id] = paths[i] + "." + child.local_name
                queue.append(child.node_id)
    nodes = {}
    for i, p in paths.items():
        node = graph[i]
        if node.WhichOneof("kind") != "user_object":
            continue
        uo = node.user_object
        if not uo.identifier.startswith("_tf_keras_") or not uo.metadata:
            continue
        if len(uo.metadata) > MAX_METADATA_BYTES:
            raise ModelFileError(path, f"saved_model.pb: node {p!r} metadata is over {MAX_METADATA_BYTES} bytes")
        try:
            nodes[p] = json.loads(uo.metadata)
        except ValueError:
            raise ModelFileError(path, f"saved_model.pb: node {p!r} metadata is not JSON") from None
    return nodes


SHOWN_VARIABLES = 40


def _checkpoint_listing(var_shapes, var_dtypes) -> str:
    """What can be read without the architecture: the checkpoint's Keras variables with their shapes."""
    keys = sorted(k for k in var_shapes if k.endswith(SUFFIX))
    if not keys:
        return "The variables/ checkpoint holds no Keras variables."
    total = sum(int(np.prod(var_shapes[k])) for k in keys)
    lines = [f"The variables/ checkpoint holds {len(keys)} variables ({total:,} values):"]
    for k in keys[:SHOWN_VARIABLES]:
        lines.append(f"  {k[:-len(SUFFIX)]}  {tuple(int(d) for d in var_shapes[k])}  {var_dtypes[k].name}")
    if len(keys) > SHOWN_VARIABLES:
        lines.append(f"  ... and {len(keys) - SHOWN_VARIABLES} more")
    return "\n".join(lines)


def load_savedmodel(path: Path, ctx: Context) -> Model:
    meta_file = path / "keras_metadata.pb"
    tf = _tf(path)
    sm = _read_saved_model(path, tf)
    tf_version = sm.meta_graphs[0].meta_info_def.tensorflow_version if sm is not None and sm.meta_graphs else ""

    prefix = path / "variables" / "variables"
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        var_shapes = reader.get_variable_to_shape_map()
        var_dtypes = reader.get_variable_to_dtype_map()
    except Exception as e:  # noqa: BLE001 - tf raises NotFoundError, DataLossError...
        raise ModelFileError(path, f"variables/ checkpoint unreadable by tensorflow {tf.__version__} "
                                   f"({type(e).__name__})") from None

    if meta_file.exists():
        source = "keras_metadata.pb"
        if meta_file.stat().st_size > MAX_METADATA_BYTES:
            raise ModelFileError(path, f"keras_metadata.pb is over {MAX_METADATA_BYTES} bytes")
        from tensorflow.python.keras.protobuf import saved_metadata_pb2

        meta = saved_metadata_pb2.SavedMetadata()
        meta.ParseFromString(meta_file.read_bytes())
        nodes = {}
        for n in meta.nodes:
            try:
                nodes[n.node_path] = json.loads(n.metadata)
            except ValueError:
                raise ModelFileError(path, f"keras_metadata.pb: node {n.node_path!r} metadata is not JSON") from None
    else:
        # TF < 2.5: the same per-object JSON is embedded in saved_model.pb's object graph
        source = "saved_model.pb (no keras_metadata.pb: TensorFlow < 2.5)"
        nodes = _object_graph_nodes(path, sm)
        if not nodes:
            raise ModelFileError(path, "a TF SavedModel without Keras layer configs: no keras_metadata.pb (tf.keras "
                                       "2.5+ writes it beside saved_model.pb: was it left behind?) and no Keras "
                                       "metadata in saved_model.pb (where TensorFlow < 2.5 put it: not written by "
                                       "Keras?). Load it with the TensorFlow that wrote it and re-save it as .h5 or "
                                       ".keras.\n" + _checkpoint_listing(var_shapes, var_dtypes))
    root = nodes.get("root")
    if not isinstance(root, dict) or "config" not in root or "class_name" not in root:
        raise ModelFileError(path, f"{source} has no root model config (a subclassed model? only Sequential and "
                                   "functional models can be read).\n" + _checkpoint_listing(var_shapes, var_dtypes))
    if not isinstance(root["config"], dict) or "layers" not in root["config"]:
        raise ModelFileError(path, f"the root object is a {root.get('class_name')!r} without a layer list (a "
                                   "subclassed model): its architecture is code, not config.\n"
                             + _checkpoint_listing(var_shapes, var_dtypes))
    model = build_model({"class_name": root["class_name"], "config": _untuple(root["config"])})

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
            ctx.problems.append(f"layer {layer.name!r}: not found in {source.split()[0]}")
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
