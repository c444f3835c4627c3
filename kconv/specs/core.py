"""Core layers: InputLayer, Dense, EinsumDense, Embedding, Masking, Identity, Lambda, preprocessing."""
from __future__ import annotations

import re

from ..transforms import IDENTITY, Permute
from . import WeightDecl, declare
from ._shapes import axis_index, int_value, last_dim, units
from .quantization import (
    LORA_EXTRAS, QUANTIZED_DENSE_EXTRAS, KeptQuantized, UnpackInt4, cd_arg, compute_dtype, emit_quantized_dense,
    emit_quantized_einsum_dense, frozen_base, inputs_quantizer, int4_block_size, int4_sub_channel, lora_extras, qmode,
)


def same_shape(cfg, shapes):
    return shapes[0]


def _dense_shape(cfg, shapes):
    return (*shapes[0][:-1], cfg["units"])


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def _dense_kernel_targets(cfg):
    mode = qmode(cfg)
    if mode == "int8":
        return [("kernel", KeptQuantized("int8 (quantized), Keras layout (in, units)"))]
    if mode == "int4":
        return [("kernel", UnpackInt4(cfg["units"], -1))]
    if mode == "float8":
        return [("kernel", KeptQuantized("float32, Keras layout; float8 quantize-dequantize at run time"))]
    return [("weight", Permute((1, 0)))]


# Expected weight shapes (WeightDecl.shape); quantized variants store packed or extra tensors: not checked.
def _dense_kernel_shape(cfg, shape):
    return None if qmode(cfg) else (last_dim(cfg, shape), units(cfg))


def _dense_bias_shape(cfg, shape):
    return None if qmode(cfg) else (units(cfg),)


def _embeddings_shape(cfg, shape):
    return None if qmode(cfg) else (int_value(cfg["input_dim"]), int_value(cfg["output_dim"]))


declare(
    "InputLayer",
    family="core",
    summary="model input placeholder",
    output_shape=lambda cfg, shapes: tuple(cfg.get("batch_shape") or (None,)),
    no_weights_reason="input placeholder",
)

declare(
    "Dense",
    output_mask="keep",
    family="core",
    summary="y = activation(x @ kernel + bias) over the last axis (any input rank)",
    weights=(
        # A quantized kernel, or one with LoRA enabled, is not trained (Keras 3 freezes it).
        WeightDecl("kernel", torch=_dense_kernel_targets, trainable=frozen_base,
                   shape=_dense_kernel_shape),
        WeightDecl("bias", when=_has_bias, torch="bias", shape=_dense_bias_shape),
        *QUANTIZED_DENSE_EXTRAS,
        *LORA_EXTRAS,
    ),
    output_shape=_dense_shape,
    required=("units",),
)

def _einsum_kernel_transform(cfg):
    return {"int8": KeptQuantized("int8 (quantized), Keras layout"),
            "int4": KeptQuantized("int4 packed two per int8 as (rows, ceil(columns/2)), unpacked at run time"),
            "float8": KeptQuantized("float32, Keras layout; float8 quantize-dequantize at run time")}.get(
        qmode(cfg), IDENTITY)


declare(
    "EinsumDense",
    family="core",
    summary="y = einsum(equation, x, kernel) + bias",
    # Kernel and bias stay in Keras's layout: the emitted module runs torch.einsum with the same
    # equation; quantized (int8/int4/float8), it computes as Keras does with the stored tensors.
    weights=(
        WeightDecl("kernel", torch="kernel", trainable=frozen_base, transform=_einsum_kernel_transform),
        WeightDecl("bias", when=lambda c: bool(c.get("bias_axes")), torch="bias"),
        *QUANTIZED_DENSE_EXTRAS,  # same storage order (einsum_dense.py variable_serialization_spec)
        *LORA_EXTRAS,
    ),
    output_shape=lambda cfg, shapes: _einsum_shape(cfg, shapes),
)


def _einsum_out(cfg):
    out = cfg.get("output_shape")
    if isinstance(out, int) or out is None:
        return (out,)
    return tuple(out)


