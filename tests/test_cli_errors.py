"""Ordinary user errors are exit 2 with one line that says what to do, never 'internal error' (issue 10)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from kconv.cli import main

KCONV = [sys.executable, "-m", "kconv"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cnn"
    assert cli("convert", FIXTURES / "cnn.h5", "-o", out).exit_code == 0
    return out


def _one_clean_line(r):
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    return r.output


def test_verify_against_another_models_conversion(cnn_dir):
    out = _one_clean_line(cli("verify", FIXTURES / "multi_io.h5", cnn_dir))
    assert "was converted from 'cnn.h5'" in out


def test_verify_truncated_weights(cnn_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(cnn_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    out = _one_clean_line(cli("verify", FIXTURES / "cnn.h5", bad))
    assert "model.safetensors" in out and "convert again" in out


@pytest.mark.parametrize("device", ["mps", "nosuchdevice"])
def test_verify_unavailable_device(cnn_dir, device):
    out = _one_clean_line(cli("verify", FIXTURES / "cnn.h5", cnn_dir, "--device", device))
    assert f"--device {device}" in out and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("opt", [("--seed", "-1"), ("--batch-size", "0")])
def test_verify_bad_numbers(cnn_dir, opt):
    _one_clean_line(cli("verify", FIXTURES / "cnn.h5", cnn_dir, *opt))


@pytest.mark.keras
def test_keras_failing_to_run_the_reference_is_exit_2(tmp_path):
    """With oneDNN off, TensorFlow's CPU kernel refuses dilated transposed convolutions (the default on
    AMD CPUs): verify must say Keras could not compute the reference, exit 2."""
    import keras
    import numpy as np

    m = keras.Sequential([keras.Input((7, 3)), keras.layers.Conv1DTranspose(4, 3, dilation_rate=2)])
    m.set_weights([np.random.default_rng(0).normal(size=w.shape).astype("float32") for w in m.get_weights()])
    m.save(tmp_path / "dil.keras")
    assert cli("convert", tmp_path / "dil.keras", "-o", tmp_path / "out").exit_code == 0
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")
    p = subprocess.run([*KCONV, "verify", str(tmp_path / "dil.keras"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "could not compute the reference" in p.stderr and "--reference" in p.stderr
    assert "internal error" not in p.stderr


def test_convert_verify_points_to_verify_reference(tmp_path):
    """convert has no --reference option: its hint names the verify command that has one."""
    r = cli("convert", FIXTURES / "multi_io_k2.h5", "-o", tmp_path / "o", "--verify")
    assert r.exit_code == 2, r.output
    assert "kconv verify" in r.output and "--reference FILE.npz" in r.output
    assert (tmp_path / "o" / "model.py").exists()  # the conversion is kept


def test_version_lists_libraries():
    p = subprocess.run([*KCONV, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    names = [line.split()[0] for line in p.stdout.splitlines()]
    assert names[0] == "kconv" and {"torch", "numpy", "h5py", "python"} <= set(names)


@pytest.mark.parametrize("args", [["--traceback", "inspect", "MISSING"], ["inspect", "MISSING", "--traceback"]])
def test_traceback_anywhere_and_usage_errors_on_one_line(tmp_path, args):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    args = [str(bad) if a == "MISSING" else a for a in args]
    p = subprocess.run([*KCONV, *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback (most recent call last)" in p.stderr  # --traceback took effect
    p = subprocess.run([*KCONV, "inspect", str(bad), "--no-such-option"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and p.stderr.startswith("kconv: error:")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.keras")) + ["cnn.h5", "legacy/k22_cnn.h5"])
def test_inspect_summary_fits_80_columns_and_counts_every_layer(name):
    import kconv
    from kconv.inspect import report

    r = cli("inspect", FIXTURES / name, "--summary")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert all(len(line) <= 80 for line in lines[1:]), [line for line in lines if len(line) > 80]
    m = kconv.load(FIXTURES / name)
    rep = report(m)
    assert f"Total params: {rep['total_params']:,}" in lines
    n_layers = sum(1 for _ in m.walk())
    assert len(lines) == 1 + 3 + n_layers + 1 + 3  # header, rules and title, one line per layer, totals


@pytest.mark.keras
def test_verify_several_models_one_table_worst_exit(tmp_path):
    out = tmp_path / "conv"
    assert cli("convert", FIXTURES / "cnn.keras", FIXTURES / "multi_io.h5", "-o", out).exit_code == 0
    bad = tmp_path / "bad" / "cnn"
    shutil.copytree(out / "cnn", bad)
    src = (bad / "model.py").read_text()
    assert "eps=0.001" in src
    (bad / "model.py").write_text(src.replace("eps=0.001", "eps=1e-05"))
    r = cli("verify", FIXTURES / "cnn.keras", out / "cnn", FIXTURES / "multi_io.h5", out / "multi_io",
            FIXTURES / "cnn.keras", bad, FIXTURES / "cnn.h5", out / "multi_io")
    assert r.exit_code == 2, r.output  # worst: the pair whose directory came from another model
    table = r.output[r.output.index("verified 4 model(s)"):].splitlines()
    assert table[0] == "verified 4 model(s): 2 agree, 2 do not"
    assert [line.split()[2] for line in table[2:]] == ["ok", "ok", "DIFFERS", "error"]
    r = cli("verify", "--all", out)  # sources read from each manifest
    assert r.exit_code == 0 and "verified 2 model(s): 2 agree, 0 do not" in r.output
    r = cli("verify", "--all", tmp_path / "bad")
    assert r.exit_code == 1 and "DIFFERS" in r.output
    r = cli("verify", FIXTURES / "cnn.keras")
    assert r.exit_code == 2 and "MODEL DIR pairs" in r.output


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_on_stderr_only_and_quiet(tmp_path, quiet):
    """Progress goes to stderr (shown when it is a terminal; KCONV_PROGRESS=1 forces it here);
    stdout is the same with or without it; --quiet (anywhere) silences it."""
    env = dict(os.environ, KCONV_PROGRESS="1")
    args = [*KCONV, "inspect", str(FIXTURES / "cnn.h5"), "--json"]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=120)
    shown = subprocess.run(args + (["--quiet"] if quiet else []), capture_output=True, text=True, timeout=120,
                           env=env)
    assert shown.returncode == plain.returncode == 0 and shown.stdout == plain.stdout
    conv = subprocess.run([*KCONV, *(["-q"] if quiet else []), "convert", str(FIXTURES / "cnn.h5"), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120, env=env)
    assert conv.returncode == 0
    assert ("reading and transforming weights" in conv.stderr) is not quiet
    assert conv.stdout == ""


@pytest.mark.parametrize("bug", [KeyError("units"), TypeError("'NoneType' object is not subscriptable"),
                                 ValueError("bad"), IndexError("list index out of range")])
def test_a_bug_in_an_emitter_is_an_internal_error(tmp_path, monkeypatch, bug):
    """A converter that raises (a kconv bug) is exit 4 'internal error', never blamed on the user's config."""
    from kconv import specs

    def buggy(e):
        raise bug

    monkeypatch.setattr(specs.get("Dense"), "emit", buggy)
    r = cli("convert", FIXTURES / "cnn.h5", "-o", tmp_path / "out")
    assert r.exit_code == 4, r.output
    assert f"kconv: internal error: {type(bug).__name__}" in r.output
    assert "config" not in r.output
    assert not (tmp_path / "out").exists()


def test_a_missing_required_config_key_is_exit_2(tmp_path):
    """What the emitters index without a guard, the declaration requires: a file lacking it is refused
    at load (exit 2, naming the layer and the key), as Keras's from_config refuses it."""
    import json
    import zipfile

    src = FIXTURES / "cnn.keras"
    cfg = json.loads(zipfile.ZipFile(src).read("config.json"))
    dense = next(ly for ly in cfg["config"]["layers"] if ly["class_name"] == "Dense")
    del dense["config"]["units"]
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(path, "w") as b:
        for info in a.infolist():
            b.writestr(info.filename, json.dumps(cfg) if info.filename == "config.json" else a.read(info.filename))
    r = _one_clean_line(cli("convert", path, "-o", tmp_path / "out"))
    assert "'units' is missing" in r and dense["config"]["name"] in r
