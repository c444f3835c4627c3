"""A BatchNormalization that alone reads a convolution's output (kconv/specs/normalization.py _folds):
``conv_bn(self.conv, self.bn, x)`` in the default output, one convolution with the BatchNorm folded in
at inference (kconv/runtime/normalization.py), the two modules as they are anywhere else.

Every case is compared with Keras (default and --optimize output, with the harness's tooling checks:
backward in train mode, double, pickle, meta), and the conv_bn calls in model.py are counted, so a
rule that folded where it must not fails on the numbers, and a rule that stopped applying fails on the
count."""
from __future__ import annotations

import pytest

from .harness import check, keras, layers, rand

pytestmark = pytest.mark.keras


def _conv2d(L, x):
    return L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x))


def _depthwise_frozen(L, x):  # a frozen BatchNorm (trainable=False) runs on its statistics in train mode too
    return L.BatchNormalization(trainable=False)(L.DepthwiseConv2D(3, padding="same", use_bias=False)(x))


def _deep_kernel(L, x):  # 3x3x3x48 kernel (1296) < 6x6x48 output at batch 1 (1728): folded
    y = L.BatchNormalization()(L.Conv2D(48, 3, padding="same")(L.MaxPooling2D(2)(x)))
    # 3x3x48x64 kernel (27648) >= 3x3x64 output (576): folding would cost more than it saves
    return L.BatchNormalization()(L.Conv2D(64, 3, padding="same")(L.MaxPooling2D(2)(y)))


def _activation(L, x):  # the convolution's own activation comes between: not folded
    return L.BatchNormalization()(L.Conv2D(8, 3, padding="same", activation="relu")(x))


def _two_readers(L, x):  # the convolution's output is read by the Add too: not folded
    c = L.Conv2D(3, 3, padding="same")(x)
    return L.Add()([c, L.BatchNormalization()(c)])


def _conv_is_output(L, x):  # a model output: not folded
    c = L.Conv2D(8, 3, padding="same")(x)
    return [c, L.BatchNormalization()(c)]


def _chain(L, x):  # conv -> BN -> ReLU -> conv -> BN -> Add with the first BN: two folds, in-place ReLU
    a = L.ReLU()(_conv2d(L, x))
    b = L.BatchNormalization(epsilon=0.1, momentum=0.5)(L.Conv2D(8, 1)(a))
    return L.Add()([a, b])


CASES = {  # name: (builder, conv_bn calls in the default output[, atol])
    "conv2d": (_conv2d, 1),
    "depthwise_frozen": (_depthwise_frozen, 1),
    # outputs up to about 30 from sums of 432 and 576 products: Keras's float32 rounding (.double() is
    # compared with it too) is about 1e-6 of that
    "deep_kernel": (_deep_kernel, 1, 1e-4),
    "activation": (_activation, 0),
    "two_readers": (_two_readers, 0),
    "conv_is_output": (_conv_is_output, 0),
    "chain": (_chain, 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_bn_folds_only_where_safe(case, tmp_path):
    build, n, *atol = CASES[case]
    L = layers()
    inp = L.Input((12, 12, 3))
    model = keras().Model(inp, build(L, inp))
    check(model, rand(2, 12, 12, 3), tmp_path, formats=("keras",), optimize=True, atol=(atol or [1e-5])[0])
    src = (tmp_path / "converted_keras" / "model.py").read_text()
    forward = src[src.index("class Model("):]
    assert forward.count("conv_bn(") == n, forward
    assert ("def conv_bn(" in src) == (n > 0)  # the runtime function is shipped where it is used only


def test_conv_bn_conv1d_conv3d(tmp_path):
    k = keras()
    L = k.layers
    a, b = k.Input((16, 3)), k.Input((5, 6, 7, 2))  # (the Conv3D's statement is not the one before its BatchNorm's)
    ya = L.BatchNormalization(epsilon=0.01)(L.Conv1D(4, 3)(a))
    yb = L.BatchNormalization()(L.Conv3D(4, 2, padding="same")(b))
    check(k.Model([a, b], [ya, yb]), [rand(2, 16, 3), rand(2, 5, 6, 7, 2, seed=1)], tmp_path, formats=("keras",))
    src = (tmp_path / "converted_keras" / "model.py").read_text()
    assert src[src.index("class Model("):].count("conv_bn(") == 2


@pytest.mark.parametrize("blocks", [False, True], ids=["flat", "blocks"])
def test_verify_per_layer_traces_the_folded_convolution(blocks, tmp_path):
    """verify --per-layer records the convolution's output too: in trace mode a line inserted before the
    conv_bn call runs the convolution alone (the shipped code is traced with lines inserted, none changed);
    with --blocks the conv_bn calls move into the block classes."""
    import kconv
    from kconv.verify import verify

    from .harness import randomize_weights, save

    L = layers()
    x = inp = L.Input((12, 12, 3))
    for i in (1, 2, 3):
        x = L.BatchNormalization(name=f"block{i}_bn")(L.Conv2D(3, 3, padding="same", name=f"block{i}_conv")(x))
        x = L.ReLU(name=f"block{i}_relu")(x)
    m = keras().Model(inp, x)
    randomize_weights(m)
    path = save(m, tmp_path, "keras")
    out = kconv.convert(path, tmp_path / "out", blocks=blocks)
    src = (out / "model.py").read_text()
    # with --blocks, blocks 2 and 3 share a class (block 1 takes the NHWC input)
    assert src.count("conv_bn(self.") == (2 if blocks else 3), src
    r = verify(path, out, per_layer=True)
    assert r.passed and r.first_divergence is None
    assert [c.name for c in r.layers] == [f"block{i}_{s}" for i in (1, 2, 3) for s in ("conv", "bn", "relu")]


def test_conv_bn_exports_under_no_grad(tmp_path):
    """torch.export under torch.no_grad records the folded path (the harness's export check runs with
    autograd on, the unfolded one): the exported program gives Keras's numbers on another batch size."""
    import numpy as np
    import torch

    import kconv

    from .harness import keras_forward, randomize_weights, save

    L = layers()
    inp = L.Input((12, 12, 3))
    m = keras().Model(inp, _chain(L, inp))
    randomize_weights(m)
    out = kconv.convert(save(m, tmp_path, "keras"), tmp_path / "out")
    net = kconv.load_converted(out)
    a, b = rand(3, 12, 12, 3), rand(2, 12, 12, 3, seed=1)
    with torch.no_grad():
        program = torch.export.export(net, (torch.from_numpy(a),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        got = program.module()(torch.from_numpy(b)).numpy()
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    # folded: the bias's addcmul, no BatchNorm op and not the in-place form's mul_/add_
    assert "aten.addcmul.default" in ops and not any("batch_norm" in op or "mul_" in op for op in ops), ops
    np.testing.assert_allclose(got, keras_forward(m, b)[0], rtol=1e-5, atol=1e-5)
