"""``convert --optimize``: an inference-only rewrite of the model description before it is emitted.

No torch, no tensorflow: the rewrite works on the IR (:mod:`kconv.ir`) and on numpy arrays, so what is
emitted, saved and verified is produced by the ordinary pipeline from the rewritten model.

- A BatchNormalization whose only input is the only use of a Conv/Dense-like layer with a linear
  activation is folded into that layer's weights: with s = gamma / sqrt(moving_variance + epsilon),
  kernel' = kernel * s (per output channel) and bias' = (bias - moving_mean) * s + beta, computed in
  float64 and rounded once to float32. This is Keras's own inference formula rearranged
  (keras/src/layers/normalization/batch_normalization.py: ``(x - mean) * rsqrt(var + eps) * gamma +
  beta``), so the folded model agrees with Keras within float32 rounding. The BatchNormalization layer
  stays in the graph as an Identity (no code, no weights): the per-layer trace still has its output.
- Layers that are the identity at inference (Dropout and the noise layers, ActivityRegularization)
  become Identity too: no module, no call.

What is given up: train-mode BatchNormalization (the statistics are gone), train-mode dropout and
noise, and the state-dict contract of the default output (the BatchNormalization keys are gone, the
folded layers gain a bias). :func:`manifest_rows` records where every Keras weight went.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .ir import Layer, Model, Weight

# Identity at inference (kconv.specs.regularization): dropped.
NOOPS = frozenset({"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                   "GaussianNoise", "AlphaDropout", "ActivityRegularization"})

# Producer class -> (the weight keys its output channels index, in storage order, with the Keras
# axis of that index). Depthwise kernels (k.., in, mult) give out channel in * mult + m: both axes.
_CONV = {f"Conv{n}D": {"kernel": (-1,)} for n in (1, 2, 3)}
_CONV.update({f"Conv{n}DTranspose": {"kernel": (-2,)} for n in (1, 2, 3)})  # (k.., out, in)
_CONV.update({f"DepthwiseConv{n}D": {"depthwise_kernel": (-2, -1), "kernel": (-2, -1)} for n in (1, 2)})
_CONV.update({f"SeparableConv{n}D": {"pointwise_kernel": (-1,), "depthwise_kernel": None} for n in (1, 2)})
FOLDABLE = {**_CONV, "Dense": {"kernel": (-1,)}}


@dataclass
class Plan:
    """What :func:`optimize` did, by Keras layer path (nested models as 'outer/inner')."""

    folded: dict = field(default_factory=dict)  # BatchNormalization path -> the layer it was folded into
    dropped: list = field(default_factory=list)  # identity-at-inference layers removed

    def to_json(self) -> dict:
        return {"folded_batchnorm": dict(self.folded), "dropped": list(self.dropped)}

    @classmethod
    def from_json(cls, d) -> "Plan":
        d = d if isinstance(d, dict) else {}
        return cls(dict(d.get("folded_batchnorm") or {}), list(d.get("dropped") or []))


def optimize(model: Model) -> tuple[Model, Plan]:
    """The rewritten model (the input is not changed) and what was done. Deterministic: verify
    repeats it to rebuild the per-layer trace of an --optimize output."""
    plan = Plan()
    out = _rewrite(model, plan, "")
    return out, plan


def _rewrite(model: Model, plan: Plan, prefix: str) -> Model:
    layers = []
    by_name = {ly.name: ly for ly in model.layers}
    users = _users(model)
    new: dict[str, Layer] = {}
    for ly in model.layers:
        if ly.model is not None:
            new[ly.name] = replace(ly, model=_rewrite(ly.model, plan, f"{prefix}{ly.name}/"))
        elif ly.class_name in NOOPS:
            new[ly.name] = _identity(ly)
            plan.dropped.append(prefix + ly.name)
    for ly in model.layers:
        if ly.class_name != "BatchNormalization" or ly.name in new:
            continue
        producer = _foldable_producer(ly, by_name, users, new)
        if producer is None:
            continue
        new[producer.name] = _folded(producer, ly)
        new[ly.name] = _identity(ly)
        plan.folded[prefix + ly.name] = prefix + producer.name
    for ly in model.layers:
        layers.append(new.get(ly.name, ly))
    return replace(model, layers=layers)


def _users(model: Model) -> dict:
    """(layer, node, index) -> how many times a call or the model's outputs read it."""
    out: dict = {}
    for ly in model.layers:
        for call in ly.calls:
            refs = list(call.inputs)
            for v in call.tensor_kwargs.values():
                refs += v if isinstance(v, list) else [v]
            for r in refs:
                key = (r.layer, r.node, r.index)
                out[key] = out.get(key, 0) + 1
    for r in model.outputs:
        key = (r.layer, r.node, r.index)
        out[key] = out.get(key, 0) + 1
    return out


def _identity(ly: Layer) -> Layer:
    return replace(ly, class_name="Identity", config={"name": ly.config.get("name", ly.name)}, weights=[])


def _float32(ly: Layer) -> bool:
    dtype = ly.config.get("dtype")
    text = str(dtype.get("config", dtype) if isinstance(dtype, dict) else dtype)
    return all(w.dtype == "float32" for w in ly.weights) and not any(
        s in text for s in ("mixed", "float16", "bfloat16", "float64", "int8", "int4", "float8"))


