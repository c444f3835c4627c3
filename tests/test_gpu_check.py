"""scripts/gpu_check.py runs with torch only (no TensorFlow) and, on the CPU, finds every fixture (and
saved equivalence models) matching Keras's stored outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_cpu_run_of_the_fixtures():
    r = _run("--device", "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fixtures/text_rnn.keras" in r.stdout and "fixtures/legacy/k1_cnn_th.h5" in r.stdout
    last = r.stdout.strip().splitlines()[-1]
    n = int(last.split(" of ")[1].split()[0])
    assert last == f"{n} of {n} models match Keras in float32 on cpu" and n >= 20


@pytest.mark.keras
def test_saved_equivalence_models_and_a_failure(tmp_path):
    """KCONV_SAVE_EQUIVALENCE keeps equivalence cases for --extra; a wrong reference is a failed row (exit 1)."""
    import numpy as np

    from equivalence.harness import check, layers, rand, seq

    saved = tmp_path / "saved"
    os.environ["KCONV_SAVE_EQUIVALENCE"] = str(saved)
    try:
        (tmp_path / "case").mkdir()
        check(seq((5, 3), layers().LSTM(4)), rand(2, 5, 3), tmp_path / "case", formats=("keras",))
    finally:
        del os.environ["KCONV_SAVE_EQUIVALENCE"]
    assert sorted(p.name for p in saved.iterdir()) == ["case.io.npz", "case.keras"]
    r = _run("--device", "cpu", "--extra", str(saved))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "case.keras" in r.stdout
    io = dict(np.load(saved / "case.io.npz"))
    io["output_0"] = io["output_0"] + 1e-3
    np.savez(saved / "case.io.npz", **io)
    r = _run("--device", "cpu", "--extra", str(saved))
    assert r.returncode == 1 and "DIFFERS" in r.stdout, r.stdout
