"""kconv convert --blocks (issue 13): layers sharing a block name prefix become nested submodules, one
class per distinct structure; the state-dict keys follow the nesting and the manifest maps every Keras
weight to its key; the numbers are those of Keras.

The fixture fixtures/blocks/resblocks.keras (scripts/make_blocks_fixture.py) carries Keras's own
outputs, so its tests run without Keras; the others build small Keras models (marked ``keras``).
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import kconv
from conftest import FIXTURES
from kconv.emit.blocks import prefixes
from kconv.emit.codegen import Generator

RESBLOCKS = FIXTURES / "blocks" / "resblocks.keras"


@pytest.mark.parametrize("name, expected", [
    ("conv2_block1_1_conv", ["conv2_block1", "conv2_block1_1"]),  # ResNet, DenseNet
    ("conv2_block1_preact_bn", ["conv2_block1"]),  # ResNetV2
    ("block_3_expand_BN", ["block_3"]),  # MobileNetV2
    ("block1a_se_squeeze", ["block1a"]),  # EfficientNet
    ("block2_sepconv1_act", ["block2"]),  # Xception, VGG
    ("block17_8_mixed", ["block17", "block17_8"]),  # InceptionResNetV2: the instance is the fallback
    ("stage2_conv", ["stage2"]),
    ("convnext_tiny_stage_0_block_1_gelu",  # the deepest keyword first, the stage as a fallback
     ["convnext_tiny_stage_0_block_1", "convnext_tiny_stage_0"]),
    ("regnetx002_Stage_0_XBlock_0_conv_1x1_1", ["regnetx002_Stage_0_XBlock_0", "regnetx002_Stage_0"]),
    ("block1", []), ("block_3", []),  # nothing after the prefix: the layer is not in a block
    ("conv2d_1", []), ("expanded_conv_6_project", []), ("blocked_dense", []),
])
def test_block_prefixes(name, expected):
    assert prefixes(name) == expected


def _convert(tmp_path, path, **kw):
    out = kconv.convert(path, tmp_path / "out", **kw)
    return out, (out / "model.py").read_text(), json.loads((out / "kconv.json").read_text())


def _instances(source: str) -> dict:
    """{attribute: class} of the submodules of class Model that are block classes."""
    model = source.split("\nclass Model(")[1]
    return dict(re.findall(r"self\.(\w+) = ([A-Z]\w*)\(\)$", model, re.M))


def test_fixture_blocks_share_classes_and_match_keras(tmp_path):
    out, source, man = _convert(tmp_path, RESBLOCKS, blocks=True)
    assert _instances(source) == {
        "stage1_block1": "Stage1Block1", "stage1_block2": "Stage1Block1",  # identical: one class
        "stage2_block1": "Stage2Block1",  # stride 2 and a projection shortcut
        "stage2_block2": "Stage2Block2", "stage2_block3": "Stage2Block3",  # differ only in the Dropout rate
    }
    assert source.count("class Stage1Block1(") == 1
    for cls, rate in (("Stage2Block2", "0.1"), ("Stage2Block3", "0.2")):
        body = source.split(f"class {cls}(")[1].split("\nclass ")[0]
        assert f"self.drop = nn.Dropout({rate})" in body
    net = kconv.load_converted(out)
    keys = set(net.state_dict())
    assert "stage1_block2.conv1.weight" in keys and "stage2_block1.conv0.weight" in keys
    assert not any(k.startswith("stage1_block1_") for k in keys)  # nothing of a block left flat
    # the manifest maps every Keras weight to a key of the module, each key once
    mapped = [r["torch_key"] for r in man["weights"]]
    assert None not in mapped and len(mapped) == len(set(mapped))
    assert set(mapped) == {k for k in keys if not k.endswith("num_batches_tracked")}
    assert man["blocks"] is True
    row = next(r for r in man["weights"] if r["keras_layer"] == "stage2_block1_0_conv" and r["role"] == "kernel")
    assert row["torch_key"] == "stage2_block1.conv0.weight" and row["transform"] == "permute(3,2,0,1)"
    io = np.load(FIXTURES / "blocks" / "resblocks.io.npz")
    with torch.no_grad():
        got = net(torch.from_numpy(io["input_0"])).numpy()
    np.testing.assert_allclose(got, io["output_0"], rtol=1e-5, atol=1e-5 * float(np.abs(io["output_0"]).max()))


def test_blocks_hold_the_flat_weights(tmp_path):
    """Every tensor of the --blocks state dict is the flat conversion's tensor of the same Keras weight."""
    flat_out, _, flat_man = _convert(tmp_path / "flat", RESBLOCKS)
    out, _, man = _convert(tmp_path / "blocks", RESBLOCKS, blocks=True)
    flat = kconv.load_converted(flat_out).state_dict()
    nested = kconv.load_converted(out).state_dict()
    pairs = {(r["keras_layer"], r["keras_weight"]): r["torch_key"] for r in flat_man["weights"]}
    assert len(pairs) == len(man["weights"])
    for r in man["weights"]:
        assert torch.equal(nested[r["torch_key"]], flat[pairs[(r["keras_layer"], r["keras_weight"])]])


