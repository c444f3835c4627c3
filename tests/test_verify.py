"""kconv verify: Keras vs the converted model, per output and per layer (tests marked keras run Keras)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kconv
from conftest import FIXTURES
from kconv.cli import main
from kconv.ir import Call, Layer, Model, TensorRef
from kconv.verify import compare, inputs as vinputs
from kconv.verify.errors import VerifyInputError
from kconv.verify.torch_side import instrument

CONVERTIBLE = ["cnn.keras", "cnn.h5", "cnn_k2.h5", "multi_io.keras", "multi_io.h5"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each convertible fixture converted once: {file name: DIR}."""
    root = tmp_path_factory.mktemp("conv")
    out = {}
    for name in CONVERTIBLE + ["multi_io_k2.h5"]:
        out[name] = kconv.convert(FIXTURES / name, root / name.replace(".", "_"))
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "edited"
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# CLI against Keras

@pytest.mark.keras
@pytest.mark.parametrize("name", CONVERTIBLE)
def test_verify_passes_on_fixtures(name, converted):
    r = cli("verify", FIXTURES / name, converted[name])
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "DIFFERS" not in r.output


@pytest.mark.keras
@pytest.mark.parametrize("name", ["cnn.keras", "multi_io.h5"])
def test_verify_per_layer_passes(name, converted):
    r = cli("verify", FIXTURES / name, converted[name], "--per-layer", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    names = [c["name"] for c in doc["layers"]]
    assert doc["first_divergence"] is None and doc["trace"] == "shipped"
    if name == "cnn.keras":
        assert names == ["conv2d", "batch_normalization", "p_re_lu", "dropout", "conv2d_1", "max_pooling2d",
                         "flatten", "dense"]
    else:  # shared layer and nested model called twice: one entry per call
        assert {"dense", "dense[1][0]", "sequential", "sequential[1][0]", "concatenate", "dense_3"} <= set(names)
        assert any("called 2 times" in n for n in doc["notes"])


@pytest.mark.keras
def test_broken_epsilon_is_caught_and_localised(converted, tmp_path):
    d = _copy(converted["cnn.keras"], tmp_path)
    src = (d / "model.py").read_text()
    assert src.count("eps=0.001") == 1
    (d / "model.py").write_text(src.replace("eps=0.001", "eps=1e-05"))
    r = cli("verify", FIXTURES / "cnn.keras", d, "--per-layer", "--json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] is False and doc["outputs"][0]["passed"] is False
    first = doc["first_divergence"]
    assert first["name"] == "batch_normalization" and first["class_name"] == "BatchNormalization"
    assert "epsilon defaults to 1e-3" in first["hint"]
    assert doc["trace"] == "shipped (edited)"  # the edited model.py itself was traced
    assert [c["passed"] for c in doc["layers"]][:2] == [True, False]
    # plain text names the layer too
    r = cli("verify", FIXTURES / "cnn.keras", d, "--per-layer")
    assert r.exit_code == 1
    assert "first diverging layer: batch_normalization (BatchNormalization)" in r.output


@pytest.mark.keras
def test_scaled_weight_is_caught_and_localised(converted, tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _copy(converted["cnn.h5"], tmp_path)
    state = load_file(str(d / "model.safetensors"))
    state["conv2d_1.weight"] = state["conv2d_1.weight"] * np.float32(1.05)
    save_file(state, str(d / "model.safetensors"))
    r = cli("verify", FIXTURES / "cnn.h5", d)
    assert r.exit_code == 1, r.output
    assert "DIFFERS" in r.output and "--per-layer" in r.output
    r = cli("verify", FIXTURES / "cnn.h5", d, "--per-layer", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["first_divergence"]["name"] == "conv2d_1"


@pytest.mark.keras
def test_text_rnn_not_convertible_or_verified(tmp_path):
    r = cli("convert", FIXTURES / "text_rnn.keras", "-o", tmp_path / "t", "--verify")
    # exit 3 while recurrent layers have no converter; once they do, verify must pass
    assert r.exit_code in (0, 3), r.output
    if r.exit_code == 3:
        assert "unsupported" in r.output and "LSTM" in r.output
        assert not (tmp_path / "t").exists()
    else:
        assert "PASS" in r.output


@pytest.mark.keras
def test_convert_with_verify(tmp_path):
    r = cli("convert", FIXTURES / "multi_io.keras", "-o", tmp_path / "m", "--verify", "--per-layer")
    assert r.exit_code == 0, r.output
    assert "PASS: 2 output(s)" in r.output and (tmp_path / "m" / "model.py").exists()


@pytest.mark.keras
def test_keras_that_cannot_load_is_exit_2(converted, tmp_path):
    """safe_mode=True: a Lambda's stored bytecode is refused, never run."""
    import keras

    i = keras.Input((4,))
    o = keras.layers.Lambda(lambda x: x * 2.0)(i)
    keras.Model(i, o).save(tmp_path / "lam.keras")
    # a Lambda model cannot be converted: borrow another conversion and let its manifest name this file,
    # so that verify gets as far as asking Keras to load it
    d = _copy(converted["multi_io.h5"], tmp_path)
    man = json.loads((d / "kconv.json").read_text())
    man["source_sha256"] = hashlib.sha256((tmp_path / "lam.keras").read_bytes()).hexdigest()
    (d / "kconv.json").write_text(json.dumps(man))
    r = cli("verify", tmp_path / "lam.keras", d)
    assert r.exit_code == 2, r.output
    assert "cannot load" in r.output and "--reference" in r.output and "safe_mode" in r.output


# ---------------------------------------------------------------------------------------------
# --reference and --inputs

def test_reference_round_trip_without_keras(converted, tmp_path):
    """The fixture's io.npz (written by tf-keras 2, which Keras 3 cannot reload here) is a reference file."""
    ref = FIXTURES / "multi_io_k2.io.npz"
    r = cli("verify", FIXTURES / "multi_io_k2.h5", converted["multi_io_k2.h5"], "--reference", ref, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["input_source"] == "reference" and doc["reference"] == str(ref) and doc["passed"]
    # a tampered expected output is a mismatch
    data = dict(np.load(ref))
    data["output_1"] = data["output_1"] + np.float32(0.01)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    r = cli("verify", FIXTURES / "multi_io_k2.h5", converted["multi_io_k2.h5"], "--reference", bad, "--json")
    assert r.exit_code == 1
    outs = json.loads(r.stdout)["outputs"]
    assert [o["passed"] for o in outs] == [True, False]
    assert outs[1]["max_abs_err"] == pytest.approx(0.01, rel=1e-3)


def test_reference_problems_are_exit_2(converted, tmp_path):
    only_inputs = tmp_path / "in.npz"
    np.savez(only_inputs, input_0=np.zeros((2, 6), "float32"), input_1=np.zeros((2, 6), "float32"))
    d = converted["multi_io_k2.h5"]
    r = cli("verify", FIXTURES / "multi_io_k2.h5", d, "--reference", only_inputs)
    assert r.exit_code == 2 and "output_0" in r.output
    r = cli("verify", FIXTURES / "multi_io_k2.h5", d, "--reference", FIXTURES / "multi_io_k2.io.npz", "--per-layer")
    assert r.exit_code == 2 and "--per-layer" in r.output
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input_0=np.zeros((2, 5), "float32"), input_1=np.zeros((2, 6), "float32"),
             output_0=np.zeros((2, 6), "float32"), output_1=np.zeros((2, 2), "float32"))
    r = cli("verify", FIXTURES / "multi_io_k2.h5", d, "--reference", wrong)
    assert r.exit_code == 2 and "(2, 5)" in r.output


@pytest.mark.keras
def test_inputs_file_by_index_and_by_name(converted, tmp_path):
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal((3, 6)).astype("float32") for _ in range(2))
    by_index, by_name = tmp_path / "i.npz", tmp_path / "n.npz"
    np.savez(by_index, input_0=a, input_1=b)
    np.savez(by_name, input_layer=a, input_layer_1=b)
    docs = []
    for f in (by_index, by_name):
        r = cli("verify", FIXTURES / "multi_io.keras", converted["multi_io.keras"], "--inputs", f, "--json")
        assert r.exit_code == 0, r.output
        docs.append(json.loads(r.stdout))
    assert docs[0]["input_source"] == "file" and docs[0]["inputs"][0]["shape"] == [3, 6]
    assert docs[0]["outputs"] == docs[1]["outputs"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=a)
    r = cli("verify", FIXTURES / "multi_io.keras", converted["multi_io.keras"], "--inputs", bad)
    assert r.exit_code == 2 and "input_0" in r.output


# ---------------------------------------------------------------------------------------------
# JSON, HTML, options

@pytest.mark.keras
def test_json_schema_and_html_report(converted, tmp_path):
    report = tmp_path / "r.html"
    r = cli("verify", FIXTURES / "cnn.keras", converted["cnn.keras"], "--per-layer", "--json", "--report", report,
            "--seed", 3, "--batch-size", 4)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"schema_version", "model", "converted", "passed", "atol", "rtol", "device", "precision", "reference",
                        "input_source", "seed", "batch_size", "inputs", "outputs", "layers", "first_divergence",
                        "trace", "notes"}
    assert doc["schema_version"] == 1 and doc["seed"] == 3 and doc["batch_size"] == 4
    assert (doc["atol"], doc["rtol"]) == (1e-4, 1e-4)
    assert doc["inputs"] == [{"name": "input_layer", "shape": [4, 16, 16, 3], "dtype": "float32"}]
    out = doc["outputs"][0]
    assert set(out) >= {"name", "shape", "max_abs_err", "max_rel_err", "err_ratio", "passed", "problem"}
    assert out["name"] == "dense" and out["shape"] == [4, 10] and out["err_ratio"] <= 1
    assert all(set(c) >= {"name", "class_name", "max_abs_err", "passed"} for c in doc["layers"])
    page = report.read_text()
    assert "batch_normalization" in page and "class='bar ok'" in page
    assert "http" not in page and "<script" not in page and "src=" not in page


@pytest.mark.keras
def test_tolerances_decide(converted, tmp_path):
    d = _copy(converted["cnn.keras"], tmp_path)
    (d / "model.py").write_text((d / "model.py").read_text().replace("eps=0.001", "eps=1e-05"))
    assert cli("verify", FIXTURES / "cnn.keras", d).exit_code == 1
    assert cli("verify", FIXTURES / "cnn.keras", d, "--atol", "1e-2").exit_code == 0
    assert cli("verify", FIXTURES / "cnn.keras", d, "--atol", "-1").exit_code == 2


def test_device_cuda(converted):
    import torch

    r = cli("verify", FIXTURES / "multi_io_k2.h5", converted["multi_io_k2.h5"], "--reference",
            FIXTURES / "multi_io_k2.io.npz", "--device", "cuda")
    if torch.cuda.is_available():
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 2 and "CUDA is not available" in r.output


def test_convert_imports_no_tensorflow(tmp_path):
    script = ("import sys\nfrom kconv.cli import main\n"
              "try:\n    main([sys.argv[1], '-o', sys.argv[2]], standalone_mode=False)\n"
              "finally:\n    print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    proc = subprocess.run([sys.executable, "-c", script.replace("main([", "main(['convert', "),
                           str(FIXTURES / "cnn.keras"), str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------
# Python API

@pytest.mark.keras
def test_assert_equivalent(converted, tmp_path):
    from kconv.testing import assert_equivalent

    result = assert_equivalent(FIXTURES / "cnn.keras", converted["cnn.keras"])
    assert result.passed and result.layers
    d = _copy(converted["cnn.keras"], tmp_path)
    (d / "model.py").write_text((d / "model.py").read_text().replace("eps=0.001", "eps=1e-05"))
    with pytest.raises(AssertionError) as info:
        assert_equivalent(FIXTURES / "cnn.keras", d)
    msg = str(info.value)
    assert "output dense (2, 10): max abs err" in msg and "DIFFERS" in msg
    assert "first diverging layer: batch_normalization (BatchNormalization)" in msg


@pytest.mark.keras
def test_assert_equivalent_live_objects(tmp_path):
    """A live keras.Model (nested model called once: its inner layers are compared) and a torch module."""
    import keras
    from kconv.testing import assert_equivalent

    L = keras.layers
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh", name="d"),
                              L.BatchNormalization(name="bn")], name="inner")
    i = keras.Input((4,), name="x")
    m = keras.Model(i, L.Dense(2, name="head")(inner(i)))
    rng = np.random.default_rng(0)
    for v in m.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    m.save(tmp_path / "nest.keras")
    kconv.convert(tmp_path / "nest.keras", tmp_path / "nest")
    r = assert_equivalent(m, tmp_path / "nest")
    assert [c.name for c in r.layers] == ["inner/d", "inner/bn", "inner", "head"]
    net = kconv.load_converted(tmp_path / "nest")
    x = rng.standard_normal((3, 4)).astype("float32")
    assert assert_equivalent(m, net, inputs=[x], per_layer=False).inputs[0]["shape"] == [3, 4]
    with net_scaled(net, "head.weight", 1.5):
        with pytest.raises(AssertionError, match="first diverging layer: head \\(Dense\\)"):
            assert_equivalent(m, net, inputs={"x": x})


class net_scaled:
    def __init__(self, net, key, factor):
        self.p, self.factor = dict(net.named_parameters())[key], factor

    def __enter__(self):
        import torch

        with torch.no_grad():
            self.p.mul_(self.factor)

    def __exit__(self, *exc):
        import torch

        with torch.no_grad():
            self.p.div_(self.factor)


# ---------------------------------------------------------------------------------------------
# input generation (no Keras)

def test_generated_ids_within_vocabulary_and_padded():
    specs = vinputs.input_specs(kconv.load(FIXTURES / "text_rnn.keras"))
    (s,) = specs
    assert (s.vocab, s.mask_zero, s.dtype) == (50, True, "int32")
    (x,) = vinputs.generate(specs, seed=1, batch_size=6)
    assert x.shape == (6, vinputs.DEFAULT_DIM) and x.dtype == np.int32
    assert x.min() >= 0 and x.max() < 50
    for row, r in enumerate(x):
        real = r != 0
        assert real.any() and not real.all()  # some real steps, some padding
        idx = np.flatnonzero(real)
        assert np.all(np.diff(idx) == 1)  # one contiguous block of real ids
        if row % 2 == 0:
            assert idx[0] == 0  # right-padded
        else:
            assert idx[-1] == len(r) - 1  # left-padded
    again = vinputs.generate(specs, seed=1, batch_size=6)[0]
    assert np.array_equal(x, again)
    assert not np.array_equal(x, vinputs.generate(specs, seed=2, batch_size=6)[0])


def test_dim_option():
    specs = vinputs.input_specs(kconv.load(FIXTURES / "text_rnn.keras"))
    assert vinputs.generate(specs, dims=vinputs.parse_dims(["seq=11"]))[0].shape == (2, 11)
    assert vinputs.generate(specs, dims=vinputs.parse_dims(["input_layer:1=5"]), batch_size=3)[0].shape == (3, 5)
    assert vinputs.generate(specs, dims=vinputs.parse_dims(["1=4"]))[0].shape == (2, 4)
    for bad in ["seq", "seq=0", "x=3", "0=3", "input_layer:1=a"]:
        with pytest.raises(VerifyInputError):
            vinputs.parse_dims([bad])
    with pytest.raises(VerifyInputError, match="no input named"):
        vinputs.generate(specs, dims=vinputs.parse_dims(["nope:1=3"]))
    cnn = vinputs.input_specs(kconv.load(FIXTURES / "cnn.keras"))
    with pytest.raises(VerifyInputError, match="fixed at 16"):
        vinputs.generate(cnn, dims=vinputs.parse_dims(["input_layer:1=8"]))


def _masking_model(mask_value=-1.0):
    inp = Layer("inp", "InputLayer", {"batch_shape": [None, None, 3], "dtype": "float32"},
                calls=[Call(inputs=[], output_shapes=[(None, None, 3)])])
    mask = Layer("masking", "Masking", {"mask_value": mask_value},
                 calls=[Call(inputs=[TensorRef("inp", 0, 0)], output_shapes=[(None, None, 3)])])
    return Model("m", "Functional", [inp, mask], [TensorRef("inp", 0, 0)], [TensorRef("masking", 0, 0)])


def test_masking_inputs_are_padded_with_mask_value():
    specs = vinputs.input_specs(_masking_model(-1.0))
    assert specs[0].mask_value == -1.0
    (x,) = vinputs.generate(specs, seed=0, batch_size=4, dims={(None, 1): 9})
    assert x.shape == (4, 9, 3)
    padded = np.all(x == -1.0, axis=-1)
    assert padded.any(axis=1).all() and (~padded).any(axis=1).all()
    assert padded[0, -1] and padded[1, 0]  # row 0 right-padded, row 1 left-padded


# ---------------------------------------------------------------------------------------------
# comparison and instrumentation units

def test_compare_semantics():
    e = np.array([1.0, 100.0, 0.0], "float32")
    assert compare("y", e, e + np.array([1e-4, 1e-2, 1e-4], "float32")).passed  # atol + rtol*|ref|
    c = compare("y", e, e + np.array([0, 0, 3e-4], "float32"))
    assert not c.passed and c.worst_index == [2] and c.max_abs_err == pytest.approx(3e-4, rel=1e-3)
    assert c.max_rel_err == pytest.approx(3.0, rel=1e-3)  # relative to max(|ref|, atol)
    assert not compare("y", e, e.reshape(3, 1)).passed
    nan = np.array([np.nan, 1.0])
    assert compare("y", nan, nan).passed
    c = compare("y", np.array([1.0, 1.0]), nan)
    assert not c.passed and c.problem == "NaN in the torch output"
    assert compare("i", np.array([1, 2]), np.array([1, 2])).passed
    assert not compare("i", np.array([1, 2]), np.array([1, 3])).passed


def test_instrument_follows_edits():
    plain = "a = 1\nb = f(a, eps=0.001)\nreturn b\n"
    traced = "TRACE = {}\na = 1\nTRACE['a'] = a\nb = f(a, eps=0.001)\nTRACE['b'] = b\nreturn b\n"
    assert instrument(plain, plain, traced) == traced
    edited = plain.replace("0.001", "1e-05")
    assert instrument(edited, plain, traced) == traced.replace("0.001", "1e-05")
    assert instrument("something else entirely\n", plain, traced) is None


def test_renderers_without_keras():
    """Plain text, rich (as on a terminal) and HTML from one result; names with brackets survive rich markup."""
    import io

    from rich.console import Console

    from kconv.verify import LayerComparison, VerifyResult
    from kconv.verify import report as rep

    ok = LayerComparison("dense[1][0]", [2, 3], 1e-7, 1e-6, 0.01, True, class_name="Dense")
    bad = LayerComparison("bn", [2, 3], 5e-3, 0.2, 50.0, False, class_name="BatchNormalization", hint="eps 1e-3")
    out = compare("dense_3", np.ones(3), np.ones(3) + 1e-3)
    r = VerifyResult("m.h5", "out/m", 1e-4, 1e-4, "generated", [{"name": "x", "shape": [2, 3], "dtype": "float32"}],
                     [out], seed=0, batch_size=2, layers=[ok, bad], trace="shipped")
    assert not r.passed and r.first_divergence is bad
    text = rep.text(r)
    assert "dense[1][0]" in text and "first diverging layer: bn (BatchNormalization)" in text
    assert "hint (BatchNormalization declaration): eps 1e-3" in text
    buf = io.StringIO()
    rep.rich_print(r, Console(file=buf, force_terminal=True, width=200))
    shown = buf.getvalue()
    assert "dense[1][0]" in shown and "<- first" in shown and "\x1b[" in shown
    # at 80 columns the per-layer table fits: the bar shrinks, then class names are clipped with '~';
    # layer names are never cut
    long = [LayerComparison(f"conv2_block{i}_1_conv", [2, 3], 1e-3 * i, 0.2, 50.0, False,
                            class_name="DepthwiseConv2D") for i in range(1, 4)]
    r80 = VerifyResult("m.h5", "out/m", 1e-4, 1e-4, "generated", r.inputs, [out], layers=[ok, bad, *long],
                       trace="shipped")
    table = rep.text(r80, width=80).split("per layer")[1].split("\n\n")[0].splitlines()[1:]
    assert len(table) == 6 and all(len(line) <= 80 for line in table), table
    assert all(f"conv2_block{i}_1_conv" in "".join(table) for i in (1, 2, 3)) and "Depthwi~" in "".join(table)
    buf = io.StringIO()
    rep.rich_print(r80, Console(file=buf, width=80))
    assert all(len(line) <= 80 for line in buf.getvalue().splitlines())
    page = rep.html_report(r)
    assert "dense[1][0]" in page and "class='bar bad'" in page
    assert rep.bar_fraction(0.0) == 0 and rep.bar_fraction(1e-10) == 0 and rep.bar_fraction(10.0) == 1
