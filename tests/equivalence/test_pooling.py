"""Pooling: Max/Average 1D/2D/3D (valid/same, odd sizes -> asymmetric 'same' padding, -inf for
max, divisor excluding padding for average) and the global poolings."""
from __future__ import annotations

import pytest

from .harness import check, check_channels_first, keras, layers, rand, seq

pytestmark = pytest.mark.keras

SPATIAL = {1: (11,), 2: (9, 11), 3: (5, 7, 6)}


def _pool_cases():
    for kind in ("Max", "Average"):
        for rank in (1, 2, 3):
            for padding in ("valid", "same"):
                for pool in (2, 3):
                    for strides in (1, 2):
                        yield pytest.param(kind, rank, padding, pool, strides,
                                           id=f"{kind}{rank}d-{padding}-p{pool}-s{strides}")


@pytest.mark.parametrize("kind,rank,padding,pool,strides", list(_pool_cases()))
def test_pooling(kind, rank, padding, pool, strides, tmp_path):
    Pool = getattr(layers(), f"{kind}Pooling{rank}D")
    shape = (*SPATIAL[rank], 3)
    # negative inputs: max pooling over a zero-padded border would give 0 instead of the max
    x = rand(2, *shape) - 2.0
    model = seq(shape, Pool(pool_size=pool, strides=strides, padding=padding))
    check(model, x, tmp_path)


@pytest.mark.parametrize(
    "kind,pool,strides,padding",
    [
        ("Max", (3, 2), (2, 1), "same"),
        ("Average", (3, 2), (2, 1), "same"),
        ("Max", (2, 3), None, "same"),
        ("Average", (2, 3), None, "valid"),
        ("Average", 4, 3, "same"),
        ("Max", 4, 3, "same"),
    ],
    ids=["Max-p3x2-s2x1-same", "Avg-p3x2-s2x1-same", "Max-p2x3-sNone-same",
         "Avg-p2x3-sNone-valid", "Avg-p4-s3-same", "Max-p4-s3-same"],
)
def test_pooling2d_asymmetric(kind, pool, strides, padding, tmp_path):
    L = layers()
    Pool = getattr(L, f"{kind}Pooling2D")
    model = seq((9, 11, 2), L.Conv2D(3, 1), Pool(pool_size=pool, strides=strides, padding=padding))
    check(model, rand(2, 9, 11, 2) - 1.0, tmp_path)


@pytest.mark.parametrize("kind", ["Max", "Average"])
def test_pooling_channels_first_option(kind, tmp_path):
    L = layers()
    Pool = getattr(L, f"{kind}Pooling2D")
    model = seq((9, 11, 2), L.Conv2D(3, 3), Pool(3, strides=2, padding="same"))
    check_channels_first(model, rand(2, 9, 11, 2), tmp_path, atol=5e-5)


@pytest.mark.parametrize("kind", ["Max", "Average"])
def test_pooling_data_format_channels_first(kind, tmp_path):
    """Pooling layers with data_format="channels_first" (reference: Keras on jax)."""
    L = layers()
    P2 = getattr(L, f"{kind}Pooling2D")
    P1 = getattr(L, f"{kind}Pooling1D")
    k = keras()
    a = k.Input((3, 9, 11))
    b = k.Input((3, 11))
    ya = P2(3, strides=2, padding="same", data_format="channels_first")(a)
    yb = P1(2, padding="same", data_format="channels_first")(b)
    gp = getattr(L, f"Global{kind}Pooling2D")(data_format="channels_first")(a)
    model = k.Model([a, b], [ya, yb, gp])
    check(model, [rand(2, 3, 9, 11, seed=1) - 2, rand(2, 3, 11, seed=2) - 2], tmp_path,
          reference="jax")


def _global_cases():
    for kind in ("Max", "Average"):
        for rank in (1, 2, 3):
            for keepdims in (False, True):
                yield pytest.param(kind, rank, keepdims,
                                   id=f"Global{kind}{rank}d-keepdims{keepdims}")


@pytest.mark.parametrize("kind,rank,keepdims", list(_global_cases()))
def test_global_pooling(kind, rank, keepdims, tmp_path):
    L = layers()
    Pool = getattr(L, f"Global{kind}Pooling{rank}D")
    shape = (*SPATIAL[rank], 3)
    Conv = getattr(L, f"Conv{rank}D")
    model = seq(shape, Conv(4, 2), Pool(keepdims=keepdims), L.Dense(2))
    check(model, rand(2, *shape), tmp_path, atol=5e-5)


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_channels_first_option(keepdims, tmp_path):
    L = layers()
    k = keras()
    inp = k.Input((9, 11, 3))
    c = L.Conv2D(4, 3)(inp)
    model = k.Model(inp, [L.GlobalMaxPooling2D(keepdims=keepdims)(c),
                          L.GlobalAveragePooling2D(keepdims=keepdims)(c)])
    check_channels_first(model, rand(2, 9, 11, 3), tmp_path, atol=5e-5)
