"""The emitted model.py reads as hand-written code (issue 13).

* Golden files: the model.py kconv emits for every fixture is committed under ``tests/golden/``
  and compared exactly. After an intended change to the emitter, regenerate them with
  ``KCONV_REGENERATE_GOLDEN=1 python -m pytest tests/test_golden.py`` and review the diff.
* Lint: every golden file, and the model.py of a few Keras models built here (the layer families
  the fixtures do not cover), passes ``ruff check --select E,F,W,B --line-length 100`` and is
  unchanged by ``ruff format --line-length 100``. ruff is a test tool only: kconv lays its output out
  itself (kconv/emit/pyformat.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kconv
from conftest import FIXTURES
from equivalence.harness import unused_definitions
from kconv.emit.codegen import Generator
from test_legacy import CASES as LEGACY_CASES
from test_legacy import LEGACY

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("KCONV_REGENERATE_GOLDEN") == "1"


def _cases() -> dict:
    cases = {p.name.replace(".", "_"): (p, {}) for p in sorted([*FIXTURES.glob("*.keras"), *FIXTURES.glob("*.h5")])}
    for case, (name, opts) in LEGACY_CASES.items():
        cases["legacy_" + case.replace(".", "_")] = (LEGACY / name, opts)
    cases["resblocks_keras_blocks"] = (FIXTURES / "blocks" / "resblocks.keras", {})
    return cases


CASES = _cases()
#: Generator options of the cases converted with more than the defaults (kconv convert --blocks)
GENERATOR_OPTIONS = {"resblocks_keras_blocks": {"blocks": True}}


def _ruff() -> str:
    exe = Path(sys.executable).parent / "ruff"
    found = str(exe) if exe.exists() else shutil.which("ruff")
    assert found, "ruff (pinned in .ci/constraints.txt) is needed for this test"
    return found


def ruff_problems(paths) -> str:
    """ruff's complaints about ``paths`` ('' when they pass check and are format-stable)."""
    ruff = _ruff()
    paths = [str(p) for p in paths]
    check = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,B", "--line-length", "100",
                            "--output-format", "concise", *paths], capture_output=True, text=True)
    fmt = subprocess.run([ruff, "format", "--no-cache", "--isolated", "--line-length", "100", "--diff", *paths],
                         capture_output=True, text=True)
    out = ""
    if check.returncode:
        out += check.stdout + check.stderr
    if fmt.returncode:
        out += fmt.stdout + fmt.stderr
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    path, opts = CASES[case]
    source = Generator(kconv.load(path, **opts), **GENERATOR_OPTIONS.get(case, {})).generate()
    golden = GOLDEN / f"{case}.py"
    if REGENERATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(source)
    assert golden.exists(), f"no golden file {golden.name}: run with KCONV_REGENERATE_GOLDEN=1"
    assert source == golden.read_text(), (f"the emitted model.py of {path.name} differs from tests/golden/"
                                          f"{golden.name}; if intended, regenerate (KCONV_REGENERATE_GOLDEN=1)")


def test_every_golden_file_is_a_fixture():
    assert sorted(p.stem for p in GOLDEN.glob("*.py")) == sorted(CASES)


def test_golden_files_pass_ruff():
    files = sorted(GOLDEN.glob("*.py"))
    assert len(files) == len(CASES)
    problems = ruff_problems(files)
    assert not problems, problems


def test_ruff_is_not_blind(tmp_path):
    """The lint test can fail: an unused import, a long line and a layout ruff would change."""
    bad = tmp_path / "probe.py"
    bad.write_text("import os\nx = {'a':1}\n" + "y = " + " + ".join(["1"] * 60) + "\n")
    problems = ruff_problems([bad])
    assert "F401" in problems and "E501" in problems and '+x = {"a": 1}' in problems


def _models():
    """A few Keras models whose families the fixtures do not cover (name, builder)."""
    import keras
    from keras import layers as L

    def rnn_states():
        i = keras.Input((5, 3))
        seq, h, c = L.LSTM(4, return_sequences=True, return_state=True, name="lstm")(i)
        y = L.Bidirectional(L.GRU(3, return_sequences=True, reset_after=False), merge_mode="ave")(seq)
        z = L.SimpleRNN(2, go_backwards=True)(y)
        return keras.Model(i, [z, h, c])

    def masked_attention():
        i = keras.Input((6,), dtype="int32")
        e = L.Embedding(20, 8, mask_zero=True)(i)
        a = L.MultiHeadAttention(2, 4)(e, e)
        n = L.LayerNormalization()(L.Add()([a, e]))
        return keras.Model(i, L.GlobalAveragePooling1D()(n))

    def convs():
        i = keras.Input((12, 12, 3))
        x = L.Rescaling(1 / 255.0)(i)
        x = L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2)(x)
        x = L.BatchNormalization()(x)
        x = L.Conv2DTranspose(3, 3, strides=2, padding="same")(x)
        x = L.AveragePooling2D(3, strides=2, padding="same")(x)
        x = L.SpatialDropout2D(0.2)(x)
        x = L.Reshape((-1, 3))(x)
        x = L.Conv1D(5, 3, dilation_rate=2, padding="causal")(x)
        x = L.Permute((2, 1))(x)
        return keras.Model(i, L.Dense(2)(L.Flatten()(x)))

    return {"rnn_states": rnn_states, "masked_attention": masked_attention, "convs": convs}


@pytest.mark.keras
def test_models_beyond_the_fixtures_pass_ruff(tmp_path):
    files = []
    import keras

    for name, build in _models().items():
        keras.backend.clear_session()  # the same layer names in any test order
        model = build()
        path = tmp_path / f"{name}.keras"
        model.save(path)
        out = tmp_path / f"{name}.py"
        out.write_text(Generator(kconv.load(path)).generate())
        assert unused_definitions(out.read_text()) == [], name  # ruff does not see an unused class
        files.append(out)
    problems = ruff_problems(files)
    assert not problems, problems
