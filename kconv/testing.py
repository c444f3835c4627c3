"""Test helpers for users of kconv: assert that a conversion computes what the Keras model computes.

    from kconv.testing import assert_equivalent
    assert_equivalent("model.h5", "out/model")                  # generated inputs
    assert_equivalent(keras_model, torch_module, inputs=[x])    # live objects, your inputs

Needs Keras installed (the reference is computed by running it); tensorflow is imported on call.
"""
from __future__ import annotations

from .verify import DEFAULT_ATOL, DEFAULT_RTOL, verify


def assert_equivalent(keras_model_or_path, converted_dir_or_module, inputs=None, atol: float = DEFAULT_ATOL,
                      rtol: float = DEFAULT_RTOL, per_layer: bool = True, seed: int = 0, batch_size: int = 2,
                      dims=None, device: str = "cpu"):
    """Raise ``AssertionError`` unless every output agrees within ``atol + rtol * |keras|``.

    ``keras_model_or_path``: a ``keras.Model`` or a model file. ``converted_dir_or_module``: a
    ``kconv convert`` output directory or a ``torch.nn.Module`` taking Keras-layout inputs (a module
    emitted by kconv from the same model, for ``per_layer``). ``inputs``: a list of arrays (Keras
    order), a dict keyed by input name / ``input_<i>``, or None for seeded generated inputs.
    With ``per_layer`` the message names the first layer whose output diverges. Returns the
    :class:`kconv.verify.VerifyResult` when it passes.
    """
    result = verify(keras_model_or_path, converted_dir_or_module, inputs=inputs, atol=atol, rtol=rtol,
                    per_layer=per_layer, seed=seed, batch_size=batch_size, dims=dims, device=device)
    if not result.passed:
        raise AssertionError(result.summary())
    return result


#: torch functions that move dims around (a view: the next operation reads strided memory or copies)
LAYOUT_FUNCTIONS = ("permute", "movedim", "moveaxis", "transpose", "swapaxes")


def layout_ops(module, *inputs):
    """What one forward of ``module`` on ``inputs`` executes of layout work, counted with a
    ``TorchFunctionMode`` (helpers and nested modules included, under ``torch.inference_mode``):
    ``{"permute": permute/movedim/transpose calls, "pad": F.pad calls}`` (a Counter)."""
    from collections import Counter

    import torch
    from torch.overrides import TorchFunctionMode

    seen: Counter = Counter()

    class _Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in LAYOUT_FUNCTIONS:
                seen["permute"] += 1
            elif func is torch.nn.functional.pad:
                seen["pad"] += 1
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), _Count():
        module(*inputs)
    return seen
