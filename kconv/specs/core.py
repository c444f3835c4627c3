"""Core layers: InputLayer, Dense, EinsumDense, Embedding, Masking, Identity, Lambda, preprocessing."""
from __future__ import annotations

from ..transforms import Permute
from . import WeightDecl, declare
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
                   trainable=lambda c: not (c.get("quantization_mode") or c.get("lora_rank"))),
        WeightDecl("bias", when=_has_bias, torch="bias"),
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
    weights=(WeightDecl("embeddings", torch="weight"),),
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
    weights=(
        WeightDecl("mean", trainable=False, torch="mean"),
        WeightDecl("variance", trainable=False, torch="variance"),
        WeightDecl("count", trainable=False, why_no_torch="not used at inference"),
    ),
    output_shape=same_shape,
    notes=("Keras clips sqrt(variance) from below at epsilon (1e-7) ... read keras/src/layers/preprocessing/normalization.py",),
)
