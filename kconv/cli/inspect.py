"""``kconv inspect MODEL``: every layer and weight with its role, shape and torch mapping."""
from __future__ import annotations

import gc
import json
import math
import os
import sys
from json.encoder import encode_basestring_ascii

import click

from .. import inspect as _report
from ..load import load
from . import main
from .. import cli as _cli
from .extensions import extension_option


def _fmt_shape(s) -> str:
    if s is None:
        return "?"
    if s and isinstance(s[0], list):
        return ", ".join(_fmt_shape(x) for x in s)
    return "(" + ", ".join("None" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def _num(n: int) -> str:
    return f"{n:,}"


def _header(rep: dict) -> str:
    formats = {"h5": "legacy HDF5", "keras": "Keras 3 .keras archive", "savedmodel": "TF SavedModel directory"}
    fmt = formats.get(rep["format"], rep["format"])
    writer = f"Keras {rep['keras_version']}" if rep["keras_version"] else "Keras version not recorded"
    if rep.get("backend"):
        writer += f", backend {rep['backend']}"
    if rep.get("backend_note"):
        writer += f" ({rep['backend_note']})"
    return f"{rep['source']}: {fmt}, written by {writer}"


def render(rep: dict, torch_side: bool = True, meanings: bool = True) -> str:
    lines = [_header(rep)]
    m = rep["model"]
    ins = ", ".join(f"{i['layer']} {_fmt_shape(i['shape'])}" for i in rep["inputs"])
    outs = ", ".join(f"{o['layer']} {_fmt_shape(o['shape'])}" for o in rep["outputs"])
    lines.append(f"model {m['name']!r} ({m['class_name']}): inputs {ins}; outputs {outs}")
    opt = rep.get("optimizer_state")
    if opt:
        lines.append(f"optimizer state: {opt['variables']} variables ({_num(opt['values'])} values) in the "
                     f"{opt['where']}; not parameters (not counted, as in Keras), not converted")
    lines.append("")
    _layers(rep["layers"], lines, 0, torch_side, meanings)
    lines.append("")
    lines.append(f"Total params: {_num(rep['total_params'])}")
    lines.append(f"Trainable params: {_num(rep['trainable_params'])}")
    lines.append(f"Non-trainable params: {_num(rep['non_trainable_params'])}")
    return "\n".join(lines)


def _layers(layers, lines, depth, torch_side, meanings):
    pad = "    " * depth
    for ly in layers:
        params = ly["trainable_params"] + ly["non_trainable_params"]
        head = f"{pad}{ly['name']} ({ly['class_name']})"
        inputs = " | ".join(", ".join(c) for c in ly["inputs"])
        calls = f" x{ly['calls']} calls" if ly["calls"] > 1 else ""
        frozen = "" if ly["trainable"] else "  [frozen]"
        lines.append(f"{head}  <- {inputs or '-'}{calls}  -> {_fmt_shape(ly['output_shape'])}  "
                     f"params {_num(params)}{frozen}")
        extras = [f"{k} {ly[k]}" for k in ("quantization_mode", "lora_rank") if k in ly]
        if ly.get("note"):
            extras.append(ly["note"])
        if ly.get("config_notes"):
            extras.append("normalised: " + "; ".join(ly["config_notes"]))
        if ly.get("stored_as") is not None:
            extras.append(f"weights: the file's layer {ly['stored_as']!r} (paired by order, as Keras's load_weights)")
        for e in extras:
            lines.append(f"{pad}    ({e})")
        if ly.get("lambda"):
            lines.append(f"{pad}    {_lambda_line(ly['lambda'])}")
        for w in ly["weights"]:
            tr = "trainable" if w["trainable"] else "non-trainable"
            lines.append(f"{pad}    {w['role']:<17} {_fmt_shape(w['shape']):<16} {w['dtype']:<8} {tr:<13} {w['name']}")
            if meanings and w["meaning"]:
                lines.append(f"{pad}        {w['meaning']}")
            if w.get("note"):
                lines.append(f"{pad}        note: {w['note']}")
            if w.get("nonfinite"):
                bad = w["nonfinite"]
                lines.append(f"{pad}        WARNING: {bad['nan']} NaN and {bad['inf']} Inf values")
            if torch_side:
                for t in w["torch"]:
                    lines.append(f"{pad}        -> torch {t['key']} {_fmt_shape(t['shape'])} by {t['transform']}")
                if w.get("torch_note"):
                    lines.append(f"{pad}        -> torch: {w['torch_note']}")
        if ly.get("layers"):
            _layers(ly["layers"], lines, depth + 1, torch_side, meanings)


SUMMARY_WIDTH = 80


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def render_summary(rep: dict) -> str:
    """One line per layer, as Keras's ``model.summary()``: name (class), output shape, params, and
    'frozen' for non-trainable layers; nested models indented; totals at the foot. 80 columns."""
    name_w, shape_w, params_w = 38, 20, 11
    rule = "-" * SUMMARY_WIDTH
    lines = [_header(rep), rule,
             f"{'Layer (type)':<{name_w}} {'Output Shape':<{shape_w}} {'Param #':>{params_w}}", rule]

    def walk(layers, depth):
        for ly in layers:
            params = ly["trainable_params"] + ly["non_trainable_params"]
            who = _fit("  " * depth + f"{ly['name']} ({ly['class_name']})", name_w)
            shape = _fit(_fmt_shape(ly["output_shape"]), shape_w)
            frozen = " frozen" if not ly["trainable"] and params else ""
            lines.append(f"{who:<{name_w}} {shape:<{shape_w}} {_num(params):>{params_w}}{frozen}".rstrip())
            if ly.get("layers"):
                walk(ly["layers"], depth + 1)

    walk(rep["layers"], 0)
    lines += [rule, f"Total params: {_num(rep['total_params'])}",
              f"Trainable params: {_num(rep['trainable_params'])}",
              f"Non-trainable params: {_num(rep['non_trainable_params'])}"]
    return "\n".join(lines)


def _code_text(info: dict) -> str:
    if info.get("problem"):
        return f"bytecode ({info['problem']})"
    strings = ", ".join(repr(x) for x in info.get("strings", [])) or "none found"
    return (f"marshalled Python bytecode, {info.get('code_bytes', 0)} bytes, sha256 {info.get('sha256', '')[:16]}; "
            f"strings in it: {strings}")


def _lambda_line(info: dict) -> str:
    """One line on a Lambda's stored function (kconv.load.lambdas.describe); nothing was run."""
    if info.get("kind") == "named function":
        mod = f" from module {info['module']!r}" if info.get("module") else ""
        text = f"function: named function {info.get('name')!r}{mod}, code not stored in the file"
    elif info.get("kind") == "bytecode":
        text = "function: " + _code_text(info)
    else:
        text = f"function: {info.get('problem', 'not understood')}"
    for k in ("defaults", "closure", "arguments"):
        if info.get(k):
            text += f"; {k} {info[k]}"
    if info.get("output_shape"):
        text += "; output_shape function: " + _code_text(info["output_shape"])
    return text + " [not executed]"


def json_text(value) -> str:
    """``json.dumps(value, indent=2)``, in half the time for a large report (ResNet50: 18 -> 9 ms of
    ``inspect --json``): the standard library indents with its pure-Python encoder. Anything but JSON's
    own types (or a cycle) is left to json.dumps, which says what it says of it."""
    out: list[str] = []
    try:
        _json_value(value, out, "\n")
    except (TypeError, RecursionError):
        return json.dumps(value, indent=2)
    return "".join(out)


def _json_float(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (math.inf, -math.inf):
        return "Infinity" if f > 0 else "-Infinity"
    return float.__repr__(f)


def _json_key(k) -> str:
    if isinstance(k, str):
        return encode_basestring_ascii(k)
    if k is True or k is False or k is None:
        return f'"{json.dumps(k)}"'
    if isinstance(k, int):
        return f'"{int.__repr__(k)}"'
    if isinstance(k, float):
        return f'"{_json_float(k)}"'
    raise TypeError(f"key {k!r} is not a string")


def _json_value(o, out: list, nl: str):
    if isinstance(o, str):
        out.append(encode_basestring_ascii(o))
    elif o is None or o is True or o is False:
        out.append("null" if o is None else "true" if o else "false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_json_float(o))
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = nl + "  "
        sep = "{" + inner
        for k, v in o.items():
            # str keys and str or int values (most of a report) written here, the rest by the calls
            out.append(sep)
            out.append(encode_basestring_ascii(k) if type(k) is str else _json_key(k))
            out.append(": ")
            t = type(v)
            if t is str:
                out.append(encode_basestring_ascii(v))
            elif t is int:
                out.append(int.__repr__(v))
            else:
                _json_value(v, out, inner)
            sep = "," + inner
        out.append(nl + "}")
    elif isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        inner = nl + "  "
        sep = "[" + inner
        for v in o:
            out.append(sep)
            t = type(v)
            if t is int:
                out.append(int.__repr__(v))
            elif t is str:
                out.append(encode_basestring_ascii(v))
            else:
                _json_value(v, out, inner)
            sep = "," + inner
        out.append(nl + "]")
    else:
        raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _import_numpy_one_blas_thread():
    """numpy imported with OpenBLAS's thread pool at one thread (unless numpy is imported already or
    OPENBLAS_NUM_THREADS set): inspect does no linear algebra, and the pool's threads wait for work
    spinning on a core, taken from the one reading the model (ResNet50 on 2 cores: 0.34 -> 0.27 s).
    The variable is set only while numpy is imported: OpenBLAS reads it when it is loaded."""
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


@main.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=True))
@extension_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON only (schema_version 1).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
              help="Architecture JSON (model.to_json() or a Keras 3 config.json) for a weights-only file: "
                   "legacy save_weights HDF5 or a Keras 3 layout .weights.h5.")
