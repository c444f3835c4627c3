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
- A convolution whose input is padded one more on one side than on the other (TF's 'same' with an
  odd total, e.g. stride 2 on an even size; or a ZeroPadding layer read only by a 'valid'
  convolution, as keras.applications pads before strided depthwise convolutions) gets a kernel one
  longer on that axis, its extra row zero on the side that was padded less, and padding the larger
  side on both: torch's convolutions pad symmetrically, so the padded copy (``F.pad``) goes away. A
  zero tap adds an exact zero for any finite input (an inf or nan input row that only the zero tap
  reads gives nan where Keras gives that value times nothing: the kernel taps it never read).

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
    # convolution path -> {"padding": ZeroPadding path or "same", "kernel_zeros": [[before, after], ...]}
    padded: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"folded_batchnorm": dict(self.folded), "dropped": list(self.dropped),
                "symmetric_padding": dict(self.padded)}

    @classmethod
    def from_json(cls, d) -> "Plan":
        d = d if isinstance(d, dict) else {}
        return cls(dict(d.get("folded_batchnorm") or {}), list(d.get("dropped") or []),
                   dict(d.get("symmetric_padding") or {}))

    def padding_layers(self) -> dict:
        """ZeroPadding path -> the convolution it was folded into (its output changed shape: symmetric)."""
        return {v["padding"]: conv for conv, v in self.padded.items() if v["padding"] != "same"}


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
        if ly.class_name in _PADDABLE:
            _fold_padding(new.get(ly.name, ly), by_name, users, new, plan, prefix)
    for ly in model.layers:
        layers.append(new.get(ly.name, ly))
    return replace(model, layers=layers)


# Convolutions whose input padding can move into the kernel: class -> the kernel weight keys (Keras
# layout: spatial axes first). Not the transposed ones (their padding crops the output).
_PADDABLE = {**{f"Conv{n}D": ("kernel",) for n in (1, 2, 3)},
             **{f"DepthwiseConv{n}D": ("depthwise_kernel", "kernel") for n in (1, 2)},
             **{f"SeparableConv{n}D": ("depthwise_kernel",) for n in (1, 2)}}


def _fold_padding(conv: Layer, by_name: dict, users: dict, new: dict, plan: Plan, prefix: str):
    """Make ``conv``'s input padding symmetric (see the module docstring); records it in ``new`` and
    ``plan``. Left alone: dilation, unknown sizes, Theano padding, a padding another layer reads too,
    a padding two or more longer on one side."""
    from .specs._shapes import tup
    from .specs.conv import same_pads
    from .specs.reshaping import border_pairs

    cfg = conv.config
    n = len(conv.calls[0].output_shapes[0]) - 2 if len(conv.calls) == 1 and conv.calls[0].output_shapes else 0
    if n < 1 or len(conv.calls[0].inputs) != 1 or not _float32(conv) or cfg.get("_theano_padding"):
        return
    if any(int(d) != 1 for d in tup(cfg.get("dilation_rate", 1), n)) or cfg.get("lora_rank"):
        return
    keys = _PADDABLE[conv.class_name]
    if any(w.key not in (*keys, "bias", "pointwise_kernel") or w.reader is None for w in conv.weights):
        return  # quantized or anything else kconv does not rewrite
    k = tuple(int(v) for v in tup(cfg["kernel_size"], n))
    first = cfg.get("data_format") == "channels_first"
    ref = conv.calls[0].inputs[0]
    src = by_name.get(ref.layer)
    pad_layer = None
    if cfg.get("padding") == "same":
        shape = src.calls[ref.node].output_shapes[ref.index] if src is not None and src.calls else None
        dims = list(shape[2:] if first else shape[1:-1]) if shape else [None]
        pairs = same_pads(dims, k, tup(cfg.get("strides", 1), n), (1,) * n)
        if pairs is None:
            return
    elif cfg.get("padding", "valid") == "valid" and src is not None and src.class_name == f"ZeroPadding{n}D":
        if src.name in new or len(src.calls) != 1 or users.get((ref.layer, ref.node, ref.index), 0) != 1:
            return
        if src.config.get("data_format", cfg.get("data_format")) != cfg.get("data_format"):
            return
        pad_layer = src
        pairs = [(int(lo), int(hi)) for lo, hi in border_pairs(src.config.get("padding", 1), n)]
    else:
        return
    if all(lo == hi for lo, hi in pairs) or any(abs(hi - lo) > 1 for lo, hi in pairs):
        return
    zeros = [(max(lo, hi) - lo, max(lo, hi) - hi) for lo, hi in pairs]  # kernel rows added before, after
    new_k = [kk + a + b for kk, (a, b) in zip(k, zeros)]
    weights = []
    for w in conv.weights:
        if w.key not in keys:
            weights.append(w)
            continue

        def padded(w=w):
            a = w.read()
            return np.pad(a, zeros + [(0, 0)] * (a.ndim - n))

        weights.append(replace(w, shape=tuple(new_k) + tuple(w.shape[n:]), reader=padded))
    new[conv.name] = replace(conv, config=dict(cfg, kernel_size=new_k), weights=weights)
    if pad_layer is not None:
        sym = [[max(lo, hi)] * 2 for lo, hi in pairs]
        sym = sym[0] if n == 1 else sym  # ZeroPadding1D's padding is one (before, after) pair
        call = pad_layer.calls[0]
        shape = list(call.output_shapes[0]) if call.output_shapes else None
        if shape:
            for i, (a, b) in enumerate(zeros):
                j = (2 if first else 1) + i
                shape[j] = None if shape[j] is None else shape[j] + a + b
        new[pad_layer.name] = replace(pad_layer, config=dict(pad_layer.config, padding=sym),
                                      calls=[replace(call, output_shapes=[tuple(shape)] if shape else [])])
    plan.padded[prefix + conv.name] = {"padding": prefix + pad_layer.name if pad_layer is not None else "same",
                                       "kernel_zeros": [list(z) for z in zeros]}


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
    one per folded BatchNormalization weight saying where it went. A kernel made longer for symmetric
    padding keeps its shape in the file as ``keras_shape`` (the torch shape is the longer one)."""
    rows = _folded_rows(rows, original, plan) if plan.folded else rows
    if plan.padded:
        stored = {(ly.name, w.name): list(w.shape) for _, ly in _walk(original) for w in ly.weights}
        padded = {path.rsplit("/", 1)[-1] for path in plan.padded}
        rows = [dict(r, keras_shape=stored[(r["keras_layer"], r["keras_weight"])],
                     note="; ".join(x for x in (r.get("note"), _padding_note(plan, r["keras_layer"])) if x))
                if r["keras_layer"] in padded
                and stored.get((r["keras_layer"], r["keras_weight"]), r["keras_shape"]) != r["keras_shape"]
                else r for r in rows]
    return rows


def _folded_rows(rows: list, original: Model, plan: Plan) -> list:
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


def _padding_note(plan: Plan, layer: str) -> str:
    for path, v in plan.padded.items():
        if path.rsplit("/", 1)[-1] == layer:
            how = "'same' padding" if v["padding"] == "same" else f"{v['padding']}'s padding"
            return (f"zero taps added (before, after per spatial axis: {v['kernel_zeros']}) so that {how} "
                    "is symmetric (--optimize)")
    return ""


def _walk(model: Model, prefix: str = ""):
    for ly in model.layers:
        yield prefix + ly.name, ly
        if ly.model is not None:
            yield from _walk(ly.model, f"{prefix}{ly.name}/")

