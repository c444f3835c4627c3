"""``kconv scaffold``: a ready-to-fill extension (kconv.extend) for every unknown layer class and
unmapped Lambda of a model, written from what the file records (nothing in it runs)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from . import extend, specs
from .errors import OutputError
from .ir import Layer, Model
from .load import lambdas
from .specs.roles import ROLES

_NON_TRAINABLE_ROLES = {"moving_mean", "moving_variance", "mean", "variance", "count"}


def _walk(model: Model):
    for layer in model.layers:
        yield layer, model
        if layer.model is not None:
            yield from _walk(layer.model)


def unknown(model: Model) -> tuple[dict, list]:
    """({class name: [(layer, its model)]} of classes kconv does not declare, [(Lambda layer, model)]
    without an extension mapping it)."""
    classes: dict = {}
    lams = []
    for layer, owner in _walk(model):
        if layer.model is not None or layer.class_name == "InputLayer":
            continue
        if layer.class_name == "Lambda":
            if extend.lambda_for(layer.config) is None:
                lams.append((layer, owner))
        elif specs.get(layer.class_name) is None:
            classes.setdefault(layer.class_name, []).append((layer, owner))
    return classes, lams


def _shape(s) -> str:
    if s is None:
        return "unknown"
    if s and isinstance(s[0], (list, tuple)):
        return ", ".join(_shape(x) for x in s)
    return "(" + ", ".join("None" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def _in_shapes(layer: Layer, owner: Model) -> list:
    out = []
    for ref in layer.calls[0].inputs if layer.calls else ():
        try:
            producer = owner.layer(ref.layer)
            out.append(producer.calls[ref.node].output_shapes[ref.index])
        except (KeyError, IndexError, AttributeError):
            out.append(None)
    return out


def _ident(text: str, fallback: str) -> str:
    s = re.sub(r"\W", "_", str(text))
    if not s or s[0].isdigit():
        s = f"{fallback}_{s}" if s else fallback
    return s


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", _ident(name, "layer")).lower()


def _guess_role(w) -> str:
    if w.key in ROLES:
        return w.key
    return "kernel" if len(w.shape) >= 2 else "bias"


def _comment_config(cfg: dict) -> list[str]:
    lines = []
    for k, v in extend.layer_config(cfg).items():
        text = repr(v)
        lines.append(f"#   {k}: {text if len(text) <= 100 else text[:100] + '...'}")
    return lines or ["#   (no keys of its own)"]


def _layer_block(cls_name: str, uses: list) -> list[str]:
    layer, owner = uses[0]
    ins = _in_shapes(layer, owner)
    outs = layer.calls[0].output_shapes if layer.calls else []
    masked = any("mask" in c.tensor_kwargs for ly, _ in uses for c in ly.calls)
    pyname = _ident(cls_name.split(">")[-1], "Custom")
    lines = [f"# --- {cls_name} " + "-" * max(3, 90 - len(cls_name)),
             f"# Layers of this class: {', '.join(ly.name for ly, _ in uses)}",
             f"# Input shapes (Keras, batch first) of {layer.name}: {', '.join(_shape(s) for s in ins) or 'none'}",
             f"# Output shape: {_shape(outs[0]) if outs else 'unknown'}"
             + (" (as the file records it)" if outs and outs[0] is not None else " (kconv cannot infer it: "
                                                                                 "say it in output_shape below)"),
             "# Config (the torch code gets these keys; name/trainable/dtype removed):"]
    lines += _comment_config(layer.config)
    weights = layer.weights
    if weights:
        lines.append("# Stored weights, in the file's order (Keras stores the trainable ones first):")
        for i, w in enumerate(weights):
            lines.append(f"#   {i}: {w.name}  {_shape(w.shape)} {w.dtype}  guessed role: {_guess_role(w)}")
    else:
        lines.append("# The file stores no weights for it.")
    if masked:
        lines.append("# A Keras mask reaches this layer: mask='use' passes it to forward (mask=, a (batch, time)")
        lines.append("# bool tensor), 'keep' passes it on to the next layer unchanged.")
    lines.append("")
    names = []
    for i, w in enumerate(weights):
        n = w.key if w.key.isidentifier() and w.key not in names else f"weight_{i}"
        names.append(n)
    args = ", ".join(f"x{i}" if len(ins) > 1 else "x" for i in range(max(1, len(ins))))
    mask_arg = ", mask=None" if masked else ""
    if weights:
        lines += [f"class {pyname}(nn.Module):",
                  f'    """Torch twin of the Keras {cls_name}: copied into model.py by kconv."""',
                  "",
                  "    def __init__(self, config, input_shape):",
                  "        super().__init__()",
                  "        # TODO: check each weight: the file's value is loaded into it as is (Keras layout)"]
        for n, w in zip(names, weights):
            dims = ", ".join(str(int(d)) for d in w.shape)
            if _guess_role(w) in _NON_TRAINABLE_ROLES or not w.trainable:
                lines.append(f"        self.register_buffer({n!r}, torch.zeros({dims}))")
            else:
                lines.append(f"        self.{n} = nn.Parameter(torch.zeros({dims}))")
        lines += ["",
                  f"    def forward(self, {args}{mask_arg}):",
                  "        # TODO: what the Keras layer's call() computes",
                  f"        raise NotImplementedError({(pyname + '.forward').__repr__()})",
                  "", ""]
        impl = pyname
    else:
        impl = _snake(pyname)
        lines += [f"def {impl}({args}, config{mask_arg}):",
                  f'    """Torch twin of the Keras {cls_name} (no weights): copied into model.py by kconv."""',
                  "    # TODO: what the Keras layer's call() computes",
                  f"    raise NotImplementedError({impl!r})",
                  "", ""]
    lines += ["layer(", f"    {cls_name!r},", f"    torch={impl},"]
    if weights:
        lines.append("    weights=[")
        for n, w in zip(names, weights):
            role = _guess_role(w)
            trainable = "" if w.trainable and role not in _NON_TRAINABLE_ROLES else ", trainable=False"
            lines.append(f"        WeightDecl({w.key!r}, role={role!r}, torch={n!r}{trainable}),  "
                         f"# {_shape(w.shape)} {w.dtype}")
        lines.append("    ],")
    if outs and outs[0] is not None:
        lines.append(f"    output_shape=lambda config, shapes: {tuple(outs[0])!r},  # TODO: from config and shapes")
    else:
        lines.append("    output_shape=lambda config, shapes: shapes[0],  # TODO: the Keras output shape")
    if masked:
        lines.append("    mask='use',  # TODO: or 'keep'")
    lines += [")", "", ""]
    return lines


def _lambda_block(layer: Layer, owner: Model, taken: set) -> list[str]:
    fn = extend.lambda_function_name(layer.config)
    info = lambdas.describe(layer.config)
    ins = _in_shapes(layer, owner)
    outs = layer.calls[0].output_shapes if layer.calls else []
    base = _ident(fn.split(">")[-1] if fn else f"{layer.name}_fn", "lambda_fn")
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    lines = [f"# --- Lambda {layer.name} " + "-" * max(3, 83 - len(layer.name)),
             f"# Function: {'named ' + repr(fn) if fn else 'a Python lambda (bytecode, never run by kconv)'}"]
    if info.get("strings"):
        lines.append(f"# Names in its bytecode: {', '.join(info['strings'][:20])}")
    if info.get("arguments"):
        lines.append(f"# arguments (passed as keywords): {info['arguments']}")
    lines += [f"# Input shapes: {', '.join(_shape(s) for s in ins) or 'none'}",
              f"# Output shape: {_shape(outs[0]) if outs else 'unknown'}", ""]
    args = ", ".join(f"x{i}" if len(ins) > 1 else "x" for i in range(max(1, len(ins))))
    kw = "".join(f", {k}" for k in (layer.config.get("arguments") or {}) if str(k).isidentifier())
    lines += [f"def {name}({args}{kw}):",
              "    # TODO: what the Keras function computes, in torch",
              f"    raise NotImplementedError({name!r})",
              "", ""]
    which = f"function={fn!r}" if fn else f"layer={layer.name!r}"
    shape = (f"lambda config, shapes: {tuple(outs[0])!r}" if outs and outs[0] is not None
             else "lambda config, shapes: shapes[0]")
    lines += [f"lambda_layer({name}, {which}, output_shape={shape})  # TODO: check the output shape", "", ""]
    return lines


def render(model: Model, source: str, out_name: str = "my_layers.py") -> tuple[str, tuple[int, int]]:
    classes, lams = unknown(model)
    head = [f'"""kconv extension for {Path(str(source)).name}: fill in the TODOs, then', "",
            f"    kconv convert {source} -o OUT --extension {out_name}",
            f"    kconv verify {source} OUT --keras-objects YOUR_KERAS_LAYERS.py --extension {out_name} --per-layer",
            "", "Written by `kconv scaffold`. The torch code below is copied into model.py, which imports only",
            "torch (as torch, torch.nn.functional as F, and nn): use nothing else at module level.",
            '"""',
            "import torch",
            "import torch.nn.functional as F  # noqa: F401",
            "from torch import nn  # noqa: F401",
            "",
            "from kconv.extend import WeightDecl, lambda_layer, layer  # noqa: F401",
            "", ""]
    body = []
    for cls_name, uses in sorted(classes.items()):
        body += _layer_block(cls_name, uses)
    taken = {_ident(c.split(">")[-1], "Custom") for c in classes} | {_snake(_ident(c.split(">")[-1], "Custom"))
                                                                    for c in classes}
    seen_fns = set()
    for layer, owner in lams:
        fn = extend.lambda_function_name(layer.config)
        if fn is not None and fn in seen_fns:
            continue
        seen_fns.add(fn)
        body += _lambda_block(layer, owner, taken)
    text = "\n".join(head + body).rstrip() + "\n"
    return text, (len(classes), len(seen_fns))


def write(model: Model, out, source) -> tuple[int, int]:
    """Write the scaffold to ``out`` (never replacing an existing file); returns how many layer classes
    and Lambda functions it holds ((0, 0): nothing written)."""
    text, n = render(model, source, Path(out).name)
    if n == (0, 0):
        return n
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise OutputError(f"{out} exists: kconv scaffold never overwrites a file (choose another -o)")
    directory = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=".kconv-scaffold-", suffix=".py", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, out)  # fails if out appeared meanwhile: never replaces a file
        except FileExistsError:
            raise OutputError(f"{out} exists: kconv scaffold never overwrites a file (choose another -o)") from None
    finally:
        os.unlink(tmp)
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
