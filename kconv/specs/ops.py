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


# tf.keras 2 (TF 2.4+) records a tf.* function called on a Keras tensor as a TFOpLambda layer: config
# "function" is the TF API name ('nn.relu', 'math.multiply', '__operators__.add' for x + y), the first
# argument is the inbound tensor, the others are keyword arguments of the node ({"y": 2.0} or a tensor
# reference). Converted for element-wise functions, with the keras.ops expressions above.
TF_FUNCTIONS = {
    "__operators__.add": "ops.Add", "math.add": "ops.Add", "math.subtract": "ops.Subtract",
    "math.multiply": "ops.Multiply", "math.truediv": "ops.TrueDivide", "math.divide": "ops.Divide",
    "math.maximum": "ops.Maximum", "math.minimum": "ops.Minimum", "math.pow": "ops.Power",
    "nn.relu": "ops.Relu", "math.sigmoid": "ops.Sigmoid", "math.tanh": "ops.Tanh", "math.exp": "ops.Exp",
    "math.log": "ops.Log", "math.sqrt": "ops.Sqrt", "math.square": "ops.Square", "math.abs": "ops.Absolute",
    "math.negative": "ops.Negative",
}


def _tfop_shape(cfg, shapes):
    # element-wise on the first argument (a tensor second operand that broadcasts it is refused below)
    return tuple(shapes[0]) if cfg.get("function") in TF_FUNCTIONS and len(shapes) == 1 else None


declare("TFOpLambda", family="ops",
        summary="tf.keras 2: a tf.* function called on a Keras tensor (config 'function'); element-wise "
                "tf.math / tf.nn functions are converted: " + ", ".join(sorted(TF_FUNCTIONS)),
        output_shape=_tfop_shape, no_weights_reason="a TensorFlow function call recorded in the graph, not a layer")


@emits("TFOpLambda")
def _emit_tfop(e):
    fn = str(e.cfg.get("function"))
    target = TF_FUNCTIONS.get(fn)
    if target is None:
        e.unsupported(f"tf.{fn[:60]} is not converted")
    if e.n_inputs != 1:
        e.unsupported(f"tf.{fn} called with {e.n_inputs} tensors in its first argument")
    kw = {k: v for k, v in e.call.kwargs.items() if k != "name" or v is not None}
    unknown = (set(kw) | set(e.call.tensor_kwargs)) - {"y"}
    if target in UNARY:
        if unknown | ({"y"} & (set(kw) | set(e.call.tensor_kwargs))):
            e.unsupported(f"tf.{fn} with arguments {sorted(set(kw) | set(e.call.tensor_kwargs))}")
        layout = e.layout(0)
        e.output(UNARY[target].format(a=e.input(0, layout)), layout=layout)
        return
    if unknown:
        e.unsupported(f"tf.{fn} with arguments {sorted(unknown)}")
    ref = e.call.tensor_kwargs.get("y")
    if ref is not None:
        if isinstance(ref, list):
            e.unsupported(f"tf.{fn} with a list as y")
        x_shape, y_shape = e.in_shapes[0], e.value(ref).shape
        if x_shape is None or y_shape is None or broadcast({}, [x_shape, y_shape]) != tuple(x_shape):
            e.unsupported(f"tf.{fn} whose operand y {y_shape} broadcasts x {x_shape}")
        a, b, layout = e.input(0), e.kw_input("y"), "keras"
    else:
        y = kw.get("y")
        if isinstance(y, bool) or not isinstance(y, (int, float)):
            e.unsupported(f"tf.{fn} with y {str(y)[:30]!r}")
        layout = e.layout(0)
        a, b = e.input(0, layout), _num(y)
    e.output(BINARY[target].format(a=a, b=b), layout=layout)
