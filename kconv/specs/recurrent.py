"""Recurrent layers and wrappers: SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed."""
from __future__ import annotations

from ..transforms import Permute, ReorderBlocks, Take
from . import WeightDecl, declare, get

T = Permute((1, 0))
# Keras GRU gates are z, r, h; torch nn.GRU expects r, z, n.
GRU_ORDER = ReorderBlocks(0, (1, 0, 2), ("zrh", "rzn"))


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def _gru_bias(cfg):
    if cfg.get("reset_after", True):
        return [("bias_ih_l0", Take(0).then(GRU_ORDER)), ("bias_hh_l0", Take(1).then(GRU_ORDER))]
    return [("bias_ih_l0", GRU_ORDER)]


def _rnn_shape(cfg, shapes):
    s = shapes[0]
    units = cfg["units"]
    out = (s[0], s[1], units) if cfg.get("return_sequences") else (s[0], units)
    if cfg.get("return_state"):
        n_states = 2 if cfg.get("_cell") == "LSTM" else 1
        return [out] + [(s[0], units)] * n_states
    return out


def _rnn(cls, summary, ih="weight_ih_l0", hh="weight_hh_l0", gate_order=None, bias=None, notes=()):
    kt = T if gate_order is None else T.then(gate_order)
    declare(
        cls,
        family="recurrent",
        summary=summary,
        weights=(
            WeightDecl("kernel", torch=ih, transform=kt),
            WeightDecl("recurrent_kernel", torch=hh, transform=kt),
            WeightDecl("bias", when=_has_bias, torch=bias or "bias_ih_l0"),
        ),
        output_shape=lambda cfg, shapes: _rnn_shape({**cfg, "_cell": cls}, shapes),
        keras_subobjects=("cell",),
        notes=notes,
    )


_rnn("SimpleRNN", "h_t = activation(x_t @ kernel + h_(t-1) @ recurrent_kernel + bias)")
_rnn("LSTM", "long short-term memory; gates i, f, c, o (torch i, f, g, o)",
     notes=("Keras has one bias: it becomes bias_ih, with bias_hh zero",
            "recurrent_activation hard_sigmoid differs between Keras 2 and Keras 3"))
_rnn("GRU", "gated recurrent unit; gates z, r, h (torch r, z, n)", gate_order=GRU_ORDER, bias=_gru_bias,
     notes=("reset_after=False (old default) cannot be expressed by nn.GRU",))


def _inner(cfg, key="layer"):
    sub = cfg.get(key)
    return (sub["class_name"], sub["config"]) if sub else (None, None)


def _wrapped(cfg, key, prefix):
    cls, sub = _inner(cfg, key)
    spec = get(cls) if cls else None
    if spec is None:
        return []
    return [WeightDecl(d.key, role=d.role, trainable=d.trainable, when=lambda c: True,
                       torch=(lambda c, d=d, sub=sub: [(f"{prefix}.{n}", t) for n, t in d.targets(sub)]),
                       why_no_torch=d.why_no_torch)
            for d in spec.weight_decls(sub)]


def _bidirectional_weights(cfg):
    back = "backward_layer" if cfg.get("backward_layer") else "layer"
    return _wrapped(cfg, "layer", "forward") + _wrapped(cfg, back, "backward")


def _bidirectional_shape(cfg, shapes):
    cls, sub = _inner(cfg)
    out = get(cls).output_shape(sub, shapes)
    outs = out if isinstance(out, list) else [out]
    y = outs[0]
    if cfg.get("merge_mode", "concat") == "concat":
        y = (*y[:-1], None if y[-1] is None else 2 * y[-1])
    if cfg.get("merge_mode", "concat") is None:
        return [y, y] + outs[1:] * 2
    return [y] + outs[1:] * 2 if len(outs) > 1 else y


declare(
    "Bidirectional",
    family="recurrent",
    summary="runs a recurrent layer forwards and backwards and merges the outputs (merge_mode)",
    weights=_bidirectional_weights,
    output_shape=_bidirectional_shape,
    keras_subobjects=("forward_layer", "backward_layer"),
)


def _td_shape(cfg, shapes):
    cls, sub = _inner(cfg)
    s = shapes[0]
    inner = get(cls).output_shape(sub, [(s[0], *s[2:])])
    return (inner[0], s[1], *inner[1:])


declare(
    "TimeDistributed",
    family="recurrent",
    summary="applies the wrapped layer to every time step",
    weights=lambda cfg: _wrapped(cfg, "layer", "layer"),
    output_shape=_td_shape,
    keras_subobjects=("layer",),
)