def _einsum_shape(cfg, shapes):
    """keras/src/layers/core/einsum_dense.py _analyze_split_string: (batch, *output_shape) with the
    dimensions an ellipsis stands for inserted after the batch (left '...') or appended (right)."""
    s = tuple(shapes[0])
    eq = str(cfg.get("equation", "")).replace(" ", "")
    lhs = eq.split(",")[0]
    partial = _einsum_out(cfg)
    letters = lhs.replace("...", "")
    elided = len(s) - len(letters)
    if "..." in lhs and elided > 0:
        if lhs.startswith("..."):
            return (s[0], *s[1:elided], *partial)
        return (s[0], *partial, *s[len(s) - elided:])
    return (s[0], *partial)


def _embeddings_targets(float_name):
    def targets(cfg):
        mode = qmode(cfg)
        if mode == "int8":
            return [("embeddings", KeptQuantized("int8 (quantized)"))]
        if mode == "int4":
            return [("embeddings", UnpackInt4(cfg["output_dim"], -1))]
        return [(float_name, IDENTITY)]
    return targets


# keras/src/layers/core/embedding.py: variable_serialization_spec (None: embeddings; int8: + scale;
# int4: + scale, zero, g_idx, the last two only with sub-channel groups); float8 does not apply.
def embedding_weights(float_name: str) -> tuple:
    return (
        WeightDecl("embeddings", torch=_embeddings_targets(float_name), trainable=frozen_base,
                   shape=_embeddings_shape),
        WeightDecl("embeddings_scale", when=lambda c: qmode(c) in ("int8", "int4"), trainable=False,
                   torch="embeddings_scale",
                   transform=lambda c: KeptQuantized("float32 per id and output group (multiplies)")
                   if int4_sub_channel(c) else KeptQuantized("float32 per id (divides the row)")),
        WeightDecl("embeddings_zero", when=int4_sub_channel, trainable=False, torch="embeddings_zero",
                   transform=KeptQuantized("int8 zero point per id and output group")),
        WeightDecl("g_idx", when=int4_sub_channel, trainable=False, torch="g_idx",
                   transform=KeptQuantized("group index of each output feature")),
    )


EMBEDDING_WEIGHTS = (*embedding_weights("weight"), *lora_extras("embeddings"))


def _untied(cfg):
    return not cfg.get("tie_weights", True)


def _reverse_targets(cfg):
    mode = qmode(cfg)
    if mode == "int8":
        return [("reverse_embeddings", KeptQuantized("int8 (quantized), (output_dim, input_dim)"))]
    if mode == "int4":
        return [("reverse_embeddings", UnpackInt4(cfg["output_dim"], 0))]
    return [("reverse_embeddings", IDENTITY)]


# keras/src/layers/core/reversible_embedding.py: Embedding's variables, then (tie_weights=False) the
# reverse projection (output_dim, input_dim) and, quantized, its scale (int4 groups: and zero point,
# a float32 variable there). LoRA applies to the embeddings (Embedding.enable_lora).
REVERSIBLE_EMBEDDING_WEIGHTS = (
    *embedding_weights("embeddings"),
    WeightDecl("reverse_embeddings", when=_untied, torch=_reverse_targets, trainable=lambda c: not qmode(c)),
    WeightDecl("reverse_embeddings_scale", when=lambda c: _untied(c) and qmode(c) in ("int8", "int4"),
               trainable=False, torch="reverse_embeddings_scale",
               transform=KeptQuantized("float32 per id (and output group)")),
    WeightDecl("reverse_embeddings_zero", when=lambda c: _untied(c) and int4_sub_channel(c), trainable=False,
               torch="reverse_embeddings_zero", transform=KeptQuantized("float32 zero point per output group and id")),
    *lora_extras("embeddings"),
)

declare(
    "Embedding",
    family="core",
    summary="token id -> row of the embeddings table",
    weights=EMBEDDING_WEIGHTS,
    output_shape=lambda cfg, shapes: (*shapes[0], cfg["output_dim"]),
    required=("input_dim", "output_dim"),
    notes=("mask_zero=True masks downstream layers where the id is 0",),
)

