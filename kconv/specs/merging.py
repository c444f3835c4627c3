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
            no_weights_reason=NO_PARAMS)
declare("Concatenate", family="merging", summary="concatenates its inputs along axis", output_shape=concat,
        no_weights_reason=NO_PARAMS)
declare("Dot", family="merging", summary="batched dot product along axes (optionally L2-normalised)",
        output_shape=dot, no_weights_reason=NO_PARAMS)
