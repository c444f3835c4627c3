"""Merging layers: elementwise ops, Concatenate, Dot."""
from __future__ import annotations

from . import declare
from ._shapes import axis_index

NO_PARAMS = "combines inputs, no parameters"


def broadcast(cfg, shapes):
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        known = [d for d in dims if d is not None and d != 1]
        out.append(known[0] if known else (1 if all(d == 1 for d in dims) else None))
    return tuple(out)


def concat(cfg, shapes):
    rank = len(shapes[0])
    ax = axis_index(cfg.get("axis", -1), rank)
    out = list(shapes[0])
    dims = [s[ax] for s in shapes]
    out[ax] = None if any(d is None for d in dims) else sum(dims)
    return tuple(out)


def dot(cfg, shapes):
    a, b = shapes
    axes = cfg.get("axes", -1)
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes, axes]
    ax_a, ax_b = axis_index(axes[0], len(a)), axis_index(axes[1], len(b))
    out = [d for i, d in enumerate(a) if i != ax_a] + [d for i, d in enumerate(b) if i not in (0, ax_b)]
    return tuple(out) if len(out) > 1 else (out[0], 1)


for cls, what in [("Add", "sum"), ("Subtract", "difference (two inputs)"), ("Multiply", "product"),
                  ("Average", "mean"), ("Maximum", "maximum"), ("Minimum", "minimum")]:
    declare(cls, family="merging", summary=f"elementwise {what} of its inputs", output_shape=broadcast,
            no_weights_reason=NO_PARAMS, output_mask="merge")
declare("Concatenate", family="merging", summary="concatenates its inputs along axis", output_shape=concat,
        no_weights_reason=NO_PARAMS, output_mask="merge")
declare("Dot", family="merging", summary="batched dot product along axes (optionally L2-normalised)",
        output_shape=dot, no_weights_reason=NO_PARAMS, uses_mask=True)


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402

_OPS = {"Add": " + ", "Multiply": " * "}


def _common_layout(e) -> str:
    """The layout the merge computes in: the one most of its highest-rank inputs are held in (the
    first one's on a tie), so two channels-first tensors merge without a permute."""
    top = max(len(s) for s in e.in_shapes)
    held = [e.layout(i) for i, s in enumerate(e.in_shapes) if len(s) == top and top >= 3]
    if not held:
        return "keras"
    cf = held.count("cf")
    return held[0] if 2 * cf == len(held) else ("cf" if 2 * cf > len(held) else "keras")


def _merge_inputs(e):
    """(input expressions, layout): all inputs in one layout; an input of lower rank is expanded
    after the batch axis until the ranks agree, as Keras does (keras/src/layers/merging/base_merge.py
    call: expand_dims(x, axis=1)), not broadcast from the right as torch would."""
    ranks = [len(s) for s in e.in_shapes]
    top = max(ranks)
    layout = _common_layout(e)
    if layout == "cf" and any(2 < r < top for r in ranks):
        layout = "keras"
    xs = []
    for i, r in enumerate(ranks):
        if r == top:
            xs.append(e.input(i, layout))
        elif layout == "cf" and r == 2:  # (batch, C) -> Keras (batch, 1.., C) = cf (batch, C, 1..)
            xs.append(f"{e.input(i, 'keras')}[:, :, {', '.join(['None'] * (top - r))}]")
        else:
            xs.append(f"{e.input(i, 'keras')}[:, {', '.join(['None'] * (top - r))}]")
    return xs, layout


@emits("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def _emit_elementwise(e):
    xs, layout = _merge_inputs(e)
    cls = e.layer.class_name
    if cls in _OPS:
        expr = _OPS[cls].join(xs)
    elif cls == "Subtract":
        if len(xs) != 2:
            e.unsupported("Subtract needs exactly two inputs")
        expr = f"{xs[0]} - {xs[1]}"
    elif cls == "Average":
        expr = f"({' + '.join(xs)}) / {len(xs)}"
    else:
        fn = "torch.maximum" if cls == "Maximum" else "torch.minimum"
        expr = xs[0]
        for x in xs[1:]:
            expr = f"{fn}({expr}, {x})"
    e.output(expr, layout=layout, fresh=len(xs) > 1)


@emits("Concatenate")
def _emit_concat(e):
    xs, layout = _merge_inputs(e)  # Keras concatenates inputs of one rank only
    dim = e.torch_dim(int(e.cfg.get("axis", -1)), 0, layout)
    e.output(f"torch.cat([{', '.join(xs)}], dim={dim})", layout=layout)


@emits("Dot")
def _emit_dot(e):
    a, b = e.input(0, "keras"), e.input(1, "keras")
    ra, rb = len(e.in_shapes[0]), len(e.in_shapes[1])
    axes = e.cfg.get("axes", -1)
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes, axes]
    ax_a, ax_b = axis_index(int(axes[0]), ra), axis_index(int(axes[1]), rb)
    if e.cfg.get("normalize"):
        a = f"F.normalize({a}, dim={ax_a}, eps=1e-12)"
        b = f"F.normalize({b}, dim={ax_b}, eps=1e-12)"
    if ra == 2 and rb == 2:
        e.output(f"({a} * {b}).sum(dim=1, keepdim=True)")
    elif ra == 3 and rb == 3:
        # batch_dot: contract ax_a of a with ax_b of b -> (batch, other_a, other_b)
        a2 = a if ax_a == 2 else f"{a}.transpose(1, 2)"
        b2 = b if ax_b == 1 else f"{b}.transpose(1, 2)"
        e.output(f"torch.bmm({a2}, {b2})")
    else:
        e.unsupported(f"Dot of rank-{ra} and rank-{rb} inputs")
