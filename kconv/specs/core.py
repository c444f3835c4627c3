"""Core layers: InputLayer, Dense, EinsumDense, Embedding, Masking, Identity, Lambda, preprocessing."""
from __future__ import annotations

from ..transforms import Permute
from . import WeightDecl, declare
from . import _wshapes as _ws
from ._shapes import axis_index


def same_shape(cfg, shapes):
    return shapes[0]


def _dense_kernel_transform(cfg):
    return Permute((1, 0))


def _dense_shape(cfg, shapes):
    return (*shapes[0][:-1], cfg["units"])


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def _quantized(mode):
    return lambda cfg: cfg.get("quantization_mode") == mode


def _lora(cfg):
    return bool(cfg.get("lora_rank"))


# Keras 3 quantized Dense (dtype policy int8_from_float32 / int4_... / float8_...) stores these after
# kernel and bias; see keras/src/layers/core/dense.py save_own_variables.
QUANTIZED_DENSE_EXTRAS = (
    WeightDecl("kernel_scale", when=lambda c: c.get("quantization_mode") in ("int8", "int4"), trainable=False,
               why_no_torch="kernel is dequantized (kernel * 1/scale) into weight"),
    WeightDecl("inputs_scale", when=_quantized("float8"), trainable=False, why_no_torch="folded into weight"),
    WeightDecl("inputs_amax_history", when=_quantized("float8"), trainable=False, why_no_torch="training state"),
    WeightDecl("kernel_scale", when=_quantized("float8"), trainable=False, why_no_torch="folded into weight"),
    WeightDecl("kernel_amax_history", when=_quantized("float8"), trainable=False, why_no_torch="training state"),
    WeightDecl("outputs_grad_scale", when=_quantized("float8"), trainable=False, why_no_torch="training state"),
    WeightDecl("outputs_grad_amax_history", when=_quantized("float8"), trainable=False, why_no_torch="training state"),
)

# Keras 3 LoRA (lora_rank): an h5 file stores both factors; a .keras file stores the kernel with
# LoRA already merged and no factors (keras/src/layers/core/dense.py save_own_variables), and Keras
# recreates the factors (lora_kernel_b zeros) on load. Either way the torch weight is the merged kernel.
LORA_EXTRAS = (
    WeightDecl("lora_kernel_a", when=_lora, why_no_torch="merged into weight: kernel + a @ b * alpha/rank"),
    WeightDecl("lora_kernel_b", when=_lora, why_no_torch="merged into weight: kernel + a @ b * alpha/rank"),
)

declare(
    "InputLayer",
    family="core",
    summary="model input placeholder",
    output_shape=lambda cfg, shapes: tuple(cfg.get("batch_shape") or (None,)),
    no_weights_reason="input placeholder",
)

declare(
    "Dense",
    family="core",
    summary="y = activation(x @ kernel + bias) over the last axis (any input rank)",
    weights=(
        # A quantized kernel, or one with LoRA enabled, is not trained (Keras 3 freezes it).
        WeightDecl("kernel", torch="weight", transform=_dense_kernel_transform,
                   trainable=lambda c: not (c.get("quantization_mode") or c.get("lora_rank")),
                   shape=_ws.dense_kernel),
        WeightDecl("bias", when=_has_bias, torch="bias", shape=_ws.dense_bias),
        *QUANTIZED_DENSE_EXTRAS,
        *LORA_EXTRAS,
    ),
    output_shape=_dense_shape,
)

declare(
    "EinsumDense",
    family="core",
    summary="y = einsum(equation, x, kernel) + bias",
    weights=(
        WeightDecl("kernel", torch="kernel"),
        WeightDecl("bias", when=lambda c: bool(c.get("bias_axes")), torch="bias"),
    ),
    output_shape=lambda cfg, shapes: (shapes[0][0], *_einsum_out(cfg)),
)


def _einsum_out(cfg):
    out = cfg.get("output_shape")
    if isinstance(out, int) or out is None:
        return (out,)
    return tuple(out)


declare(
    "Embedding",
    family="core",
    summary="token id -> row of the embeddings table",
    weights=(WeightDecl("embeddings", torch="weight", shape=_ws.embeddings),),
    output_shape=lambda cfg, shapes: (*shapes[0], cfg["output_dim"]),
    notes=("mask_zero=True masks downstream layers where the id is 0",),
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
    family="core",
    summary="returns its input",
    output_shape=same_shape,
    no_weights_reason="no computation",
)

declare(
    "Lambda",
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
    if e.cfg.get("quantization_mode"):
        e.unsupported(f"{e.cfg['quantization_mode']} quantized Dense not converted yet")
    x = e.input(0, "keras")
    n_in = e.in_shapes[0][-1]
    if n_in is None:
        e.unsupported("input feature size unknown")
    m = e.module(f"nn.Linear({int(n_in)}, {int(e.cfg['units'])}, bias={bool(e.cfg.get('use_bias', True))})")
    e.output(f"{m}({x})", activation=True)


@emits("Embedding")
def _emit_embedding(e):
    m = e.module(f"nn.Embedding({int(e.cfg['input_dim'])}, {int(e.cfg['output_dim'])})")
    mask = None
    if e.cfg.get("mask_zero"):
        # keras/src/layers/core/embedding.py compute_mask: ops.not_equal(inputs, 0)
        mask = e.temp("mask")
        e.line(f"{mask} = {e.input(0)} != 0")
    e.output(f"{m}({e.input(0)}.long())", mask=mask)


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
    e.output(f"torch.where({mask}.unsqueeze(-1), {x}, torch.zeros((), dtype={x}.dtype))", mask=mask)


@emits("Rescaling")
def _emit_rescaling(e):
    scale, offset = e.cfg.get("scale", 1.0), e.cfg.get("offset", 0.0)
    if isinstance(scale, (list, tuple)) or isinstance(offset, (list, tuple)):
        s = e.buffer("scale", f"torch.tensor({[float(v) for v in _flat(scale)]!r}).reshape({_shape_of(scale)})")
        o = e.buffer("offset", f"torch.tensor({[float(v) for v in _flat(offset)]!r}).reshape({_shape_of(offset)})")
        e.output(f"{e.input(0)} * {s} + {o}")
        return
    x = e.input(0, None)
    e.output(f"{x} * {_num(scale)} + {_num(offset)}", layout=e.layout(0))


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
    e.gen.helpers.add("KerasNormalization")
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
