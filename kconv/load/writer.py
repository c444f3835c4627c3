"""Which Keras backend wrote a file, and what that changes (Theano kernels and 'same' padding).

Theano's ``conv2d`` is a true convolution (``filter_flip=True``): a kernel trained with Theano,
used as a cross-correlation (TensorFlow, torch), must be rotated 180 degrees on its spatial axes
(Keras 2's own loader does this, ``keras/engine/saving.py: _need_convert_kernel`` +
``conv_utils.convert_kernel``). Theano's ``'same'`` is its ``'half'`` mode: k//2 on both sides,
cropped to ceil(i/s) (Keras 1.2.2 ``theano_backend._preprocess_border_mode`` and
``_postprocess_conv2d_output``), not TensorFlow's asymmetric padding.

Keras 2 files record ``backend``. Keras 1 files do not: a Keras 1 model with ``dim_ordering 'th'``
convolutions was almost certainly trained with Theano (its default ordering); otherwise TensorFlow
is assumed. ``--backend-of-writer`` overrides both. The loader only records the answer in the
layer configs (``_theano_kernels`` on convolutions, ``_theano_padding`` on convolutions and
pooling); the conv declarations and emitters act on those flags.
"""
from __future__ import annotations

from ..errors import KconvError
from ..ir import Model

BACKENDS = ("theano", "tensorflow", "cntk")
_CONV_FAMILY = ("Conv", "Convolution", "SeparableConv", "DepthwiseConv")
_CONV_CLASSES_WITH_KERNEL = ("Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D",
                             "Conv2DTranspose", "Conv3DTranspose", "Conv1DTranspose", "Convolution2DTranspose")


def _walk(model: Model):
    for layer in model.layers:
        if layer.model is not None:
            yield from _walk(layer.model)
        else:
            yield layer


def _is_conv(cls: str) -> bool:
    return cls in _CONV_CLASSES_WITH_KERNEL or cls.startswith(("SeparableConv", "DepthwiseConv", "ConvLSTM"))


def resolve(model: Model, recorded: str, override: str | None) -> tuple[str, str]:
    """(backend, how it was decided) for a loaded model; ``recorded``: the file's ``backend`` attribute."""
    if override:
        override = override.lower()
        if override not in BACKENDS:
            raise KconvError(f"--backend-of-writer {override!r}: expected one of {', '.join(BACKENDS)}")
        if recorded and recorded != override:
            return override, f"given with --backend-of-writer (the file records {recorded!r})"
        return override, "given with --backend-of-writer"
    if recorded:
        return recorded, ""
    if not model.keras_version.startswith("1"):
        return "", ""
    convs = [ly for ly in _walk(model) if _is_conv(ly.class_name)]
    if not convs:
        return "", ""
    if any(ly.config.get("data_format") == "channels_first" for ly in convs):
        return "theano", ("not recorded by Keras 1; assumed from dim_ordering 'th' (Theano's ordering); "
                          "override with --backend-of-writer tensorflow")
    return "tensorflow", ("not recorded by Keras 1; assumed from dim_ordering 'tf'; if the model was trained "
                          "with Theano, use --backend-of-writer theano (kernels are flipped)")


def _as_list(v, n=1):
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v]
    return [int(v)] * n if v is not None else []


def guess_affects(model: Model) -> list[str]:
    """Layers whose result differs between a Theano and a TensorFlow writer: convolutions with a
    kernel wider than 1 (Theano's kernels are flipped) and 'same' pooling whose Theano 'half' padding
    differs from TensorFlow's (an even window or a stride > 1)."""
    out = []
    for layer in _walk(model):
        cfg = layer.config
        if _is_conv(layer.class_name):
            if any(k > 1 for k in _as_list(cfg.get("kernel_size"))):
                out.append(layer.name)
        elif "Pooling" in layer.class_name and cfg.get("padding") == "same":
            pool = _as_list(cfg.get("pool_size"))
            strides = _as_list(cfg.get("strides")) or pool
            if any(p % 2 == 0 for p in pool) or any(s > 1 for s in strides):
                out.append(layer.name)
    return out


def apply(model: Model, backend: str):
    """Record a Theano writer in the configs of the layers it changes, with a note on each."""
    if backend != "theano":
        return
    for layer in _walk(model):
        cfg = layer.config
        if _is_conv(layer.class_name):
            cfg["_theano_kernels"] = True
            layer.notes.append("written by Theano: kernels flipped on their spatial axes (true convolution)")
        if cfg.get("padding") == "same" and (_is_conv(layer.class_name) or "Pooling" in layer.class_name):
            cfg["_theano_padding"] = True
            layer.notes.append("written by Theano: 'same' is Theano's 'half' padding (k//2 on both sides)")
