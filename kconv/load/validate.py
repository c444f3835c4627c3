"""Type checks on the config values and graph references every later stage relies on.

A damaged or hand-edited config ("units": "x", "kernel_size": [3, null], a reference to call 99 of a
layer called once) must end as one ConfigError naming the layer and the key, not as an exception
deep in shape inference or code generation. Only keys whose meaning is the same in every layer
class that has them are checked here (plus a few class-specific ones); an unknown key is left alone.
"""
from __future__ import annotations

import math

from .. import specs
from ..errors import ConfigError
from ..ir import Model

MAX_DIM = 2**40  # a dimension, unit or filter count beyond this is not a real model

POSITIVE_INT = ("units", "filters", "input_dim", "output_dim", "depth_multiplier", "groups", "num_heads",
                "key_dim", "n")
INT_TUPLE = ("kernel_size", "strides", "dilation_rate", "pool_size", "size")
NON_NEGATIVE_NESTED = ("cropping",)
NUMBER = ("epsilon", "momentum", "rate", "negative_slope", "theta", "stddev", "max_value", "threshold",
          "l1", "l2", "lora_alpha")
BOOL = ("use_bias", "center", "return_sequences", "return_state", "go_backwards", "stateful", "mask_zero",
        "reset_after", "unit_forget_bias", "keepdims", "rms_scaling", "unroll", "trainable")
STRING = ("name",)
OPTIONAL_STRING = ("interpolation",)
ACTIVATION = ("activation", "recurrent_activation")
NORMALIZATION = {"BatchNormalization", "LayerNormalization", "GroupNormalization", "SyncBatchNormalization"}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bad(layer, key, value, expected):
    text = repr(value)
    if len(text) > 60:
        text = text[:60] + "..."
    raise ConfigError(layer, f"config key {key!r} is {text}, expected {expected}")


def _int_tuple(layer, key, v, minimum):
    items = v if isinstance(v, (list, tuple)) else [v]
    if not items or len(items) > 8:
        _bad(layer, key, v, "an integer or a short list of integers")
    for x in items:
        if not _is_int(x) or not minimum <= x <= MAX_DIM:
            _bad(layer, key, v, f"integers >= {minimum}")


def _nested_ints(layer, key, v, depth=0):
    if _is_int(v):
        if not 0 <= v <= MAX_DIM:
            _bad(layer, key, v, "non-negative integers")
        return
    if isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and depth < 3:
        for x in v:
            _nested_ints(layer, key, x, depth + 1)
        return
    _bad(layer, key, v, "non-negative integers (possibly nested pairs)")


def _axes(layer, key, v):
    items = v if isinstance(v, (list, tuple)) else [v]
    if not all(_is_int(x) and -64 <= x <= 64 for x in items):
        _bad(layer, key, v, "an axis or a list of axes (integers)")


def check_layer(name: str, class_name: str, cfg: dict):
    spec = specs.get(class_name)
    for key in spec.required if spec else ():
        if key not in cfg:
            raise ConfigError(name, f"config key {key!r} is missing (Keras cannot build a {class_name} without it)")
    for key in POSITIVE_INT:
        if key in cfg and cfg[key] is not None and not (_is_int(cfg[key]) and 0 < cfg[key] <= MAX_DIM):
            _bad(name, key, cfg[key], "a positive integer")
    for key in INT_TUPLE:
        if key in cfg and cfg[key] is not None:
            _int_tuple(name, key, cfg[key], 1)
    for key in NON_NEGATIVE_NESTED:
        if key in cfg and cfg[key] is not None:
            _nested_ints(name, key, cfg[key])
    if "padding" in cfg and cfg["padding"] is not None and not isinstance(cfg["padding"], str):
        _nested_ints(name, "padding", cfg["padding"])  # ZeroPadding: ints; conv/pooling: a string
    if "output_padding" in cfg and cfg["output_padding"] is not None:
        _int_tuple(name, "output_padding", cfg["output_padding"], 0)
    for key in NUMBER:
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            _bad(name, key, v, "a finite number")
    for key in BOOL:
        if key in cfg and not isinstance(cfg[key], bool):
            _bad(name, key, cfg[key], "true or false")
    if class_name in NORMALIZATION and "scale" in cfg and not isinstance(cfg["scale"], bool):
        _bad(name, "scale", cfg["scale"], "true or false")
    for key in STRING:
        if key in cfg and not isinstance(cfg[key], str):
            _bad(name, key, cfg[key], "a string")
    for key in OPTIONAL_STRING + ("merge_mode",):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            _bad(name, key, cfg[key], "a string")
    for key in ACTIVATION:
        v = cfg.get(key)
        if v is not None and not isinstance(v, (str, dict)):
            _bad(name, key, v, "an activation name")
    for key, value, accepted in specs.check_choices(class_name, cfg):  # the declaration's enum-like keys
        shown = ", ".join(repr(v) for v in accepted[:8])
        if len(accepted) > 8:
            shown += f", ... ({len(accepted)} values)"
        _bad(name, key, value, f"one of {shown}, as Keras accepts for {class_name}")
    for key in ("axis", "shared_axes", "dims"):
        if cfg.get(key) is not None:
            _axes(name, key, cfg[key])
    for key in ("batch_shape", "target_shape"):
        v = cfg.get(key)
        if v is not None:
            if not isinstance(v, (list, tuple)) or len(v) > 16 or not all(
                    x is None or (_is_int(x) and (-1 if key == "target_shape" else 0) <= x <= MAX_DIM) for x in v):
                _bad(name, key, v, "a list of dimensions (integers or null)")
    for key in ("layer", "backward_layer", "cell"):
        sub = cfg.get(key)
        if isinstance(sub, dict) and isinstance(sub.get("config"), dict):
            check_layer(f"{name}.{key}", str(sub.get("class_name")), sub["config"])


def check_model(model: Model):
    """Config types of every layer (nested ones too)."""
    for layer in model.layers:
        if layer.model is not None:
            check_model(layer.model)
        else:
            check_layer(layer.name, layer.class_name, layer.config)


def check_refs(model: Model):
    """After shape inference: every tensor reference names an existing call and output of its layer."""
    by_name = model.layers_by_name()

    def ok(ref):
        producer = by_name.get(ref.layer)
        if producer is None:
            return False
        if producer.class_name == "InputLayer" and not producer.calls:
            return ref.node == 0 and ref.index == 0
        # the output index is not checked against the inferred outputs: a shape rule may know
        # fewer outputs than the layer has (attention scores, RNN states)
        return 0 <= ref.node < len(producer.calls) and 0 <= ref.index < 1024

    for layer in model.layers:
        for call in layer.calls:
            refs = list(call.inputs)
            for v in call.tensor_kwargs.values():
                refs.extend(v if isinstance(v, list) else [v])
            if not refs and layer.class_name != "InputLayer":
                raise ConfigError(layer.name, "a call of the layer without any input tensor")
            for ref in refs:
                if not ok(ref):
                    raise ConfigError(layer.name, f"input {ref.layer}[{ref.node}][{ref.index}] does not exist")
        if layer.model is not None:
            check_refs(layer.model)
    for ref in model.inputs + model.outputs:
        if not ok(ref):
            raise ConfigError(model.name, f"model input/output {ref.layer}[{ref.node}][{ref.index}] does not exist")
