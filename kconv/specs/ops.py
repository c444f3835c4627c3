"""keras.ops operations that Keras 3 records in functional graphs as pseudo-layers.

``x + 3.0`` in a functional model is saved as {"module": "keras.src.ops.numpy", "class_name": "Add"}
with args [tensor, 3.0]: same class name as the Add layer, different meaning (constants, two
operands). The loader names them 'ops.<Class>' so they never reach a layer's declaration.
"""
from __future__ import annotations

from . import declare, emits
from .core import _num
from .merging import broadcast

BINARY = {
    "ops.Add": "{a} + {b}",
    "ops.Subtract": "{a} - {b}",
    "ops.Multiply": "{a} * {b}",
    "ops.TrueDivide": "{a} / {b}",
    "ops.Divide": "{a} / {b}",
    "ops.Power": "torch.pow({a}, {b})",
    "ops.Maximum": "torch.maximum(torch.as_tensor({a}), torch.as_tensor({b}))",
    # Masks in Keras 3 functional graphs: Embedding(mask_zero=True) -> not_equal(ids, 0); merge layers
    # combine masks with logical_or (base_merge.compute_mask).
    "ops.NotEqual": "{a} != {b}",
    "ops.LogicalOr": "torch.as_tensor({a}).to(torch.bool) | torch.as_tensor({b}).to(torch.bool)",
    "ops.LogicalAnd": "torch.as_tensor({a}).to(torch.bool) & torch.as_tensor({b}).to(torch.bool)",
    "ops.Minimum": "torch.minimum(torch.as_tensor({a}), torch.as_tensor({b}))",
}
UNARY = {
    "ops.Negative": "-{a}",
    "ops.Absolute": "torch.abs({a})",
    "ops.Sqrt": "torch.sqrt({a})",
    "ops.Square": "torch.square({a})",
    "ops.Exp": "torch.exp({a})",
    "ops.Log": "torch.log({a})",
    "ops.Sigmoid": "torch.sigmoid({a})",
    "ops.Tanh": "torch.tanh({a})",
    "ops.Relu": "torch.relu({a})",
}

for _cls, _expr in {**BINARY, **UNARY}.items():
    declare(_cls, family="ops", summary=f"keras.ops operation: {_expr.format(a='x', b='y')}",
            output_shape=broadcast, no_weights_reason="a keras.ops operation, not a layer")


def operands(e) -> list[str]:
    """Positional operands in order: tensors as expressions (one layout), constants as literals."""
    ordered = e.call.kwargs.get("_args")
    if ordered is None:
        ordered = [None] * e.n_inputs
    ranks = {len(s) for s in e.in_shapes}
    layout = e.layout(0) if len(ranks) == 1 and all(len(s) == len(e.in_shapes[0]) for s in e.in_shapes) else "keras"
    out, t = [], 0
    for a in ordered:
        if a is None:
            out.append(e.input(t, layout))
            t += 1
        else:
            c = a.get("const")
            if isinstance(c, bool) or not isinstance(c, (int, float)):
                e.unsupported(f"constant operand {str(c)[:30]!r}")
            out.append(_num(c))
    if t != e.n_inputs:
        e.unsupported("operands do not match the recorded tensors")
    return out, layout


@emits(*BINARY)
def _emit_binary(e):
    args, layout = operands(e)
    if len(args) != 2:
        e.unsupported(f"{len(args)} operands")
    e.output(BINARY[e.layer.class_name].format(a=args[0], b=args[1]), layout=layout)


@emits(*UNARY)
def _emit_unary(e):
    args, layout = operands(e)
    if len(args) != 1:
        e.unsupported(f"{len(args)} operands")
    e.output(UNARY[e.layer.class_name].format(a=args[0]), layout=layout)


def _any_shape(cfg, shapes):
    s = shapes[0]
    axis = cfg.get("axis")
    if axis is None:
        return ()
    axes = {a % len(s) for a in (axis if isinstance(axis, (list, tuple)) else [axis])}
    if cfg.get("keepdims"):
        return tuple(1 if i in axes else d for i, d in enumerate(s))
    return tuple(d for i, d in enumerate(s) if i not in axes)


# Masking(mask_value) in a Keras 3 functional model: ops.any(ops.not_equal(x, v), axis=-1) feeds `mask=`.
declare("ops.Any", family="ops", summary="keras.ops.any recorded in the graph (e.g. the mask of Masking)",
        output_shape=_any_shape, no_weights_reason="a keras.ops operation, not a layer")


@emits("ops.Any")
def _emit_any(e):
    axis = e.cfg.get("axis")
    keep = bool(e.cfg.get("keepdims", False))
    if e.n_inputs != 1 or not (axis is None or isinstance(axis, int)):
        e.unsupported("any with these arguments")
    x = e.input(0)
    e.output(f"{x}.any()" if axis is None else f"{x}.any(dim={int(axis)}, keepdim={keep})")
