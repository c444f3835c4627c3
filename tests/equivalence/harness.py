"""Equivalence harness: a Keras model and its kconv conversion must compute the same function.

``check`` randomises every weight of a Keras model with a seeded RNG (non-default values: a
conversion that drops a bias, swaps gamma and beta or forgets an epsilon shows up), runs Keras as
the reference, saves the model in each requested file format, converts each file with kconv,
loads the result and compares the torch outputs with the Keras ones.

TensorFlow/Keras are imported lazily, inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEED = 1234

#: Activation names accepted as `activation=` strings (Keras 3), each tested on Dense and
#: as an Activation layer.
ACTIVATIONS = [
    "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "silu", "swish", "softplus",
    "softsign", "exponential", "linear", "relu6", "leaky_relu", "hard_sigmoid", "hard_silu",
    "mish", "log_softmax",
]


def keras():
    """The keras module (imported on first use)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras as _keras

    return _keras


def layers():
    return keras().layers


def rand(*shape, seed=0, low=None, high=None):
    """Seeded float32 inputs: N(0, 1), or U(low, high) when bounds are given."""
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, high, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def rand_int(*shape, high, seed=0):
    """Seeded int32 indices in [0, high)."""
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(np.int32)


# --------------------------------------------------------------------------------------------
# weights


def _value_for(path: str, shape, rng) -> np.ndarray:
    """A random, non-default value for the variable at ``path`` (chosen by its name)."""
    name = path.rsplit("/", 1)[-1].lower()
    if "variance" in name:  # moving_variance, Normalization variance: must be positive
        return rng.uniform(0.5, 2.0, size=shape)
    if name in ("gamma", "scale") or name.endswith("gamma"):
        return rng.uniform(0.5, 1.5, size=shape)
    if name == "count":
        return np.full(shape, 10.0)
    # kernels, biases, beta, moving_mean, alpha, embeddings, ...: N(0, 0.5), nonzero a.s.
    return rng.normal(0.0, 0.5, size=shape)


#: Layer classes whose state is not randomised: their statistics come from ``adapt`` / config.
KEEP_CLASSES = ("Normalization",)


def randomize_weights(model, seed: int = SEED) -> list[str]:
    """Give every float weight of ``model`` (nested models included) a random value.

    Returns the paths of the variables that were set (for debugging).
    """
    rng = np.random.default_rng(seed)
    keep = set()
    for layer in _all_layers(model):
        if type(layer).__name__ in KEEP_CLASSES:
            keep.update(id(v) for v in layer.weights)
    done = []
    for v in model.weights:
        if id(v) in keep:
            continue
        if not str(v.dtype).startswith(("float", "bfloat")):
            continue
        shape = tuple(v.shape)
        v.assign(_value_for(v.path, shape, rng).astype(str(v.dtype)))
        done.append(v.path)
    return done


def _all_layers(model):
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


# --------------------------------------------------------------------------------------------
# running


def _as_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def keras_forward(model, inputs):
    """Keras reference outputs, as a list of numpy arrays."""
    ins = _as_list(inputs)
    arg = ins[0] if len(ins) == 1 else ins
    out = model(arg, training=False)
    return [np.asarray(keras().ops.convert_to_numpy(o)) for o in _as_list(out)]


_JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    model_path, in_path, out_path = sys.argv[1:4]
    model = keras.saving.load_model(model_path, compile=False)
    data = np.load(in_path)
    ins = [data["in%d" % i] for i in range(len(data.files))]
    out = model(ins[0] if len(ins) == 1 else ins, training=False)
    if not isinstance(out, (list, tuple)):
        out = [out]
    np.savez(out_path, **{"out%d" % i: np.asarray(o) for i, o in enumerate(out)})
    """
)


def jax_forward(keras_file: Path, inputs, workdir: Path):
    """Reference outputs computed by Keras on the jax backend, in a subprocess.

    Used for models whose layers use ``data_format="channels_first"``: the jax backend runs NCHW
    convolutions and pooling natively on CPU.
    """
    ins = _as_list(inputs)
    in_path = workdir / "ref_inputs.npz"
    out_path = workdir / "ref_outputs.npz"
    np.savez(in_path, **{f"in{i}": a for i, a in enumerate(ins)})
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(keras_file), str(in_path), str(out_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"jax reference run failed:\n{proc.stderr[-4000:]}")
    data = np.load(out_path)
    return [data[f"out{i}"] for i in range(len(data.files))]


def torch_forward(module, inputs, channels_first: bool = False):
    """Run the converted module under ``torch.no_grad``; outputs as a list of numpy arrays.

    With ``channels_first`` the inputs of rank >= 3 are moved NHWC -> NCHW before the call and
    outputs of rank >= 3 are moved back, so they compare with the Keras (channels-last) outputs.
    """
    import torch

    tensors = []
    for a in _as_list(inputs):
        a = np.asarray(a)
        if channels_first and a.ndim >= 3:
            a = np.moveaxis(a, -1, 1)
        tensors.append(torch.from_numpy(np.ascontiguousarray(a)))
    with torch.no_grad():
        out = module(*tensors)
    outs = []
    for o in _as_list(out):
        assert isinstance(o, torch.Tensor), f"forward returned {type(o).__name__}, not a tensor"
        a = o.detach().cpu().numpy()
        if channels_first and a.ndim >= 3:
            a = np.moveaxis(a, 1, -1)
        outs.append(a)
    return outs


def save(model, tmp_path: Path, fmt: str) -> Path:
    """Save ``model`` as ``model.<fmt>`` under tmp_path (fmt: "keras" or "h5")."""
    path = Path(tmp_path) / f"model.{fmt}"
    model.save(path)
    return path


def convert_and_load(src: Path, out_dir: Path, weights_format="safetensors", channels_first=False,
                     optimize=False):
    import kconv
    from kconv.emit import load_converted

    result = kconv.convert(src, out_dir, fmt=weights_format, channels_first=channels_first, optimize=optimize)
    assert Path(result) == Path(out_dir)
    assert (Path(out_dir) / "model.py").is_file()
    wfile = "model.safetensors" if weights_format == "safetensors" else "model.pt"
    assert (Path(out_dir) / wfile).is_file()
    unused = unused_definitions((Path(out_dir) / "model.py").read_text())
    assert not unused, f"model.py defines {unused} and never uses them"
    module = load_converted(out_dir)
    assert not module.training, "load_converted must return the module in eval mode"
    return module


def unused_definitions(source: str) -> list[str]:
    """Module-level functions and classes of an emitted model.py that nothing else in it uses
    (``Model``, the entry point, aside): a runtime class or helper copied in for nothing."""
    import ast

    tree = ast.parse(source)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    used = set()
    for d in defs:
        used |= {n.id for n in ast.walk(d) if isinstance(n, ast.Name) and n.id != d.name}
    return [d.name for d in defs if d.name != "Model" and d.name not in used]


def compare(expected, got, rtol, atol, what=""):
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, Keras has {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        e = np.asarray(e)
        g = np.asarray(g)
        assert g.shape == e.shape, f"{what} output {i}: shape {g.shape}, Keras {e.shape}"
        err = float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64)))) if e.size else 0.0
        np.testing.assert_allclose(
            g, e, rtol=rtol, atol=atol,
            err_msg=f"{what} output {i}: max abs error {err:.3g}",
        )


def check(
    model_or_builder,
    inputs,
    tmp_path,
    formats=("keras", "h5"),
    rtol=1e-5,
    atol=1e-5,
    *,
    seed: int = SEED,
    randomize: bool = True,
    channels_first: bool = False,
    reference: str = "tensorflow",
    weights_format: str = "safetensors",
    tooling: bool = True,
    optimize: bool = False,
    folded: int | None = None,
):
    """Assert that kconv's conversion of the model computes what Keras computes.

    model_or_builder: a Keras model, or a no-argument callable returning one.
    inputs: one float32 array or a list of them (Keras input order and layout).
    channels_first: convert with ``channels_first=True`` (NCHW inputs/outputs on the torch side).
    reference: "tensorflow" (this process) or "jax" (a subprocess; for data_format=channels_first
        models, see ``jax_forward``).
    tooling: also run ``tooling_checks`` on the first format's conversion (meta device, .double(),
        pickle/deepcopy, backward).
    optimize: also convert the first format with ``optimize=True`` (``kconv convert --optimize``:
        BatchNormalization folded, dropout dropped) and compare it with Keras at the same tolerances;
        ``folded``: the number of BatchNormalization layers that conversion must have folded.
    Returns the Keras reference outputs (list of arrays).
    """
    model = model_or_builder if hasattr(model_or_builder, "save") else model_or_builder()
    tmp_path = Path(tmp_path)
    if randomize:
        randomize_weights(model, seed)
    saved = {fmt: save(model, tmp_path, fmt) for fmt in formats}
    if reference == "jax":
        kfile = saved.get("keras") or save(model, tmp_path, "keras")
        expected = jax_forward(kfile, inputs, tmp_path)
    else:
        expected = keras_forward(model, inputs)
    _save_for_gpu_check(saved, inputs, expected, tmp_path, channels_first)
    for i, (fmt, path) in enumerate(saved.items()):
        out_dir = tmp_path / f"converted_{fmt}"
        module = convert_and_load(path, out_dir, weights_format, channels_first)
        got = torch_forward(module, inputs, channels_first=channels_first)
        compare(expected, got, rtol, atol, what=f"[{fmt}]")
        if i == 0 and tooling:
            tooling_checks(module, out_dir, inputs, expected, rtol, atol, channels_first, weights_format)
    if optimize:
        fmt, path = next(iter(saved.items()))
        out_dir = tmp_path / f"optimized_{fmt}"
        module = convert_and_load(path, out_dir, weights_format, channels_first, optimize=True)
        got = torch_forward(module, inputs, channels_first=channels_first)
        compare(expected, got, rtol, atol, what=f"[{fmt}, optimized]")
        done = json.loads((out_dir / "kconv.json").read_text())["optimized"]
        if folded is not None:
            assert len(done["folded_batchnorm"]) == folded, f"folded {done['folded_batchnorm']}, expected {folded}"
        if tooling:
            tooling_checks(module, out_dir, inputs, expected, rtol, atol, channels_first, weights_format)
    return expected


def _save_for_gpu_check(saved, inputs, expected, tmp_path, channels_first):
    """With KCONV_SAVE_EQUIVALENCE=DIR: keep the model file, its inputs and Keras's outputs as
    DIR/<case>.<fmt> + DIR/<case>.io.npz, for scripts/gpu_check.py --extra DIR on a machine with a GPU."""
    import shutil

    dest = os.environ.get("KCONV_SAVE_EQUIVALENCE")
    if not dest or channels_first or not saved:
        return
    fmt, path = next(iter(saved.items()))
    case = Path(tmp_path).name
    Path(dest).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, Path(dest) / f"{case}.{fmt}")
    np.savez(Path(dest) / f"{case}.io.npz", **{f"input_{i}": np.asarray(a) for i, a in enumerate(_as_list(inputs))},
             **{f"output_{i}": np.asarray(e) for i, e in enumerate(expected)})


def tooling_checks(module, out_dir, inputs, expected, rtol, atol, channels_first=False,
                   weights_format="safetensors"):
    """Every equivalence case also goes where PyTorch users take a model (tests/equivalence/tooling.py):
    the meta device (no tensor is built on the CPU), .double() against Keras, deepcopy and pickle,
    backward() in train mode (frozen parameters get no gradient); on CUDA in float32 where a GPU is."""
    from . import tooling

    arrays = [np.asarray(a) for a in _as_list(inputs)]
    if channels_first:
        arrays = [np.moveaxis(a, -1, 1) if a.ndim >= 3 else a for a in arrays]
        expected = [np.moveaxis(np.asarray(e), -1, 1) if np.ndim(e) >= 3 else e for e in expected]
    tooling.check_meta(module, arrays)
    tooling.check_double(module, arrays, expected, rtol, atol)
    if weights_format == "safetensors":
        tooling.check_pickle(out_dir, arrays, expected, rtol, atol)
    tooling.check_backward(module, arrays)
    import torch

    if torch.cuda.is_available():  # every equivalence case on the GPU too, where there is one
        tooling.check_cuda(module, arrays, expected, rtol, atol)


def check_channels_first(model_or_builder, inputs, tmp_path, **kw):
    """``check`` with kconv's ``channels_first=True`` option (NCHW torch I/O)."""
    return check(model_or_builder, inputs, tmp_path, channels_first=True, **kw)


# --------------------------------------------------------------------------------------------
# model builders


def seq(input_shape, *layer_list, input_dtype="float32"):
    """A Sequential model with an explicit Input."""
    k = keras()
    return k.Sequential([k.Input(shape=input_shape, dtype=input_dtype), *layer_list])


def func(input_shape, *layer_list):
    """A functional model chaining ``layer_list`` on one Input."""
    k = keras()
    inp = k.Input(shape=input_shape)
    x = inp
    for layer in layer_list:
        x = layer(x)
    return k.Model(inp, x)
