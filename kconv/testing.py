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
