"""Keras 3 quantization (int8, int4, float8 dtype policies) and LoRA, shared by the declarations of
the layers that have them (Dense, EinsumDense, Embedding, ReversibleEmbedding, convolutions): which
extra variables a quantized or LoRA layer stores and what they become in torch, and how a quantized
layer is emitted so that it computes as Keras does with the stored tensors kept (the runtime classes
KerasQuantizedDense, KerasQuantizedEinsumDense, KerasQuantizedEmbedding)."""
from __future__ import annotations

import re

import numpy as np

from ..transforms import Transform
from . import WeightDecl


def qmode(cfg):
    """The Keras 3 quantization mode of a layer config ('int8', 'int4', 'float8', ...) or None.

    Read from the normalised dtype policy (``quantization_mode``; Keras >= 3.13's Int4DTypePolicy has
    mode 'int4/128'), as Keras reads it (Layer.quantization_mode is the policy's): a serialized
    ``quantization_config`` alone does not quantize a layer. model.quantize('float8') leaves one on
    an Embedding it cannot quantize, whose policy stays float32."""
    mode = cfg.get("quantization_mode")
    return str(mode).split("/")[0] if mode else None


def quantized(mode):
    return lambda cfg: qmode(cfg) == mode


def lora(cfg):
    return bool(cfg.get("lora_rank"))


def frozen_base(cfg):
    """Whether the kernel / embeddings variable is trainable: not when int8/int4 quantized (integer
    variables, trainable=False) nor with LoRA enabled (enable_lora sets it untrainable); a float8
    layer keeps its float kernel trainable (_float8_build does not touch it)."""
    return not (qmode(cfg) in ("int8", "int4", "gptq", "awq") or lora(cfg))


def qconfig(cfg):
    qc = cfg.get("quantization_config")
    return (qc.get("config") or {}) if isinstance(qc, dict) else None


def int4_block_size(cfg):
    """Keras 3 int4 block size: None for per-channel (one scale per unit), else groups of inputs.

    keras/src/quantizers/quantization_config.py get_block_size_for_layer: the layer's
    Int4QuantizationConfig.block_size (-1/None: per-channel), else the dtype policy ('int4/128')."""
    qc = qconfig(cfg)
    if qc is not None and "block_size" in qc:
        b = qc.get("block_size")
    else:
        mode = str(cfg.get("quantization_mode") or "")
        b = int(mode.split("/")[1]) if mode.count("/") == 1 and mode.split("/")[1].lstrip("-").isdigit() else None
    return None if b is None or b == -1 else int(b)


def int4_sub_channel(cfg):
    return qmode(cfg) == "int4" and int4_block_size(cfg) is not None


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


# Keras 3 quantized Dense (dtype policy int8_from_float32 / int4 / float8_...) stores these after
# kernel and bias; see keras/src/layers/core/dense.py variable_serialization_spec / save_own_variables.
QUANTIZED_DENSE_EXTRAS = (
    WeightDecl("kernel_scale", when=lambda c: qmode(c) in ("int8", "int4"), trainable=False,
               torch="kernel_scale",
               transform=lambda c: KeptQuantized("float32 per input group and unit (multiplies the kernel)")
               if int4_sub_channel(c) else KeptQuantized("float32 per unit (divides the matmul)")),
    WeightDecl("kernel_zero", when=int4_sub_channel, trainable=False,
               torch="kernel_zero", transform=KeptQuantized("int8 zero point per input group")),
    WeightDecl("g_idx", when=int4_sub_channel, trainable=False,
               torch="g_idx", transform=KeptQuantized("group index of each input row")),
    # float8 scales and histories are trainable variables in Keras (_float8_build: trainable=True,
    # overwrite_with_gradient: the "gradient" is the new value), so count as trainable parameters.
    WeightDecl("inputs_scale", when=quantized("float8"), torch="inputs_scale",
               transform=KeptQuantized("float32 float8 scale of the inputs")),
    WeightDecl("inputs_amax_history", when=quantized("float8"), why_no_torch="training state"),
    WeightDecl("kernel_scale", when=quantized("float8"), torch="kernel_scale",
               transform=KeptQuantized("float32 float8 scale of the kernel")),
    WeightDecl("kernel_amax_history", when=quantized("float8"), why_no_torch="training state"),
    WeightDecl("outputs_grad_scale", when=quantized("float8"), why_no_torch="training state"),
    WeightDecl("outputs_grad_amax_history", when=quantized("float8"), why_no_torch="training state"),
)

