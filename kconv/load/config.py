"""Normalise Keras 1/2/3 config dialects and build the layer-call graph (no weights here)."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..ir import Call, Layer, Model, TensorRef
from . import keras1

MODEL_CLASSES = {"Sequential", "Functional", "Model"}
# Wrapper layers whose wrapped layer may be a whole model (kept as ``Layer.model``, see ir.Layer).
WRAPPERS_OF_MODELS = {"TimeDistributed"}


def _policy(dtype: Any) -> tuple[str, str | None]:
    """A Keras 3 DTypePolicy dict, or a Keras 2 dtype string -> (compute dtype name, quantization mode)."""
    if dtype is None or isinstance(dtype, str):
        return dtype or "float32", None
    if isinstance(dtype, dict):
        cfg = dtype.get("config", {}) or {}
        cls = dtype.get("class_name", "")
        # QuantizedDTypePolicy / QuantizedFloat8DTypePolicy (mode 'int8', 'float8'), and since Keras 3.13
        # Int4DTypePolicy with a block size in the mode ('int4/128'): any policy carrying a mode.
        if "Quantized" in cls or cfg.get("mode"):
            mode = cfg.get("mode")
            if mode is None and "name" in cfg:  # Keras 3.0-3.5: name 'int8_from_float32'
                mode = cfg["name"].split("_from_")[0]
            return cfg.get("source_name") or cfg.get("name", "float32").split("_from_")[-1], mode
        return cfg.get("name", "float32"), None
    return str(dtype), None


def normalize_config(class_name: str, config: dict, notes: list | None = None) -> dict:
    """Canonical (Keras 3) keys for one layer config; wrapped layer configs are normalised too."""
    if not isinstance(config, dict):
        raise ConfigError(str(config)[:40], f"{class_name} config is {type(config).__name__}, expected an object")
    cfg = dict(config)
    if keras1.is_keras1(class_name, cfg) and not cfg.get("_keras1"):
        cfg = keras1.normalize(class_name, cfg, str(cfg.get("name", class_name)), notes if notes is not None else [])
    dtype, qmode = _policy(cfg.get("dtype"))
    cfg["dtype"] = dtype
    if qmode:
        cfg["quantization_mode"] = qmode
    if "batch_input_shape" in cfg and "batch_shape" not in cfg:
        cfg["batch_shape"] = cfg.pop("batch_input_shape")
        if notes is not None:
            notes.append("batch_input_shape -> batch_shape")
    for key in ("padding", "data_format", "interpolation"):  # Keras lower-cases these when it reads them
        if isinstance(cfg.get(key), str):
            cfg[key] = cfg[key].lower()
    if class_name in ("GRU", "GRUCell") and "reset_after" not in cfg:
        # Keras 2.0-2.1.4 wrote no reset_after (added in 2.1.5): their GRU applies the reset gate
        # before the recurrent kernel and has one (3 * units,) bias, i.e. reset_after=False, which
        # stayed the standalone-Keras default until 2.3 (tf.keras 2 and Keras 3 always write the key).
        cfg["reset_after"] = False
        if notes is not None:
            notes.append("no reset_after in the config (Keras 2.0-2.1.4): reset_after=False")
    for key in ("layer", "backward_layer", "cell"):
        sub = cfg.get(key)
        if isinstance(sub, dict) and "class_name" in sub:
            cfg[key] = {**sub, "config": normalize_config(sub["class_name"], sub.get("config", {}), notes)}
    return cfg


def _is_ref(v) -> bool:
    return isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"


def _ref3(v) -> TensorRef:
    name, node, index = v[:3]
    return TensorRef(str(name), int(node), int(index))


def _refs_in(value) -> list[TensorRef]:
    """Keras 3 tensor references inside an (arbitrarily nested) argument, in order."""
    if _is_ref(value):
        return [_ref3(value["config"]["keras_history"])]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs_in(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs_in(v)]
    return []


def _parse_node_k3(node: dict) -> Call:
    args = node.get("args", [])
    kwargs = node.get("kwargs", {}) or {}
    inputs: list[TensorRef] = []
    is_list = False
    ordered = []  # positional arguments in order: None where a tensor goes, else the constant
    for a in args:
        refs = _refs_in(a)
        if isinstance(a, (list, tuple)) and refs:
            is_list = True
        if not refs:
            ordered.append({"const": a})
        else:
            ordered.append(None)
        inputs.extend(refs)
    plain = {k: v for k, v in kwargs.items() if not _refs_in(v)}
    if any(a is not None for a in ordered):  # constant operands of Keras 3 ops: the 0 of not_equal(ids, 0)
        plain["_args"] = ordered
    tensors = {}
    for k, v in kwargs.items():
        refs = _refs_in(v)
        if refs:
            tensors[k] = refs if isinstance(v, (list, tuple)) else refs[0]
    return Call(inputs=inputs, input_is_list=is_list, kwargs=plain, tensor_kwargs=tensors,
                tensor_args=ordered.count(None))


def _is_k2_ref(v) -> bool:
    return isinstance(v, list) and len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int)


# tf.keras 2 (tf_keras/src/engine/node.py serialize) writes a first argument that is a constant, not a
# Keras tensor, as [_CONSTANT_VALUE, -1, value, kwargs].
_CONSTANT_VALUE = "_CONSTANT_VALUE"


def _parse_node_k2(node: list, is_list: bool | None = None) -> Call:
    inputs, kwargs, tensors = [], {}, {}
    for entry in node:
        if entry[0] == _CONSTANT_VALUE and entry[1] == -1:
            kwargs.setdefault("_constants", []).append(entry[2])
        else:
            inputs.append(_ref3(entry))
        extra = entry[3] if len(entry) > 3 and isinstance(entry[3], dict) else {}
        for k, v in extra.items():
            if _is_k2_ref(v):
                tensors[k] = _ref3(v)
            elif isinstance(v, list) and v and all(_is_k2_ref(x) for x in v):
                tensors[k] = [_ref3(x) for x in v]
            else:
                kwargs[k] = v
    return Call(inputs=inputs, input_is_list=len(node) > 1 if is_list is None else is_list, kwargs=kwargs,
                tensor_kwargs=tensors)


def parse_nodes(layer_name: str, nodes) -> list[Call]:
    calls = []
    for node in nodes or []:
        if isinstance(node, dict):
            calls.append(_parse_node_k3(node))
        elif _is_k2_ref(node) or (isinstance(node, list) and node[:2] == [_CONSTANT_VALUE, -1]):
            # A layer that keeps its input structure in the config (tf.keras 2 TFOpLambda,
            # _preserve_input_structure_in_config) called on one tensor: the node *is* the tensor
            # reference, [name, node, index, kwargs], not a list of them.
            calls.append(_parse_node_k2([node], is_list=False))
        elif isinstance(node, list):
            calls.append(_parse_node_k2(node))
        else:
            raise ConfigError(layer_name, f"unreadable inbound node {str(node)[:60]!r}")
    return calls


def _io_refs(value) -> list[TensorRef]:
    """input_layers / output_layers: [name, node, index], a list of those, or (Keras 3) a dict of those."""
    if isinstance(value, dict):
        value = list(value.values())
    if not value:
        return []
    if isinstance(value[0], str):
        return [_ref3(value)]
    return [_ref3(v) for v in value]


def _is_keras_op(entry: dict, raw: dict) -> bool:
    """A keras.ops Operation in a Keras 3 graph: module keras.src.ops.* in .keras configs; legacy .h5
    configs drop the module, but an Operation's config lacks the 'trainable' and 'dtype' that every
    Keras 3 Layer config has (keras/src/layers/layer.py get_config vs ops/operation.py)."""
    if str(entry.get("module", "")).startswith("keras.src.ops"):
        return True
    nodes = entry.get("inbound_nodes") or []
    return bool(nodes) and isinstance(nodes[0], dict) and "trainable" not in raw and "dtype" not in raw


def _layer_from_entry(entry: dict, where: str) -> Layer:
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise ConfigError(where, "layer entry without class_name")
    cls = entry["class_name"]
    notes: list[str] = []
    raw = entry.get("config", {})
    if cls in MODEL_CLASSES:
        model = build_model(entry)
        cfg = {k: v for k, v in raw.items() if k != "layers"}
        layer = Layer(name=model.name, class_name=cls, config=cfg, model=model,
                      trainable=raw.get("trainable", True))
    else:
        if cls == "Merge" or (isinstance(raw, dict) and keras1.is_keras1(cls, raw)):
            cls = keras1.class_name(cls, raw, str(entry.get("name") or raw.get("name") or where), notes)
        cfg = normalize_config(cls, raw, notes)
        if _is_keras_op(entry, raw):
            # A keras.ops operation recorded in the graph (x + 3.0, ops.not_equal(ids, 0)), not a
            # Layer. Its class name can equal a layer's (Add, Multiply, Concatenate, Reshape, Dot...)
            # with different semantics, so it gets its own declarations: 'ops.Add', ...
            cfg["_keras_op"] = True
            cls = "ops." + cls
        name = entry.get("name") or cfg.get("name")
        if not name:
            raise ConfigError(where, f"{cls} layer without a name")
        layer = Layer(name=str(name), class_name=cls, config=cfg, trainable=cfg.get("trainable", True), notes=notes)
        sub = raw.get("layer") if isinstance(raw, dict) else None
        if cls in WRAPPERS_OF_MODELS and isinstance(sub, dict) and sub.get("class_name") in MODEL_CLASSES:
            # TimeDistributed(Sequential / Functional): the wrapped model becomes ``layer.model``
            # (shapes, weights, inspect and param counts walk it like a nested model); the config
            # keeps the wrapped model's config under 'layer' as Keras wrote it.
            layer.model = build_model(sub)
    layer.calls = parse_nodes(layer.name, entry.get("inbound_nodes"))
    return layer


def build_model(entry: dict) -> Model:
    """A Model (graph of layer calls) from a model config entry {class_name, config}."""
    cls = entry.get("class_name")
    cfg = entry.get("config")
    if isinstance(cfg, list):  # very old Sequential: the config is the bare layer list
        cfg = {"name": "sequential", "layers": cfg}
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ConfigError(str(entry.get("name", cls)), f"{cls} config has no 'layers' list")
    name = str(cfg.get("name") or entry.get("name") or "model")
    layers = [_layer_from_entry(e, f"{name}.layers[{i}]") for i, e in enumerate(cfg["layers"])]
    if cls == "Sequential":
        return _sequential(name, layers, cfg)
    if any(isinstance(n, list) for e in cfg["layers"] if isinstance(e, dict) for n in e.get("inbound_nodes") or []):
        _keras2_node_offsets(layers, cfg)
    names = {layer.name for layer in layers}
    if len(names) != len(layers):
        raise ConfigError(name, "duplicate layer names in the model config")
    model = Model(name=name, class_name="Functional", layers=layers,
                  inputs=_io_refs(cfg.get("input_layers")), outputs=_io_refs(cfg.get("output_layers")))
    for ref in model.inputs + model.outputs:
        if ref.layer not in names:
            raise ConfigError(name, f"model input/output refers to unknown layer {ref.layer!r}")
    for layer in layers:
        for call in layer.calls:
            for ref in call.inputs:
                if ref.layer not in names:
                    raise ConfigError(layer.name, f"input from unknown layer {ref.layer!r}")
    return model


def _keras2_node_offsets(layers: list[Layer], cfg: dict):
    """Keras 2 numbers a nested model's calls from 1 when the model was built on an Input.

    Such a model's first node (its own Input -> output) is left out of ``inbound_nodes`` but still
    counted by the node indices that refer to it (tf.keras functional.py ``_should_skip_first_node``
    and ``get_network_config``'s ``node_conversion_map``). Keras 3 does not do this.
    """
    skip = {ly.name for ly in layers if ly.model is not None and ly.class_name not in WRAPPERS_OF_MODELS and
            _built_on_input(ly.model)}
    if not skip:
        return

    def fix(ref: TensorRef) -> TensorRef:
        return TensorRef(ref.layer, ref.node - 1, ref.index) if ref.layer in skip and ref.node > 0 else ref

    for ly in layers:
        for call in ly.calls:
            call.inputs = [fix(r) for r in call.inputs]
            call.tensor_kwargs = {k: [fix(r) for r in v] if isinstance(v, list) else fix(v)
                                  for k, v in call.tensor_kwargs.items()}
    cfg["output_layers"] = [[r[0], r[1] - 1 if r[0] in skip and r[1] > 0 else r[1], *r[2:]]
                            for r in _as_list3(cfg.get("output_layers"))]


def _built_on_input(model: Model) -> bool:
    """Whether Keras 2 built the nested model on an Input of its own (its node 0): a functional model,
    a Sequential with an InputLayer, or one whose first layer has a batch_input_shape (standalone
    Keras 2.2 writes no InputLayer then, and still numbers the outer call 1). A Sequential built
    later (``build_input_shape`` only) gets node 0 from its first call."""
    if model.class_name != "Sequential" or not model.layers[0].config.get("synthetic"):
        return True
    return len(model.layers) > 1 and bool(model.layers[1].config.get("batch_shape"))


def _as_list3(value):
    if isinstance(value, dict):
        value = list(value.values())
    if value and isinstance(value[0], str):
        return [value]
    return value or []


def _sequential(name: str, layers: list[Layer], cfg: dict) -> Model:
    if layers and layers[0].class_name == "InputLayer":
        inp = layers[0]
        rest = layers[1:]
    else:
        shape = None
        if layers and layers[0].config.get("batch_shape"):
            shape = layers[0].config["batch_shape"]
        elif cfg.get("build_input_shape"):
            shape = cfg["build_input_shape"]
        inp = Layer(name=f"{name}_input", class_name="InputLayer",
                    config={"batch_shape": shape,
                            "dtype": layers[0].config.get("dtype", "float32") if layers else "float32",
                            "synthetic": True},
                    notes=["no InputLayer in the Sequential config: input added by kconv"])
        rest = layers
    inp.calls = []
    prev = TensorRef(inp.name, 0, 0)
    for layer in rest:
        layer.calls = [Call(inputs=[prev])]
        prev = TensorRef(layer.name, 0, 0)
    return Model(name=name, class_name="Sequential", layers=[inp, *rest], inputs=[TensorRef(inp.name, 0, 0)],
                 outputs=[prev])
