"""MultiHeadAttention in its general form: inputs of rank > 3, attention_axes other than the default,
multi-dimensional output_shape, an explicit attention_mask and causal mask with attention_axes, and
the attention scores (Keras's own einsum equations, softmax over several attention axes)."""
from __future__ import annotations

import numpy as np
import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras

B, A, C, D = 2, 3, 4, 5


@pytest.mark.parametrize("axes", [(1,), (2,), (1, 2), (-2,), None], ids=["ax1", "ax2", "ax12", "ax-2", "default"])
@pytest.mark.parametrize(
    "kw",
    [dict(num_heads=2, key_dim=3), dict(num_heads=2, key_dim=3, value_dim=4, output_shape=(2, 3), use_bias=False),
     dict(num_heads=3, key_dim=2, output_shape=(2, 3))],
    ids=["plain", "out23-nobias", "out23-bias"],
)
def test_mha_rank4(axes, kw, tmp_path):
    L, k = layers(), keras()
    x = k.Input((A, C, D))
    out, scores = L.MultiHeadAttention(attention_axes=axes, **kw)(x, x, return_attention_scores=True)
    check(k.Model(x, [out, scores]), rand(B, A, C, D), tmp_path)


@pytest.mark.parametrize("axes", [(1,), (2,), (1, 2)], ids=["ax1", "ax2", "ax12"])
def test_mha_rank4_cross_key(axes, tmp_path):
    L, k = layers(), keras()
    q, v, kk = k.Input((A, C, D)), k.Input((A, C, 3)), k.Input((A, C, 4))
    out = L.MultiHeadAttention(2, 3, attention_axes=axes, output_shape=(2, 3))(q, v, key=kk)
    check(k.Model([q, v, kk], out), [rand(B, A, C, D), rand(B, A, C, 3, seed=1), rand(B, A, C, 4, seed=2)],
          tmp_path)


@pytest.mark.parametrize(
    "axes,mshape",
    [((2,), (A, C, C)), ((1,), (A, A)), ((1, 2), (A, C, A, C))],
    ids=["ax2-full", "ax1-expanded", "ax12"],
)
def test_mha_rank4_attention_mask(axes, mshape, tmp_path):
    L, k = layers(), keras()
    x, m = k.Input((A, C, D)), k.Input(mshape)
    out, scores = L.MultiHeadAttention(2, 3, attention_axes=axes)(x, x, attention_mask=m,
                                                                   return_attention_scores=True)
    mask = (np.random.default_rng(3).uniform(size=(B, *mshape)) > 0.3).astype(np.float32)
    check(k.Model([x, m], [out, scores]), [rand(B, A, C, D), mask], tmp_path)


def test_mha_rank4_causal(tmp_path):
    L, k = layers(), keras()
    x = k.Input((A, C, D))
    out, scores = L.MultiHeadAttention(2, 3, attention_axes=(1,))(x, x, use_causal_mask=True,
                                                                   return_attention_scores=True)
    check(k.Model(x, [out, scores]), rand(B, A, C, D), tmp_path)


@pytest.mark.parametrize("scores", [False, True], ids=["out", "scores"])
def test_mha_rank3_output_shape_2d(scores, tmp_path):
    L, k = layers(), keras()
    x = k.Input((A, D))
    mha = L.MultiHeadAttention(2, 3, output_shape=(2, 3))
    res = mha(x, x, use_causal_mask=True, return_attention_scores=scores)
    check(k.Model(x, list(res) if scores else res), rand(B, A, D), tmp_path)


def test_mha_rank5(tmp_path):
    L, k = layers(), keras()
    x = k.Input((2, A, C, D))
    out = L.MultiHeadAttention(2, 3, attention_axes=(1, 3))(x, x)
    check(k.Model(x, out), rand(B, 2, A, C, D), tmp_path)
