"""Enum-like config values Keras would reject are refused (exit 2, naming the layer, the key and the
value), never converted as if they were a default (issue 12, point 8).

The sets are data in the layer declarations (``LayerSpec.choices``, ``specs.COMMON_CHOICES``); these
tests edit genuine files' configs by hand: the committed fixtures (no Keras needed) and, for layer
classes the fixtures lack, small files written by Keras.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

import kconv
from kconv import specs
from kconv.cli import main
from kconv.errors import KconvError

from conftest import FIXTURES


def _edit_keras(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zf:
        members = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members:
            if name == "config.json":
                cfg = json.loads(data)
                edit(cfg["config"]["layers"])
                data = json.dumps(cfg).encode()
            zf.writestr(name, data)
    return dst


def _edit_h5(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg["config"]["layers"])
        f.attrs["model_config"] = json.dumps(cfg)
    return dst


def _setter(layer_name, key, value):
    def edit(layers):
        hit = [ly for ly in layers if ly["config"].get("name") == layer_name]
        assert hit, layer_name
        hit[0]["config"][key] = value
    return edit


def _cli(args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(main, args, catch_exceptions=True)


# (fixture stem, layer, key, garbage value)
FIXTURE_CASES = [
    ("cnn", "conv2d", "padding", "vaild"),
    ("cnn", "conv2d", "padding", "causal"),  # causal is Conv1D's only
    ("cnn", "conv2d_1", "data_format", "channels_middle"),
    ("cnn", "max_pooling2d", "padding", "full"),
    ("cnn", "dense", "activation", "softmaxx"),
    ("cnn", "conv2d", "activation", "relu7"),
    ("text_rnn", "lstm", "recurrent_activation", "hard_sigmoidd"),
    ("text_rnn", "gru", "activation", "tanhh"),
]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("stem,layer,key,value", FIXTURE_CASES)
def test_garbage_enum_value_is_refused(stem, layer, key, value, fmt, tmp_path):
    edit = _edit_keras if fmt == "keras" else _edit_h5
    path = edit(FIXTURES / f"{stem}.{fmt}", tmp_path / f"bad.{fmt}", _setter(layer, key, value))
    for cmd in (["inspect", str(path)], ["convert", str(path), "-o", str(tmp_path / "out")]):
        result = _cli(cmd)
        assert result.exit_code == 2, (cmd, result.output)
        msg = result.output.strip().splitlines()[-1]
        assert msg.startswith("kconv: error:") and repr(layer) in msg and repr(key) in msg and repr(value) in msg, msg
    assert not (tmp_path / "out").exists()


def test_dtype_policy_name_is_checked(tmp_path):
    def edit(layers):
        layers[1]["config"]["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                                        "config": {"name": "float31"}, "registered_name": None}
    path = _edit_keras(FIXTURES / "cnn.keras", tmp_path / "bad.keras", edit)
    with pytest.raises(KconvError, match=r"'conv2d': config key 'dtype' is 'float31'"):
        kconv.load(path)


def test_accepted_values_still_load(tmp_path):
    """Keras lower-cases padding and data_format; 'causal' is fine on Conv1D; a Keras 3 serialized
    builtin activation ({"class_name": "function", "config": name}) is a name too."""
    def edit(layers):
        by = {ly["config"]["name"]: ly["config"] for ly in layers}
        by["conv2d"]["padding"] = "SAME"
        by["conv2d_1"]["data_format"] = "Channels_Last"
        by["dense"]["activation"] = {"module": "keras.activations", "class_name": "function",
                                     "config": "softmax", "registered_name": "softmax"}
    path = _edit_keras(FIXTURES / "cnn.keras", tmp_path / "ok.keras", edit)
    model = kconv.load(path)
    conv = model.layer("conv2d")
    assert conv.config["padding"] == "same"
    assert model.layer("conv2d_1").config["data_format"] == "channels_last"
    kconv.convert(path, tmp_path / "out")


def test_choices_are_declaration_data():
    """One mechanism: every enum-like key is a Choice in a declaration (or common to all)."""
    reg = specs.registry()
    assert reg["Conv1D"].all_choices()["padding"].values == specs.PADDING_CAUSAL
    for cls in ("Conv2D", "Conv3D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv1D", "MaxPooling1D",
                "AveragePooling2D", "MaxPooling3D", "ConvLSTM2D"):
        assert reg[cls].all_choices()["padding"].values == specs.PADDING, cls
    assert None in reg["Bidirectional"].all_choices()["merge_mode"].values
    assert "bilinear" in reg["UpSampling2D"].all_choices()["interpolation"].values
    assert specs.check_choices("Dense", {"activation": "relu", "dtype": "mixed_bfloat16"}) == []
    assert specs.check_choices("Dense", {"activation": "rleu"})[0][:2] == ("activation", "rleu")
    # a custom activation object is not a name: left to the converter, which reports it
    assert specs.check_choices("Dense", {"activation": {"class_name": "MyAct", "config": {}}}) == []


@pytest.mark.keras
@pytest.mark.parametrize("cls,key,value", [
    ("conv1d", "padding", "wrap"),
    ("average_pooling1d", "padding", "causal"),
    ("up_sampling2d", "interpolation", "cubic"),
    ("bidirectional", "merge_mode", "average"),
    ("attention", "score_mode", "cosine"),
    ("conv2d_transpose", "padding", "causal"),
])
def test_garbage_enum_value_is_refused_keras_written(cls, key, value, tmp_path):
    from tests.equivalence.harness import keras, layers

    k, L = keras(), layers()
    inp = k.Input((8, 4))
    x = L.Conv1D(4, 3, padding="causal", name="conv1d")(inp)
    x = L.AveragePooling1D(2, name="average_pooling1d")(x)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bidirectional")(x)
    x = L.Attention(name="attention")([x, x])
    img = k.Input((4, 4, 2))
    y = L.UpSampling2D(interpolation="bilinear", name="up_sampling2d")(img)
    y = L.Conv2DTranspose(2, 3, name="conv2d_transpose")(y)
    model = k.Model([inp, img], [x, y])
    good = tmp_path / "good.keras"
    model.save(good)
    kconv.load(good)  # the unedited file loads
    bad = _edit_keras(good, tmp_path / "bad.keras", _setter(cls, key, value))
    result = _cli(["convert", str(bad), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert repr(cls) in result.output and repr(key) in result.output and repr(value) in result.output
