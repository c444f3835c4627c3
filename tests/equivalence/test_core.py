"""Core layers: Dense, Activation strings, Rescaling, Identity, the dropout family, Normalization,
Embedding; model structure (shared layers, nesting, several inputs/outputs); errors; determinism."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from .harness import ACTIVATIONS, check, check_channels_first, keras, layers, rand, rand_int, seq

pytestmark = pytest.mark.keras


# ------------------------------------------------------------------------------------- Dense

@pytest.mark.parametrize("shape", [(5,), (3, 5), (3, 4, 5)], ids=["rank2", "rank3", "rank4"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_dense_ranks(shape, use_bias, tmp_path):
    L = layers()
    model = seq(shape, L.Dense(7, use_bias=use_bias))
    check(model, rand(2, *shape), tmp_path)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_activation(activation, tmp_path):
    L = layers()
    # rank 3 so that softmax/log_softmax must reduce over the last axis only
    model = seq((3, 5), L.Dense(6, activation=activation))
    x = rand(2, 3, 5)
    check(model, x, tmp_path, rtol=1e-5, atol=2e-5)


def test_dense_chain_rank4_channels_first_option(tmp_path):
    """channels_first=True conversion of a Dense on rank-4 input: torch I/O is NCHW."""
    L = layers()
    model = seq((3, 4, 5), L.Dense(7, activation="relu"), L.Dense(2))
    check_channels_first(model, rand(2, 3, 4, 5), tmp_path)


# -------------------------------------------------------------------------- simple elementwise

@pytest.mark.parametrize("scale,offset", [(0.5, -1.25), (1 / 255.0, 0.0), (-2.0, 3.0)])
def test_rescaling(scale, offset, tmp_path):
    L = layers()
    model = seq((4, 3), L.Rescaling(scale, offset=offset), L.Dense(2))
    check(model, rand(2, 4, 3, low=0, high=255), tmp_path, rtol=1e-5, atol=1e-4)


def test_identity(tmp_path):
    L = layers()
    model = seq((6,), L.Dense(4), L.Identity(), L.Dense(3))
    check(model, rand(2, 6), tmp_path)


@pytest.mark.parametrize(
    "make",
    [
        lambda L: L.Dropout(0.4),
        lambda L: L.Dropout(0.3, noise_shape=(None, 1, 1, 4)),
        lambda L: L.SpatialDropout2D(0.5),
        lambda L: L.GaussianNoise(0.7),
        lambda L: L.GaussianDropout(0.3),
        lambda L: L.AlphaDropout(0.2),
        lambda L: L.ActivityRegularization(l1=0.01, l2=0.02),
    ],
    ids=["Dropout", "Dropout-noise_shape", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
         "AlphaDropout", "ActivityRegularization"],
)
def test_inference_identity_layers(make, tmp_path):
    L = layers()
    model = seq((7, 7, 3), L.Conv2D(4, 3, padding="same"), make(L), L.Dense(2))
    check(model, rand(2, 7, 7, 3), tmp_path)


@pytest.mark.parametrize(
    "make",
    [lambda L: L.SpatialDropout1D(0.5), lambda L: L.SpatialDropout3D(0.5)],
    ids=["SpatialDropout1D", "SpatialDropout3D"],
)
def test_spatial_dropout_1d_3d(make, tmp_path):
    L = layers()
    name = type(make(L)).__name__
    if name.endswith("1D"):
        model = seq((9, 3), L.Conv1D(4, 3), make(L), L.Dense(2))
        x = rand(2, 9, 3)
    else:
        model = seq((5, 6, 7, 2), L.Conv3D(3, 2), make(L), L.Dense(2))
        x = rand(2, 5, 6, 7, 2)
    check(model, x, tmp_path)


# ------------------------------------------------------------------------------ Normalization

@pytest.mark.parametrize("shape,axis", [((5,), -1), ((7, 7, 3), -1), ((4, 6), 1), ((4, 6), (1, 2))],
                         ids=["rank2", "rank4", "rank3-axis1", "rank3-axis12"])
def test_normalization_adapted(shape, axis, tmp_path):
    L = layers()
    norm = L.Normalization(axis=axis)
    rng = np.random.default_rng(7)
    data = (rng.normal(size=(64, *shape)) * rng.uniform(0.5, 3.0, size=shape) + 2.5)
    norm.adapt(data.astype("float32"))
    model = seq(shape, norm, L.Dense(3))
    x = (rand(2, *shape) * 2 + 2).astype("float32")
    check(model, x, tmp_path, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "mean,variance,invert",
    [(0.7, 2.5, False), ([0.5, -1.0, 2.0], [0.25, 4.0, 1.5], False), ([0.5, -1.0, 2.0], [0.25, 4.0, 1.5], True)],
    ids=["scalar", "per-channel", "per-channel-invert"],
)
def test_normalization_config_stats(mean, variance, invert, tmp_path):
    L = layers()
    model = seq((5, 3), L.Normalization(mean=mean, variance=variance, invert=invert), L.Dense(2))
    check(model, rand(2, 5, 3), tmp_path, atol=1e-4)


# ---------------------------------------------------------------------------------- Embedding

def test_embedding_flatten_dense(tmp_path):
    L = layers()
    model = seq((6,), L.Embedding(11, 4), L.Flatten(), L.Dense(3), input_dtype="int32")
    check(model, rand_int(2, 6, high=11), tmp_path)


def test_embedding_rank3_indices(tmp_path):
    L = layers()
    model = seq((3, 2), L.Embedding(9, 5), L.Dense(2), input_dtype="int32")
    check(model, rand_int(2, 3, 2, high=9), tmp_path)


# ---------------------------------------------------------------------------- model structure

def test_shared_layer(tmp_path):
    k = keras()
    L = k.layers
    a = k.Input((5,), name="a")
    b = k.Input((5,), name="b")
    shared = L.Dense(4, activation="tanh", name="shared")
    ya = shared(a)
    yb = shared(b)
    yaa = shared(L.Dense(5, name="back")(ya))  # third call of the same layer
    out = L.Concatenate()([ya, yb, yaa])
    model = k.Model([a, b], out)
    check(model, [rand(2, 5, seed=1), rand(2, 5, seed=2)], tmp_path)


def test_shared_conv_layer(tmp_path):
    k = keras()
    L = k.layers
    inp = k.Input((9, 11, 3))
    conv = L.Conv2D(3, 3, padding="same", name="shared_conv")
    y = conv(conv(inp))
    model = k.Model(inp, L.Flatten()(y))
    check(model, rand(2, 9, 11, 3), tmp_path, atol=5e-5)


def test_nested_sequential_in_functional(tmp_path):
    k = keras()
    L = k.layers
    inner = k.Sequential(
        [k.Input((8,)), L.Dense(6, activation="relu"), L.BatchNormalization(), L.Dense(5)],
        name="inner",
    )
    inp = k.Input((8,))
    x = L.Dense(8, activation="elu")(inp)
    y = inner(x)
    z = L.Add()([y, inner(inp)])  # nested model called twice
    model = k.Model(inp, L.Dense(2)(z))
    check(model, rand(2, 8), tmp_path)


def test_nested_functional_in_sequential(tmp_path):
    k = keras()
    L = k.layers
    i = k.Input((7, 7, 2))
    inner = k.Model(i, L.Conv2D(3, 3, activation="relu")(i), name="inner_func")
    model = k.Sequential([k.Input((7, 7, 2)), inner, L.Flatten(), L.Dense(3)])
    check(model, rand(2, 7, 7, 2), tmp_path)


def test_multiple_inputs_outputs(tmp_path):
    k = keras()
    L = k.layers
    img = k.Input((7, 9, 3), name="img")
    vec = k.Input((4,), name="vec")
    seqin = k.Input((5, 6), name="seq")
    c = L.Conv2D(4, 3, strides=2, padding="same")(img)
    f = L.GlobalAveragePooling2D()(c)
    v = L.Dense(4, activation="sigmoid")(vec)
    s = L.Dense(4)(seqin)
    merged = L.Concatenate()([f, v])
    out1 = L.Dense(3, name="out1")(merged)
    out2 = L.Dense(2, activation="softmax", name="out2")(v)
    model = k.Model([img, vec, seqin], [out1, c, out2, s])
    ins = [rand(2, 7, 9, 3, seed=1), rand(2, 4, seed=2), rand(2, 5, 6, seed=3)]
    check(model, ins, tmp_path)


def test_multiple_inputs_outputs_channels_first_option(tmp_path):
    k = keras()
    L = k.layers
    img = k.Input((7, 9, 3), name="img")
    vec = k.Input((4,), name="vec")
    c = L.Conv2D(4, 3, padding="same")(img)
    f = L.Flatten()(c)
    out1 = L.Dense(3, name="out1")(L.Concatenate()([f, vec]))
    model = k.Model([img, vec], [c, out1])
    check_channels_first(model, [rand(2, 7, 9, 3, seed=1), rand(2, 4, seed=2)], tmp_path)


def test_input_used_directly_as_output(tmp_path):
    k = keras()
    L = k.layers
    inp = k.Input((5,))
    model = k.Model(inp, [L.Dense(3)(inp), L.Activation("relu")(inp)])
    check(model, rand(2, 5), tmp_path)


# --------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_unsupported_lambda_raises_and_writes_nothing(fmt, tmp_path):
    import kconv
    from kconv.errors import UnsupportedError

    k = keras()
    L = k.layers
    inp = k.Input((5,))
    x = L.Dense(4)(inp)
    x = L.Lambda(lambda t: t * 2.0, name="my_lambda")(x)
    model = k.Model(inp, L.Dense(2)(x))
    src = tmp_path / f"model.{fmt}"
    model.save(src)
    out_dir = tmp_path / "out"
    with pytest.raises(UnsupportedError) as info:
        kconv.convert(src, out_dir)
    err = info.value
    assert "Lambda" in err.by_class, err.by_class
    assert any(name == "my_lambda" for name, _ in err.by_class["Lambda"]), err.by_class
    assert "my_lambda" in str(err)
    assert not out_dir.exists(), "a failed conversion must leave nothing behind"
    # nor any temporary directory next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_unsupported_collected_over_whole_model(tmp_path):
    import kconv
    from kconv.errors import UnsupportedError

    k = keras()
    L = k.layers
    inp = k.Input((5,))
    x = L.Lambda(lambda t: t + 1.0, name="lam_a")(inp)
    x = L.Dense(4)(x)
    x = L.Lambda(lambda t: t - 1.0, name="lam_b")(x)
    model = k.Model(inp, x)
    src = tmp_path / "model.keras"
    model.save(src)
    with pytest.raises(UnsupportedError) as info:
        kconv.convert(src, tmp_path / "out")
    names = {name for name, _ in info.value.by_class.get("Lambda", [])}
    assert names == {"lam_a", "lam_b"}
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- determinism

def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("src_fmt", ["keras", "h5"])
@pytest.mark.parametrize("weights_format", ["safetensors", "pt"])
def test_conversion_is_deterministic(src_fmt, weights_format, tmp_path):
    import kconv
    from .harness import randomize_weights

    L = layers()
    model = seq((9, 11, 3), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(),
                L.Flatten(), L.Dense(5), L.Dense(2, activation="softmax"))
    randomize_weights(model)
    src = tmp_path / f"model.{src_fmt}"
    model.save(src)
    a = Path(kconv.convert(src, tmp_path / "a", fmt=weights_format))
    b = Path(kconv.convert(src, tmp_path / "b", fmt=weights_format))
    wname = "model.safetensors" if weights_format == "safetensors" else "model.pt"
    for name in ("model.py", wname):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between runs"
    assert (a / "kconv.json").is_file()


def test_pt_format_equivalence(tmp_path):
    L = layers()
    model = seq((9, 11, 3), L.Conv2D(4, 3, padding="same"), L.Flatten(), L.Dense(2))
    check(model, rand(2, 9, 11, 3), tmp_path, weights_format="pt")


def test_dense_on_conv_output(tmp_path):
    """Dense on a rank-4 conv output acts on the channel (last Keras) axis."""
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.Dense(5, activation="softmax"),
                L.Conv2D(2, 3))
    check(model, rand(2, 7, 9, 3), tmp_path, atol=5e-5)


def test_dense_on_conv_output_channels_first_option(tmp_path):
    L = layers()
    model = seq((7, 9, 3), L.Conv2D(4, 3, padding="same"), L.Dense(5), L.Conv2D(2, 3))
    check_channels_first(model, rand(2, 7, 9, 3), tmp_path, atol=5e-5)
