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
