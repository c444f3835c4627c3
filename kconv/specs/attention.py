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


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402


def _tensor(e, i, name):
    """Positional input ``i`` or tensor keyword ``name`` (expression, its implicit mask) or (None, None)."""
    if i < e.n_inputs:
        v = e._v(e.call.inputs[i])
        return e.input(i), v.mask, e.call.inputs[i]
    ref = e.call.tensor_kwargs.get(name)
    if ref is None or isinstance(ref, list):
        return None, None, None
    v = e.values[(ref.layer, ref.node, ref.index)]
    return e.gen.convert_layout(v, "keras"), v.mask, ref


def _kw_mask(e, name, implicit):
    ref = e.call.tensor_kwargs.get(name)
    if ref is not None and not isinstance(ref, list):
        return e.values[(ref.layer, ref.node, ref.index)].expr
    return implicit


def _int_dim(cfg, key):
    v = cfg.get(key)
    if isinstance(v, (list, tuple)):
        if len(v) != 1:
            return "multi"
        v = v[0]
    return None if v is None else int(v)


@emits("MultiHeadAttention")
def _emit_mha(e):
    cfg = e.cfg
    e.mask_read = True
    q, q_mask, _ = _tensor(e, 0, "query")
    v, v_mask, v_ref = _tensor(e, 1, "value")
    k, k_mask, k_ref = _tensor(e, 2, "key")
    if q is None or v is None:
        e.unsupported("query/value inputs not found")
    shapes = [e.in_shapes[0]] + [None, None]
    for j, ref in ((1, v_ref), (2, k_ref)):
        if ref is not None:
            shapes[j] = e.values[(ref.layer, ref.node, ref.index)].shape
    if any(s is not None and len(s) != 3 for s in shapes):
        e.unsupported("inputs of rank other than 3 (batch, time, features) are not converted")
    axes = cfg.get("attention_axes")
    if axes is not None and list(axes if isinstance(axes, (list, tuple)) else [axes]) not in ([1], [-2]):
        e.unsupported(f"attention_axes={axes!r} (only attention over the time axis is converted)")
    out_dim = _int_dim(cfg, "output_shape")
    if out_dim == "multi":
        e.unsupported("a multi-dimensional output_shape is not converted")
    heads, key_dim = int(cfg["num_heads"]), int(cfg["key_dim"])
    value_dim = int(cfg.get("value_dim") or key_dim)
    qd, vd = shapes[0][-1], shapes[1][-1]
    kd = shapes[2][-1] if shapes[2] is not None else vd
    out_dim = qd if out_dim is None else out_dim
    q_mask = _kw_mask(e, "query_mask", q_mask)
    v_mask = _kw_mask(e, "value_mask", v_mask)
    k_mask = _kw_mask(e, "key_mask", k_mask) if k is not None and k_ref != v_ref else None
    att = e.call.tensor_kwargs.get("attention_mask")
    causal = bool(e.call.kwargs.get("use_causal_mask", False))
    if cfg.get("sliding_window"):
        e.unsupported("sliding_window is not converted")
    # keras/src/layers/attention/multi_head_attention.py _compute_attention_mask: AND of every mask.
    parts = []
    if q_mask is not None:
        parts.append(f"{q_mask}[:, :, None]")
    if v_mask is not None:
        parts.append(f"{v_mask}[:, None, :]")
    if k_mask is not None:
        parts.append(f"{k_mask}[:, None, :]")
    if causal:
        parts.append(f"torch.ones({q}.shape[1], {v}.shape[1], dtype=torch.bool).tril()[None]")
    if att is not None:
        parts.append(f"{e.values[(att.layer, att.node, att.index)].expr}.to(torch.bool)")
    mask = None
    if parts:
        mask = e.temp("mask")
        e.line(f"{mask} = " + " & ".join(f"({p})" if " " in p else p for p in parts))
    e.gen.helpers.add("KerasMultiHeadAttention")
    m = e.module(f"KerasMultiHeadAttention({qd}, {kd}, {vd}, {heads}, {key_dim}, {value_dim}, {out_dim}, "
                 f"bias={bool(cfg.get('use_bias', True))})")
    tmp = e.temp("run")
    e.line(f"{tmp} = {m}({q}, {v}, {k if k is not None else 'None'}, {mask or 'None'})")
    e.output(f"{tmp}[0]", mask=q_mask)
    if e.call.kwargs.get("return_attention_scores"):
        e.output(f"{tmp}[1]", index=1, mask=None)


@emits("Attention", "AdditiveAttention")
def _emit_attention(e):
    cfg = e.cfg
    additive = e.layer.class_name == "AdditiveAttention"
    if cfg.get("causal"):
        e.unsupported("the Keras 2 'causal' option is not converted")
    if e.n_inputs not in (2, 3):
        e.unsupported("inputs must be [query, value] or [query, value, key]")
    q, v = e.input(0), e.input(1)
    k = e.input(2) if e.n_inputs == 3 else v
    q_mask, v_mask = e.mask(0), e.mask(1)
    causal = bool(e.call.kwargs.get("use_causal_mask", False))
    use_scale = cfg.get("use_scale", additive)
    dim = e.in_shapes[0][-1]
    if additive or cfg.get("score_mode", "dot") == "concat":
        if use_scale:
            shape = f"({int(dim)},)" if additive else "()"
            sc = e.module("nn.Module()")
            e.cls.init.append(f"{sc}.scale = nn.Parameter(torch.zeros({shape}))")
        else:
            sc = e.module("nn.Module()")
        if not additive:
            e.cls.init.append(f"{sc}.concat_score_weight = nn.Parameter(torch.zeros(()))")
        t = f"torch.tanh({sc}.scale * ({q}[:, :, None, :] + {k}[:, None, :, :]))" if use_scale and not additive \
            else f"torch.tanh({q}[:, :, None, :] + {k}[:, None, :, :])"
        scores = f"({sc}.scale * {t}).sum(-1)" if use_scale and additive else f"{t}.sum(-1)"
        if not additive:
            scores = f"{sc}.concat_score_weight * {scores}"
    elif cfg.get("score_mode", "dot") == "dot":
        scores = f"torch.matmul({q}, {k}.transpose(-2, -1))"
        if use_scale:
            sc = e.module("nn.Module()")
            e.cls.init.append(f"{sc}.scale = nn.Parameter(torch.zeros(()))")
            scores = f"{scores} * {sc}.scale"
    else:
        e.unsupported(f"score_mode {cfg.get('score_mode')!r}")
    s = e.temp("scores")
    e.line(f"{s} = {scores}")
    # keras/src/layers/attention/attention.py _apply_scores: masked scores get -1e9 subtracted.
    parts = []
    if v_mask is not None:
        parts.append(f"{v_mask}[:, None, :]")
    if causal:
        parts.append(f"torch.ones({s}.shape[-2], {s}.shape[-1], dtype=torch.bool).tril()[None]")
    if parts:
        e.line(f"{s} = torch.where(~({' & '.join(parts)}), {s} - 1e9, {s})")
    w = e.temp("weights")
    e.line(f"{w} = torch.softmax({s}, dim=-1)")
    out = f"torch.matmul({w}, {v})"
    if q_mask is not None:
        out = f"torch.where({q_mask}[:, :, None], {out}, 0.0)"
    e.output(out, mask=q_mask)
    if e.call.kwargs.get("return_attention_scores"):
        e.output(w, index=1, mask=None)
