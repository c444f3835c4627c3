"""Core layers: InputLayer, Dense, EinsumDense, Embedding, Masking, Identity, Lambda, preprocessing."""
from __future__ import annotations

import re

import numpy as np

from ..transforms import IDENTITY, Permute, Transform
from . import WeightDecl, declare
from ._shapes import axis_index, int_value, last_dim, units


def same_shape(cfg, shapes):
    return shapes[0]


def _dense_shape(cfg, shapes):
    return (*shapes[0][:-1], cfg["units"])


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def _qmode(cfg):
    """The Keras 3 quantization mode of a layer config ('int8', 'int4', 'float8', ...) or None.

    Read from the normalised dtype policy (``quantization_mode``; Keras >= 3.13's Int4DTypePolicy has
    mode 'int4/128'), as Keras reads it (Layer.quantization_mode is the policy's): a serialized
    ``quantization_config`` alone does not quantize a layer. model.quantize('float8') leaves one on
    an Embedding it cannot quantize, whose policy stays float32."""
    mode = cfg.get("quantization_mode")
    return str(mode).split("/")[0] if mode else None


def _quantized(mode):
    return lambda cfg: _qmode(cfg) == mode


def _lora(cfg):
    return bool(cfg.get("lora_rank"))


def _frozen_base(cfg):
    """Whether the kernel / embeddings variable is trainable: not when int8/int4 quantized (integer
    variables, trainable=False) nor with LoRA enabled (enable_lora sets it untrainable); a float8
    layer keeps its float kernel trainable (_float8_build does not touch it)."""
    return not (_qmode(cfg) in ("int8", "int4", "gptq", "awq") or _lora(cfg))


def _qconfig(cfg):
    qc = cfg.get("quantization_config")
    return (qc.get("config") or {}) if isinstance(qc, dict) else None


def int4_block_size(cfg):
    """Keras 3 int4 block size: None for per-channel (one scale per unit), else groups of inputs.

    keras/src/quantizers/quantization_config.py get_block_size_for_layer: the layer's
    Int4QuantizationConfig.block_size (-1/None: per-channel), else the dtype policy ('int4/128')."""
    qc = _qconfig(cfg)
    if qc is not None and "block_size" in qc:
        b = qc.get("block_size")
    else:
        mode = str(cfg.get("quantization_mode") or "")
        b = int(mode.split("/")[1]) if mode.count("/") == 1 and mode.split("/")[1].lstrip("-").isdigit() else None
    return None if b is None or b == -1 else int(b)


def _int4_sub_channel(cfg):
    return _qmode(cfg) == "int4" and int4_block_size(cfg) is not None


class KeptQuantized(Transform):
    """The stored quantized tensor, unchanged: the emitted module computes with it as Keras does."""

    def __init__(self, what: str):
        self.what = what

    def apply(self, a):
        return np.array(a, copy=True, order="C")  # keeps 0-d scalars 0-d (ascontiguousarray would not)

    def shape(self, shape):
        return tuple(shape)

    def describe(self):
        return f"as is, kept {self.what}"

    def __eq__(self, other):
        return isinstance(other, KeptQuantized) and other.what == self.what

    def __hash__(self):
        return hash(("KeptQuantized", self.what))


class UnpackInt4(Transform):
    """keras.quantizers.unpack_int4: two signed nibbles per int8 (low nibble first) along ``axis``,
    padding beyond ``length`` dropped; the result stays int8 with values in [-8, 7]."""

    def __init__(self, length: int, axis: int = -1):
        self.length, self.axis = int(length), int(axis)

    def apply(self, a):
        a = np.moveaxis(np.asarray(a).astype(np.int8), self.axis, 0)
        u = a.view(np.uint8)
        lo = ((u & 0x0F) ^ 8).astype(np.int16) - 8
        hi = (((u >> 4) & 0x0F) ^ 8).astype(np.int16) - 8
        out = np.stack([lo, hi], axis=1).reshape((-1,) + a.shape[1:])[: self.length]
        return np.ascontiguousarray(np.moveaxis(out.astype(np.int8), 0, self.axis))

    def shape(self, shape):
        s = list(shape)
        s[self.axis] = self.length
        return tuple(s)

    def describe(self):
        return f"unpack int4 nibbles on axis {self.axis} to {self.length}, kept int8 (quantized)"

    def __eq__(self, other):
        return isinstance(other, UnpackInt4) and (other.length, other.axis) == (self.length, self.axis)

    def __hash__(self):
        return hash(("UnpackInt4", self.length, self.axis))


