"""Attention layers."""
from __future__ import annotations

import re

from . import Choice, WeightDecl, declare


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
    uses_mask=True, output_mask="keep",
    family="attention",
    summary="multi-head attention with separate query/key/value/output projections",
    weights=_mha_weights,
    output_shape=_mha_shape,
    keras_subobjects=("query_dense", "key_dense", "value_dense", "output_dense"),
    notes=("key_dim need not equal model_dim/heads: torch nn.MultiheadAttention cannot express that",),
)

declare(
    "Attention",
    uses_mask=True,
    family="attention",
    summary="dot-product (Luong) attention",
    weights=(WeightDecl("scale", when=lambda c: c.get("use_scale", False), torch="scale"),
             WeightDecl("concat_score_weight", when=lambda c: c.get("score_mode") == "concat",
                        torch="concat_score_weight")),
    output_shape=lambda cfg, shapes: shapes[0],
    choices={"score_mode": Choice(("dot", "concat"))},  # keras/src/layers/attention/attention.py __init__
)

declare(
    "AdditiveAttention",
    uses_mask=True,
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
        v = e.value(e.call.inputs[i])
        return e.input(i), v.mask, e.call.inputs[i]
    ref = e.call.tensor_kwargs.get(name)
    if ref is None or isinstance(ref, list):
        return None, None, None
    v = e.value(ref)
    return e.as_layout(v, "keras"), v.mask, ref


def _kw_mask(e, name, implicit):
    ref = e.call.tensor_kwargs.get(name)
    if ref is not None and not isinstance(ref, list):
        return e.value(ref).expr
    return implicit


_EINSUM_EQ = re.compile(r"[a-z]{1,26},[a-z]{1,26}->[a-z]{1,26}")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _checked_eq(eq):
    """An einsum equation bound for generated code: only ``[a-z]+,[a-z]+->[a-z]+``."""
    if not _EINSUM_EQ.fullmatch(eq):
        raise ValueError(f"unexpected einsum equation {eq!r}")
    return eq


def _proj_equation(free_dims, bound_dims, output_dims):
    """keras/src/layers/attention/multi_head_attention.py _build_proj_equation (equation only)."""
    free = _LETTERS[:free_dims]
    bound = _LETTERS[free_dims:free_dims + bound_dims]
    out = _LETTERS[free_dims + bound_dims:free_dims + bound_dims + output_dims]
    return _checked_eq(f"{free}{bound},{bound}{out}->{free}{out}")


def _attention_equations(rank, attn_axes):
    """multi_head_attention.py _build_attention_equation: (dot-product, combine, scores rank)."""
    target = _LETTERS[:rank]
    batch_dims = [i for i in range(rank) if i not in attn_axes and i != rank - 1]
    source, offset = "", rank
    for i in range(rank):
        if i in batch_dims or i == rank - 1:
            source += target[i]
        else:
            source += _LETTERS[offset]
            offset += 1
    product = "".join([target[i] for i in batch_dims] + [target[i] for i in attn_axes]
                      + [source[i] for i in attn_axes])
    return (_checked_eq(f"{source},{target}->{product}"), _checked_eq(f"{product},{source}->{target}"),
            len(product))


def _tuple_shape(v):
    if v is None:
        return None
    return tuple(int(d) for d in (v if isinstance(v, (list, tuple)) else (v,)))


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
            shapes[j] = e.value(ref).shape
    rank = len(shapes[0])
    if rank < 3 or any(s is not None and len(s) != rank for s in shapes):
        e.unsupported("query, value and key must share one rank of at least 3 (batch, ..., features)")
    axes = cfg.get("attention_axes")
    if axes is not None:
        axes = tuple(int(a) for a in (axes if isinstance(axes, (list, tuple)) else [axes]))
        # multi_head_attention.py _build_attention: negative axes count from the projected rank - 1.
        axes = tuple(a if a >= 0 else rank + a for a in axes)
        if not axes or len(set(axes)) != len(axes) or any(not 1 <= a <= rank - 2 for a in axes):
            e.unsupported(f"attention_axes={cfg.get('attention_axes')!r}: only distinct axes between the "
                          f"batch and feature axes of rank-{rank} inputs are converted")
    else:
        axes = tuple(range(1, rank - 1))
    out_shape = _tuple_shape(cfg.get("output_shape"))
    general = rank != 3 or (out_shape is not None and len(out_shape) != 1)
    heads, key_dim = int(cfg["num_heads"]), int(cfg["key_dim"])
    value_dim = int(cfg.get("value_dim") or key_dim)
    qd, vd = shapes[0][-1], shapes[1][-1]
    kd = shapes[2][-1] if shapes[2] is not None else vd
    q_mask = _kw_mask(e, "query_mask", q_mask)
    v_mask = _kw_mask(e, "value_mask", v_mask)
    k_mask = _kw_mask(e, "key_mask", k_mask) if k is not None and k_ref != v_ref else None
    att = e.call.tensor_kwargs.get("attention_mask")
    causal = bool(e.call.kwargs.get("use_causal_mask", False))
    if cfg.get("sliding_window"):
        e.unsupported("sliding_window is not converted")
    if rank != 3 and (q_mask is not None or v_mask is not None or k_mask is not None):
        e.unsupported("Keras masks on query/value/key inputs of rank > 3 are not converted "
                      "(an explicit attention_mask is)")
    # keras/src/layers/attention/multi_head_attention.py _compute_attention_mask: AND of every mask.
    parts, ranks = [], []
    if q_mask is not None:
        parts.append(f"{q_mask}[:, :, None]")
        ranks.append(3)
    if v_mask is not None:
        parts.append(f"{v_mask}[:, None, :]")
        ranks.append(3)
    if k_mask is not None:
        parts.append(f"{k_mask}[:, None, :]")
        ranks.append(3)
    if causal:
        # _compute_causal_mask: (1, T, S) with T, S the sizes of axis 1 of query and value.
        parts.append(f"torch.ones({q}.shape[1], {v}.shape[1], dtype=torch.bool, device={q}.device).tril()[None]")
        ranks.append(3)
    if att is not None:
        parts.append(f"{e.value(att).expr}.to(torch.bool)")
        att_shape = e.value(att).shape
        if att_shape is None:
            e.unsupported("attention_mask of unknown rank")
        ranks.append(len(att_shape))
    if not general:
        out_dim = qd if out_shape is None else out_shape[0]
        mask = None
        if parts:
            mask = e.temp("mask")
            e.line(f"{mask} = " + " & ".join(_grouped(p) if len(parts) > 1 else p for p in parts))
        e.runtime("KerasMultiHeadAttention")
        m = e.module(f"KerasMultiHeadAttention(q_dim={qd}, k_dim={kd}, v_dim={vd}, heads={heads}, "
                     f"key_dim={key_dim}, value_dim={value_dim}, out_dim={out_dim}, "
                     f"bias={bool(cfg.get('use_bias', True))})")
    else:
        out_shape = out_shape or (int(qd),)
        proj_eq = _proj_equation(rank - 1, 1, 2)
        dot_eq, combine_eq, scores_rank = _attention_equations(rank + 1, axes)
        out_eq = _proj_equation(rank - 1, 2, len(out_shape))
        n = len(axes)
        norm_dims = tuple(range(scores_rank - n, scores_rank))
        mask = None
        if parts:
            mask = e.temp("mask")
            e.line(f"{mask} = " + " & ".join(_grouped(p) if len(parts) > 1 else p for p in parts))
            # _masked_softmax: singleton axes inserted before the 2 * len(attention_axes) last ones.
            mrank = max(ranks)
            if mrank > scores_rank:
                e.unsupported(f"a rank-{mrank} attention mask for rank-{scores_rank} attention scores")
            if mrank < scores_rank:
                if mrank < 2 * n:
                    e.unsupported(f"a rank-{mrank} attention mask with {n} attention axes "
                                  "(Keras cannot expand it either)")
                idx = ", ".join(["..."] + ["None"] * (scores_rank - mrank) + [":"] * (2 * n))
                e.line(f"{mask} = {mask}[{idx}]")
        e.runtime("KerasMultiHeadAttentionEinsum")
        m = e.module(f"KerasMultiHeadAttentionEinsum(q_dim={qd}, k_dim={kd}, v_dim={vd}, heads={heads}, "
                     f"key_dim={key_dim}, value_dim={value_dim}, out_shape={out_shape!r}, "
                     f"bias={bool(cfg.get('use_bias', True))}, proj_eq={proj_eq!r}, "
                     f"dot_eq={dot_eq!r}, combine_eq={combine_eq!r}, out_eq={out_eq!r}, "
                     f"norm_dims={norm_dims!r})")
    # Keras 3.15 takes ops.dot_product_attention for rank-3 inputs without dropout or returned scores:
    # a fully masked query row then attends uniformly. The explicit path (_masked_softmax -> Softmax)
    # zeroes it instead (keras/src/layers/attention/multi_head_attention.py _compute_attention).
    explicit = general or float(cfg.get("dropout") or 0) > 0 or bool(e.call.kwargs.get("return_attention_scores"))
    extra = "" if explicit or not mask else ", zero_masked_rows=False"
    args = "".join([f", key={k}" if k is not None else "", f", mask={mask}" if mask else "", extra])
    call = f"{m}({q}, {v}{args})"
    if e.call.kwargs.get("return_attention_scores"):
        scores = e.var(1, suffix="scores")
        e.line(f"{e.var(0)}, {scores} = {call}")
        e.output(e.var(0), mask=q_mask)
        e.output(scores, index=1, mask=None)
    else:
        e.output(f"{call}[0]", mask=q_mask)


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
            sc = e.parameter("scale", f"torch.zeros({f'({int(dim)},)' if additive else '()'})")
        if not additive:
            sc = e.parameter("concat_score_weight", "torch.zeros(())")
        t = f"torch.tanh({sc}.scale * ({q}[:, :, None, :] + {k}[:, None, :, :]))" if use_scale and not additive \
            else f"torch.tanh({q}[:, :, None, :] + {k}[:, None, :, :])"
        scores = f"({sc}.scale * {t}).sum(-1)" if use_scale and additive else f"{t}.sum(-1)"
        if not additive:
            scores = f"{sc}.concat_score_weight * {scores}"
    elif cfg.get("score_mode", "dot") == "dot":
        scores = f"torch.matmul({q}, {k}.transpose(-2, -1))"
        if use_scale:
            sc = e.parameter("scale", "torch.zeros(())")
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
        parts.append(f"torch.ones({s}.shape[-2], {s}.shape[-1], dtype=torch.bool, device={s}.device).tril()[None]")
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


def _grouped(expr: str) -> str:
    """``expr`` in parentheses when it has an operator outside brackets (an operand of ``&``)."""
    depth = 0
    for c in expr:
        depth += c in "([{"
        depth -= c in ")]}"
        if c == " " and depth == 0:
            return f"({expr})"
    return expr
