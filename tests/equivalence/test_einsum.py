"""EinsumDense: torch.einsum with Keras's equation, kernel and bias kept in Keras's layout, bias on
non-trailing axes (broadcast shape), ellipses, activations, LoRA; quantized EinsumDense is refused."""
from __future__ import annotations

import numpy as np
import pytest

import kconv
from kconv.errors import UnsupportedError

from .harness import check, keras, layers, rand, randomize_weights

pytestmark = pytest.mark.keras

CASES = [
    # equation, output_shape, bias_axes, activation, input shape (without batch)
    ("ab,bc->ac", 4, None, None, (5,)),
    ("ab,bc->ac", 4, "c", "relu", (5,)),
    ("abc,cd->abd", (3, 6), "d", "tanh", (3, 5)),
    ("abc,cde->abde", (3, 2, 4), "de", None, (3, 5)),
    ("abc,cde->abde", (3, 2, 4), "d", "softmax", (3, 5)),  # bias on a non-last axis: shape (2, 1)
    ("abcd,cde->abe", (3, 6), "e", None, (3, 2, 4)),  # contracts two axes (MHA output projection)
    ("...b,bc->...c", 4, "c", "sigmoid", (2, 3, 5)),
    ("ab...,bc->ac...", (4, 3), "c", None, (5, 3)),
]


@pytest.mark.parametrize("eq,out,bias,act,shape", CASES, ids=[f"{c[0]}|{c[2]}|{c[3]}" for c in CASES])
def test_einsum_dense(eq, out, bias, act, shape, tmp_path):
    L = layers()
    k = keras()
    model = k.Sequential([k.Input(shape), L.EinsumDense(eq, output_shape=out, bias_axes=bias, activation=act)])
    fmts = ("keras", "h5") if eq == "abc,cde->abde" else ("keras",)
    check(model, rand(2, *shape, seed=3), tmp_path, formats=fmts)


def test_einsum_dense_inspect_shapes(tmp_path):
    L = layers()
    k = keras()
    inp = k.Input((2, 3, 5))
    y = L.EinsumDense("...b,bc->...c", output_shape=4, bias_axes="c", name="e")(inp)
    model = k.Model(inp, y)
    model.save(tmp_path / "m.keras")
    m = kconv.load(tmp_path / "m.keras")
    assert tuple(m.layer("e").calls[0].output_shapes[0]) == (None, 2, 3, 4)


def test_einsum_dense_lora(tmp_path):
    L = layers()
    k = keras()
    model = k.Sequential([k.Input((3, 5)), L.EinsumDense("abc,cde->abde", output_shape=(3, 2, 4), bias_axes="e",
                                                         lora_rank=2, name="lo")])
    randomize_weights(model)
    layer = model.get_layer("lo")
    rng = np.random.default_rng(4)
    layer.lora_kernel_a.assign(rng.normal(0, 0.5, layer.lora_kernel_a.shape).astype("float32"))
    layer.lora_kernel_b.assign(rng.normal(0, 0.5, layer.lora_kernel_b.shape).astype("float32"))
    check(model, rand(2, 3, 5), tmp_path, randomize=False)


def test_lora_on_quantized_einsum_dense_is_refused_clearly(tmp_path):
    """Quantized EinsumDense converts (test_einsum_quantized.py); with LoRA on top it is refused."""
    L = layers()
    k = keras()
    model = k.Sequential([k.Input((3, 5)), L.EinsumDense("abc,cd->abd", output_shape=(3, 4), name="eq")])
    model.quantize("int8")
    model.get_layer("eq").enable_lora(2)
    model.save(tmp_path / "q.keras")
    with pytest.raises(UnsupportedError) as err:
        kconv.convert(tmp_path / "q.keras", tmp_path / "out")
    assert [n for n, _ in err.value.by_class["EinsumDense"]] == ["eq"]
    assert not (tmp_path / "out").exists()
