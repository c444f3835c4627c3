"""Reshaping layers."""
from __future__ import annotations

from . import declare
from ._shapes import assemble, prod, spatial, tup

NO_PARAMS = "reshapes data, no parameters"


def _flatten(cfg, shapes):
    s = shapes[0]
    return (s[0], prod(s[1:]))


def _reshape(cfg, shapes):
    target = list(cfg["target_shape"])
    if -1 in target:
        n = prod(shapes[0][1:])
        known = prod([d for d in target if d != -1])
        target[target.index(-1)] = None if n is None or not known else n // known
    return (shapes[0][0], *target)


def _permute(cfg, shapes):
    s = shapes[0]
    return (s[0], *(s[d] for d in cfg["dims"]))


def _crop_pairs(v, n):
    if isinstance(v, int):
        return [(v, v)] * n
    v = list(v)
    if n == 1:
        return [tuple(v) if len(v) == 2 else (v[0], v[0])]
    return [tuple(p) if isinstance(p, (list, tuple)) else (p, p) for p in v]


def _cropping(n, sign, key):
    def final(cfg, shapes):
        pairs = _crop_pairs(cfg.get(key, 1), n)
        if n == 1:
            b, dims, c = shapes[0][0], [shapes[0][1]], shapes[0][2]
            d = dims[0]
            return (b, None if d is None else d + sign * sum(pairs[0]), c)
        b, dims, c = spatial(shapes[0], cfg)
        out = [None if d is None else d + sign * sum(p) for d, p in zip(dims, pairs)]
        return assemble(b, out, c, cfg)

    return final


def _upsampling(n):
    def shape(cfg, shapes):
        if n == 1:
            b, t, c = shapes[0]
            k = cfg.get("size", 2)
            return (b, None if t is None else t * k, c)
        b, dims, c = spatial(shapes[0], cfg)
        size = tup(cfg.get("size", 2), n)
        return assemble(b, [None if d is None else d * k for d, k in zip(dims, size)], c, cfg)

    return shape


declare("Flatten", family="reshaping", summary="flattens all but the batch axis (in the model's memory order)",
        output_shape=_flatten, no_weights_reason=NO_PARAMS,
        notes=("after an NHWC conv, Flatten orders features H,W,C",))
declare("Reshape", family="reshaping", summary="reshapes all but the batch axis to target_shape",
        output_shape=_reshape, no_weights_reason=NO_PARAMS)
declare("Permute", family="reshaping", summary="permutes the non-batch axes (dims are 1-based)",
        output_shape=_permute, no_weights_reason=NO_PARAMS)
declare("RepeatVector", family="reshaping", summary="(batch, f) -> (batch, n, f)",
        output_shape=lambda cfg, shapes: (shapes[0][0], cfg["n"], shapes[0][1]), no_weights_reason=NO_PARAMS)
for n in (1, 2, 3):
    declare(f"Cropping{n}D", family="reshaping", summary=f"crops {n}D borders",
            output_shape=_cropping(n, -1, "cropping"), no_weights_reason=NO_PARAMS)
    declare(f"ZeroPadding{n}D", family="reshaping", summary=f"pads {n}D borders with zeros",
            output_shape=_cropping(n, +1, "padding"), no_weights_reason=NO_PARAMS)
    declare(f"UpSampling{n}D", family="reshaping",
            summary=f"repeats {n}D positions by `size`" + (" (nearest or bilinear)" if n == 2 else ""),
            output_shape=_upsampling(n), no_weights_reason=NO_PARAMS,
            notes=("bilinear uses half-pixel centres: torch align_corners=False",) if n == 2 else ())