def _foldable_producer(bn: Layer, by_name: dict, users: dict, new: dict) -> Layer | None:
    cfg = bn.config
    if len(bn.calls) != 1 or len(bn.calls[0].inputs) != 1 or bn.calls[0].tensor_kwargs or not _float32(bn):
        return None
    if any(w.reader is None for w in bn.weights):
        return None
    ref = bn.calls[0].inputs[0]
    p = by_name.get(ref.layer)
    if p is None or p.name in new or p.class_name not in FOLDABLE or len(p.calls) != 1 or not _float32(p):
        return None
    if users.get((ref.layer, ref.node, ref.index), 0) != 1 or ref.index != 0:
        return None
    pc = p.config
    if pc.get("activation", "linear") not in ("linear", None) or pc.get("lora_rank"):
        return None
    keys = FOLDABLE[p.class_name]
    if any(w.key not in (*keys, "bias") or w.reader is None for w in p.weights):
        return None  # quantized, LoRA factors or anything else kconv does not fold
    shape = p.calls[0].output_shapes[0] if p.calls[0].output_shapes else None
    if not shape:
        return None
    rank = len(shape)
    channel = 1 if (p.class_name != "Dense" and pc.get("data_format") == "channels_first") else rank - 1
    axis = cfg.get("axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1 or (int(axes[0]) + rank if int(axes[0]) < 0 else int(axes[0])) != channel:
        return None
    return p


def _bn_scale_shift(bn: Layer):
    """(s, t) in float64 with BN(x) = x * s + t at inference."""
    ws = {w.key: w.read().astype(np.float64).reshape(-1) for w in bn.weights}
    eps = float(bn.config.get("epsilon", 1e-3))
    var, mean = ws["moving_variance"], ws["moving_mean"]
    gamma = ws["gamma"] if bn.config.get("scale", True) else np.ones_like(var)
    beta = ws["beta"] if bn.config.get("center", True) else np.zeros_like(var)
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _folded(p: Layer, bn: Layer) -> Layer:
    """``p`` with ``bn`` folded in: its channel-indexed kernel scaled, a bias (created if absent)."""
    keys = FOLDABLE[p.class_name]
    cache: dict = {}

    def st():
        if "st" not in cache:
            cache["st"] = _bn_scale_shift(bn)
        return cache["st"]

    note = f"BatchNormalization {bn.name!r} folded in (--optimize)"
    weights = []
    bias_w = None
    for w in p.weights:
        axes = keys.get(w.key) if w.key != "bias" else None
        if w.key == "bias":
            bias_w = w
            continue
        if axes is None:
            weights.append(w)
            continue

        def scaled(w=w, axes=axes):
            k = w.read().astype(np.float64)
            s = st()[0]
            shape = [1] * k.ndim
            if len(axes) == 2:  # depthwise (k.., in, mult): out channel = in * mult + m
                shape[-2], shape[-1] = k.shape[-2], k.shape[-1]
            else:
                shape[axes[0]] = k.shape[axes[0]]
            return (k * s.reshape(shape)).astype(np.float32)

        weights.append(replace(w, reader=scaled, note=note))
    n = int(np.prod(next(w.shape for w in bn.weights if w.key == "moving_mean")))

    def bias():
        s, t = st()
        b = bias_w.read().astype(np.float64).reshape(-1) if bias_w is not None else 0.0
        return (b * s + t).astype(np.float32)

    if bias_w is not None:
        weights.append(replace(bias_w, reader=bias, note=note))
    else:
        weights.append(Weight(name=f"{p.name}/bias (from {bn.name})", key="bias", role="bias", shape=(n,),
                              dtype="float32", trainable=True, reader=bias, note=note))
    cfg = dict(p.config, use_bias=True)
    return replace(p, config=cfg, weights=weights)


def manifest_rows(rows: list, original: Model, plan: Plan) -> list:
    """The manifest's weight rows of an optimized conversion: the rows of the rewritten model, plus
    one per folded BatchNormalization weight saying where it went."""
    if not plan.folded:
        return rows
    folded_by_name = {path.rsplit("/", 1)[-1]: into.rsplit("/", 1)[-1] for path, into in plan.folded.items()}
    targets: dict = {}
    for r in rows:
        if r.get("torch_key"):
            targets.setdefault(r["keras_layer"], []).append(r["torch_key"])
    into_of = {into: bn for bn, into in folded_by_name.items()}
    rows = [dict(r, note=f"BatchNormalization {into_of[r['keras_layer']]!r} folded in (--optimize)")
            if r["keras_layer"] in into_of and r.get("torch_key") else r for r in rows]
    extra = []
    for path, ly in _walk(original):
        if path not in plan.folded:
            continue
        into = folded_by_name[ly.name]
        keys = [k for k in targets.get(into, []) if k.endswith((".weight", ".bias"))]
        for w in ly.weights:
            extra.append({"keras_layer": ly.name, "keras_weight": w.name, "role": w.role,
                          "keras_shape": list(w.shape), "torch_key": None, "folded_into": keys,
                          "note": f"folded into {into} ({', '.join(keys)}) by --optimize"})
    return rows + extra


def _walk(model: Model, prefix: str = ""):
    for ly in model.layers:
        yield prefix + ly.name, ly
        if ly.model is not None:
            yield from _walk(ly.model, f"{prefix}{ly.name}/")

