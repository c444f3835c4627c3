"""Keras 3 quantized EinsumDense (keras/src/layers/core/einsum_dense.py) in int8, int4 and float8.

The converted module keeps the stored tensors and computes what Keras computes: int8 quantizes the
inputs over the equation's reduced input axes and lays the input scale out as Keras does
(_analyze_quantization_info, ported line for line: transpose, expand, squeeze; the squeeze case is
'abcd,cde->abe'), with an exact integer einsum; int4 unpacks the (rows, ceil(columns/2)) kernel and
dequantizes per column or per row group with zero points; float8 quantize-dequantizes through
float8_e4m3fn. Weights are randomised before quantizing. Keras itself cannot quantize equations
with '...' to int8/int4 (its quantize() fails), so those are tested in float8 only.
"""
from __future__ import annotations

import numpy as np
import pytest

import kconv

from .harness import check, keras, layers, rand, randomize_weights

pytestmark = pytest.mark.keras

EQUATIONS = [
    ("abc,cde->abde", (4, 10), (4, 5, 3), "de"),
    ("ab,bc->ac", (10,), (6,), "c"),
    ("abcd,cde->abe", (3, 4, 5), (3, 6), "e"),  # two reduced input axes, one squeezed from the scale
    ("btd,dnh->btnh", (5, 8), (5, 2, 3), "nh"),
    ("abc,bcd->ad", (3, 4), (6,), None),
]


def _config(case):
    from keras.quantizers import AbsMaxQuantizer, Int4QuantizationConfig, Int8QuantizationConfig

    return {"int8-no-input-quant": Int8QuantizationConfig(activation_quantizer=None),
            "int8-range63": Int8QuantizationConfig(activation_quantizer=AbsMaxQuantizer(value_range=(-63, 63))),
            "int4-per-channel": Int4QuantizationConfig(block_size=-1),
            "int4-per-channel-input-quant": Int4QuantizationConfig(block_size=-1, activation_quantizer=AbsMaxQuantizer()),
            "int4-block3": Int4QuantizationConfig(block_size=3)}.get(case)


CASES = ["int8", "int8-no-input-quant", "int8-range63", "int4", "int4-per-channel",
         "int4-per-channel-input-quant", "int4-block3", "float8"]


def _model(eq, ishape, oshape, bias, case):
    k, L = keras(), layers()
    model = k.Sequential([k.Input(ishape), L.EinsumDense(eq, oshape, bias_axes=bias, activation="tanh", name="e")])
    randomize_weights(model)
    model.quantize(case.split("-")[0], config=_config(case))
    if case == "float8":
        layer = model.get_layer("e")
        layer.inputs_scale.assign(np.float32(0.013))
        layer.kernel_scale.assign(np.float32(0.004))
    return model


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("eq,ishape,oshape,bias", EQUATIONS, ids=[e[0] for e in EQUATIONS])
def test_quantized_einsum_dense(eq, ishape, oshape, bias, case, tmp_path):
    model = _model(eq, ishape, oshape, bias, case)
    want = (sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            sum(int(np.prod(w.shape)) for w in model.non_trainable_weights))
    fmts = ("keras", "h5") if eq == "abcd,cde->abe" or case == "int8" else ("keras",)
    for fmt in fmts:
        model.save(tmp_path / f"c.{fmt}")
        assert kconv.load(tmp_path / f"c.{fmt}").param_counts() == want, fmt
    check(model, rand(3, *ishape, seed=1) * 3, tmp_path, randomize=False, formats=fmts)


@pytest.mark.parametrize("eq,ishape,oshape", [("...b,bc->...c", (3, 4, 10), (6,)), ("ab...,bc->ac...", (8, 3), (5, 3))])
def test_float8_einsum_dense_ellipsis(eq, ishape, oshape, tmp_path):
    check(_model(eq, ishape, oshape, None, "float8"), rand(2, *ishape, seed=2) * 3, tmp_path, randomize=False)