declare(
    "ReversibleEmbedding",
    family="core",
    summary="Embedding whose reverse=True call projects features back to logits over the ids",
    weights=REVERSIBLE_EMBEDDING_WEIGHTS,
    output_shape=lambda cfg, shapes: ((*shapes[0][:-1], cfg["input_dim"]) if cfg.get("reverse")
                                      else (*shapes[0], cfg["output_dim"])),
    call_kwargs=("reverse",),
    notes=("reverse=True: x @ embeddings^T (tie_weights) or x @ reverse_embeddings, then "
           "tanh(logits / logit_soft_cap) * logit_soft_cap",),
)

declare(
    "Masking",
    family="core",
    summary="masks time steps whose features all equal mask_value",
    output_shape=same_shape,
    no_weights_reason="computes a mask, no parameters",
)

declare(
    "Identity",
    output_mask="keep",
    family="core",
    summary="returns its input",
    output_shape=same_shape,
    no_weights_reason="no computation",
)

declare(
    "Lambda",
    uses_mask=True,
    family="core",
    summary="arbitrary Python function stored as bytecode: never executed by kconv",
    output_shape=lambda cfg, shapes: _lambda_shape(cfg, shapes),
    no_weights_reason="stored Python code (not run, not converted)",
)


def _lambda_shape(cfg, shapes):
    out = cfg.get("output_shape")
    if isinstance(out, (list, tuple)) and all(isinstance(d, int) or d is None for d in out):
        return (shapes[0][0], *out)
    return None


declare(
    "Rescaling",
    output_mask="keep",
    family="core",
    summary="y = x * scale + offset",
    output_shape=same_shape,
    no_weights_reason="scale and offset live in the config",
)


def _normalization_axes(cfg, rank):
    axis = cfg.get("axis", -1)
    if axis is None:
        return ()
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(axis_index(a, rank) for a in axes)


declare(
    "Normalization",
    output_mask="keep",
    family="core",
    summary="y = (x - mean) / sqrt(variance) with statistics stored at adapt() time",
    # Statistics passed to the constructor (mean=, variance=) are config, not weights.
    weights=(
        WeightDecl("mean", trainable=False, torch="mean", when=lambda c: c.get("mean") is None),
        WeightDecl("variance", trainable=False, torch="variance", when=lambda c: c.get("mean") is None),
        WeightDecl("count", trainable=False, why_no_torch="not used at inference",
                   when=lambda c: c.get("mean") is None),
    ),
    output_shape=same_shape,
    notes=("y = (x - mean) / max(sqrt(variance), 1e-7) (keras/src/layers/preprocessing/normalization.py)",),
)


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402


def _num(v) -> str:
    """A config number as Python source (never a string from the file)."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        return repr(int(v))
    return repr(float(v))


@emits("Dense")
def _emit_dense(e):
    x = e.input(0, "keras")
    n_in = e.in_shapes[0][-1]
    if n_in is None:
        e.unsupported("input feature size unknown")
    if qmode(e.cfg):
        emit_quantized_dense(e, qmode(e.cfg), x, int(n_in))
        return
    bias = "" if e.cfg.get("use_bias", True) else ", bias=False"
    m = e.module(f"nn.Linear({int(n_in)}, {int(e.cfg['units'])}{bias})")
    e.output(f"{m}({x})", activation=True, fresh=True)


_EINSUM_EQUATION = re.compile(r"^(\.\.\.)?[a-zA-Z]+(\.\.\.)?,[a-zA-Z]+->(\.\.\.)?[a-zA-Z]+(\.\.\.)?$")


@emits("EinsumDense")
def _emit_einsum_dense(e):
    """keras/src/layers/core/einsum_dense.py call: activation(einsum(equation, x, kernel) + bias); the
    bias has Keras's broadcastable shape (output axes from the first bias axis on, 1 elsewhere)."""
    cfg = e.cfg
    eq = cfg.get("equation")
    if not isinstance(eq, str) or not _EINSUM_EQUATION.match(eq.replace(" ", "")):
        e.unsupported(f"einsum equation {eq!r} is not of the form 'ab,bc->ac' (with optional '...')")
    eq = eq.replace(" ", "")
    shapes = {w.key: tuple(int(d) for d in w.shape) for w in e.layer.weights}
    if "kernel" not in shapes or (cfg.get("bias_axes") and "bias" not in shapes):
        e.unsupported("EinsumDense weights not found in the file")
    if qmode(cfg):
        emit_quantized_einsum_dense(e, qmode(cfg), eq, shapes)
        return
    e.runtime("KerasEinsumDense")
    bias_shape = shapes.get("bias") if cfg.get("bias_axes") else None
    m = e.module(f"KerasEinsumDense({eq!r}, {shapes['kernel']!r}, {bias_shape!r})")
    e.output(f"{m}({e.input(0, 'keras')})", activation=True)


