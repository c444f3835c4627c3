"""Core layers: EinsumDense, ConvNeXt's LayerScale, Keras 3 quantized Dense / EinsumDense /
Embedding, ReversibleEmbedding."""

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    """ConvNeXt LayerScale: x * gamma over the channel axis."""

    def __init__(self, channels, channels_first=False):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.channels_first = channels_first

    def forward(self, x):
        if self.channels_first:
            return x * self.gamma.reshape(-1, *([1] * (x.dim() - 2)))
        return x * self.gamma


class KerasEinsumDense(nn.Module):
    """keras.layers.EinsumDense: einsum(equation, x, kernel) + bias, kernel and bias in Keras's
    layout."""

    def __init__(self, equation, kernel_shape, bias_shape=None):
        super().__init__()
        self.equation = equation
        self.kernel = nn.Parameter(torch.zeros(kernel_shape))
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x):
        y = torch.einsum(self.equation, x, self.kernel)
        return y if self.bias is None else y + self.bias


class KerasQuantizedDense(nn.Module):
    """Keras 3 quantized Dense (keras/src/layers/core/dense.py), pre-activation, kernel in Keras
    layout.

    int8 / int4 per-channel: y = (q(x) @ kernel) / (kernel_scale * x_scale), the integer product
    exact,
      where q is Keras's AbsMaxQuantizer on each row of x: x_scale = high / (max|x| + eps),
      q(x) = clip(round_half_even(x * x_scale), low, high); without an inputs quantizer
      y = (x @ kernel) / kernel_scale. The int4 kernel is unpacked to int8 values in [-8, 7].
    int4 sub-channel (groups of input rows): y = x @ ((kernel - zero[g_idx]) * scale[g_idx]).
    float8: y = qdq(x, inputs_scale) @ qdq(kernel, kernel_scale), qdq(t, s) = float8_e4m3fn(clip(t /
    s,
      +-448)) * s; the float32 bias is rounded to bfloat16 first, as Keras does.
    compute_dtype (a mixed_bfloat16 policy: 'bfloat16'): inputs, float variables (kernel_scale,
    bias, the float8 kernel) and every step in that dtype, as Keras autocasts them; the float8
    scales stay float32 variables but are cast where used (quantize_and_dequantize).
    """

    def __init__(
        self,
        in_features,
        units,
        mode,
        bias=True,
        inputs_quantizer=None,
        groups=None,
        compute_dtype="float32",
    ):
        super().__init__()
        self.mode = mode
        # float32: follow the module's own float dtype (net.double() works); else Keras's compute
        # dtype
        self.compute_dtype = None if compute_dtype == "float32" else getattr(torch, compute_dtype)
        self.inputs_quantizer = inputs_quantizer
        self.sub_channel = groups is not None
        if mode == "float8":
            self.kernel = nn.Parameter(torch.zeros(in_features, units))
            self.register_buffer("inputs_scale", torch.ones(()))
            self.register_buffer("kernel_scale", torch.ones(()))
        else:
            self.register_buffer("kernel", torch.zeros(in_features, units, dtype=torch.int8))
            self.register_buffer(
                "kernel_scale", torch.ones(units if groups is None else (groups, units))
            )
            if groups is not None:
                self.register_buffer("kernel_zero", torch.zeros(groups, units, dtype=torch.int8))
                self.register_buffer("g_idx", torch.zeros(in_features))
        self.bias = nn.Parameter(torch.zeros(units)) if bias else None

    @staticmethod
    def _qdq(t, scale):
        scale = scale.to(t.dtype)
        q = torch.clamp(t / scale, -448.0, 448.0).to(torch.float8_e4m3fn)
        return q.to(t.dtype) * scale

    def forward(self, x):
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        if self.mode == "float8":
            y = torch.matmul(
                self._qdq(x, self.inputs_scale),
                self._qdq(self.kernel.to(x.dtype), self.kernel_scale),
            )
            if self.bias is not None:
                y = y + self.bias.to(torch.bfloat16).to(y.dtype)
            return y
        kernel_scale = self.kernel_scale.to(x.dtype)
        if self.sub_channel:
            g = self.g_idx.long()
            w = (self.kernel.to(x.dtype) - self.kernel_zero[g].to(x.dtype)) * kernel_scale[g]
            y = torch.matmul(x, w)
        elif self.inputs_quantizer is not None:
            low, high, eps = self.inputs_quantizer
            x_scale = high / (x.abs().amax(dim=-1, keepdim=True) + eps)
            xq = torch.clamp(torch.round(x * x_scale), low, high)
            # exact integer products and sums (Keras: int8 x int8 -> int32 matmul)
            y = torch.matmul(xq.double(), self.kernel.double()).to(x.dtype)
            y = y / (kernel_scale * x_scale)
        else:
            y = torch.matmul(x, self.kernel.to(x.dtype)) / kernel_scale
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y