@pytest.mark.parametrize("opts", [{"channels_first": True}, {"optimize": True}], ids=["channels_first", "optimize"])
def test_fixture_blocks_with_other_options(tmp_path, opts):
    """--blocks groups whatever the converter emitted: NCHW inputs, or BatchNormalization folded away."""
    out, source, man = _convert(tmp_path, RESBLOCKS, blocks=True, **opts)
    assert _instances(source)["stage1_block2"] == "Stage1Block1"
    assert ("KerasBatchNorm2d" in source) != bool(opts.get("optimize"))
    io = np.load(FIXTURES / "blocks" / "resblocks.io.npz")
    x = io["input_0"]
    if opts.get("channels_first"):
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    with torch.no_grad():
        got = kconv.load_converted(out)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, io["output_0"], rtol=1e-5, atol=1e-5 * float(np.abs(io["output_0"]).max()))


def test_default_stays_flat(tmp_path):
    _, source, man = _convert(tmp_path, RESBLOCKS)
    assert not _instances(source) and man["blocks"] is False
    assert "self.stage1_block1_1_conv = nn.Conv2d(8, 8, 3, padding=1)" in source


def test_cli_blocks(tmp_path):
    from click.testing import CliRunner

    from kconv.cli import main

    res = CliRunner().invoke(main, ["convert", str(RESBLOCKS), "-o", str(tmp_path / "o"), "--blocks"])
    assert res.exit_code == 0, res.output
    assert "self.stage1_block2 = Stage1Block1()" in (tmp_path / "o" / "model.py").read_text()


def test_blocks_are_deterministic():
    model = kconv.load(RESBLOCKS)
    assert Generator(model, blocks=True).generate() == Generator(kconv.load(RESBLOCKS), blocks=True).generate()


# --- small Keras models ---------------------------------------------------------------------------

def _check(model, tmp_path, x, blocks=True):
    """Save ``model`` (weights randomised), convert it with --blocks, compare with Keras; returns
    (model.py source, state-dict keys)."""
    from equivalence.harness import randomize_weights

    randomize_weights(model)
    ref = np.asarray(model(x, training=False))
    path = tmp_path / "m.keras"
    model.save(path)
    out = kconv.convert(path, tmp_path / "out", blocks=blocks)
    net = kconv.load_converted(out)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    man = json.loads((out / "kconv.json").read_text())
    keys = set(net.state_dict())
    assert {r["torch_key"] for r in man["weights"]} == {k for k in keys if not k.endswith("num_batches_tracked")}
    return (out / "model.py").read_text(), keys


def _x(*shape):
    return np.random.default_rng(3).normal(size=(2, *shape)).astype("float32")


@pytest.mark.keras
def test_residual_dense_blocks(tmp_path):
    """Blocks with a residual Add inside and two inputs read from outside; identical blocks share a class;
    a block that differs in one config value (an activation) gets its own."""
    import keras
    L = keras.layers

    inp = keras.Input((6,))
    x = L.Dense(6, name="stem")(inp)
    for i, act in enumerate(["relu", "relu", "relu", "tanh"], 1):
        y = L.Dense(6, activation=act, name=f"block{i}_fc1")(x)
        y = L.LayerNormalization(name=f"block{i}_norm")(y)
        y = L.Dense(6, name=f"block{i}_fc2")(y)
        x = L.Add(name=f"block{i}_add")([x, y, inp])
    out = L.Dense(2, name="head")(x)
    source, keys = _check(keras.Model(inp, out), tmp_path, _x(6))
    assert _instances(source) == {"block1": "Block1", "block2": "Block1", "block3": "Block1", "block4": "Block4"}
    assert "def forward(self, x0, x1):" in source  # the running tensor and the model input
    assert "block3.fc2.bias" in keys and "block4.norm.weight" in keys


