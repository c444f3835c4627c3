"""Output-shape arithmetic shared by the layer declarations (Keras's own formulas)."""
from __future__ import annotations

import math
from typing import Optional


def channels_last(cfg: dict) -> bool:
    return cfg.get("data_format", "channels_last") != "channels_first"


def conv_length(n: Optional[int], k: int, padding: str, s: int, d: int = 1) -> Optional[int]:
    if n is None:
        return None
    if padding in ("same", "causal"):
        return -(-n // s)
    ek = (k - 1) * d + 1
    return max((n - ek) // s + 1, 0) if n >= ek else 0


def deconv_length(n, k, padding, output_padding, s, d=1):
    """keras.src.utils.conv_utils / ops.operation_utils compute_conv_transpose output length."""
    if n is None:
        return None
    k = k + (k - 1) * (d - 1)
    if output_padding is None:
        if padding == "valid":
            return n * s + max(k - s, 0)
        return n * s
    pad = k // 2 if padding == "same" else 0
    return (n - 1) * s + k - 2 * pad + output_padding


def pool_length(n, p, padding, s):
    if n is None:
        return None
    if padding == "same":
        return -(-n // s)
    return max((n - p) // s + 1, 0)


def spatial(shape, cfg):
    """(batch, spatial dims, channels) of an input, whatever the data format."""
    if channels_last(cfg):
        return shape[0], list(shape[1:-1]), shape[-1]
    return shape[0], list(shape[2:]), shape[1]


def assemble(batch, dims, channels, cfg):
    if channels_last(cfg):
        return (batch, *dims, channels)
    return (batch, channels, *dims)


def tup(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == n else tuple(v) * n if len(v) == 1 else tuple(v)
    return (v,) * n


def prod(dims):
    if any(d is None for d in dims):
        return None
    return int(math.prod(dims))


def axis_index(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
