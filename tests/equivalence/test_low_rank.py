"""Low-rank inputs: every declared layer that Keras runs on a rank-1 (``Input(shape=())``, i.e.
``(batch,)``) or rank-2 ``(batch, features)`` tensor converts and matches (issue #12, point 6).

The audit behind this list: each emitter was run on the lowest rank Keras accepts for it. Keras
itself refuses rank 1 for BatchNormalization, LayerNormalization (a weight of shape ``(None,)``) and
Dot (``IndexError`` in ``Dot.call``), so those start at rank 2. Layers that need a time or spatial
axis (convolutions, pooling, RNNs, attention, Cropping/ZeroPadding/UpSampling, SpatialDropout,
TimeDistributed) are refused by Keras below rank 3 and are covered at rank 3 in their own modules.
Before the fix, Flatten of a rank-1 input crashed at run time (``flatten(1)`` of a 1-d tensor);
Keras gives ``(batch, 1)``.
"""
from __future__ import annotations

import pytest

from .harness import check, keras, layers, rand, rand_int

pytestmark = pytest.mark.keras


def _one(make, shape=(), dtype="float32"):
    def build():
        inp = keras().Input(shape=shape, dtype=dtype)
        return keras().Model(inp, make()(inp))
    return build


def _two(make, shape=()):
    def build():
        a, b = keras().Input(shape=shape), keras().Input(shape=shape)
        return keras().Model([a, b], make()([a, b]))
    return build


def _chain(*makes, shape=(), dtype="float32"):
    def build():
        inp = keras().Input(shape=shape, dtype=dtype)
        x = inp
        for make in makes:
            x = make()(x)
        return keras().Model(inp, x)
    return build


L = layers  # called lazily inside the builders

RANK1 = {
    "Flatten": _one(lambda: L().Flatten()),
    "Flatten-channels_first": _one(lambda: L().Flatten(data_format="channels_first")),
    "Flatten-Dense": _chain(lambda: L().Flatten(), lambda: L().Dense(3)),
    "Reshape": _one(lambda: L().Reshape((1, 1))),
    "Reshape-RepeatVector": _chain(lambda: L().Reshape((1,)), lambda: L().RepeatVector(3)),
    "ReLU": _one(lambda: L().ReLU(max_value=1.0, negative_slope=0.1, threshold=0.2)),
    "LeakyReLU": _one(lambda: L().LeakyReLU()),
    "ELU": _one(lambda: L().ELU()),
    "PReLU": _one(lambda: L().PReLU()),
    "Softmax": _one(lambda: L().Softmax()),
    "Activation-softmax": _one(lambda: L().Activation("softmax")),
    "Activation-log_softmax": _one(lambda: L().Activation("log_softmax")),
    "Activation-sigmoid": _one(lambda: L().Activation("sigmoid")),
    "UnitNormalization": _one(lambda: L().UnitNormalization()),
    "Rescaling": _one(lambda: L().Rescaling(2.0, 0.5)),
    "Masking": _one(lambda: L().Masking(0.0)),
    "Identity": _one(lambda: L().Identity()),
    "Dropout": _one(lambda: L().Dropout(0.5)),
    "AlphaDropout": _one(lambda: L().AlphaDropout(0.5)),
    "GaussianNoise": _one(lambda: L().GaussianNoise(0.5)),
    "ActivityRegularization": _one(lambda: L().ActivityRegularization()),
    "Add": _two(lambda: L().Add()),
    "Subtract": _two(lambda: L().Subtract()),
    "Multiply": _two(lambda: L().Multiply()),
    "Average": _two(lambda: L().Average()),
    "Maximum": _two(lambda: L().Maximum()),
    "Minimum": _two(lambda: L().Minimum()),
    "Concatenate": _two(lambda: L().Concatenate()),
    "Concatenate-axis0": _two(lambda: L().Concatenate(axis=0)),
    "EinsumDense": _one(lambda: L().EinsumDense("a,b->ab", output_shape=(3,))),
    "Embedding": _one(lambda: L().Embedding(10, 4), dtype="int32"),
    "Embedding-mask_zero": _one(lambda: L().Embedding(10, 4, mask_zero=True), dtype="int32"),
    "Embedding-Flatten": _chain(lambda: L().Embedding(10, 4), lambda: L().Flatten(), dtype="int32"),
}

RANK2 = {
    "Flatten": _one(lambda: L().Flatten(), (5,)),
    "Flatten-channels_first": _one(lambda: L().Flatten(data_format="channels_first"), (5,)),
    "Permute": _one(lambda: L().Permute((1,)), (5,)),
    "BatchNormalization": _one(lambda: L().BatchNormalization(), (5,)),
    "BatchNormalization-axis1": _one(lambda: L().BatchNormalization(axis=1), (5,)),
    "LayerNormalization": _one(lambda: L().LayerNormalization(), (5,)),
    "GroupNormalization": _one(lambda: L().GroupNormalization(groups=5), (5,)),
    "Softmax-axis0": _one(lambda: L().Softmax(axis=0), (5,)),
    "Masking": _one(lambda: L().Masking(0.0), (5,)),
    "PReLU-shared": _one(lambda: L().PReLU(shared_axes=[1]), (5,)),
    "GaussianDropout": _one(lambda: L().GaussianDropout(0.3), (5,)),
    "Dot": _two(lambda: L().Dot(axes=1), (5,)),
    "Concatenate-axis1": _two(lambda: L().Concatenate(axis=1), (5,)),
    "RepeatVector": _one(lambda: L().RepeatVector(2), (5,)),
    "EinsumDense": _one(lambda: L().EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"), (5,)),
}


def _inputs(model):
    xs = [rand_int(3, *t.shape[1:], high=10, seed=k) if "int" in str(t.dtype) else rand(3, *t.shape[1:], seed=k)
          for k, t in enumerate(model.inputs)]
    return xs[0] if len(xs) == 1 else xs


@pytest.mark.parametrize("case", list(RANK1))
def test_rank1_input(case, tmp_path):
    model = RANK1[case]()
    assert all(len(t.shape) == 1 for t in model.inputs)
    check(model, _inputs(model), tmp_path)


@pytest.mark.parametrize("case", list(RANK2))
def test_rank2_input(case, tmp_path):
    model = RANK2[case]()
    assert all(len(t.shape) == 2 for t in model.inputs)
    check(model, _inputs(model), tmp_path, formats=("keras",))  # rank is format-independent


def test_flatten_of_rank1_is_batch_by_one(tmp_path):
    """Keras's own shape, not just agreement: (batch,) -> (batch, 1)."""
    out = check(RANK1["Flatten"](), rand(3), tmp_path)
    assert out[0].shape == (3, 1)
