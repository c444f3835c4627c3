"""Inputs for verification: generated from the model's input specs (kconv IR), or read from a file.

No tensorflow, no torch: numpy and the IR only.

Generated inputs follow what the model expects, so that the comparison exercises real code paths:
float inputs are N(0, 1); integer inputs that feed an ``Embedding`` are ids in ``[0, input_dim)``
(``[1, input_dim)`` with ``mask_zero``, plus zero padding); inputs that feed ``Masking`` get padded
time steps equal to ``mask_value``. Padded rows alternate right-padded (even rows) and left-padded
(odd rows), each with at least one real step. Unknown dimensions: the batch axis is ``batch_size``,
every other unknown axis ``DEFAULT_DIM`` unless set with ``dims`` (``--dim``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ir import Model
from .errors import VerifyInputError

DEFAULT_DIM = 16  # unknown non-batch axes (sequence length, free image sizes)
DEFAULT_BATCH = 2
INT_HIGH = 10  # integer inputs that feed no Embedding: values in [0, INT_HIGH)


@dataclass
class InputSpec:
    name: str  # the Keras input layer name
    shape: tuple  # Keras shape, None for unknown (axis 0 is the batch)
    dtype: str
    vocab: int | None = None  # input_dim of an Embedding it feeds
    mask_zero: bool = False  # that Embedding has mask_zero=True: id 0 is padding
    mask_value: float | None = None  # a Masking layer it feeds: steps equal to this are padding
    consumers: list = field(default_factory=list)  # 'Class name' of the layers it feeds (for messages)

    @property
    def padded(self) -> bool:
        return self.mask_zero or self.mask_value is not None

    def describe(self) -> str:
        extra = []
        if self.vocab is not None:
            extra.append(f"ids < {self.vocab}" + (", 0 = padding" if self.mask_zero else ""))
        if self.mask_value is not None:
            extra.append(f"padding steps = {self.mask_value:g}")
        return f"{self.name} {_fmt(self.shape)} {self.dtype}" + (f" ({'; '.join(extra)})" if extra else "")


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _dtype_name(dt) -> str:
    if isinstance(dt, dict):  # a DTypePolicy left in the config
        dt = (dt.get("config") or {}).get("name", "float32")
    dt = str(dt or "float32")
    return {"mixed_float16": "float32", "mixed_bfloat16": "float32"}.get(dt, dt)


def input_specs(model: Model) -> list[InputSpec]:
    """One spec per model input, in Keras order, with what the layers it feeds tell about its values."""
    out = []
    for ref in model.inputs:
        layer = model.layer(ref.layer)
        shape = None
        if layer.calls and layer.calls[0].output_shapes:
            shape = layer.calls[0].output_shapes[0]
        if shape is None:
            shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
        if shape is None:
            raise VerifyInputError(f"input {layer.name!r}: shape unknown in the model config; pass --inputs")
        spec = InputSpec(layer.name, tuple(shape), _dtype_name(layer.config.get("dtype")))
        _look_at_consumers(model, ref.layer, spec, depth=0)
        out.append(spec)
    return out


def _look_at_consumers(model: Model, input_name: str, spec: InputSpec, depth: int):
    for layer in model.layers:
        for call in layer.calls:
            for pos, r in enumerate(call.inputs):
                if r.layer != input_name:
                    continue
                spec.consumers.append(layer.class_name)
                if layer.class_name == "Embedding":
                    vocab = layer.config.get("input_dim")
                    if vocab is not None:
                        spec.vocab = int(vocab) if spec.vocab is None else min(spec.vocab, int(vocab))
                    spec.mask_zero = spec.mask_zero or bool(layer.config.get("mask_zero"))
                elif layer.class_name == "Masking":
                    spec.mask_value = float(layer.config.get("mask_value", 0.0))
                elif layer.model is not None and depth < 8 and pos < len(layer.model.inputs):
                    _look_at_consumers(layer.model, layer.model.inputs[pos].layer, spec, depth + 1)


def parse_dims(items) -> dict:
    """``--dim`` values: ``NAME=SIZE`` with NAME ``INPUT:AXIS`` (one input), ``AXIS`` (every input)
    or ``seq`` (= axis 1). Returns {(input name or None, axis): size}."""
    dims = {}
    for item in items or ():
        name, sep, size = str(item).partition("=")
        name = name.strip()
        try:
            n = int(size)
        except ValueError:
            n = 0
        if not sep or n < 1 or not name:
            raise VerifyInputError(f"--dim {item!r}: expected NAME=SIZE with SIZE >= 1 "
                                   "(NAME: INPUT:AXIS, AXIS or seq)")
        inp, _, axis = name.rpartition(":")
        if axis == "seq":
            axis = "1"
        if not axis.isdigit() or int(axis) == 0:
            raise VerifyInputError(f"--dim {item!r}: the axis must be a number >= 1 (axis 0 is the batch: "
                                   "use --batch-size) or 'seq'")
        dims[(inp or None, int(axis))] = n
    return dims


def concrete_shape(spec: InputSpec, batch_size: int, dims: dict) -> tuple:
    shape = []
    for axis, d in enumerate(spec.shape):
        if axis == 0:
            shape.append(batch_size)
            continue
        override = dims.get((spec.name, axis), dims.get((None, axis)))
        if d is None:
            shape.append(override or DEFAULT_DIM)
        else:
            if (spec.name, axis) in dims and override != d:
                raise VerifyInputError(f"--dim {spec.name}:{axis}={override}: that axis is fixed at {d} by the model")
            shape.append(int(d))
    return tuple(shape)


def generate(specs: list[InputSpec], seed: int = 0, batch_size: int = DEFAULT_BATCH, dims: dict | None = None):
    """Seeded inputs for ``specs`` (a list of numpy arrays, Keras layout)."""
    if batch_size < 1:
        raise VerifyInputError("--batch-size must be at least 1")
    dims = dims or {}
    known = {s.name for s in specs}
    for (inp, _axis) in dims:
        if inp is not None and inp not in known:
            raise VerifyInputError(f"--dim: no input named {inp!r} (inputs: {', '.join(sorted(known))})")
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        shape = concrete_shape(spec, batch_size, dims)
        dt = np.dtype(spec.dtype) if spec.dtype not in ("bfloat16",) else np.dtype("float32")
        if dt.kind == "b":
            x = rng.integers(0, 2, size=shape).astype(bool)
        elif dt.kind in "iu":
            low = 1 if spec.mask_zero else 0
            high = spec.vocab if spec.vocab is not None else INT_HIGH
            if high <= low:
                raise VerifyInputError(f"input {spec.name!r}: vocabulary of {high} leaves no valid id")
            x = rng.integers(low, high, size=shape).astype(dt)
        else:
            x = rng.standard_normal(shape).astype(dt)
        if spec.padded and len(shape) >= 2 and shape[1] > 1:
            pad = 0 if spec.mask_zero else spec.mask_value
            for row in range(shape[0]):
                n_real = int(rng.integers(1, shape[1]))  # at least one real step, at least one padded
                if row % 2 == 0:
                    x[row, n_real:] = pad  # right-padded
                else:
                    x[row, : shape[1] - n_real] = pad  # left-padded
        out.append(x)
    return out


def read_npz(path, what: str = "--inputs"):
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise VerifyInputError(f"{what} {path}: not a readable .npz file ({e})") from None


def _pick(arrays: dict, prefix: str, names: list[str], path, what: str):
    """The arrays for ``names``: keys ``<prefix>0, <prefix>1, ...`` or the names themselves."""
    if f"{prefix}0" in arrays:
        out = []
        for i in range(len(names)):
            if f"{prefix}{i}" not in arrays:
                raise VerifyInputError(f"{what} {path}: has {prefix}0 but no {prefix}{i}; the model has "
                                       f"{len(names)} {'inputs' if prefix == 'input_' else 'outputs'}")
            out.append(arrays[f"{prefix}{i}"])
        return out
    if names and all(n in arrays for n in names):
        return [arrays[n] for n in names]
    raise VerifyInputError(f"{what} {path}: expected keys {', '.join(f'{prefix}{i}' for i in range(len(names)))}"
                           + (f" or {', '.join(names)}" if names else "")
                           + f"; found {', '.join(sorted(arrays)) or 'none'}")


def check_inputs(specs: list[InputSpec], arrays: list, source: str):
    """Cast to the model's dtypes and check known dimensions."""
    out = []
    for spec, a in zip(specs, arrays):
        a = np.asarray(a)
        if a.ndim != len(spec.shape):
            raise VerifyInputError(f"{source}: input {spec.name!r} has shape {a.shape}, the model expects rank "
                                   f"{len(spec.shape)} {_fmt(spec.shape)}")
        for axis, (got, want) in enumerate(zip(a.shape, spec.shape)):
            if axis and want is not None and got != want:
                raise VerifyInputError(f"{source}: input {spec.name!r} has shape {a.shape}, the model expects "
                                       f"{_fmt(spec.shape)}")
        dt = np.dtype(spec.dtype) if spec.dtype != "bfloat16" else np.dtype("float32")
        if a.dtype != dt:
            if a.dtype.kind == "f" and dt.kind in "iub":
                raise VerifyInputError(f"{source}: input {spec.name!r} is {a.dtype}, the model expects {dt}")
            a = a.astype(dt)
        out.append(a)
    return out


def load_inputs(path, specs: list[InputSpec]):
    arrays = read_npz(path, "--inputs")
    xs = _pick(arrays, "input_", [s.name for s in specs], path, "--inputs")
    return check_inputs(specs, xs, f"--inputs {path}")


def load_reference(path, specs: list[InputSpec], output_names: list[str]):
    """(inputs, expected outputs) from a reference file with keys input_* and output_*."""
    arrays = read_npz(path, "--reference")
    xs = _pick(arrays, "input_", [s.name for s in specs], path, "--reference")
    ys = [arrays[f"output_{i}"] for i in range(len(output_names)) if f"output_{i}" in arrays]
    if len(ys) != len(output_names):
        raise VerifyInputError(f"--reference {path}: expected outputs output_0 .. output_{len(output_names) - 1} "
                               f"(the model has {len(output_names)}); found {', '.join(sorted(arrays))}")
    return check_inputs(specs, xs, f"--reference {path}"), [np.asarray(y) for y in ys]