class KerasQuantizedEinsumDense(nn.Module):
    """Keras 3 quantized EinsumDense (keras/src/layers/core/einsum_dense.py), pre-activation.

    int8: with an inputs quantizer, xq = AbsMax(x) over the input's reduced axes (x_scale = high /
      (max|x| + eps), round half to even, clip); y = einsum(xq, kernel) (exact integer sums) /
      (x_scale laid out as the output (transpose, expand, squeeze as Keras) * kernel_scale);
      without, y = einsum(x, kernel) / kernel_scale.
    int4: kernel stored as (rows, ceil(columns/2)) signed nibbles (low first); unpacked to (rows,
      columns), dequantized (/ scale per column, or (k - zero[g_idx]) * scale[g_idx] per row group)
      and reshaped to the kernel shape; y = einsum(xq, w) / x_scale with an inputs quantizer (per
      column), else einsum(x, w).
    float8: y = einsum(qdq(x, inputs_scale), qdq(kernel, kernel_scale)); bias rounded to bfloat16.
    compute_dtype ('bfloat16' under mixed_bfloat16): inputs and float variables cast to it, as Keras
    autocasts them, and every step computed in it.
    """

    def __init__(
        self,
        equation,
        mode,
        kernel_shape,
        stored,
        bias_shape=None,
        scale_shape=None,
        groups=None,
        inputs_quantizer=None,
        input_axes=None,
        kernel_reduced_axes=None,
        compute_dtype="float32",
    ):
        super().__init__()
        # float32: follow the module's own float dtype (net.double() works); else Keras's compute
        # dtype
        self.compute_dtype = None if compute_dtype == "float32" else getattr(torch, compute_dtype)
        self.equation, self.mode, self.kernel_shape = equation, mode, tuple(kernel_shape)
        self.groups, self.inputs_quantizer, self.input_axes = groups, inputs_quantizer, input_axes
        if mode == "float8":
            self.kernel = nn.Parameter(torch.zeros(stored))
            self.register_buffer("inputs_scale", torch.ones(()))
            self.register_buffer("kernel_scale", torch.ones(()))
        else:
            self.register_buffer("kernel", torch.zeros(stored, dtype=torch.int8))
            self.register_buffer("kernel_scale", torch.ones(scale_shape))
            if groups is not None:
                self.register_buffer("kernel_zero", torch.zeros(scale_shape, dtype=torch.int8))
                self.register_buffer("g_idx", torch.zeros(stored[0]))
            red = set(kernel_reduced_axes)
            self.columns = 1
            for i, n in enumerate(self.kernel_shape):
                self.columns *= 1 if i in red else n
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    @staticmethod
    def _qdq(t, scale):
        scale = scale.to(t.dtype)
        q = torch.clamp(t / scale, -448.0, 448.0).to(torch.float8_e4m3fn)
        return q.to(t.dtype) * scale

    def _quantize_inputs(self, x):
        low, high, eps = self.inputs_quantizer
        reduced, transpose, expand, squeeze = self.input_axes
        x_scale = high / (x.abs().amax(dim=reduced, keepdim=True) + eps)
        xq = torch.clamp(torch.round(x * x_scale), low, high)
        if transpose:
            x_scale = x_scale.permute(*transpose)
        for a in sorted(expand):
            x_scale = x_scale.unsqueeze(a)
        if squeeze:
            x_scale = x_scale.squeeze(tuple(squeeze))
        return xq, x_scale

    def _unpacked(self):
        u = self.kernel.to(torch.int16) & 0xFF
        lo, hi = ((u & 0x0F) ^ 8) - 8, (((u >> 4) & 0x0F) ^ 8) - 8
        return torch.stack([lo, hi], dim=-1).reshape(u.shape[0], -1)[:, : self.columns]

    def forward(self, x):
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        if self.mode == "float8":
            y = torch.einsum(
                self.equation,
                self._qdq(x, self.inputs_scale),
                self._qdq(self.kernel.to(x.dtype), self.kernel_scale),
            )
            return y if self.bias is None else y + self.bias.to(torch.bfloat16).to(y.dtype)
        kernel_scale = self.kernel_scale.to(x.dtype)
        if self.mode == "int8":
            if self.inputs_quantizer is not None:
                xq, x_scale = self._quantize_inputs(x)
                y = torch.einsum(self.equation, xq.double(), self.kernel.double()).to(x.dtype)
                y = y / (x_scale * kernel_scale)
            else:
                y = torch.einsum(self.equation, x, self.kernel.to(x.dtype)) / kernel_scale
        else:
            k = self._unpacked().to(x.dtype)
            if self.groups is not None:
                g = self.g_idx.long()
                w = (k - self.kernel_zero[g].to(x.dtype)) * kernel_scale[g]
                y = torch.einsum(self.equation, x, w.reshape(self.kernel_shape))
            else:
                w = (k / kernel_scale).reshape(self.kernel_shape)
                if self.inputs_quantizer is not None:
                    xq, x_scale = self._quantize_inputs(x)
                    y = torch.einsum(self.equation, xq, w) / x_scale
                else:
                    y = torch.einsum(self.equation, x, w)
        return y if self.bias is None else y + self.bias.to(x.dtype)


