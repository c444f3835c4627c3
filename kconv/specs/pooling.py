"""Pooling: Max/Average 1D/2D/3D and their global forms."""
from __future__ import annotations

from . import declare
from ._shapes import assemble, channels_last, pool_length, spatial, tup


def pool_shape(n):
    def shape(cfg, shapes):
        b, dims, c = spatial(shapes[0], cfg)
        p = tup(cfg.get("pool_size", 2), n)
        s = cfg.get("strides")
        s = p if s is None else tup(s, n)
        out = [pool_length(dims[i], p[i], cfg.get("padding", "valid"), s[i]) for i in range(n)]
        return assemble(b, out, c, cfg)

    return shape


def global_shape(cfg, shapes):
    b, dims, c = spatial(shapes[0], cfg)
    if cfg.get("keepdims"):
        return assemble(b, [1] * len(dims), c, cfg)
    return (b, c)


for n in (1, 2, 3):
    for kind, verb in (("Max", "maximum"), ("Average", "average")):
        declare(
            f"{kind}Pooling{n}D",
            f"{kind[:3] if kind == 'Average' else kind}Pool{n}D",
            family="pooling",
            summary=f"{verb} over {n}D windows (padding valid/same)",
            output_shape=pool_shape(n),
            no_weights_reason="pooling, no parameters",
            notes=("'same' average pooling excludes the padding from the divisor",) if kind == "Average" else (),
        )
        declare(
            f"Global{kind}Pooling{n}D",
            f"Global{kind[:3] if kind == 'Average' else kind}Pool{n}D",
            family="pooling",
            summary=f"{verb} over all {n}D positions (keepdims optional)",
            output_shape=global_shape,
            no_weights_reason="pooling, no parameters",
        )
