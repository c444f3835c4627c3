"""``kconv convert --optimize`` (kconv/optimize.py) against Keras: BatchNormalization folded into every
layer family it can follow, at the tolerances of the default conversion; the cases where folding
would change the function are left alone; dropout and noise layers are dropped."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .harness import check, convert_and_load, keras, layers, rand, save, seq

pytestmark = pytest.mark.keras

ATOL = 5e-5


def _bn():
    return layers().BatchNormalization(epsilon=0.01)


FAMILIES = {
    "Conv1D": ((11, 3), lambda L: L.Conv1D(4, 3, padding="causal")),
    "Conv2D-stride2-same": ((9, 8, 3), lambda L: L.Conv2D(5, 3, strides=2, padding="same")),
    "Conv2D-groups-nobias": ((7, 7, 4), lambda L: L.Conv2D(6, 3, groups=2, use_bias=False)),
    "Conv3D": ((5, 6, 5, 2), lambda L: L.Conv3D(3, 2)),
    "Conv1DTranspose": ((7, 3), lambda L: L.Conv1DTranspose(4, 3, strides=2)),
    "Conv2DTranspose": ((5, 6, 3), lambda L: L.Conv2DTranspose(4, 3, strides=2, padding="same")),
    "DepthwiseConv1D": ((9, 3), lambda L: L.DepthwiseConv1D(3, depth_multiplier=2)),
    "DepthwiseConv2D-mult2": ((7, 8, 3), lambda L: L.DepthwiseConv2D(3, depth_multiplier=2)),
    "DepthwiseConv2D-nobias": ((7, 8, 3), lambda L: L.DepthwiseConv2D(3, padding="same", use_bias=False)),
    "SeparableConv1D": ((9, 3), lambda L: L.SeparableConv1D(4, 3, depth_multiplier=2)),
    "SeparableConv2D": ((7, 8, 3), lambda L: L.SeparableConv2D(5, 3, padding="same")),
    "Dense": ((6,), lambda L: L.Dense(5)),
    "Dense-rank3-nobias": ((4, 6), lambda L: L.Dense(5, use_bias=False)),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_folded_family(family, tmp_path):
    shape, make = FAMILIES[family]
    L = layers()
    model = seq(shape, make(L), _bn(), L.ReLU())
    check(model, rand(2, *shape), tmp_path, atol=ATOL, optimize=True, folded=1)


def test_folded_channels_first_conv(tmp_path):
    """data_format='channels_first': the BatchNormalization on axis 1 folds (reference: Keras on jax)."""
    L = layers()
    model = seq((3, 7, 9), L.DepthwiseConv2D(3, depth_multiplier=2, data_format="channels_first"),
                L.BatchNormalization(axis=1, epsilon=0.01))
    check(model, rand(2, 3, 7, 9), tmp_path, atol=ATOL, reference="jax", optimize=True, folded=1)


def test_not_folded(tmp_path):
    """Left alone: an activation between the layer and the BatchNormalization, a layer output read
    twice, a BatchNormalization that is not on the channel axis, one after a merge."""
    k = keras()
    L = k.layers
    x = k.Input((7, 8, 3))
    a = L.BatchNormalization()(L.Conv2D(4, 3, activation="relu")(x))
    c = L.Conv2D(4, 3)(x)
    b = L.Add()([L.BatchNormalization()(c), c])
    d = L.BatchNormalization(axis=1)(L.Conv2D(4, 3)(x))
    e = L.BatchNormalization()(L.Add()([a, b]))
    f = L.BatchNormalization()(L.Conv2D(4, 3)(x))  # the one that folds
    model = k.Model(x, [e, d, f])
    check(model, rand(2, 7, 8, 3), tmp_path, atol=ATOL, optimize=True, folded=1, formats=("keras",))


def test_nested_and_dropped(tmp_path):
    """Folding inside a nested model; dropout and noise layers gone from the optimized model.py."""
    k = keras()
    L = k.layers
    inner = k.Sequential([k.Input((6, 6, 3)), L.Conv2D(4, 3, padding="same", name="conv"), _bn(),
                          L.Activation("relu"),
                          L.SpatialDropout2D(0.3)], name="inner")
    x = k.Input((6, 6, 3))
    y = L.GaussianNoise(0.5)(inner(x))
    y = L.Dropout(0.5)(L.Flatten()(y))
    y = L.BatchNormalization()(L.Dense(5, name="dense")(y))
    y = L.AlphaDropout(0.2)(y)
    model = k.Model(x, L.GaussianDropout(0.2)(y))
    check(model, rand(2, 6, 6, 3), tmp_path, atol=ATOL, optimize=True, folded=2, formats=("keras",))
    man = json.loads((tmp_path / "optimized_keras" / "kconv.json").read_text())
    assert sorted(man["optimized"]["folded_batchnorm"].values()) == ["dense", "inner/conv"]
    assert len(man["optimized"]["dropped"]) == 5
    source = (tmp_path / "optimized_keras" / "model.py").read_text()
    for gone in ("Dropout", "Noise", "BatchNorm", "dropout", "noise"):
        assert gone not in source, gone
    # every Keras weight of the file is accounted for: in a torch tensor, or folded into named ones
    rows = man["weights"]
    folded = [r for r in rows if r.get("folded_into")]
    assert len(folded) == 8 and all(r["torch_key"] is None for r in folded)
    assert {tuple(r["folded_into"]) for r in folded} == {("inner.conv.weight", "inner.conv.bias"),
                                                         ("dense.weight", "dense.bias")}


def test_default_output_keeps_batchnorm(tmp_path):
    """The default conversion is unchanged by the option's existence: BatchNorm modules and keys."""
    L = layers()
    model = seq((6,), L.Dense(5, name="dense"), _bn())
    path = save(model, tmp_path, "keras")
    net = convert_and_load(path, tmp_path / "default")
    assert any("running_mean" in key for key in net.state_dict())
    opt = convert_and_load(path, tmp_path / "opt", optimize=True)
    assert sorted(opt.state_dict()) == ["dense.bias", "dense.weight"]