class KerasQuantizedEmbedding(nn.Module):
    """Keras 3 int8/int4 quantized Embedding (keras/src/layers/core/embedding.py _int8_call,
    _int4_call): the stored integer row of each id (int4 unpacked to int8 values in [-8, 7]),
    divided by the id's embeddings_scale; int4 sub-channel: (row - zero[id, g_idx]) * scale[id,
    g_idx]. All in compute_dtype ('bfloat16' under a mixed_bfloat16 policy: the scales autocast as
    in Keras)."""

    def __init__(self, input_dim, output_dim, groups=None, compute_dtype="float32"):
        super().__init__()
        # float32: follow the module's own float dtype (net.double() works); else Keras's compute
        # dtype
        self.compute_dtype = None if compute_dtype == "float32" else getattr(torch, compute_dtype)
        self.sub_channel = groups is not None
        self.register_buffer("embeddings", torch.zeros(input_dim, output_dim, dtype=torch.int8))
        self.register_buffer(
            "embeddings_scale", torch.ones(input_dim if groups is None else (input_dim, groups))
        )
        if groups is not None:
            self.register_buffer(
                "embeddings_zero", torch.zeros(input_dim, groups, dtype=torch.int8)
            )
            self.register_buffer("g_idx", torch.zeros(output_dim))

    def forward(self, ids):
        ids = ids.long()
        dtype = self.compute_dtype or self.embeddings_scale.dtype
        rows = self.embeddings[ids].to(dtype)
        scale = self.embeddings_scale.to(dtype)
        if self.sub_channel:
            g = self.g_idx.long()
            zero = self.embeddings_zero[ids][..., g].to(rows.dtype)
            return (rows - zero) * scale[ids][..., g]
        return rows / scale[ids].unsqueeze(-1)


