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
import os
import sys
import tempfile

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


class _NativeStderr:
    """Redirects file descriptor 2 while tensorflow is imported and used here.

    TensorFlow's native code writes start-up lines straight to fd 2, whatever Python's sys.stderr is and
    whatever TF_CPP_MIN_LOG_LEVEL says for some of them ("WARNING: All log messages before
    absl::InitializeLog() ...", cudart_stub's "Could not find cuda drivers", cpu_feature_guard's "To enable
    the following instructions: AVX2 FMA ..."): they must not reach kconv's user. What was written is
    kept (``tail``) for error messages. Nothing is redirected once tensorflow is imported (a program that
    uses tensorflow itself has seen those lines already)."""

    def __init__(self):
        self._saved = self._buf = None
        self._text = ""

    def __enter__(self):
        if "tensorflow" in sys.modules:
            return self
        try:
            _flush()
            self._buf = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._buf.fileno(), 2)
        except OSError:  # no usable fd 2: nothing to protect
            self._close()
        return self

    def tail(self, n: int = 400) -> str:
        """The last ``n`` characters written to fd 2 while redirected (so far, or in all)."""
        if self._buf is not None:
            self._buf.seek(0)
            self._text = self._buf.read().decode("utf8", "replace").strip()
        return self._text[-n:]

    def _close(self):
        if self._saved is not None:
            _flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
        if self._buf is not None:
            self.tail()
            self._buf.close()
            self._buf = None

    def __exit__(self, *exc):
        self._close()
        return False


def _flush():
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def load_savedmodel(path: Path, ctx: Context) -> Model:
    with _NativeStderr() as native:
        try:
            return _load_savedmodel(path, ctx)
        except ModelFileError as e:
            if e.__cause__ is None and isinstance(e.__context__, ImportError) and native.tail():
                raise ModelFileError(path, f"{e.problem}\ntensorflow's own output: {native.tail()}") from None
            raise


def _load_savedmodel(path: Path, ctx: Context) -> Model:
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
    # A compiled, trained model's checkpoint also holds the optimizer: slot variables under each weight
    # ('<weight>/.OPTIMIZER_SLOT/optimizer/m') and its own ('optimizer/iter', 'optimizer/learning_rate').
    opt = [k for k in var_shapes if "/.OPTIMIZER_SLOT/" in k or k.startswith("optimizer/")]
    if opt:
        model.optimizer_state = {"where": "variables/ checkpoint (.OPTIMIZER_SLOT/..., optimizer/...)",
                                 "variables": len(opt),
                                 "values": int(sum(int(np.prod(var_shapes[k])) for k in opt))}
    graph = _ObjectGraph.of(reader, var_shapes)
    layer_nodes = {chains[c] for c in _chains(model) if c in chains}
    for chain, layer in _leaves(model):
        node = chains.get(chain)
        stored = []
        if node is not None:
            pre = node[len("root."):].replace(".", "/") + "/"
            spec = _spec(layer.class_name)
            order = spec.keras_subobjects if spec else ()
            if graph is not None:
                found = graph.variables_of(node, layer_nodes - {node})
            else:  # no object graph in the checkpoint: variables named after the layer's path
                found = [(key[len(pre):-len(SUFFIX)], key) for key in sorted(var_shapes)
                         if key.startswith(pre) and key.endswith(SUFFIX)
                         and not key[len(pre):].startswith(("layer-", "layer_with_weights-"))]
            for rest, key in found:
                if "/.OPTIMIZER_SLOT/" in key:  # the optimizer's, not the layer's
                    continue
                stored.append((pre + rest, _CkptTensor(reader, key, var_shapes[key],
                                                       np.dtype(var_dtypes[key].as_numpy_dtype))))
            stored.sort(key=lambda kv: _rank(kv[0][len(pre):], order))  # stable: creation order within
        elif layer.class_name != "InputLayer" and _expects(layer):
            ctx.problems.append(f"layer {layer.name!r}: not found in {source.split()[0]}")
            continue
        assign(layer, stored, by_name=True, trainable_scope=True, ctx=ctx)
    model.keras_version = tf_version
    model.backend = "tensorflow"
    return model


