"""Attention layers: keras.layers.MultiHeadAttention in Keras's kernel layout and equations."""

import torch
from torch import nn


class KerasMultiHeadAttention(nn.Module):
    """keras.layers.MultiHeadAttention over (batch, time, features) inputs, attention over time:
    per-head projections with Keras's kernels (d, heads, key_dim) / output (heads, value_dim, out),
    scores scaled by 1/sqrt(key_dim), masked positions set to -1e9 before the softmax."""

    def __init__(self, q_dim, k_dim, v_dim, heads, key_dim, value_dim, out_dim, bias):
        super().__init__()
        self.key_dim = key_dim
        for name, shape in (
            ("query", (q_dim, heads, key_dim)),
            ("key", (k_dim, heads, key_dim)),
            ("value", (v_dim, heads, value_dim)),
        ):
            setattr(self, name + "_kernel", nn.Parameter(torch.zeros(shape)))
            setattr(self, name + "_bias", nn.Parameter(torch.zeros(shape[1:])) if bias else None)
        self.output_kernel = nn.Parameter(torch.zeros(heads, value_dim, out_dim))
        self.output_bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def _proj(self, x, w, b):
        y = torch.einsum("abc,cde->abde", x, w)
        return y if b is None else y + b

    def forward(
        self,
        query,
        value,
        key: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        zero_masked_rows: bool = True,
    ):
        key = value if key is None else key
        q = self._proj(query, self.query_kernel, self.query_bias) * (1.0 / self.key_dim**0.5)
        k = self._proj(key, self.key_kernel, self.key_bias)
        v = self._proj(value, self.value_kernel, self.value_bias)
        scores = torch.einsum("aecd,abcd->acbe", k, q)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), -1e9)
        scores = torch.softmax(scores, dim=-1)
        if mask is not None and zero_masked_rows:  # keras Softmax zeroes masked positions
            scores = scores.masked_fill(~mask.unsqueeze(1), 0.0)
        out = torch.einsum("acbe,aecd->abcd", scores, v)
        out = torch.einsum("abcd,cde->abe", out, self.output_kernel)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out, scores


class KerasMultiHeadAttentionEinsum(nn.Module):
    """keras.layers.MultiHeadAttention in its general form (inputs of any rank, attention_axes, a
    multi-dimensional output_shape), with Keras's own einsum equations (multi_head_attention.py
    _build_proj_equation / _build_attention_equation): query scaled by 1/sqrt(key_dim), the softmax
    normalises over the attention axes of the scores (norm_dims); masked scores are set to -1e9
    before it and masked weights to 0 after it, as keras.layers.Softmax does. ``mask`` arrives
    already broadcastable to the scores."""

    def __init__(
        self,
        q_dim,
        k_dim,
        v_dim,
        heads,
        key_dim,
        value_dim,
        out_shape,
        bias,
        proj_eq,
        dot_eq,
        combine_eq,
        out_eq,
        norm_dims,
    ):
        super().__init__()
        self.key_dim = key_dim
        self.proj_eq, self.dot_eq, self.combine_eq, self.out_eq = (
            proj_eq,
            dot_eq,
            combine_eq,
            out_eq,
        )
        self.norm_dims = tuple(norm_dims)
        for name, shape in (
            ("query", (q_dim, heads, key_dim)),
            ("key", (k_dim, heads, key_dim)),
            ("value", (v_dim, heads, value_dim)),
        ):
            setattr(self, name + "_kernel", nn.Parameter(torch.zeros(shape)))
            setattr(self, name + "_bias", nn.Parameter(torch.zeros(shape[1:])) if bias else None)
        self.output_kernel = nn.Parameter(torch.zeros((heads, value_dim) + tuple(out_shape)))
        self.output_bias = nn.Parameter(torch.zeros(tuple(out_shape))) if bias else None

    def _proj(self, x, w, b):
        y = torch.einsum(self.proj_eq, x, w)
        return y if b is None else y + b

    def forward(self, query, value, key=None, mask=None):
        key = value if key is None else key
        q = self._proj(query, self.query_kernel, self.query_bias) * (1.0 / self.key_dim**0.5)
        k = self._proj(key, self.key_kernel, self.key_bias)
        v = self._proj(value, self.value_kernel, self.value_bias)
        scores = torch.einsum(self.dot_eq, k, q)
        if mask is not None:
            scores = scores.masked_fill(~mask, -1e9)
        if len(self.norm_dims) == 1:
            scores = torch.softmax(scores, dim=self.norm_dims[0])
        else:
            scores = torch.exp(scores - torch.logsumexp(scores, dim=self.norm_dims, keepdim=True))
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
        out = torch.einsum(self.combine_eq, scores, v)
        out = torch.einsum(self.out_eq, out, self.output_kernel)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out, scores
