"""scripts/measure_convert.py (the whole-process convert/inspect figures scripts/bench.py reports) runs."""
from __future__ import annotations

import importlib.util

from conftest import FIXTURES


def _module():
    spec = importlib.util.spec_from_file_location("measure_convert", FIXTURES.parent / "scripts" / "measure_convert.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_measure_convert_reports_both_processes(tmp_path):
    m = _module()
    r = m.measure_convert(FIXTURES / "cnn.h5", tmp_path, repeat=1)
    assert r["wall"] > 0 and r["runs"] == 1
    # the command checks model.py in its helper process (which holds torch), not in its own
    assert r["rss"] > 0 and r["rss_helper"] > r["rss"]
    assert (tmp_path / "run0" / "model.safetensors").exists()
    assert m.measure_inspect(FIXTURES / "cnn.h5", repeat=1) > 0