def _chains(model: Model, chain=()):
    """Every layer's chain of names from the root, nested models included."""
    for layer in model.layers:
        yield chain + (layer.name,)
        if layer.model is not None:
            yield from _chains(layer.model, chain + (layer.name,))


# Edges the SavedModel serialisation adds to every Keras layer (tf.keras saving/saved_model: the
# ``keras_api`` object, under which sit 'layers', 'metrics' ..., and the variable/loss lists): they
# lead to variables that the layer's own attributes also reach. Anything else is an attribute of the
# layer (a user's ``self.layers = [...]`` in a custom layer included).
SERIALIZATION_EDGES = frozenset({
    "keras_api", "trainable_variables", "non_trainable_variables", "variables", "regularization_losses",
    "layer_regularization_losses"})
MAX_GRAPH_NODES = 1 << 20


class _ObjectGraph:
    """The checkpoint's own object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``, a TrackableObjectGraph).

    A variable's checkpoint key is its *shortest* path from the root, which is not always under its
    layer: TensorFlow 2.4 names the variables of a custom layer's sub-layer (``self.inner = Dense(..)``)
    ``trainable_variables/3`` (the root model's list, depth 2) rather than
    ``layer_with_weights-2/inner/kernel`` (depth 3). The graph says which layer owns which variable.
    """

    def __init__(self, nodes):
        self.nodes = nodes

    @classmethod
    def of(cls, reader, var_shapes):
        if "_CHECKPOINTABLE_OBJECT_GRAPH" not in var_shapes:
            return None
        from tensorflow.core.protobuf import trackable_object_graph_pb2

        g = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            g.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
        except Exception:  # noqa: BLE001 - DecodeError: fall back to the checkpoint keys
            return None
        if not g.nodes or len(g.nodes) > MAX_GRAPH_NODES:
            return None
        return cls(g.nodes)

    def _node(self, path: str):
        """Node id of a metadata path ('root.layer-1.layer_with_weights-0'), or None."""
        i = 0
        for name in path.split(".")[1:]:
            i = next((c.node_id for c in self.nodes[i].children if c.local_name == name), None)
            if i is None or not 0 <= i < len(self.nodes):
                return None
        return i

    def variables_of(self, path: str, other_layers) -> list[tuple[str, str]]:
        """[(path below the layer, checkpoint key)] of the variables the layer at ``path`` owns: reached
        through its attributes (sub-layers included), not through the serialisation lists, and not
        through another layer of the model (``other_layers``: their metadata paths). Breadth-first, in
        attribute order."""
        start = self._node(path)
        if start is None:
            return []
        stop = {self._node(p) for p in other_layers} - {None, start}
        seen, out, queue = {start}, [], [(start, "")]
        while queue:
            i, rel = queue.pop(0)
            for a in self.nodes[i].attributes:
                if a.name == "VARIABLE_VALUE" and a.checkpoint_key.endswith(SUFFIX) and rel:
                    out.append((rel, a.checkpoint_key))
            for c in self.nodes[i].children:
                j = c.node_id
                if c.local_name in SERIALIZATION_EDGES or j in seen or j in stop or not 0 <= j < len(self.nodes):
                    continue
                seen.add(j)
                queue.append((j, f"{rel}/{c.local_name}" if rel else c.local_name))
        return out


def _spec(cls):
    from .. import specs

    return specs.get(cls)


def _expects(layer) -> bool:
    spec = _spec(layer.class_name)
    return spec is None or bool(spec.weight_decls(layer.config))


def _rank(name: str, order: tuple) -> int:
    first = name.split("/")[0]
    return order.index(first) if first in order else len(order)