# Keras 3 LoRA (lora_rank): an h5 file stores both factors; a .keras file stores the kernel with
# LoRA already merged and no factors (keras/src/layers/core/dense.py, einsum_dense.py, embedding.py,
# convolutional/base_conv.py save_own_variables), and Keras recreates the factors (zeros) on load.
# Either way the torch weight is the merged one: base + a @ b * (lora_alpha / lora_rank) (kconv.emit).
def lora_extras(base: str) -> tuple:
    why = f"merged into the {base}: {base} + lora_{base}_a @ lora_{base}_b * alpha/rank"
    return (WeightDecl(f"lora_{base}_a", when=lora, why_no_torch=why),
            WeightDecl(f"lora_{base}_b", when=lora, why_no_torch=why))


LORA_EXTRAS = lora_extras("kernel")


# --- PyTorch emission of quantized layers ---------------------------------------------------------


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


def emit_quantized_einsum_dense(e, mode, eq, shapes):
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
    cd = compute_dtype(e, "EinsumDense")
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
        if mode == "int4" and qconfig(cfg) is None:
            e.unsupported("int4 EinsumDense saved without a quantization_config (older Keras layout) is not converted")
        groups = shapes["kernel_zero"][0] if "kernel_zero" in shapes else None
        q = None if groups is not None else inputs_quantizer(e, mode)
        args += [f"groups={groups!r}", f"inputs_quantizer={q!r}",
                 f"input_axes={(tuple(i_red), tuple(i_tr), tuple(i_exp), tuple(i_sq))!r}",
                 f"kernel_reduced_axes={tuple(w_red)!r}"]
    e.runtime("KerasQuantizedEinsumDense")
    m = e.module(f"KerasQuantizedEinsumDense({', '.join(args)}{cd_arg(cd)})")
    quantized_output(e, f"{m}({e.input(0, 'keras')})", cd)


def inputs_quantizer(e, mode, default_on=None):
    """The (low, high, epsilon) of the AbsMaxQuantizer Keras applies to a quantized layer's inputs, or
    None (keras/src/layers/core/dense.py _int8_build/_int4_build: QuantizationConfig's
    activation_quantizer; with no quantization_config int8 defaults to AbsMaxQuantizer(), int4 to none;
    ``default_on`` overrides that default, e.g. ReversibleEmbedding quantizes in both modes)."""
    qc = qconfig(e.cfg)
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


def emit_quantized_dense(e, mode, x, n_in):
    """Keras 3 quantized Dense, computed as Keras computes it (keras/src/layers/core/dense.py
    _int8_call/_int4_call/_float8_call), with the stored quantized tensors kept as they are."""
    cfg = e.cfg
    if mode not in ("int8", "int4", "float8"):
        e.unsupported(f"{mode} quantized Dense is not converted (int8, int4 and float8 are)")
    if cfg.get("lora_rank"):
        e.unsupported(f"LoRA on a {mode} quantized Dense is not converted")
    cd = compute_dtype(e, "Dense")
    units, bias = int(cfg["units"]), bool(cfg.get("use_bias", True))
    args = f"{n_in}, {units}, {mode!r}, bias={bias}"
    if mode == "int4" and qconfig(cfg) is None:
        # Keras < 3.13 packed int4 kernels along the input axis and always quantized the inputs.
        e.unsupported("int4 Dense saved without a quantization_config (older Keras int4 layout) is not converted")
    if mode == "int4" and int4_block_size(cfg) is not None:
        groups = -(-n_in // int4_block_size(cfg))
        args += f", groups={groups}"
    elif mode in ("int8", "int4"):
        args += f", inputs_quantizer={inputs_quantizer(e, mode)!r}"
    e.runtime("KerasQuantizedDense")
    m = e.module(f"KerasQuantizedDense({args}{cd_arg(cd)})")
    quantized_output(e, f"{m}({x})", cd)


# Compute dtype of a quantized layer from its (source) dtype policy name: Keras autocasts the inputs
# and the float variables to it (mixed_bfloat16: float32 variables, bfloat16 compute).
COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "bfloat16": "bfloat16"}


def compute_dtype(e, what):
    cd = COMPUTE_DTYPES.get(e.cfg.get("dtype", "float32"))
    if cd is None:
        e.unsupported(f"quantized {what} computing in {e.cfg.get('dtype')} (float32 and bfloat16 are converted)")
    return cd


def cd_arg(cd):
    return "" if cd == "float32" else f", compute_dtype={cd!r}"


def quantized_output(e, expr, cd):
    """Bind the layer output, activation included; a bfloat16 layer applies its activation in bfloat16
    (as Keras does) and hands the result on as float32, which holds it exactly (the next float32
    layer would cast it so; a bfloat16 one casts it back)."""
    if cd == "float32":
        e.output(expr, activation=True)
        return
    shape = e.out_shapes[0] if e.out_shapes else None
    e.output(f"({e.activation(expr, 'keras', shape)}).float()")