@pytest.mark.keras
def test_interleaved_group_is_made_contiguous(tmp_path):
    """Keras orders the calls block1_a, side, block1_b: 'side' reads no block1 output, so it runs before the
    block, which is then one call."""
    import keras
    L = keras.layers

    inp = keras.Input((5,))
    a = L.Dense(5, name="block1_a")(inp)
    side = L.Dense(5, name="side")(inp)
    b = L.Dense(5, activation="relu", name="block1_b")(a)
    out = L.Add(name="merge")([side, b])
    model = keras.Model(inp, out)
    order = [ly.name for ly in model.layers]
    assert order.index("block1_a") < order.index("side") < order.index("block1_b")  # the case under test
    source, keys = _check(model, tmp_path, _x(5))
    assert _instances(source) == {"block1": "Block1"}
    fwd = source.split("def forward(self, input_layer")[1]
    assert fwd.index("self.side(") < fwd.index("self.block1(")
    assert {"block1.a.weight", "block1.b.weight", "side.weight"} <= keys


@pytest.mark.keras
def test_group_that_cannot_be_contiguous_stays_flat(tmp_path):
    """block1_b reads 'side', which reads block1_a: no order makes block1 one call, so it stays flat;
    block2 (contiguous) is still grouped."""
    import keras
    L = keras.layers

    inp = keras.Input((5,))
    a = L.Dense(5, name="block1_a")(inp)
    side = L.Dense(5, activation="tanh", name="side")(a)
    b = L.Dense(5, name="block1_b")(side)
    c = L.Dense(5, name="block2_a")(b)
    out = L.Dense(5, name="block2_b")(c)
    source, keys = _check(keras.Model(inp, out), tmp_path, _x(5))
    assert _instances(source) == {"block2": "Block2"}
    assert {"block1_a.weight", "block1_b.weight", "side.weight", "block2.a.weight"} <= keys


@pytest.mark.keras
def test_shared_layer_in_a_block_stays_flat(tmp_path):
    """A layer called twice lives in one place: its would-be block is not formed."""
    import keras
    L = keras.layers

    inp = keras.Input((4,))
    shared = L.Dense(4, name="block1_shared")
    x = shared(inp)
    x = L.Dense(4, name="block1_fc")(x)
    out = shared(x)
    source, keys = _check(keras.Model(inp, out), tmp_path, _x(4))
    assert not _instances(source) and "block1_shared.weight" in keys


@pytest.mark.keras
def test_blocks_inside_a_nested_model(tmp_path):
    """A nested model's blocks nest under its module: keys outer path + block + layer."""
    import keras
    L = keras.layers

    inner_in = keras.Input((4, 4, 3))
    y = inner_in
    for i in (1, 2):
        z = L.Conv2D(3, 3, padding="same", name=f"stage{i}_conv")(y)
        z = L.BatchNormalization(name=f"stage{i}_bn")(z)
        y = L.Add(name=f"stage{i}_add")([y, z])
    backbone = keras.Model(inner_in, y, name="backbone")
    inp = keras.Input((4, 4, 3))
    x = backbone(inp)
    out = L.Dense(2, name="head")(L.Flatten(name="flat")(x))
    source, keys = _check(keras.Model(inp, out), tmp_path, _x(4, 4, 3))
    assert "backbone.stage1.bn.running_var" in keys and "backbone.stage2.conv.weight" in keys
    assert "self.stage2 = Stage1()" in source


@pytest.mark.keras
def test_verify_per_layer_on_blocks_output(tmp_path):
    """kconv verify reads the manifest: the per-layer trace is of the shipped --blocks model.py, shared
    classes included (their trace keys follow the block being run)."""
    from kconv.verify import verify

    out = kconv.convert(RESBLOCKS, tmp_path / "out", blocks=True)
    result = verify(RESBLOCKS, out, per_layer=True)
    assert result.passed, result.summary()
    assert result.trace == "shipped"
    names = [c.name for c in result.layers]
    assert "stage1_block2_1_conv" in names and "stage2_block3_add" in names and "kconv:block" not in names
    assert all(c.passed for c in result.layers)