class KerasReversibleEmbedding(nn.Module):
    """keras.layers.ReversibleEmbedding (keras/src/layers/core/reversible_embedding.py).

    forward(ids): the embeddings row of each id (quantized: as KerasQuantizedEmbedding); forward(x,
    reverse=True): logits = x @ embeddings^T (tie_weights) or x @ reverse_embeddings, optionally
    tanh(logits / cap) * cap. Quantized (int8/int4, _int8_call/_int4_call): x quantized per row by
    AbsMaxQuantizer (x_scale = high / (max|x| + eps), round, clip) unless inputs_quantizer is None;
    per-id scales: logits = (xq @ kernel) / (x_scale * scale), the integer product exact; int4
    groups: logits = (xq @ ((kernel - zero[g_idx]) * scale[g_idx])) / x_scale.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        tie_weights=True,
        logit_soft_cap=None,
        mode=None,
        groups=None,
        inputs_quantizer=None,
    ):
        super().__init__()
        self.tie_weights, self.logit_soft_cap, self.mode = tie_weights, logit_soft_cap, mode
        self.groups, self.inputs_quantizer = groups, inputs_quantizer
        n, d = input_dim, output_dim
        if mode is None:
            self.embeddings = nn.Parameter(torch.zeros(n, d))
            if not tie_weights:
                self.reverse_embeddings = nn.Parameter(torch.zeros(d, n))
            return
        self.register_buffer("embeddings", torch.zeros(n, d, dtype=torch.int8))
        self.register_buffer("embeddings_scale", torch.ones(n if groups is None else (n, groups)))
        if groups is not None:
            self.register_buffer("embeddings_zero", torch.zeros(n, groups, dtype=torch.int8))
            self.register_buffer("g_idx", torch.zeros(d))
        if not tie_weights:
            self.register_buffer("reverse_embeddings", torch.zeros(d, n, dtype=torch.int8))
            self.register_buffer(
                "reverse_embeddings_scale", torch.ones(n if groups is None else (groups, n))
            )
            if groups is not None:
                self.register_buffer("reverse_embeddings_zero", torch.zeros(groups, n))

    def _lookup(self, ids):
        ids = ids.long()
        if self.mode is None:
            return F.embedding(ids, self.embeddings)
        rows = self.embeddings[ids].to(self.embeddings_scale.dtype)
        if self.groups is not None:
            g = self.g_idx.long()
            return (
                rows - self.embeddings_zero[ids][..., g].to(rows.dtype)
            ) * self.embeddings_scale[ids][..., g]
        return rows / self.embeddings_scale[ids].unsqueeze(-1)

    def _reverse(self, x):
        if self.mode is None:
            return torch.matmul(
                x, self.embeddings.t() if self.tie_weights else self.reverse_embeddings
            )
        if self.tie_weights:
            kernel, scale = self.embeddings.t(), self.embeddings_scale
            zero = self.embeddings_zero if self.groups is not None else None
            if self.groups is not None:
                scale, zero = scale.t(), zero.t()  # (groups, input_dim)
        else:
            kernel, scale = self.reverse_embeddings, self.reverse_embeddings_scale
            zero = self.reverse_embeddings_zero if self.groups is not None else None
        x_scale = torch.ones((1,), dtype=x.dtype, device=x.device)
        if self.inputs_quantizer is not None:
            low, high, eps = self.inputs_quantizer
            x_scale = high / (x.abs().amax(dim=-1, keepdim=True) + eps)
            x = torch.clamp(torch.round(x * x_scale), low, high)
        if self.groups is not None:
            g = self.g_idx.long()
            w = (kernel.to(x.dtype) - zero[g].to(x.dtype)) * scale[g].to(x.dtype)
            return torch.matmul(x, w) / x_scale
        # exact integer products and sums (Keras: int8 x int8 matmul)
        y = torch.matmul(x.double(), kernel.double()).to(scale.dtype)
        return y / (x_scale * scale)

    def forward(self, x, reverse=False):
        if not reverse:
            return self._lookup(x)
        y = self._reverse(x)
        if self.logit_soft_cap is not None:
            y = torch.tanh(y / self.logit_soft_cap) * self.logit_soft_cap
        return y
