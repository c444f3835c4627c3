"""The inspection report: every layer and weight with its role, shapes, counts and torch mapping.

Builds plain data (the ``--json`` document); kconv.cli.inspect renders it as text.
"""
from __future__ import annotations

from . import specs
from .load import lambdas
from .load.limits import Limits
from .load.weights import nonfinite_counts
from .ir import Layer, Model
from .naming import module_names
from .specs.roles import describe

SCHEMA_VERSION = 1


def _shape(s):
    if s is None:
        return None
    return [d if d is None else int(d) for d in s]


def _call_inputs(call) -> list[str]:
    refs = [str(r) for r in call.inputs]
    for k, v in call.tensor_kwargs.items():
        for r in v if isinstance(v, list) else [v]:
            refs.append(f"{k}={r}")
    return refs


def _weight_report(layer: Layer, w, decl, module_path: str, check_values: bool = False) -> dict:
    out = {
        "name": w.name,
        "role": w.role,
        "meaning": describe(w.role),
        "shape": list(w.shape),
        "dtype": w.dtype,
        "trainable": w.trainable,
        "stored": w.reader is not None,
        "torch": [],
    }
    if w.note:
        out["note"] = w.note
    if w.stored_shape is not None:
        out["stored_shape"] = list(w.stored_shape)
    if decl is not None:
        try:
            for name, t in decl.targets(layer.config):
                out["torch"].append({"key": f"{module_path}.{name}", "shape": list(t.shape(w.shape)),
                                     "transform": t.describe()})
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as e:
            out["torch"] = []
            out["torch_note"] = f"no torch mapping: the layer config is not understood ({type(e).__name__})"
        if not out["torch"] and decl.why_no_torch:
            out["torch_note"] = decl.why_no_torch
    if check_values and w.reader is not None:
        nan, inf = nonfinite_counts(w.read())
        if nan or inf:
            out["nonfinite"] = {"nan": nan, "inf": inf}
    return out


def layer_report(layer: Layer, module_path: str, check_values: bool = False) -> dict:
    spec = specs.get(layer.class_name)
    t, n = layer.param_counts()
    outs = [c.output_shapes for c in layer.calls if c.output_shapes]
    first = outs[0] if outs else [None]
    rep = {
        "name": layer.name,
        "class_name": layer.class_name,
        "inputs": [_call_inputs(c) for c in layer.calls if c.inputs or c.tensor_kwargs],
        "calls": len(layer.calls),
        "output_shape": _shape(first[0]) if len(first) == 1 else [_shape(s) for s in first],
        "trainable": layer.trainable,
        "trainable_params": t,
        "non_trainable_params": n,
        "known_class": spec is not None or layer.model is not None,
        "weights": [],
    }
    if layer.class_name == "Lambda":
        rep["note"] = "Lambda: stored Python code, shown but never executed"
        rep["lambda"] = lambdas.describe(layer.config, Limits.from_env().max_lambda_code_bytes)
    elif spec is None and layer.model is None:
        rep["note"] = "unknown layer class: roles taken from stored weight names"
    elif spec is not None and not layer.weights and spec.no_weights_reason:
        rep["note"] = spec.no_weights_reason
    if layer.notes:
        rep["config_notes"] = list(layer.notes)
    if layer.stored_as is not None:
        rep["stored_as"] = layer.stored_as
    if layer.model is not None:
        rep["model_class"] = layer.model.class_name
        rep["layers"] = model_layers(layer.model, module_path + ".", check_values)
        return rep
    for w, decl in specs.declared_weights(layer):
        rep["weights"].append(_weight_report(layer, w, decl, module_path, check_values))
    for extra in ("quantization_mode", "lora_rank"):
        if layer.config.get(extra):
            rep[extra] = layer.config[extra]
    return rep


def model_layers(model: Model, prefix: str = "", check_values: bool = False) -> list[dict]:
    names = module_names([ly.name for ly in model.layers])
    return [layer_report(ly, prefix + names[ly.name], check_values) for ly in model.layers]


def report(model: Model, check_values: bool = False) -> dict:
    """The ``--json`` document. ``check_values``: also read every weight and count NaN/Inf values
    (weight field ``nonfinite``; reading also warns with NonFiniteWeightWarning); otherwise nothing
    is read and the report comes from the file's metadata alone."""
    t, n = model.param_counts()
    return {
        "schema_version": SCHEMA_VERSION,
        "source": model.source,
        "format": model.format,
        "keras_version": model.keras_version,
        "backend": model.backend,
        "backend_note": model.backend_note,
        "model": {"name": model.name, "class_name": model.class_name},
        "inputs": [{"layer": r.layer, "shape": _shape(model.layer(r.layer).calls[r.node].output_shapes[r.index])
                    if model.layer(r.layer).calls else None} for r in model.inputs],
        "outputs": [{"layer": str(r), "shape": _shape(s)} for r, s in zip(model.outputs, model.output_shapes())],
        "total_params": t + n,
        "trainable_params": t,
        "non_trainable_params": n,
        "optimizer_state": model.optimizer_state,
        "layers": model_layers(model, "", check_values),
    }
