"""Quantized Dense / EinsumDense / Embedding under a ``mixed_bfloat16`` (or ``bfloat16``) policy: Keras
autocasts the inputs and the float variables (scales, bias, the float8 kernel) to bfloat16 and
computes every step in bfloat16; the converted modules do the same (compute_dtype='bfloat16') and
hand their bfloat16 result on as float32, which holds it exactly.

Tolerance (the written reason): bfloat16 keeps 8 significant bits (relative spacing up to 2^-7).
Keras's TensorFlow bfloat16 matmul/einsum on CPU does not return the exactly rounded sum (it differs
from it in about half of the entries of a (6, 10) @ (10, 5) product; torch's equals the exactly
rounded one), so a layer's outputs can land one or two bfloat16 ulps apart and later layers carry
that: max |torch - keras| measured 7.0e-2 at outputs of magnitude 4.5 (1.5%). Compared with
atol = 2^-5 * max|keras| (4 ulps at the largest output), rtol 0; a conversion bug (wrong scale, zero
point, layout, dropped bias) moves outputs by far more. The outputs must also be bfloat16 values,
i.e. the last step really computed in bfloat16.
"""
from __future__ import annotations

import numpy as np
import pytest

import kconv

from .harness import convert_and_load, keras, keras_forward, layers, randomize_weights, torch_forward

pytestmark = pytest.mark.keras



def _config(case):
    from keras.quantizers import AbsMaxQuantizer, Int4QuantizationConfig, Int8QuantizationConfig

    return {"int8-no-input-quant": Int8QuantizationConfig(activation_quantizer=None),
            "int4-per-channel": Int4QuantizationConfig(block_size=-1),
            "int4-per-channel-input-quant": Int4QuantizationConfig(block_size=-1, activation_quantizer=AbsMaxQuantizer()),
            "int4-block4": Int4QuantizationConfig(block_size=4)}.get(case)


def _dense(policy):
    k, L = keras(), layers()
    return (k.Sequential([k.Input((10,)), L.Dense(7, activation="tanh", dtype=policy), L.Dense(5, use_bias=False, dtype=policy),
                          L.Dense(3, dtype=policy)]),
            np.random.default_rng(1).standard_normal((6, 10)).astype("float32") * 3)


def _einsum(policy):
    k, L = keras(), layers()
    return (k.Sequential([k.Input((4, 10)), L.EinsumDense("abc,cde->abde", (4, 5, 3), bias_axes="de", activation="tanh",
                                                          dtype=policy),
                          L.Reshape((4, 15)), L.EinsumDense("abc,cd->abd", (4, 3), bias_axes="d", dtype=policy)]),
            np.random.default_rng(1).standard_normal((3, 4, 10)).astype("float32") * 3)


def _embedding(policy):
    k, L = keras(), layers()
    return (k.Sequential([k.Input((6,), dtype="int32"), L.Embedding(12, 7, dtype=policy), L.Dense(3, dtype=policy)]),
            np.random.default_rng(1).integers(0, 12, (3, 6)).astype("int32"))


CASES = ["int8", "int8-no-input-quant", "int4", "int4-per-channel", "int4-per-channel-input-quant", "int4-block4",
         "float8"]


# mixed_bfloat16: float32 variables, bfloat16 compute; bfloat16: bfloat16 variables too (stored so)
POLICY_CASES = [("mixed_bfloat16", c) for c in CASES] + [("bfloat16", c) for c in ("int8", "int4-block4", "float8")]


@pytest.mark.parametrize("policy,case", POLICY_CASES)
@pytest.mark.parametrize("build", [_dense, _einsum, _embedding], ids=["Dense", "EinsumDense", "Embedding"])
def test_quantized_bfloat16_compute(build, policy, case, tmp_path):
    import ml_dtypes

    model, x = build(policy)
    randomize_weights(model)
    model.quantize(case.split("-")[0], config=_config(case))
    expected = keras_forward(model, x)[0]
    assert expected.dtype == ml_dtypes.bfloat16  # Keras computed in bfloat16
    expected = expected.astype("float32")
    counts = (sum(int(np.prod(w.shape)) for w in model.trainable_weights),
              sum(int(np.prod(w.shape)) for w in model.non_trainable_weights))
    # A legacy .h5 file stores bfloat16 variables as untyped 2-byte values (no dtype attribute, unlike
    # .keras): kconv refuses those (kconv.load.h5safe), so the bfloat16 policy is tested in .keras.
    for fmt in ("keras", "h5") if policy == "mixed_bfloat16" else ("keras",):
        path = tmp_path / f"m.{fmt}"
        model.save(path)
        assert kconv.load(path).param_counts() == counts, fmt
        got = torch_forward(convert_and_load(path, tmp_path / f"out_{fmt}"), x)[0]
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, got.astype(ml_dtypes.bfloat16).astype("float32"))
        atol = 2.0 ** -5 * float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=f"[{fmt}]")
