"""Every keras.applications architecture that builds offline converts and matches Keras.

Weights are random (weights=None, then re-drawn small so deep nets neither explode nor saturate),
the classifier returns logits (classifier_activation=None: a softmax would hide errors), inputs are
small where the architecture allows. Tolerance: 1e-4 of the output's scale — deep stacks of
float32 convolutions accumulate summation-order differences; 1e-5 holds for the single layers in
tests/equivalence/.
Each conversion also runs with at most 2 permutes in its forward (kconv.testing.layout_ops; ConvNeXt:
see _allowed_permutes).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from equivalence.harness import unused_definitions

pytestmark = pytest.mark.keras

# name: input shape (None: the architecture's default)
FAST = {
    "MobileNet": (96, 96, 3),
    "MobileNetV2": (96, 96, 3),
    "MobileNetV3Small": (96, 96, 3),
    "EfficientNetB0": (96, 96, 3),
    "EfficientNetV2B0": (96, 96, 3),
    "ResNet50": (64, 64, 3),
    "ResNet50V2": (64, 64, 3),
    "DenseNet121": (64, 64, 3),
    "InceptionV3": (75, 75, 3),
    "Xception": (71, 71, 3),
    "VGG16": (32, 32, 3),
    "ConvNeXtTiny": (64, 64, 3),
}
SLOW = {
    "MobileNetV3Large": (96, 96, 3),
    "ResNet101": (64, 64, 3),
    "ResNet152V2": (64, 64, 3),
    "VGG19": (32, 32, 3),
    "DenseNet169": (64, 64, 3),
    "InceptionResNetV2": (75, 75, 3),
    "NASNetMobile": None,
    "EfficientNetB3": (96, 96, 3),
    "EfficientNetV2S": (96, 96, 3),
    "ConvNeXtSmall": (64, 64, 3),
}
# the rest of keras.applications: same families, bigger (every model is converted by some test)
REST = {
    "ConvNeXtBase": (64, 64, 3),
    "ConvNeXtLarge": (64, 64, 3),
    "ConvNeXtXLarge": (64, 64, 3),
    "DenseNet201": (64, 64, 3),
    "EfficientNetB1": (96, 96, 3),
    "EfficientNetB2": (96, 96, 3),
    "EfficientNetB4": (96, 96, 3),
    "EfficientNetB5": (96, 96, 3),
    "EfficientNetB6": (96, 96, 3),
    "EfficientNetB7": (96, 96, 3),
    "EfficientNetV2B1": (96, 96, 3),
    "EfficientNetV2B2": (96, 96, 3),
    "EfficientNetV2B3": (96, 96, 3),
    "EfficientNetV2M": (96, 96, 3),
    "EfficientNetV2L": (96, 96, 3),
    "NASNetLarge": None,
    "ResNet152": (64, 64, 3),
    "ResNet101V2": (64, 64, 3),
}


def _allowed_permutes(model) -> int:
    """Permutes one forward may run: the NHWC input's, and one more (Flatten in Keras's order, VGG).
    ConvNeXt: also a pair around each LayerNormalization over the channels that sits between
    convolutions (it and the Dense layers after it run in Keras's layout on a zero-copy permuted
    view, as torchvision's CNBlock does; a channels-first LayerNorm and 1x1 convolutions instead
    measured 2-10% slower per block, scripts/permute_count.py's notes in docs/benchmarks.md)."""
    if model.name.startswith("convnext"):
        return 2 + 2 * sum(type(ly).__name__ == "LayerNormalization" for ly in _all_layers(model))
    return 2


def _all_layers(model):
    for ly in model.layers:
        yield ly
        if hasattr(ly, "layers"):
            yield from _all_layers(ly)


def _build(name, shape):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    ctor = getattr(keras.applications, name)
    kw = dict(weights=None, classes=10, classifier_activation=None)
    model = ctor(input_shape=shape, **kw) if shape else ctor(**kw)
    rng = np.random.default_rng(0)
    for v in model.weights:
        if "float" not in str(v.dtype):
            continue
        a = rng.normal(0, 0.05, v.shape).astype("float32")
        if "variance" in v.path:
            a = np.abs(a) + 0.5
        elif "gamma" in v.path or v.path.endswith("scale"):
            a = a + 1.0
        v.assign(a)
    return model


def _check(name, shape, tmp_path, fmt, blocks=False):
    import torch

    import kconv

    model = _build(name, shape)
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    ref = np.asarray(model(x, training=False))
    path = tmp_path / f"{name}.{fmt}"
    model.save(path)
    out_dir = kconv.convert(path, tmp_path / "out", blocks=blocks)
    lines = (Path(out_dir) / "model.py").read_text().splitlines()
    assert unused_definitions("\n".join(lines)) == []
    # issue 13: 370 lines with the old BatchNorm helper, 325 after it; 383 with conv_bn (issue 15), whose calls
    # ruff-format wraps onto 3-5 lines where the conv and its BatchNorm had one each
    if name == "ResNet50" and not blocks:
        assert len(lines) < 400 and max(map(len, lines)) <= 100
    net = kconv.load_converted(out_dir)
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    scale = float(np.abs(ref).max())
    assert scale > 1e-3, "degenerate reference output"
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * scale)
    from kconv.testing import layout_ops

    seen = layout_ops(net, torch.from_numpy(x))
    assert seen["permute"] <= _allowed_permutes(model), seen


@pytest.mark.parametrize("name", sorted(FAST))
def test_application_converts_exactly(name, tmp_path):
    _check(name, FAST[name], tmp_path, "keras")


# ConvNeXt: its LayerScale weight has no name of its own ('variable' in the .h5, issue #12.5)
@pytest.mark.parametrize("name", ["MobileNetV2", "EfficientNetB0", "DenseNet121", "ConvNeXtTiny"])
def test_application_converts_exactly_from_h5(name, tmp_path):
    _check(name, FAST[name], tmp_path, "h5")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_big_application_converts_exactly(name, tmp_path):
    _check(name, SLOW[name], tmp_path, "keras")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted({**FAST, **SLOW}))
def test_application_converts_exactly_with_blocks(name, tmp_path):
    """kconv convert --blocks (tests/test_blocks.py): the same numbers with the layers in block modules."""
    _check(name, {**FAST, **SLOW}[name], tmp_path, "keras", blocks=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REST))
def test_every_other_application_converts_exactly(name, tmp_path):
    _check(name, REST[name], tmp_path, "h5")


@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50"])
def test_verify_passes_on_application(name, tmp_path):
    """`kconv verify` (Keras loaded from the file in safe mode, the converted dir as a user loads it)."""
    from kconv.verify import verify

    import kconv

    model = _build(name, FAST[name])
    path = tmp_path / f"{name}.keras"
    model.save(path)
    out = kconv.convert(path, tmp_path / "out")
    # Random-weight ResNet50 logits reach ~2e3 and its pre-BatchNorm activations ~1e3: float32
    # summation order moves the logits by ~1e-4 relative, and BatchNorm's (x - mean) cancels those
    # large values (TF computes x*inv + (beta - mean*inv), torch (x - mean)*inv + beta), so near-zero
    # BatchNorm outputs differ by ~1e-3 absolute. Outputs only, 10x looser than verify's defaults;
    # MobileNetV2 (ReLU6, small activations) passes the defaults layer by layer.
    if name == "ResNet50":
        result = verify(path, out, atol=1e-3, rtol=1e-3)
    else:
        result = verify(path, out, per_layer=True)
        assert result.layers and all(c.passed for c in result.layers)
    assert result.passed, result.summary()
