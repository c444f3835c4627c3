"""Attention layers."""
from __future__ import annotations

from . import WeightDecl, declare


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def _mha_weights(cfg):
    out = []
    for part in ("query", "key", "value", "output"):
        out.append(WeightDecl("kernel", role=f"{part}_kernel", torch=f"{part}_kernel"))
        out.append(WeightDecl("bias", role=f"{part}_bias", when=_has_bias, torch=f"{part}_bias"))
    return [d for d in out if d.when(cfg)]


def _mha_shape(cfg, shapes):
    q = shapes[0]
    out = cfg.get("output_shape")
    if out is None:
        tail = (q[-1],)
    else:
        tail = tuple(out) if isinstance(out, (list, tuple)) else (out,)
    return (*q[:-1], *tail)


declare(
    "MultiHeadAttention",
    family="attention",
    summary="multi-head attention with separate query/key/value/output projections",
    weights=_mha_weights,
    output_shape=_mha_shape,
    keras_subobjects=("query_dense", "key_dense", "value_dense", "output_dense"),
    notes=("key_dim need not equal model_dim/heads: torch nn.MultiheadAttention cannot express that",),
)

declare(
    "Attention",
    family="attention",
    summary="dot-product (Luong) attention",
    weights=(WeightDecl("scale", when=lambda c: c.get("use_scale", False), torch="scale"),
             WeightDecl("concat_score_weight", when=lambda c: c.get("score_mode") == "concat",
                        torch="concat_score_weight")),
    output_shape=lambda cfg, shapes: shapes[0],
)

declare(
    "AdditiveAttention",
    family="attention",
    summary="additive (Bahdanau) attention",
    weights=(WeightDecl("scale", when=lambda c: c.get("use_scale", True), torch="scale"),),
    output_shape=lambda cfg, shapes: shapes[0],
)