def test_verify_per_layer_optimized(tmp_path):
    """kconv verify on an --optimize output: passes per layer; the layer a BatchNormalization was folded
    into is reported as folded (its own output is not Keras's), not as a divergence; --mode train is
    refused (no train-mode BatchNormalization)."""
    import kconv
    from kconv.verify import verify
    from kconv.verify.errors import VerifyInputError

    cnn = Path(__file__).resolve().parents[2] / "fixtures" / "cnn.keras"
    out = kconv.convert(cnn, tmp_path / "cnn", optimize=True)
    result = verify(cnn, out, per_layer=True)
    assert result.passed, result.summary()
    compared = [c.name for c in result.layers]
    assert "conv2d" not in compared and "batch_normalization" in compared and "dropout" in compared
    assert [c.class_name for c in result.layers if c.name == "batch_normalization"] == ["BatchNormalization"]
    assert any("conv2d -> batch_normalization" in n for n in result.notes), result.notes
    with pytest.raises(VerifyInputError, match="--optimize"):
        verify(cnn, out, mode="train")


# Padding one side more than the other becomes symmetric: a longer kernel with zero taps (no F.pad).
PADDED = {
    # TF 'same' with an odd total: stride 2 on an even size pads (0, 1)
    "Conv2D-same-stride2-even": ((8, 10, 3), lambda L: [L.Conv2D(5, 3, strides=2, padding="same")]),
    "Conv2D-same-k4": ((7, 7, 3), lambda L: [L.Conv2D(4, 4, padding="same")]),  # total 3: (1, 2)
    "Conv1D-same-k2": ((9, 3), lambda L: [L.Conv1D(4, 2, padding="same")]),
    "Conv3D-same-stride2": ((6, 5, 6, 2), lambda L: [L.Conv3D(3, 3, strides=2, padding="same")]),
    "SeparableConv2D-same-stride2": ((8, 8, 3), lambda L: [L.SeparableConv2D(4, 3, strides=2, padding="same")]),
    # keras.applications: ZeroPadding2D(correct_pad) before a strided 'valid' depthwise convolution
    "DepthwiseConv2D-zeropad": ((8, 8, 3), lambda L: [L.ZeroPadding2D(((0, 1), (0, 1))),
                                                       L.DepthwiseConv2D(3, strides=2)]),
    "DepthwiseConv2D-zeropad-5x5": ((9, 9, 3), lambda L: [L.ZeroPadding2D(((1, 2), (1, 2))),
                                                           L.DepthwiseConv2D(5, strides=2, depth_multiplier=2)]),
    "Conv2D-zeropad-one-axis": ((7, 8, 3), lambda L: [L.ZeroPadding2D(((1, 1), (2, 1))), L.Conv2D(4, 3)]),
    "Conv1D-zeropad": ((9, 3), lambda L: [L.ZeroPadding1D((1, 0)), L.Conv1D(4, 3, strides=2)]),
}


def _optimized(tmp_path) -> tuple[dict, str]:
    out = tmp_path / "optimized_keras"
    return json.loads((out / "kconv.json").read_text()), (out / "model.py").read_text()


