"""Layout: conv stacks stay channels-first through the layers that do not care about the layout
(kconv/emit/codegen.py), and each such path computes what Keras computes.

Each case checks equivalence against Keras and counts the permutes one forward of the converted
module executes (kconv.testing.layout_ops): the input's NHWC -> NCHW permute, plus one back where
a layer truly needs Keras's layout (none of these do before their Flatten/Dense head).
"""
from __future__ import annotations

import pytest
import torch

from kconv.emit import load_converted
from kconv.testing import layout_ops

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras


def _layout_ops(tmp_path, *inputs):
    net = load_converted(tmp_path / "converted_keras")
    return layout_ops(net, *(torch.from_numpy(x) for x in inputs))


def _model(shape, body):
    k, L = keras(), layers()
    inp = k.Input(shape)
    return k.Model(inp, body(L, inp))


# (input shape, permutes allowed in one forward: the input's, plus one back to Keras's layout where
# the output has rank >= 3, model body)
CASES = {
    # Dropout whose mask is shared over the spatial axes (EfficientNet's drop-connect)
    "dropout-noise_shape": ((6, 6, 3), 2, lambda L, x: L.Conv2D(3, 1)(L.Dropout(0.2, noise_shape=(None, 1, 1, 4))(
        L.Conv2D(4, 3, padding="same")(x)))),
    "spatial_dropout1d": ((9, 3), 2, lambda L, x: L.Conv1D(2, 3)(L.SpatialDropout1D(0.3)(L.Conv1D(4, 3)(x)))),
    # squeeze-excitation: (batch, C) -> Reshape (1, 1, C) -> convolutions -> Multiply with the feature map
    "squeeze_excitation": ((6, 6, 3), 2, lambda L, x: (lambda f: L.Multiply()([f, L.Conv2D(
        5, 1, activation="sigmoid")(L.Conv2D(2, 1, activation="relu")(L.Reshape((1, 1, 5))(
            L.GlobalAveragePooling2D()(f))))]))(L.Conv2D(5, 3)(x))),
    # a reshape keeping the channel axis: (4, 6, C) -> (24, C) -> Conv1D; and (2, 8, C) -> (4, 4, C)
    "reshape_keeps_channels": ((4, 6, 3), 1, lambda L, x: L.GlobalMaxPooling1D()(L.Conv1D(2, 3)(L.Reshape((24, 4))(
        L.Conv2D(4, 3, padding="same")(x))))),
    "reshape_spatial": ((2, 8, 3), 2, lambda L, x: L.Conv2D(2, 2)(L.Reshape((4, 4, 5))(L.Conv2D(5, 1)(x)))),
    # (batch, 1, 1, C) from a 1x1 convolution -> Reshape (C,) -> Dense (MobileNet's head)
    "reshape_to_vector": ((6, 6, 3), 1, lambda L, x: L.Dense(2)(L.Reshape((4,))(L.Conv2D(4, 1)(
        L.GlobalAveragePooling2D(keepdims=True)(L.Conv2D(3, 3)(x)))))),
    # 1D convolution stack with the 1D reshaping and pooling layers between
    "conv1d_stack": ((16, 3), 1, lambda L, x: L.Dense(2)(L.GlobalAveragePooling1D()(L.Conv1D(3, 2)(
        L.Cropping1D((1, 2))(L.UpSampling1D(2)(L.MaxPooling1D(2)(L.Conv1D(4, 3)(L.ZeroPadding1D((2, 1))(
            L.Conv1D(5, 3, padding="causal")(x)))))))))),
    # merges of two channels-first tensors, and of a feature map with a lower-rank tensor (Keras
    # expands the lower-rank input after the batch axis, torch would broadcast it from the right)
    "merge_two_cf": ((6, 6, 3), 2, lambda L, x: L.Conv2D(2, 1)(L.Concatenate()([L.Add()([
        L.Conv2D(4, 3)(x), L.Conv2D(4, 3)(x)]), L.Maximum()([L.Conv2D(4, 3)(x), L.Conv2D(4, 3)(x)])]))),
    "merge_rank2_into_map": ((4, 4, 3), 2, lambda L, x: L.Multiply()([L.Conv2D(3, 1)(x), L.Dense(3)(
        L.GlobalAveragePooling2D()(x))])),
    # (a rank-3 input cannot be expanded in the cf layout: this merge runs in Keras's)
    "merge_rank3_into_map": ((4, 4, 3), 4, lambda L, x: L.Add()([L.Conv2D(3, 1)(x), L.Conv1D(3, 1)(
        L.Reshape((4, 12))(x))])),
    # ZeroPadding + 'valid' convolution: equal sides become the convolution's padding; unequal ones too,
    # the output cropped, where that costs less than the padded copy (a depthwise convolution's)
    "zero_padding_folded": ((7, 7, 3), 2, lambda L, x: L.Add()([
        L.Conv2D(4, 3, strides=2)(L.ZeroPadding2D(1)(x)),
        L.SeparableConv2D(4, 3, strides=2, dilation_rate=1)(L.ZeroPadding2D(1)(x))])),
    "zero_padding_unequal": ((8, 8, 3), 2, lambda L, x: L.DepthwiseConv2D(3, strides=2)(
        L.ZeroPadding2D(((0, 1), (1, 2)))(x))),
    "zero_padding_shared": ((6, 6, 3), 2, lambda L, x: (lambda p: L.Concatenate()([
        L.Conv2D(3, 3, padding="same")(L.Conv2D(3, 3)(p)), L.MaxPooling2D(3, 1)(p)]))(L.ZeroPadding2D(1)(x))),
    "zero_padding1d_folded": ((9, 3), 2, lambda L, x: L.Conv1D(2, 5, dilation_rate=2)(L.ZeroPadding1D(3)(x))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_path(name, tmp_path):
    shape, allowed, body = CASES[name]
    x = rand(2, *shape)
    check(lambda: _model(shape, body), x, tmp_path)
    seen = _layout_ops(tmp_path, x)
    assert seen["permute"] <= allowed, seen


def test_zero_padding_becomes_conv_padding(tmp_path):
    """ZeroPadding before a 'valid' convolution leaves no F.pad: equal sides become its padding,
    unequal ones (before a depthwise convolution) too, its output cropped (test_conv: where not)."""
    x = rand(2, 7, 7, 3)
    check(lambda: _model((7, 7, 3), CASES["zero_padding_folded"][2]), x, tmp_path, formats=("keras",))
    assert _layout_ops(tmp_path, x)["pad"] == 0
    source = (tmp_path / "converted_keras" / "model.py").read_text()
    assert "padding=1" in source and "F.pad" not in source
    x = rand(2, 8, 8, 3)
    (tmp_path / "u").mkdir()
    check(lambda: _model((8, 8, 3), CASES["zero_padding_unequal"][2]), x, tmp_path / "u", formats=("keras",))
    assert _layout_ops(tmp_path / "u", x)["pad"] == 0
    source = "".join((tmp_path / "u" / "converted_keras" / "model.py").read_text().split())  # (line breaks vary)
    assert "stride=2,padding=(2,3)" in source and ")[:,:,1:,1:]" in source


def test_nested_models_keep_channels_first(tmp_path):
    """A conv block as a nested model, called twice (the second time on a tensor held channels-first
    by the caller), between convolutions of the outer model: no permute at its boundaries."""
    k, L = keras(), layers()
    block = k.Sequential([k.Input((6, 6, 4)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(),
                          L.Activation("relu")], name="block")
    inp = k.Input((6, 6, 3))
    a = block(L.Conv2D(4, 1)(inp))
    b = block(L.Conv2D(4, 1)(a))
    model = k.Model(inp, L.Dense(2)(L.Flatten()(L.Add()([a, b]))))
    x = rand(2, 6, 6, 3)
    check(model, x, tmp_path)
    assert _layout_ops(tmp_path, x)["permute"] == 2  # the input's, and Flatten's (Keras's H, W, C order)


def test_dropout_noise_shape_channels_first_train_mode(tmp_path):
    """Train mode in the cf layout: the mask is shared over the spatial axes, per (sample, channel)."""
    import kconv

    model = _model((6, 6, 3), lambda L, x: L.Dropout(0.5, noise_shape=(None, 1, 1, 64))(L.Conv2D(
        64, 1, kernel_initializer="ones", bias_initializer="ones")(x)))
    model.save(tmp_path / "m.keras")
    net = kconv.load_converted(kconv.convert(tmp_path / "m.keras", tmp_path / "out")).train()
    torch.manual_seed(0)
    y = net(torch.zeros(4, 6, 6, 3))  # every output 1 before dropout
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    assert torch.equal(y, y[:, :1, :1, :].expand_as(y))