@click.option("--by-name", "by_name", is_flag=True,
              help="With --config and a legacy HDF5 weights file: pair the file's layers with the model's by name "
                   "(Keras's load_weights(by_name=True)) instead of in order (its default).")
@click.option("--backend-of-writer", "backend_of_writer", type=click.Choice(["theano", "tensorflow"]),
              help="The Keras backend that wrote the file, when it is not recorded (Keras 1) or recorded wrongly: "
                   "'theano' flips convolution kernels and uses Theano's 'same' padding.")
@click.option("--no-torch", is_flag=True, help="Leave out the PyTorch side (torch key, shape, transform).")
@click.option("--brief", is_flag=True, help="Leave out the one-line meaning of each weight role.")
@click.option("--summary", is_flag=True,
              help="One line per layer (name, class, output shape, params), as Keras's model.summary(); 80 columns.")
@click.option("--check-values", is_flag=True,
              help="Also read every weight and report NaN/Inf values (inspect otherwise reads no tensor data).")
def inspect_cmd(model, as_json, config, by_name, backend_of_writer, no_torch, brief, summary, check_values):
    """Show every layer and weight of a Keras model file, without running Keras.

    For each layer: class, inputs, output shape, parameter count; for each weight: role, shape,
    dtype, trainable, and the PyTorch tensor it becomes. Nested models are shown as a tree.
    """
    if _cli.process_ends:
        # ResNet50: 30 collections (6 ms of a 0.4 s run) that would find no garbage among the model's
        # objects, alive until the process ends (kconv.cli.entry restores the collector otherwise)
        gc.disable()
        _import_numpy_one_blas_thread()
    m = load(model, config=config, backend_of_writer=backend_of_writer, by_name=by_name)
    rep = _report.report(m, check_values=check_values)
    if as_json:
        click.echo(json_text(rep))
    elif summary:
        click.echo(render_summary(rep))
    else:
        click.echo(render(rep, torch_side=not no_torch, meanings=not brief))
    if _cli.process_ends:
        _cli.left_to_exit.append((m, rep))
    _cli.nothing_at_exit = True  # the model file is only read: nothing to close or wait for