def _dense_kernel_targets(cfg):
    mode = _qmode(cfg)
    if mode == "int8":
        return [("kernel", KeptQuantized("int8 (quantized), Keras layout (in, units)"))]
    if mode == "int4":
        return [("kernel", UnpackInt4(cfg["units"], -1))]
    if mode == "float8":
        return [("kernel", KeptQuantized("float32, Keras layout; float8 quantize-dequantize at run time"))]
    return [("weight", Permute((1, 0)))]


# Expected weight shapes (WeightDecl.shape); quantized variants store packed or extra tensors: not checked.
def _dense_kernel_shape(cfg, shape):
    return None if _qmode(cfg) else (last_dim(cfg, shape), units(cfg))


def _dense_bias_shape(cfg, shape):
    return None if _qmode(cfg) else (units(cfg),)


def _embeddings_shape(cfg, shape):
    return None if _qmode(cfg) else (int_value(cfg["input_dim"]), int_value(cfg["output_dim"]))


# Keras 3 quantized Dense (dtype policy int8_from_float32 / int4 / float8_...) stores these after
# kernel and bias; see keras/src/layers/core/dense.py variable_serialization_spec / save_own_variables.
QUANTIZED_DENSE_EXTRAS = (
    WeightDecl("kernel_scale", when=lambda c: _qmode(c) in ("int8", "int4"), trainable=False,
               torch="kernel_scale",
               transform=lambda c: KeptQuantized("float32 per input group and unit (multiplies the kernel)")
               if _int4_sub_channel(c) else KeptQuantized("float32 per unit (divides the matmul)")),
    WeightDecl("kernel_zero", when=_int4_sub_channel, trainable=False,
               torch="kernel_zero", transform=KeptQuantized("int8 zero point per input group")),
    WeightDecl("g_idx", when=_int4_sub_channel, trainable=False,
               torch="g_idx", transform=KeptQuantized("group index of each input row")),
    # float8 scales and histories are trainable variables in Keras (_float8_build: trainable=True,
    # overwrite_with_gradient: the "gradient" is the new value), so count as trainable parameters.
    WeightDecl("inputs_scale", when=_quantized("float8"), torch="inputs_scale",
               transform=KeptQuantized("float32 float8 scale of the inputs")),
    WeightDecl("inputs_amax_history", when=_quantized("float8"), why_no_torch="training state"),
    WeightDecl("kernel_scale", when=_quantized("float8"), torch="kernel_scale",
               transform=KeptQuantized("float32 float8 scale of the kernel")),
    WeightDecl("kernel_amax_history", when=_quantized("float8"), why_no_torch="training state"),
    WeightDecl("outputs_grad_scale", when=_quantized("float8"), why_no_torch="training state"),
    WeightDecl("outputs_grad_amax_history", when=_quantized("float8"), why_no_torch="training state"),
)

# Keras 3 LoRA (lora_rank): an h5 file stores both factors; a .keras file stores the kernel with
# LoRA already merged and no factors (keras/src/layers/core/dense.py, einsum_dense.py, embedding.py,
# convolutional/base_conv.py save_own_variables), and Keras recreates the factors (zeros) on load.
# Either way the torch weight is the merged one: base + a @ b * (lora_alpha / lora_rank) (kconv.emit).
def lora_extras(base: str) -> tuple:
    why = f"merged into the {base}: {base} + lora_{base}_a @ lora_{base}_b * alpha/rank"
    return (WeightDecl(f"lora_{base}_a", when=_lora, why_no_torch=why),
            WeightDecl(f"lora_{base}_b", when=_lora, why_no_torch=why))


