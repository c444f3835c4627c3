"""A fully masked query row: Keras 3.15's MultiHeadAttention gives uniform attention on its
dot_product_attention path (rank-3 inputs, no dropout, no returned scores) and zeros on its explicit
path (dropout > 0 or returned scores; keras Softmax zeroes masked positions). Both are reproduced."""
from __future__ import annotations

import numpy as np
import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras


@pytest.mark.parametrize("dropout,scores", [(0.0, False), (0.1, False), (0.0, True)])
def test_fully_masked_query_row(dropout, scores, tmp_path):
    k, L = keras(), layers()
    q, v = k.Input((4, 6)), k.Input((5, 6))
    m = k.Input((4, 5), dtype="bool")
    out = L.MultiHeadAttention(2, 3, dropout=dropout)(q, v, attention_mask=m, return_attention_scores=scores)
    model = k.Model([q, v, m], list(out) if scores else out)
    mask = np.random.default_rng(5).random((2, 4, 5)) > 0.5
    mask[0, 1, :] = False  # query 1 of sample 0 may attend to nothing
    check(model, [rand(2, 4, 6, seed=1), rand(2, 5, 6, seed=2), mask], tmp_path)
