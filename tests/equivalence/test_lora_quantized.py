"""Keras 3 LoRA-enabled and quantized layers.

LoRA: an .h5 file stores kernel, lora_kernel_a and lora_kernel_b (kconv merges them: kernel +
a @ b * alpha / rank); a .keras file stores the already merged kernel and no factors.

Quantized Dense (``model.quantize(mode)``, keras/src/layers/core/dense.py): the converted module
keeps the stored quantized tensors (int8 kernel, unpacked int4 kernel, scales, zero points) and
computes what Keras computes: int8 quantizes the inputs per row (AbsMaxQuantizer) and runs an exact
integer matmul; int4 sub-channel (block_size groups) dequantizes with zero points; float8
quantize-dequantizes inputs and kernel through float8_e4m3fn and rounds the bias to bfloat16.
Weights are randomised before quantizing (the quantized tensors come from random float kernels), and
the float8 scales are set to non-default values.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import kconv
from kconv.errors import UnsupportedError

from .harness import check, keras, layers, rand, randomize_weights

pytestmark = pytest.mark.keras


def _lora_model(rank, alpha):
    k, L = keras(), layers()
    inp = k.Input((6,))
    x = L.Dense(5, activation="tanh", lora_rank=rank, lora_alpha=alpha, name="lora_dense")(inp)
    out = L.Dense(3, name="head")(x)
    model = k.Model(inp, out)
    randomize_weights(model)
    # lora_kernel_b starts at zero: give both factors values so that the merge matters.
    dense = model.get_layer("lora_dense")
    rng = np.random.default_rng(3)
    dense.lora_kernel_a.assign(rng.normal(0, 0.5, dense.lora_kernel_a.shape).astype("float32"))
    dense.lora_kernel_b.assign(rng.normal(0, 0.5, dense.lora_kernel_b.shape).astype("float32"))
    return model


@pytest.mark.parametrize("rank,alpha", [(2, 2.0), (3, 6.0)])
def test_lora_dense(rank, alpha, tmp_path):
    check(_lora_model(rank, alpha), rand(4, 6), tmp_path, randomize=False)


def test_lora_inspect_counts_equal_keras(tmp_path):
    model = _lora_model(2, 4.0)
    want = (sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            sum(int(np.prod(w.shape)) for w in model.non_trainable_weights))
    for fmt in ("keras", "h5"):
        path = tmp_path / f"m.{fmt}"
        model.save(path)
        assert kconv.load(path).param_counts() == want, fmt


# ---------------------------------------------------------------------------- quantized Dense

def _config(name):
    from keras.quantizers import AbsMaxQuantizer, Int4QuantizationConfig, Int8QuantizationConfig

    return {
        "int8": None,  # default: inputs quantized per row with AbsMaxQuantizer((-127, 127))
        "int8-no-input-quant": Int8QuantizationConfig(activation_quantizer=None),
        "int8-range63": Int8QuantizationConfig(activation_quantizer=AbsMaxQuantizer(value_range=(-63, 63))),
        "int4": None,  # default: block_size 128 (one group here), zero points
        "int4-block4": Int4QuantizationConfig(block_size=4),  # 10 inputs: 3 groups, the last one short
        "int4-per-channel": Int4QuantizationConfig(block_size=-1),
        "int4-per-channel-input-quant": Int4QuantizationConfig(block_size=-1, activation_quantizer=AbsMaxQuantizer()),
        "float8": None,
    }[name]


def _quantized_model(case, shape):
    k, L = keras(), layers()
    model = k.Sequential([k.Input(shape), L.Dense(7, activation="tanh", name="q"),
                          L.Dense(5, use_bias=False, name="q2"), L.Dense(3, name="q3")])
    randomize_weights(model)  # before quantizing: the quantized kernels come from random floats
    mode = case.split("-")[0]
    model.quantize(mode, config=_config(case))
    if mode == "float8":
        rng = np.random.default_rng(5)
        for layer in model.layers:
            layer.inputs_scale.assign(np.float32(rng.uniform(0.005, 0.02)))
            layer.kernel_scale.assign(np.float32(rng.uniform(0.002, 0.01)))
    return model


QUANT_CASES = ["int8", "int8-no-input-quant", "int8-range63", "int4", "int4-block4", "int4-per-channel",
               "int4-per-channel-input-quant", "float8"]


@pytest.mark.parametrize("case", QUANT_CASES)
def test_quantized_dense(case, tmp_path):
    x = rand(6, 10, seed=1) * 3
    fmts = ("keras", "h5") if case in ("int8", "int4-block4", "float8") else ("keras",)
    check(_quantized_model(case, (10,)), x, tmp_path, randomize=False, formats=fmts)


@pytest.mark.parametrize("case", ["int8", "int4-block4", "float8"])
def test_quantized_dense_rank3(case, tmp_path):
    check(_quantized_model(case, (4, 10)), rand(3, 4, 10, seed=2), tmp_path, randomize=False, formats=("keras",))


def test_quantized_manifest_says_kept_quantized(tmp_path):
    model = _quantized_model("int8", (10,))
    model.save(tmp_path / "q.keras")
    kconv.convert(tmp_path / "q.keras", tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "kconv.json").read_text())["weights"]
    kernel = [r for r in rows if r["keras_layer"] == "q" and r["role"] == "kernel"][0]
    assert kernel["torch_key"] == "q.kernel" and "kept int8" in kernel["transform"]
    from safetensors.numpy import load_file

    sd = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sd["q.kernel"].dtype == np.int8


def test_quantized_dense_with_lora_is_refused_clearly(tmp_path):
    k, L = keras(), layers()
    model = k.Sequential([k.Input((6,)), L.Dense(4, name="q"), L.Dense(2, name="plain")])
    model.quantize("int8")
    model.get_layer("q").enable_lora(2)
    path = tmp_path / "q.keras"
    model.save(path)
    with pytest.raises(UnsupportedError) as err:
        kconv.convert(path, tmp_path / "out")
    assert [name for name, _ in err.value.by_class["Dense"]] == ["q"]
    assert "LoRA" in err.value.by_class["Dense"][0][1]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- LoRA on Conv*, Embedding

def _counts(model):
    return (sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            sum(int(np.prod(w.shape)) for w in model.non_trainable_weights))


def _check_counts(model, tmp_path, formats=("keras", "h5")):
    for fmt in formats:
        path = tmp_path / f"counts.{fmt}"
        model.save(path)
        assert kconv.load(path).param_counts() == _counts(model), fmt


@pytest.mark.parametrize("conv,shape", [("Conv1D", (9, 3)), ("Conv2D", (7, 6, 3)), ("Conv3D", (5, 5, 4, 2))])
def test_lora_conv(conv, shape, tmp_path):
    """.h5 keeps kernel and both factors (kconv merges them); .keras stores the merged kernel."""
    k, L = keras(), layers()
    model = k.Sequential([k.Input(shape), getattr(L, conv)(4, 3, activation="relu", lora_rank=2, lora_alpha=3.0),
                          getattr(L, conv)(2, 2, strides=2, padding="same", lora_rank=1)])
    randomize_weights(model)  # the factors too: lora_kernel_b is zeros at first
    _check_counts(model, tmp_path)
    check(model, rand(2, *shape, seed=4), tmp_path, randomize=False)


@pytest.mark.parametrize("mask_zero", [False, True])
def test_lora_embedding(mask_zero, tmp_path):
    k, L = keras(), layers()
    model = k.Sequential([k.Input((6,), dtype="int32"),
                          L.Embedding(12, 5, mask_zero=mask_zero, lora_rank=3, lora_alpha=1.5),
                          L.GlobalAveragePooling1D()])
    randomize_weights(model)
    _check_counts(model, tmp_path)
    ids = np.random.default_rng(2).integers(0, 12, (3, 6)).astype("int32")
    ids[0, 3:] = 0
    check(model, ids, tmp_path, randomize=False)


# ---------------------------------------------------------------------------- quantized Embedding

@pytest.mark.parametrize("case", ["int8", "int4", "int4-block2", "int4-per-channel"])
def test_quantized_embedding(case, tmp_path):
    from keras.quantizers import Int4QuantizationConfig

    k, L = keras(), layers()
    model = k.Sequential([k.Input((6,), dtype="int32"), L.Embedding(12, 7, name="emb"), L.Dense(3)])
    randomize_weights(model)
    config = {"int4-block2": Int4QuantizationConfig(block_size=2),  # 7 features: 4 groups, the last short
              "int4-per-channel": Int4QuantizationConfig(block_size=-1)}.get(case)
    model.get_layer("emb").quantize(case.split("-")[0], config=config)
    _check_counts(model, tmp_path)
    ids = np.random.default_rng(3).integers(0, 12, (3, 6)).astype("int32")
    check(model, ids, tmp_path, randomize=False)


def test_float8_counts_equal_keras(tmp_path):
    """float8 scales and amax histories are trainable variables in Keras (Dense and EinsumDense)."""
    k, L = keras(), layers()
    model = k.Sequential([k.Input((4, 10)), L.Dense(6, name="d"),
                          L.EinsumDense("abc,cd->abd", (4, 5), bias_axes="d", name="e")])
    model.quantize("float8")
    _check_counts(model, tmp_path)


def test_float8_model_with_embedding(tmp_path):
    """model.quantize('float8') cannot quantize an Embedding: Keras leaves its policy float32 (but
    stores a Float8QuantizationConfig on it); the policy decides, as in Keras."""
    k, L = keras(), layers()
    model = k.Sequential([k.Input((6,), dtype="int32"), L.Embedding(12, 5, name="emb"), L.Dense(3, name="d")])
    randomize_weights(model)
    model.quantize("float8")
    _check_counts(model, tmp_path)
    ids = np.random.default_rng(1).integers(0, 12, (2, 6)).astype("int32")
    check(model, ids, tmp_path, randomize=False)
