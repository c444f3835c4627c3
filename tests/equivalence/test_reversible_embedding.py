"""keras.layers.ReversibleEmbedding (keras/src/layers/core/reversible_embedding.py): a forward call
looks ids up, a ``reverse=True`` call (the same layer, called again) projects features back onto the
ids with the transposed embeddings (tie_weights) or a separate reverse_embeddings matrix, optionally
soft-capped; quantized int8/int4 (per-id scales or sub-channel groups), inputs of the reverse call
quantized per row as Keras does. Counts equal Keras's for every case."""
from __future__ import annotations

import numpy as np
import pytest

import kconv

from .harness import check, keras, layers, randomize_weights

pytestmark = pytest.mark.keras

N, D, T = 13, 7, 5


def _model(tie, cap=None, mask_zero=False, mode=None, config=None):
    k, L = keras(), layers()
    ids = k.Input((T,), dtype="int32")
    emb = L.ReversibleEmbedding(N, D, tie_weights=tie, logit_soft_cap=cap, mask_zero=mask_zero, name="rev")
    x = emb(ids)
    x = L.Dense(D, activation="tanh", name="mix")(x)
    logits = emb(x, reverse=True)
    model = k.Model(ids, logits)
    randomize_weights(model)  # before quantizing: the quantized tensors come from random floats
    if mode:
        emb.quantize(mode, config=config)
    return model


def _ids():
    ids = np.random.default_rng(5).integers(1, N, (3, T)).astype("int32")
    ids[0, 3:] = 0
    return ids


def _check_counts(model, tmp_path):
    want = (sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            sum(int(np.prod(w.shape)) for w in model.non_trainable_weights))
    for fmt in ("keras", "h5"):
        model.save(tmp_path / f"c.{fmt}")
        assert kconv.load(tmp_path / f"c.{fmt}").param_counts() == want, fmt


@pytest.mark.parametrize("tie,cap,mask_zero", [(True, None, False), (False, None, False), (True, 2.5, True),
                                               (False, 0.7, False)])
def test_reversible_embedding(tie, cap, mask_zero, tmp_path):
    model = _model(tie, cap, mask_zero)
    _check_counts(model, tmp_path)
    check(model, _ids(), tmp_path, randomize=False)


def _config(case):
    from keras.quantizers import Int4QuantizationConfig, Int8QuantizationConfig

    return {"int8-no-input-quant": Int8QuantizationConfig(activation_quantizer=None),
            "int4-per-channel": Int4QuantizationConfig(block_size=-1),
            "int4-block3": Int4QuantizationConfig(block_size=3)}.get(case)  # 7 features: 3 groups


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("case", ["int8", "int8-no-input-quant", "int4", "int4-per-channel", "int4-block3"])
def test_quantized_reversible_embedding(case, tie, tmp_path):
    model = _model(tie, cap=3.0, mode=case.split("-")[0], config=_config(case))
    _check_counts(model, tmp_path)
    check(model, _ids(), tmp_path, randomize=False)