@pytest.mark.parametrize("case", list(PADDED))
def test_padding_made_symmetric(case, tmp_path):
    """Keras's numbers with the padding in the kernel, BatchNormalization folded into that kernel too;
    the manifest keeps the file's kernel shape and says what was added."""
    shape, make = PADDED[case]
    L = layers()
    model = seq(shape, *make(L), _bn(), L.ReLU())
    check(model, rand(2, *shape), tmp_path, atol=ATOL, optimize=True, folded=1, formats=("keras",))
    man, source = _optimized(tmp_path)
    assert len(man["optimized"]["symmetric_padding"]) == 1, man["optimized"]
    assert "F.pad" not in source, source
    conv = next(iter(man["optimized"]["symmetric_padding"]))
    kernel = next(r for r in man["weights"] if r["keras_layer"] == conv and r["torch_key"]
                  and r["torch_key"].endswith("weight"))
    file_kernel = next(w for ly in model.layers if ly.name == conv for w in ly.weights if w.shape == tuple(
        kernel["keras_shape"]))
    assert file_kernel is not None and "zero taps added" in kernel["note"], kernel


def test_padding_left_alone(tmp_path):
    """Not made symmetric: dilation, a padding read by two layers, two more on one side. (The dilated
    convolution pads by itself and is cropped as in the default output; the two others stay F.pad.)"""
    k = keras()
    L = k.layers
    x = k.Input((9, 9, 3))
    a = L.Conv2D(4, 2, dilation_rate=3, padding="same")(x)  # total 3, dilated: stays
    p = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
    b = L.Add()([L.Conv2D(4, 3, strides=2)(p), L.Conv2D(4, 3, strides=2)(p)])  # the padding read twice
    c = L.Conv2D(4, 3)(L.ZeroPadding2D(((0, 2), (0, 2)))(x))
    model = k.Model(x, [a, b, c])
    check(model, rand(2, 9, 9, 3), tmp_path, atol=ATOL, optimize=True, formats=("keras",))
    man, source = _optimized(tmp_path)
    assert man["optimized"]["symmetric_padding"] == {}
    assert source.count("F.pad(") == 2 and source.count(")[:, :, 1:, 1:]") == 1, source


def test_verify_per_layer_symmetric_padding(tmp_path):
    """verify --per-layer: the ZeroPadding whose output changed shape is not compared (a note says
    so), the convolution after it is, and passes."""
    import kconv
    from kconv.verify import verify

    L = layers()
    model = seq((8, 8, 3), L.ZeroPadding2D(((0, 1), (0, 1)), name="pad"), L.DepthwiseConv2D(3, strides=2, name="dw"),
                L.BatchNormalization(epsilon=0.01, name="bn"), L.ReLU(name="relu"))
    path = save(model, tmp_path, "keras")
    out = kconv.convert(path, tmp_path / "out", optimize=True)
    result = verify(path, out, per_layer=True)
    assert result.passed, result.summary()
    compared = [c.name for c in result.layers]
    assert compared == ["bn", "relu"], compared  # dw is compared at bn (folded), pad not at all
    assert any("ZeroPadding(s) symmetric" in n and "pad -> dw" in n for n in result.notes), result.notes


def test_padding_made_symmetric_channels_first(tmp_path):
    """data_format='channels_first': 'same' stride 2 on even sizes (reference: Keras on jax)."""
    L = layers()
    model = seq((3, 8, 10), L.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first"),
                L.BatchNormalization(axis=1, epsilon=0.01))
    check(model, rand(2, 3, 8, 10), tmp_path, atol=ATOL, reference="jax", optimize=True, folded=1,
          formats=("keras",))
    man, source = _optimized(tmp_path)
    assert len(man["optimized"]["symmetric_padding"]) == 1 and "F.pad" not in source


def test_padding_made_symmetric_nested(tmp_path):
    """A ZeroPadding + strided depthwise convolution inside a nested model: folded there, and verify
    --per-layer skips the nested ZeroPadding by its path."""
    import kconv
    from kconv.verify import verify

    k = keras()
    L = k.layers
    inner = k.Sequential([k.Input((8, 8, 3)), L.ZeroPadding2D(((0, 1), (0, 1)), name="pad"),
                          L.DepthwiseConv2D(3, strides=2, name="dw")], name="inner")
    x = k.Input((8, 8, 3))
    model = k.Model(x, L.ReLU()(inner(x)))
    check(model, rand(2, 8, 8, 3), tmp_path, atol=ATOL, optimize=True, formats=("keras",))
    man, source = _optimized(tmp_path)
    assert man["optimized"]["symmetric_padding"] == {
        "inner/dw": {"padding": "inner/pad", "kernel_zeros": [[1, 0], [1, 0]]}}
    assert "F.pad" not in source
    path = save(model, tmp_path, "keras")
    result = verify(path, kconv.convert(path, tmp_path / "out", optimize=True), per_layer=True)
    assert result.passed, result.summary()
    assert any("inner/pad -> inner/dw" in n for n in result.notes), result.notes