LORA_EXTRAS = lora_extras("kernel")

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
        WeightDecl("kernel", torch=_dense_kernel_targets, trainable=_frozen_base,
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
        _qmode(cfg), IDENTITY)


declare(
    "EinsumDense",
    family="core",
    summary="y = einsum(equation, x, kernel) + bias",
    # Kernel and bias stay in Keras's layout: the emitted module runs torch.einsum with the same
    # equation; quantized (int8/int4/float8), it computes as Keras does with the stored tensors.
    weights=(
        WeightDecl("kernel", torch="kernel", trainable=_frozen_base, transform=_einsum_kernel_transform),
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
        mode = _qmode(cfg)
        if mode == "int8":
            return [("embeddings", KeptQuantized("int8 (quantized)"))]
        if mode == "int4":
            return [("embeddings", UnpackInt4(cfg["output_dim"], -1))]
        return [(float_name, IDENTITY)]
    return targets


def _int4_grouped(cfg):
    return _qmode(cfg) == "int4" and int4_block_size(cfg) is not None


# keras/src/layers/core/embedding.py: variable_serialization_spec (None: embeddings; int8: + scale;
# int4: + scale, zero, g_idx, the last two only with sub-channel groups); float8 does not apply.
def embedding_weights(float_name: str) -> tuple:
    return (
        WeightDecl("embeddings", torch=_embeddings_targets(float_name), trainable=_frozen_base,
                   shape=_embeddings_shape),
        WeightDecl("embeddings_scale", when=lambda c: _qmode(c) in ("int8", "int4"), trainable=False,
                   torch="embeddings_scale",
                   transform=lambda c: KeptQuantized("float32 per id and output group (multiplies)") if _int4_grouped(c)
                   else KeptQuantized("float32 per id (divides the row)")),
        WeightDecl("embeddings_zero", when=_int4_grouped, trainable=False, torch="embeddings_zero",
                   transform=KeptQuantized("int8 zero point per id and output group")),
        WeightDecl("g_idx", when=_int4_grouped, trainable=False, torch="g_idx",
                   transform=KeptQuantized("group index of each output feature")),
    )


EMBEDDING_WEIGHTS = (*embedding_weights("weight"), *lora_extras("embeddings"))


def _untied(cfg):
    return not cfg.get("tie_weights", True)


def _reverse_targets(cfg):
    mode = _qmode(cfg)
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
    WeightDecl("reverse_embeddings", when=_untied, torch=_reverse_targets, trainable=lambda c: not _qmode(c)),
    WeightDecl("reverse_embeddings_scale", when=lambda c: _untied(c) and _qmode(c) in ("int8", "int4"),
               trainable=False, torch="reverse_embeddings_scale",
               transform=KeptQuantized("float32 per id (and output group)")),
    WeightDecl("reverse_embeddings_zero", when=lambda c: _untied(c) and _int4_grouped(c), trainable=False,
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
    if _qmode(e.cfg):
        _emit_quantized_dense(e, _qmode(e.cfg), x, int(n_in))
        return
    bias = "" if e.cfg.get("use_bias", True) else ", bias=False"
    m = e.module(f"nn.Linear({int(n_in)}, {int(e.cfg['units'])}{bias})")
    e.output(f"{m}({x})", activation=True)


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
    if _qmode(cfg):
        _emit_quantized_einsum_dense(e, _qmode(cfg), eq, shapes)
        return
    e.gen.helpers.add("KerasEinsumDense")
    bias_shape = shapes.get("bias") if cfg.get("bias_axes") else None
    m = e.module(f"KerasEinsumDense({eq!r}, {shapes['kernel']!r}, {bias_shape!r})")
    e.output(f"{m}({e.input(0, 'keras')})", activation=True)


def einsum_quantization_info(equation: str, input_rank: int):
    """keras/src/layers/core/einsum_dense.py _analyze_quantization_info, line for line (its quirks
    included: an axis that cannot take an expand slot is inserted at the previous slot's index):
    (input_spec, weight_spec, output_spec, input_reduced_axes, weight_reduced_axes,
    input_transpose_axes, input_expand_axes, input_squeeze_axes)."""
    import string

    labels = string.ascii_letters
    dots = re.sub(r"\.\.\.", "0", equation)
    m = re.match("([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)", dots)
    left = right = None
    if m is None:
        left = re.match("0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)", dots)
        if left is None:
            right = re.match("([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0", dots)
        m = left or right
    if m is None:
        raise ValueError(f"einsum equation {equation!r}")
    i_spec, w_spec, o_spec = m.group(1), m.group(2), m.group(3)
    if left or right:
        elided = input_rank - len(i_spec)
        free = sorted(set(labels) - set(i_spec) - set(w_spec) - set(o_spec))
        for i in range(elided):
            if left:
                i_spec, o_spec = free[i] + i_spec, free[i] + o_spec
            else:
                i_spec, o_spec = i_spec + free[i], o_spec + free[i]
    i_red = [i for i, c in enumerate(i_spec) if o_spec.find(c) == -1]
    w_red = [i for i, c in enumerate(w_spec) if o_spec.find(c) == -1]
    i_exp = [i for i, c in enumerate(o_spec) if i_spec.find(c) == -1]
    i_tr = [i_spec.find(c) for c in o_spec if i_spec.find(c) != -1]
    i_sq = []
    index = None
    for ori in i_red:
        try:
            index = i_exp.pop(0)
        except IndexError:
            i_sq.append(ori)
        i_tr.insert(index, ori)
    return i_spec, w_spec, o_spec, i_red, w_red, i_tr, i_exp, i_sq


def _emit_quantized_einsum_dense(e, mode, eq, shapes):
    """Keras 3 quantized EinsumDense (keras/src/layers/core/einsum_dense.py _int8_call, _int4_call,
    _float8_call), the stored tensors kept: int8 with inputs quantized over the input's reduced axes
    (exact integer einsum, divided by the input scale laid out as Keras lays it out times the stored
    kernel scale); int4 kernels unpacked from (rows, ceil(columns/2)) and dequantized (per column, or
    per group of rows with zero points) then reshaped to the kernel shape; float8 as Dense's."""
    cfg = e.cfg
    if mode not in ("int8", "int4", "float8"):
        e.unsupported(f"{mode} quantized EinsumDense is not converted (int8, int4 and float8 are)")
    if cfg.get("lora_rank"):
        e.unsupported(f"LoRA on a {mode} quantized EinsumDense is not converted")
    cd = _compute_dtype(e, "EinsumDense")
    in_shape, out_shape = e.in_shapes[0], e.out_shapes[0] if e.out_shapes else None
    try:
        i_spec, w_spec, o_spec, i_red, w_red, i_tr, i_exp, i_sq = einsum_quantization_info(eq, len(in_shape))
    except ValueError:
        e.unsupported(f"einsum equation {eq!r}")
    dims = {}
    for spec, shape in ((i_spec, in_shape), (o_spec, out_shape)):
        for c, n in zip(spec, shape or ()):
            dims.setdefault(c, n)
    kshape = tuple(dims.get(c) for c in w_spec)
    if any(n is None for n in kshape):
        e.unsupported("kernel shape unknown (input or output size unknown)")
    args = [repr(eq), repr(mode), f"kernel_shape={tuple(int(n) for n in kshape)!r}",
            f"stored={shapes['kernel']!r}", f"bias_shape={shapes.get('bias') if cfg.get('bias_axes') else None!r}"]
    if mode in ("int8", "int4"):
        args.append(f"scale_shape={shapes['kernel_scale']!r}")
        if mode == "int4" and _qconfig(cfg) is None:
            e.unsupported("int4 EinsumDense saved without a quantization_config (older Keras layout) is not converted")
        groups = shapes["kernel_zero"][0] if "kernel_zero" in shapes else None
        q = None if groups is not None else _inputs_quantizer(e, mode)
        args += [f"groups={groups!r}", f"inputs_quantizer={q!r}",
                 f"input_axes={(tuple(i_red), tuple(i_tr), tuple(i_exp), tuple(i_sq))!r}",
                 f"kernel_reduced_axes={tuple(w_red)!r}"]
    e.gen.helpers.add("KerasQuantizedEinsumDense")
    m = e.module(f"KerasQuantizedEinsumDense({', '.join(args)}{_cd_arg(cd)})")
    _quantized_output(e, f"{m}({e.input(0, 'keras')})", cd)


def _inputs_quantizer(e, mode, default_on=None):
    """The (low, high, epsilon) of the AbsMaxQuantizer Keras applies to a quantized layer's inputs, or
    None (keras/src/layers/core/dense.py _int8_build/_int4_build: QuantizationConfig's
    activation_quantizer; with no quantization_config int8 defaults to AbsMaxQuantizer(), int4 to none;
    ``default_on`` overrides that default, e.g. ReversibleEmbedding quantizes in both modes)."""
    qc = _qconfig(e.cfg)
    if qc is None:
        on = (mode == "int8") if default_on is None else default_on
        return (-127, 127, 1e-7) if on else None
    q = qc.get("activation_quantizer")
    if q is None:
        return None
    if not isinstance(q, dict) or q.get("class_name") != "AbsMaxQuantizer":
        e.unsupported(f"activation quantizer {q.get('class_name') if isinstance(q, dict) else q!r} is not converted")
    c = q.get("config") or {}
    lo, hi = c.get("value_range", (-127, 127))
    integer_range = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
    if c.get("output_dtype", "int8") != "int8" or not integer_range:
        e.unsupported("activation quantizer other than int8 AbsMaxQuantizer with an integer value_range")
    eps = c.get("epsilon", 1e-7)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        e.unsupported("activation quantizer epsilon is not a number")
    return (int(lo), int(hi), float(eps))


def _emit_quantized_dense(e, mode, x, n_in):
    """Keras 3 quantized Dense, computed as Keras computes it (keras/src/layers/core/dense.py
    _int8_call/_int4_call/_float8_call), with the stored quantized tensors kept as they are."""
    cfg = e.cfg
    if mode not in ("int8", "int4", "float8"):
        e.unsupported(f"{mode} quantized Dense is not converted (int8, int4 and float8 are)")
    if cfg.get("lora_rank"):
        e.unsupported(f"LoRA on a {mode} quantized Dense is not converted")
    cd = _compute_dtype(e, "Dense")
    units, bias = int(cfg["units"]), bool(cfg.get("use_bias", True))
    args = f"{n_in}, {units}, {mode!r}, bias={bias}"
    if mode == "int4" and _qconfig(cfg) is None:
        # Keras < 3.13 packed int4 kernels along the input axis and always quantized the inputs.
        e.unsupported("int4 Dense saved without a quantization_config (older Keras int4 layout) is not converted")
    if mode == "int4" and int4_block_size(cfg) is not None:
        groups = -(-n_in // int4_block_size(cfg))
        args += f", groups={groups}"
    elif mode in ("int8", "int4"):
        args += f", inputs_quantizer={_inputs_quantizer(e, mode)!r}"
    e.gen.helpers.add("KerasQuantizedDense")
    m = e.module(f"KerasQuantizedDense({args}{_cd_arg(cd)})")
    _quantized_output(e, f"{m}({x})", cd)


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
    n, d, mode = int(e.cfg["input_dim"]), int(e.cfg["output_dim"]), _qmode(e.cfg)
    if not mode:
        return e.module(f"nn.Embedding({n}, {d})")
    if mode not in ("int8", "int4"):
        e.unsupported(f"{mode} quantized Embedding is not converted (int8 and int4 are)")
    if e.cfg.get("lora_rank"):
        e.unsupported(f"LoRA on a {mode} quantized Embedding is not converted")
    cd = _compute_dtype(e, "Embedding")
    groups = -(-d // int4_block_size(e.cfg)) if _int4_grouped(e.cfg) else None
    e.gen.helpers.add("KerasQuantizedEmbedding")
    m = e.module(f"KerasQuantizedEmbedding({n}, {d}" + (f", groups={groups}" if groups else "") + f"{_cd_arg(cd)})")
    # a bfloat16 output (exact in float32) is handed on as float32, as the next float32 layer casts it
    return m if cd == "float32" else (m, ".float()")


@emits("ReversibleEmbedding")
def _emit_reversible_embedding(e):
    """keras/src/layers/core/reversible_embedding.py: a forward call is Embedding's (mask_zero masks
    the output); a reverse=True call projects the last axis onto the ids (x @ embeddings^T, or the
    untied reverse_embeddings), soft-capped by tanh(logits / cap) * cap. Quantized (int8/int4): the
    _int8_call/_int4_call reverse paths, inputs quantized per row unless the config says otherwise."""
    cfg = e.cfg
    n, d, mode = int(cfg["input_dim"]), int(cfg["output_dim"]), _qmode(cfg)
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
        if _compute_dtype(e, "ReversibleEmbedding") != "float32":
            e.unsupported(f"quantized ReversibleEmbedding computing in {e.cfg.get('dtype')} "
                          "(only float32 is converted)")
        groups = -(-d // int4_block_size(cfg)) if _int4_grouped(cfg) else None
        # ReversibleEmbedding._int8_build/_int4_build: AbsMaxQuantizer(axis=-1) on the reverse inputs
        # unless a quantization_config says otherwise.
        args += f", mode={mode!r}, groups={groups!r}, inputs_quantizer={_inputs_quantizer(e, mode, True)!r}"
    e.gen.helpers.add("KerasReversibleEmbedding")
    m = e.module(f"KerasReversibleEmbedding({args})")
    if e.call.kwargs.get("reverse"):
        e.output(f"{m}({e.input(0)}, reverse=True)", mask=None)
        return
    mask = None
    if cfg.get("mask_zero"):
        mask = e.temp("mask")
        e.line(f"{mask} = {e.input(0)} != 0")
    e.output(f"{m}({e.input(0)})", mask=mask)


# Compute dtype of a quantized layer from its (source) dtype policy name: Keras autocasts the inputs
# and the float variables to it (mixed_bfloat16: float32 variables, bfloat16 compute).
_COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "bfloat16": "bfloat16"}


def _compute_dtype(e, what):
    cd = _COMPUTE_DTYPES.get(e.cfg.get("dtype", "float32"))
    if cd is None:
        e.unsupported(f"quantized {what} computing in {e.cfg.get('dtype')} (float32 and bfloat16 are converted)")
    return cd


def _cd_arg(cd):
    return "" if cd == "float32" else f", compute_dtype={cd!r}"


def _quantized_output(e, expr, cd):
    """Bind the layer output, activation included; a bfloat16 layer applies its activation in bfloat16
    (as Keras does) and hands the result on as float32, which holds it exactly (the next float32
    layer would cast it so; a bfloat16 one casts it back)."""
    if cd == "float32":
        e.output(expr, activation=True)
        return
    shape = e.out_shapes[0] if e.out_shapes else None
    e.output(f"({e.activation(expr, 'keras', shape)}).float()")


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