@pytest.mark.keras
def test_assert_equivalent_on_a_blocks_module(tmp_path):
    """A --blocks module passed without its directory: the per-layer trace is made with blocks too."""
    from kconv.testing import assert_equivalent

    out = kconv.convert(RESBLOCKS, tmp_path / "out", blocks=True)
    result = assert_equivalent(RESBLOCKS, kconv.load_converted(out), per_layer=True)
    assert result.layers and all(c.passed for c in result.layers)


@pytest.mark.keras
def test_resnet50_blocks(tmp_path):
    """ResNet50 with --blocks: the repeated bottlenecks are one class each, as torchvision's Bottleneck."""
    from test_applications_convert import FAST, _build

    model = _build("ResNet50", FAST["ResNet50"])
    x = _x(*FAST["ResNet50"])
    ref = np.asarray(model(x, training=False))
    path = tmp_path / "r.keras"
    model.save(path)
    out, source, _ = _convert(tmp_path, path, blocks=True)
    inst = _instances(source)
    assert len(inst) == 16 and len(set(inst.values())) == 8  # conv2..5: a first block and a repeated one
    assert inst["conv4_block2"] == inst["conv4_block6"] == "Conv4Block2"
    with torch.no_grad():
        got = kconv.load_converted(out)(torch.from_numpy(x)).numpy()
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)  # as tests/test_applications_convert.py


@pytest.mark.keras
def test_block_with_several_outputs_and_a_mask(tmp_path):
    """A block whose tensors are read outside it returns them all; the Keras mask (Keras 3 records it as
    an op, input != 0, outside the block) enters it as a second input."""
    import keras
    L = keras.layers

    inp = keras.Input((7,), dtype="int32")
    e = L.Embedding(20, 6, mask_zero=True, name="block1_embed")(inp)
    s = L.LSTM(5, return_sequences=True, name="block1_lstm")(e)
    last = L.GRU(4, name="head_gru")(s)  # masked by block1's mask
    pooled = L.GlobalAveragePooling1D(name="head_pool")(e)  # masked mean of the embedding
    out = L.Concatenate(name="merge")([last, pooled])
    model = keras.Model(inp, out)
    from equivalence.harness import randomize_weights

    randomize_weights(model)
    x = np.random.default_rng(0).integers(1, 20, size=(3, 7)).astype("int32")
    x[0, 4:] = 0
    x[1, :2] = 0
    ref = np.asarray(model(x, training=False))
    model.save(tmp_path / "m.keras")
    out_dir = kconv.convert(tmp_path / "m.keras", tmp_path / "out", blocks=True)
    source = (out_dir / "model.py").read_text()
    assert _instances(source) == {"block1": "Block1"}
    call = re.search(r"^\s+(.+) = self\.block1\((.+)\)$", source, re.M)
    assert call and call.group(1) == "block1_embed, block1_lstm" and call.group(2).count(",") == 1, call
    with torch.no_grad():
        got = kconv.load_converted(out_dir)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.keras
def test_sequential_mask_made_in_a_block(tmp_path):
    """In a Sequential model the mask travels with the tensor (kconv emits it where the Embedding is):
    made inside a block and used after it, it leaves the block as one more output."""
    import keras
    L = keras.layers

    model = keras.Sequential([
        keras.Input((7,), dtype="int32"),
        L.Embedding(20, 6, mask_zero=True, name="block1_embed"),
        L.Dense(6, activation="tanh", name="block1_fc"),
        L.GRU(4, name="head_gru"),
    ])
    from equivalence.harness import randomize_weights

    randomize_weights(model)
    x = np.random.default_rng(0).integers(1, 20, size=(3, 7)).astype("int32")
    x[0, 4:] = 0
    x[1, :2] = 0
    ref = np.asarray(model(x, training=False))
    model.save(tmp_path / "m.keras")
    out_dir = kconv.convert(tmp_path / "m.keras", tmp_path / "out", blocks=True)
    source = (out_dir / "model.py").read_text()
    assert _instances(source) == {"block1": "Block1"}
    assert re.search(r"block1_embed_mask, block1_fc = self\.block1\(input_layer\w*\)", source)
    with torch.no_grad():
        got = kconv.load_converted(out_dir)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