@emits("Embedding")
def _emit_embedding(e):
    m = _embedding_module(e)
    mask = None
    if e.cfg.get("mask_zero"):
        # keras/src/layers/core/embedding.py compute_mask: ops.not_equal(inputs, 0)
        mask = e.temp("mask")
        e.line(f"{mask} = {e.input(0)} != 0")
    suffix = ""
    if isinstance(m, tuple):
        m, suffix = m
    e.output(f"{m}({e.input(0)}.long()){suffix}", mask=mask)


def _embedding_module(e):
    """nn.Embedding, or for a Keras 3 quantized Embedding the module computing as Keras does
    (keras/src/layers/core/embedding.py _int8_call / _int4_call) with the stored tensors kept."""
    n, d, mode = int(e.cfg["input_dim"]), int(e.cfg["output_dim"]), qmode(e.cfg)
    if not mode:
        return e.module(f"nn.Embedding({n}, {d})")
    if mode not in ("int8", "int4"):
        e.unsupported(f"{mode} quantized Embedding is not converted (int8 and int4 are)")
    if e.cfg.get("lora_rank"):
        e.unsupported(f"LoRA on a {mode} quantized Embedding is not converted")
    cd = compute_dtype(e, "Embedding")
    groups = -(-d // int4_block_size(e.cfg)) if int4_sub_channel(e.cfg) else None
    e.runtime("KerasQuantizedEmbedding")
    m = e.module(f"KerasQuantizedEmbedding({n}, {d}" + (f", groups={groups}" if groups else "") + f"{cd_arg(cd)})")
    # a bfloat16 output (exact in float32) is handed on as float32, as the next float32 layer casts it
    return m if cd == "float32" else (m, ".float()")


@emits("ReversibleEmbedding")
def _emit_reversible_embedding(e):
    """keras/src/layers/core/reversible_embedding.py: a forward call is Embedding's (mask_zero masks
    the output); a reverse=True call projects the last axis onto the ids (x @ embeddings^T, or the
    untied reverse_embeddings), soft-capped by tanh(logits / cap) * cap. Quantized (int8/int4): the
    _int8_call/_int4_call reverse paths, inputs quantized per row unless the config says otherwise."""
    cfg = e.cfg
    n, d, mode = int(cfg["input_dim"]), int(cfg["output_dim"]), qmode(cfg)
    tie = bool(cfg.get("tie_weights", True))
    cap = cfg.get("logit_soft_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float))):
        e.unsupported(f"logit_soft_cap {cap!r} is not a number")
    if cfg.get("reverse_dtype") not in (None, cfg.get("dtype", "float32")):
        e.unsupported(f"reverse_dtype {cfg.get('reverse_dtype')!r} differs from the compute dtype")
    args = f"{n}, {d}, tie_weights={tie}, logit_soft_cap={None if cap is None else float(cap)!r}"
    if mode:
        if mode not in ("int8", "int4"):
            e.unsupported(f"{mode} quantized ReversibleEmbedding is not converted (int8 and int4 are)")
        if cfg.get("lora_rank"):
            e.unsupported(f"LoRA on a {mode} quantized ReversibleEmbedding is not converted")
        if compute_dtype(e, "ReversibleEmbedding") != "float32":
            e.unsupported(f"quantized ReversibleEmbedding computing in {e.cfg.get('dtype')} "
                          "(only float32 is converted)")
        groups = -(-d // int4_block_size(cfg)) if int4_sub_channel(cfg) else None
        # ReversibleEmbedding._int8_build/_int4_build: AbsMaxQuantizer(axis=-1) on the reverse inputs
        # unless a quantization_config says otherwise.
        args += f", mode={mode!r}, groups={groups!r}, inputs_quantizer={inputs_quantizer(e, mode, True)!r}"
    e.runtime("KerasReversibleEmbedding")
    m = e.module(f"KerasReversibleEmbedding({args})")
    if e.call.kwargs.get("reverse"):
        e.output(f"{m}({e.input(0)}, reverse=True)", mask=None)
        return
    mask = None
    if cfg.get("mask_zero"):
        mask = e.temp("mask")
        e.line(f"{mask} = {e.input(0)} != 0")
    e.output(f"{m}({e.input(0)})", mask=mask)


@emits("Identity")
def _emit_identity(e):
    e.passthrough()


@emits("Masking")
def _emit_masking(e):
    # keras/src/layers/core/masking.py: mask = any(x != mask_value, axis=-1); masked steps are set to 0.
    v = e.cfg.get("mask_value", 0.0)
    if isinstance(v, dict) or isinstance(v, (list, tuple)) or isinstance(v, bool):
        e.unsupported("mask_value that is not a number")
    x = e.input(0)
    mask = e.temp("mask")
    e.line(f"{mask} = ({x} != {_num(v)}).any(dim=-1)")
    e.output(f"{x}.masked_fill(~{mask}.unsqueeze(-1), 0.0)", mask=mask)


@emits("Rescaling")
def _emit_rescaling(e):
    scale, offset = e.cfg.get("scale", 1.0), e.cfg.get("offset", 0.0)
    if isinstance(scale, (list, tuple)) or isinstance(offset, (list, tuple)):
        s = e.buffer("scale", f"torch.tensor({[float(v) for v in _flat(scale)]!r}).reshape({_shape_of(scale)})")
        o = e.buffer("offset", f"torch.tensor({[float(v) for v in _flat(offset)]!r}).reshape({_shape_of(offset)})")
        e.output(f"{e.input(0)} * {s} + {o}")
        return
    x = e.input(0, None)
    e.output(_scaled(x, float(scale), float(offset)), layout=e.layout(0))


def _scaled(x: str, scale: float, offset: float) -> str:
    """``x * scale + offset`` as a person writes it: ``x * (1 / 255)`` for 0.00392156862745098 (the
    same double), no ``* 1.0`` or ``+ 0.0``."""
    expr = x
    if scale != 1.0:
        inv = 1.0 / scale if scale else 0.0
        inv_src = repr(int(inv)) if inv.is_integer() and abs(inv) < 1e6 else repr(inv)
        if scale and len(repr(scale)) > 8 and len(inv_src) <= 7 and 1.0 / float(inv_src) == scale:
            expr = f"{x} * (1 / {inv_src})"
        else:
            expr = f"{x} * {_num(scale)}"
    if offset > 0:
        expr += f" + {_num(offset)}"
    elif offset < 0:
        expr += f" - {_num(-offset)}"
    return expr


def _flat(v):
    if isinstance(v, (list, tuple)):
        return [y for x in v for y in _flat(x)]
    return [v]


def _shape_of(v):
    shape = []
    while isinstance(v, (list, tuple)):
        shape.append(len(v))
        v = v[0]
    return tuple(shape) or (1,)


@emits("Normalization")
def _emit_normalization(e):
    rank = len(e.in_shapes[0])
    axes = _normalization_axes(e.cfg, rank)
    if any(e.in_shapes[0][d] is None for d in axes):
        e.unsupported("unknown size of a normalised axis")
    bshape = tuple(int(e.in_shapes[0][d]) if d in axes else 1 for d in range(rank))
    shape = tuple(int(e.in_shapes[0][d]) for d in axes)
    invert = bool(e.cfg.get("invert", False))
    e.runtime("KerasNormalization")
    mean, var = e.cfg.get("mean"), e.cfg.get("variance")
    if mean is not None:  # statistics given in the config: constants, not weights
        m = e.module(f"KerasNormalization({shape}, {bshape}, mean={_consts(mean)!r}, variance={_consts(var)!r}, "
                     f"invert={invert})")
    else:
        m = e.module(f"KerasNormalization({shape}, {bshape}, invert={invert})")
    e.output(f"{m}({e.input(0)})")


def _consts(v):
    """A config constant (number or nested list of numbers) re-built from floats only."""
    if isinstance(v, (list, tuple)):
        return [_consts(x) for x in v]
    return float(v)
