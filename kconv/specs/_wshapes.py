"""Expected weight shapes (``WeightDecl.shape``): how Keras's ``build()`` sizes each weight.

Each function takes (cfg, input_shape) and returns a tuple of int | None (None: that dimension is
not checked) or None when the shape cannot be told (an unknown input dimension is simply None).
"""
from __future__ import annotations

from ._shapes import channels_last, tup


def _int(v):
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


def last(cfg, shape):
    return dim(shape, -1)


def units(cfg, shape=None):
    return _int(cfg["units"])


def _plain(cfg):
    """Quantized/LoRA variants store packed or extra tensors: not checked."""
    return not cfg.get("quantization_mode")


# --- core
def dense_kernel(cfg, shape):
    return (last(cfg, shape), units(cfg)) if _plain(cfg) else None


def dense_bias(cfg, shape):
    return (units(cfg),) if _plain(cfg) else None


def embeddings(cfg, shape):
    return (_int(cfg["input_dim"]), _int(cfg["output_dim"])) if _plain(cfg) else None


# --- convolutions
def _channels(cfg, shape):
    return dim(shape, -1) if channels_last(cfg) else dim(shape, 1)


def conv_kernel(n):
    def f(cfg, shape):
        c = _channels(cfg, shape)
        groups = _int(cfg.get("groups", 1) or 1)
        per_group = None if c is None else c // groups
        k = tuple(_int(k) for k in tup(cfg["kernel_size"], n))
        if cfg.get("_kernel_layout") == "channels_first":  # Keras 1 dim_ordering 'th': (out, in, k..)
            return (_int(cfg["filters"]), per_group, *k)
        if cfg.get("_keras1_conv1d_kernel"):  # Keras 1.1+ Convolution1D: (k, 1, in, out)
            return (*k, 1, per_group, _int(cfg["filters"]))
        return (*k, per_group, _int(cfg["filters"]))
    return f


def conv_transpose_kernel(n):
    def f(cfg, shape):
        return (*(_int(k) for k in tup(cfg["kernel_size"], n)), _int(cfg["filters"]), _channels(cfg, shape))
    return f


def filters_bias(cfg, shape):
    return (_int(cfg["filters"]),)


def depthwise_kernel(n):
    def f(cfg, shape):
        return (*(_int(k) for k in tup(cfg["kernel_size"], n)), _channels(cfg, shape),
                _int(cfg.get("depth_multiplier", 1)))
    return f


def depthwise_bias(cfg, shape):
    c = _channels(cfg, shape)
    return (None if c is None else c * _int(cfg.get("depth_multiplier", 1)),)


def pointwise_kernel(n):
    def f(cfg, shape):
        c = _channels(cfg, shape)
        return (*([1] * n), None if c is None else c * _int(cfg.get("depth_multiplier", 1)), _int(cfg["filters"]))
    return f


# --- normalization
def axis_dims(default_axis=-1):
    """(shape[a] for a in axis): BatchNormalization, LayerNormalization, GroupNormalization, RMSNormalization."""
    def f(cfg, shape):
        axis = cfg.get("axis", default_axis)
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        axes = [_int(a) for a in axes]
        if shape is not None:
            rank = len(shape)
            axes = sorted(a + rank if a < 0 else a for a in axes)
        return tuple(dim(shape, a) for a in axes)
    return f


def batchnorm_param(cfg, shape):
    """tf.keras 2 BatchNormalization with several axes creates its parameters with the broadcast
    shape (1 on the other axes, batch included: tf_keras batch_normalization.py build()); Keras 3
    accepts one axis only."""
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)) and len(axis) > 1:
        if shape is None:
            return None
        rank = len(shape)
        axes = {_int(a) + rank if _int(a) < 0 else _int(a) for a in axis}
        return tuple(dim(shape, i) if i in axes else 1 for i in range(rank))
    return axis_dims()(cfg, shape)


# --- activation
def prelu_alpha(cfg, shape):
    if shape is None:
        return None
    out = list(dim(shape, i) for i in range(1, len(shape)))
    shared = cfg.get("shared_axes")
    if shared is not None:
        for a in (shared if isinstance(shared, (list, tuple)) else [shared]):
            out[_int(a) - 1] = 1
    return tuple(out)


# --- recurrent
_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}


def rnn_kernel(cls):
    return lambda cfg, shape: (last(cfg, shape), _GATES[cls] * units(cfg))


def rnn_recurrent_kernel(cls):
    return lambda cfg, shape: (units(cfg), _GATES[cls] * units(cfg))


def rnn_bias(cls):
    def f(cfg, shape):
        n = _GATES[cls] * units(cfg)
        if cls == "GRU" and cfg.get("reset_after", True):
            return (2, n)
        return (n,)
    return f
