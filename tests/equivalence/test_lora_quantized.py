"""Keras 3 LoRA-enabled and quantized layers.

LoRA: an .h5 file stores kernel, lora_kernel_a and lora_kernel_b (kconv merges them: kernel +
a @ b * alpha / rank); a .keras file stores the already merged kernel and no factors. Quantized
Dense (int8/int4/float8 dtype policies) is refused for now, clearly, never converted wrongly.
"""
from __future__ import annotations

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


@pytest.mark.parametrize("mode", ["int8", "float8"])
def test_quantized_dense_is_refused_clearly(mode, tmp_path):
    k, L = keras(), layers()
    model = k.Sequential([k.Input((6,)), L.Dense(4, name="q"), L.Dense(2, name="q2")])
    model.quantize(mode)
    path = tmp_path / "q.keras"
    model.save(path)
    with pytest.raises(UnsupportedError) as err:
        kconv.convert(path, tmp_path / "out")
    assert sorted(name for name, _ in err.value.by_class["Dense"]) == ["q", "q2"]  # all of them, once
    assert not (tmp_path / "out").exists()
