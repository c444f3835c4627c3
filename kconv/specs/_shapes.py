"""Shape arithmetic shared by the layer declarations (Keras's own formulas): output shapes, and the
helpers of the expected weight shapes (``WeightDecl.shape``) each family module declares next to its
weights: (cfg, input_shape) -> tuple of int | None (None: that dimension is not checked), or None when
the shape cannot be told (an unknown input dimension is simply None)."""
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


# --- expected weight shapes ------------------------------------------------------------------------
def int_value(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"not an int: {v!r}")
    return v


def dim(shape, axis):
    """``shape[axis]`` or None when unknown."""
    if shape is None:
        return None
    try:
        d = shape[axis]
    except (IndexError, TypeError):
        return None
    return d if isinstance(d, int) and not isinstance(d, bool) else None


def last_dim(cfg, shape):
    return dim(shape, -1)


def units(cfg, shape=None):
    return int_value(cfg["units"])


def same_order(shape) -> bool:
    """Whether a tensor of Keras ``shape`` holds its elements in the same order in both layouts: one
    channel, or every spatial size 1 (``(batch, 1, 1, C)`` and ``(batch, C, 1, 1)``); then a reshape,
    not a permute, moves it between them."""
    if shape is None or len(shape) < 3:
        return True
    return shape[-1] == 1 or all(d == 1 for d in shape[1:-1])


def cf_shape(shape) -> tuple:
    """A Keras (channels-last) shape in cf order."""
    return (shape[0], shape[-1], *shape[1:-1])
