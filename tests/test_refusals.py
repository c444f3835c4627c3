"""Options kconv does not convert yet are refused by name, never converted into wrong numbers."""
from __future__ import annotations

import json
import shutil

import h5py
import pytest
from conftest import FIXTURES

import kconv
from kconv.errors import UnsupportedError


def _with_config_change(tmp_path, fixture, change):
    path = tmp_path / fixture
    shutil.copy(FIXTURES / fixture, path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        change(cfg)
        f.attrs["model_config"] = json.dumps(cfg)
    return path


def test_time_major_rnn_is_refused(tmp_path):
    def time_major(cfg):
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "LSTM":
                layer["config"]["time_major"] = True

    path = _with_config_change(tmp_path, "text_rnn_k2.h5", time_major)
    with pytest.raises(UnsupportedError) as err:
        kconv.convert(path, tmp_path / "out")
    # time-major plain RNNs convert (tests/test_legacy.py), but not with a mask (here Embedding's mask_zero)
    assert [why for _, why in err.value.by_class["LSTM"]] == ["time_major=True with a mask or an initial_state"]
    assert not (tmp_path / "out").exists()


def _lstm_ignoring_its_mask(e):
    """An LSTM converter that forgets to read the mask (what a mask-using layer must never do)."""
    e.output(f"{e.module('nn.Identity()')}({e.input(0)})")


def test_a_layer_declared_to_use_its_mask_is_refused_when_its_emitter_ignores_it(tmp_path, monkeypatch):
    """LayerSpec.uses_mask drives the refusal: the masked LSTM of text_rnn.keras with an emitter that does
    not read the mask is refused (exit 3), never converted without its mask; declared as not using one,
    the same emitter converts (the declaration, not a list in the code generator, decides)."""
    from kconv import specs

    spec = specs.get("LSTM")
    monkeypatch.setattr(spec, "emit", _lstm_ignoring_its_mask)
    model = kconv.load(FIXTURES / "text_rnn.keras")
    with pytest.raises(UnsupportedError) as exc:
        kconv.convert(model, tmp_path / "refused")
    assert "Keras uses the input mask in this layer" in str(exc.value) and "lstm" in str(exc.value)
    assert not (tmp_path / "refused").exists()
    monkeypatch.setattr(spec, "uses_mask", False)
    from kconv.emit.codegen import Generator

    assert "self.lstm = nn.Identity()" in Generator(kconv.load(FIXTURES / "text_rnn.keras")).generate()
