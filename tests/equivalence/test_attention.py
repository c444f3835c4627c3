"""Attention layers: MultiHeadAttention (key_dim != d/heads, value_dim, output_shape, masks, causal,
attention scores), Attention and AdditiveAttention (use_scale, score_mode, masks); a Transformer block."""
from __future__ import annotations

import numpy as np
import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras

B, T, S, D = 3, 5, 4, 6


def _ids(T_, seed):
    ids = np.random.default_rng(seed).integers(1, 20, size=(B, T_)).astype(np.int32)
    ids[1, -2:] = 0  # right padding
    ids[2, :1] = 0  # left padding
    return ids


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_heads=2, key_dim=3),
        dict(num_heads=3, key_dim=4, value_dim=2, use_bias=False),
        dict(num_heads=2, key_dim=5, output_shape=7),
    ],
    ids=["kd3", "vd2-nobias", "out7"],
)
@pytest.mark.parametrize("call", ["self", "cross-key", "causal-scores"])
def test_mha(kw, call, tmp_path):
    L = layers()
    k = keras()
    q_in, v_in, k_in = k.Input((T, D)), k.Input((S, 4)), k.Input((S, 3))
    mha = L.MultiHeadAttention(**kw)
    if call == "self":
        model = k.Model(q_in, mha(q_in, q_in))
        check(model, rand(B, T, D), tmp_path)
    elif call == "cross-key":
        model = k.Model([q_in, v_in, k_in], mha(q_in, v_in, key=k_in))
        check(model, [rand(B, T, D), rand(B, S, 4, seed=1), rand(B, S, 3, seed=2)], tmp_path)
    else:
        out, scores = mha(q_in, q_in, use_causal_mask=True, return_attention_scores=True)
        check(k.Model(q_in, [out, scores]), rand(B, T, D), tmp_path)


def test_mha_masks(tmp_path):
    """Embedding(mask_zero) masks on query and value, plus an explicit attention_mask input."""
    L = layers()
    k = keras()
    a, b = k.Input((T,), dtype="int32"), k.Input((S,), dtype="int32")
    am = k.Input((T, S))
    qa = L.Embedding(20, D, mask_zero=True)(a)
    vb = L.Embedding(20, D, mask_zero=True)(b)
    out = L.MultiHeadAttention(2, 3)(qa, vb, attention_mask=am)
    model = k.Model([a, b, am], L.GlobalAveragePooling1D()(out))
    att = (np.random.default_rng(3).uniform(size=(B, T, S)) > 0.3).astype(np.float32)
    check(model, [_ids(T, 0), _ids(S, 1), att], tmp_path)


@pytest.mark.parametrize(
    "make",
    [
        lambda L: L.Attention(),
        lambda L: L.Attention(use_scale=True),
        lambda L: L.Attention(score_mode="concat"),
        lambda L: L.Attention(use_scale=True, score_mode="concat"),
        lambda L: L.AdditiveAttention(),
        lambda L: L.AdditiveAttention(use_scale=False),
    ],
    ids=["dot", "dot-scale", "concat", "concat-scale", "additive", "additive-noscale"],
)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_attention(make, masked, tmp_path):
    L = layers()
    k = keras()
    a, b = k.Input((T,), dtype="int32"), k.Input((S,), dtype="int32")
    qa = L.Embedding(20, D, mask_zero=masked)(a)
    vb = L.Embedding(20, D, mask_zero=masked)(b)
    kb = L.Dense(D)(vb)
    out, w = make(L)([qa, vb, kb], return_attention_scores=True)
    model = k.Model([a, b], [out, w])
    check(model, [_ids(T, 0), _ids(S, 1)], tmp_path)


def test_attention_causal(tmp_path):
    L = layers()
    k = keras()
    x = k.Input((T, D))
    model = k.Model(x, L.Attention(use_scale=True)([x, x], use_causal_mask=True))
    check(model, rand(B, T, D), tmp_path)


def test_transformer_encoder_block(tmp_path):
    L = layers()
    k = keras()
    ids = k.Input((T,), dtype="int32")
    x = L.Embedding(30, 8, mask_zero=True)(ids)
    h = L.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(0.1)(h)]))
    f = L.Dense(8)(L.Dense(16, activation="gelu")(x))
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, f]))
    out = L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(x))
    check(k.Model(ids, out), _ids(T, 0), tmp_path)
