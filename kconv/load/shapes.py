"""Output-shape inference from the config alone (what Keras's summary() shows), no tensors run."""
from __future__ import annotations

from .. import specs
from ..errors import ConfigError
from ..ir import Layer, Model


def infer(model: Model, input_shapes: list | None = None) -> list:
    """Fill ``call.output_shapes`` for every call in ``model``; returns the model's output shapes.

    Unknown layer classes (or failures of a shape rule) give ``None`` shapes downstream, never an error:
    inspect must still show the layer.
    """
    known: dict = {}
    for i, ref in enumerate(model.inputs):
        layer = model.layer(ref.layer)
        shape = layer.config.get("batch_shape")
        if input_shapes is not None and i < len(input_shapes) and input_shapes[i] is not None:
            shape = input_shapes[i]
        shape = tuple(shape) if shape is not None else None
        layer.calls = layer.calls or []
        from ..ir import Call
        if not layer.calls:
            layer.calls.append(Call(inputs=[]))
        layer.calls[ref.node].output_shapes = [shape]
        known[(ref.layer, ref.node, ref.index)] = shape
    pending = [(layer, n) for layer in model.layers for n in range(len(layer.calls))
               if not (layer.class_name == "InputLayer" and not layer.calls[n].inputs)]
    progress = True
    while pending and progress:
        progress = False
        rest = []
        for layer, n in pending:
            call = layer.calls[n]
            refs = list(call.inputs) + _kw_refs(call)
            if not all((r.layer, r.node, r.index) in known or _is_input_placeholder(model, r) for r in refs):
                rest.append((layer, n))
                continue
            shapes = [known.get((r.layer, r.node, r.index)) for r in call.inputs]
            outs = _call_shapes(layer, call, shapes)
            call.output_shapes = outs
            for i, s in enumerate(outs):
                known[(layer.name, n, i)] = s
            progress = True
        pending = rest
    if pending:
        names = ", ".join(sorted({layer.name for layer, _ in pending}))
        raise ConfigError(model.name, f"graph has a cycle or dangling inputs at: {names}")
    return [known.get((r.layer, r.node, r.index)) for r in model.outputs]


def _is_input_placeholder(model, ref):
    layer = model.layer(ref.layer)
    return layer.class_name == "InputLayer"


def _kw_refs(call):
    out = []
    for v in call.tensor_kwargs.values():
        out.extend(v if isinstance(v, list) else [v])
    return out


def _call_shapes(layer: Layer, call, shapes) -> list:
    if layer.model is not None and layer.wraps_model:  # TimeDistributed(model): the model on each step
        s = shapes[0] if shapes else None
        if s is None or len(s) < 2:
            infer(layer.model, None)
            return [None]
        outs = infer(layer.model, [(None, *s[2:])])
        return [(s[0], s[1], *o[1:]) if o is not None else None for o in outs]
    if layer.model is not None:
        return infer(layer.model, shapes)
    if any(s is None for s in shapes):
        return [None]
    spec = specs.get(layer.class_name)
    if spec is None or spec.output_shape is None:
        return [None]
    cfg = dict(layer.config)
    cfg.update({k: v for k, v in call.kwargs.items() if k in ("return_sequences", "return_state", *spec.call_kwargs)})
    try:
        out = spec.output_shape(cfg, [tuple(s) for s in shapes])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return [None]
    if isinstance(out, list):
        return [tuple(s) if s is not None else None for s in out]
    return [tuple(out) if out is not None else None]
