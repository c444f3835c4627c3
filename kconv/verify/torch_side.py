"""The torch side: the emitted module as a user loads it, and its trace variant for per-layer checks."""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import VerifyInputError


def check_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VerifyInputError(f"--device {device}: CUDA is not available to this torch "
                               f"({torch.__version__}); use --device cpu")
    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError) as e:  # unknown type, or a device type this torch cannot use
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:160]
        raise VerifyInputError(f"--device {device}: not usable here ({msg}); use --device cpu") from None
    return device


def manifest(out_dir) -> dict:
    p = Path(out_dir) / "kconv.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise VerifyInputError(f"{p}: unreadable manifest ({e})") from None


def run(net, inputs, channels_first: bool = False, device: str = "cpu", trace: dict | None = None,
        training: bool = False) -> list:
    """Call ``net`` under ``torch.no_grad()`` with Keras-layout numpy inputs; outputs in Keras layout.
    ``training``: one call in train mode (running statistics update), then back to eval mode."""
    import torch

    tensors = []
    for a in inputs:
        a = np.asarray(a)
        if channels_first and a.ndim >= 3:
            a = np.moveaxis(a, -1, 1)
        tensors.append(torch.from_numpy(np.ascontiguousarray(a)).to(device))
    if trace is not None:
        trace.clear()
    net.train(training)
    try:
        with torch.no_grad():
            out = net(*tensors)
    finally:
        net.eval()
    outs = []
    for o in (list(out) if isinstance(out, (list, tuple)) else [out]):
        a = o.detach().cpu().numpy()
        if channels_first and a.ndim >= 3:
            a = np.moveaxis(a, 1, -1)
        outs.append(a)
    return outs


def instrument(shipped: str, plain: str, traced: str) -> str | None:
    """Insert the trace lines of ``traced`` (= ``plain`` + inserted lines) into ``shipped``.

    ``shipped`` is the DIR/model.py the user has; it may differ from ``plain`` (edited by hand, an
    older kconv). Lines of ``plain`` are matched to ``shipped`` (equal or same-length replaced
    blocks); the trace lines go before the same lines there. None when a line cannot be placed.
    """
    plain_l, traced_l, shipped_l = plain.splitlines(), traced.splitlines(), shipped.splitlines()
    inserts: dict = {}
    for tag, i1, _i2, j1, j2 in difflib.SequenceMatcher(None, plain_l, traced_l, autojunk=False).get_opcodes():
        if tag == "insert":
            inserts[i1] = traced_l[j1:j2]
        elif tag != "equal":
            return None
    if plain_l == shipped_l:
        return traced
    where = {len(plain_l): len(shipped_l)}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, plain_l, shipped_l, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                where[i1 + k] = j1 + k
    if any(i not in where for i in inserts):
        return None
    by_target = {where[i]: lines for i, lines in inserts.items()}
    out = []
    for j, line in enumerate(shipped_l + [None]):
        out.extend(by_target.get(j, []))
        if line is not None:
            out.append(line)
    return "\n".join(out) + "\n"


def _import_source(source: str, workdir: Path):
    path = workdir / "model_trace.py"
    path.write_text(source)
    name = "kconv_trace_" + hashlib.sha1(source.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def trace_module(ir_model, net, channels_first: bool = False, shipped_source: str | None = None,
                 device: str = "cpu", blocks: bool = False):
    """(module with TRACE, loaded torch net, how it was made) for per-layer comparison.

    The trace variant comes from ``kconv.emit.codegen.Generator(..., trace=True)``; when the shipped
    source is known it is instrumented instead (so what is traced is what is shipped, edits included),
    falling back to the regenerated code when the edit cannot be matched. Weights: the state dict of the
    loaded ``net`` (itself loaded strictly from DIR), loaded strictly. ``blocks``: DIR was converted
    with --blocks (its manifest says so).
    """
    from ..emit.codegen import Generator

    traced = Generator(ir_model, channels_first_io=channels_first, trace=True, blocks=blocks).generate()
    how = "regenerated"
    source = traced
    if shipped_source is not None:
        plain = Generator(ir_model, channels_first_io=channels_first, blocks=blocks).generate()
        merged = instrument(shipped_source, plain, traced)
        if merged is not None:
            source, how = merged, ("shipped" if shipped_source == plain else "shipped (edited)")
        else:
            how = "regenerated (DIR/model.py differs from what kconv generates; the trace is of the regenerated code)"
    with tempfile.TemporaryDirectory(prefix="kconv-trace-") as tmp:
        try:
            mod = _import_source(source, Path(tmp))
            tnet = mod.Model()
        except Exception:
            if source is traced:
                raise
            mod = _import_source(traced, Path(tmp))
            tnet = mod.Model()
            how = "regenerated (instrumenting DIR/model.py failed)"
    try:
        tnet.load_state_dict(net.state_dict(), strict=True, assign=True)  # any device, meta included
    except RuntimeError as e:
        if not blocks and shipped_source is None:  # a module given without its manifest: --blocks keys?
            try:
                return trace_module(ir_model, net, channels_first=channels_first, device=device, blocks=True)
            except VerifyInputError:
                pass
        raise VerifyInputError(f"per-layer: the converted weights do not fit the trace module ({str(e)[:300]})") \
            from None
    return mod, tnet.eval().to(device), how


def train_step(net, inputs, coefficients, lr: float, channels_first: bool = False, device: str = "cpu"):
    """The torch side of kconv verify --mode train (see keras_side.train_step): one train-mode call,
    loss = sum_i sum(output_i * coefficients(i, shape_i)) (outputs in Keras layout), backward, p -= lr * p.grad
    on every parameter with requires_grad; back to eval mode. Returns (outputs in Keras layout,
    {parameter name: gradient}, state dict after the step), as numpy."""
    import torch

    tensors = _tensors(inputs, channels_first, device)
    net.train()
    net.zero_grad(set_to_none=True)
    try:
        out = net(*tensors)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        keras_outs = [o.movedim(1, -1) if channels_first and o.dim() >= 3 else o for o in outs]
        loss = sum((o.float() * torch.as_tensor(coefficients(i, tuple(o.shape)), dtype=torch.float32,
                                                device=o.device)).sum()
                   for i, o in enumerate(keras_outs) if o.is_floating_point())
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        grads = {n: p.grad.detach().cpu().numpy() for n, p in net.named_parameters()
                 if p.requires_grad and p.grad is not None}
        with torch.no_grad():
            for p in net.parameters():
                if p.requires_grad and p.grad is not None:
                    p -= lr * p.grad
    finally:
        net.eval()
    state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    return [o.detach().cpu().numpy() for o in keras_outs], grads, state


def _tensors(inputs, channels_first, device):
    import torch

    out = []
    for a in inputs:
        a = np.asarray(a)
        if channels_first and a.ndim >= 3:
            a = np.moveaxis(a, -1, 1)
        out.append(torch.from_numpy(np.ascontiguousarray(a)).to(device))
    return out


#: Tolerances of verify --allow-tf32: TF32 keeps 10 mantissa bits (relative rounding 2^-11 ~ 4.9e-4 per
#: product); on an H200 the small models of the test suite differed from Keras by up to 1.4e-3 (scaled).
TF32_ATOL = TF32_RTOL = 5e-3


class precision:
    """Context: TF32 off (full float32 matmuls and cuDNN convolutions) unless ``allow_tf32``; restored after.
    ``label`` says what ran, for the report."""

    def __init__(self, device: str, allow_tf32: bool = False):
        self.allow_tf32 = allow_tf32
        cuda = str(device).startswith("cuda")
        self.label = ("TF32 allowed" if allow_tf32 else "float32, TF32 off") if cuda else "float32"

    def __enter__(self):
        import torch

        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.allow_tf32
        return self

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def failing_layer(exc: BaseException, var_layers: dict | None = None) -> str:
    """'name (Class)' of the emitted layer whose line raised ``exc``, or ''. The line is the deepest
    frame in the emitted model.py; its layer is the first forward variable assigned from there on
    that ``var_layers`` ({variable: (Keras layer, class)}, from the Generator) knows, or a
    '# name: Class' comment above it (what kconv wrote before it stopped emitting them)."""
    import linecache
    import re

    tb, found = exc.__traceback__, None
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename
        if Path(fname).name in ("model.py", "model_trace.py") and tb.tb_frame.f_code.co_name == "forward":
            found = (fname, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return ""
    fname, line = found
    for n in range(line, line + 200):
        text = linecache.getline(fname, n)
        if not text or text.lstrip().startswith(("def ", "return ")):
            break
        m = re.match(r"\s*([A-Za-z_]\w*)[\w ,()]* = ", text)
        if m and var_layers and m.group(1) in var_layers:
            name, cls = var_layers[m.group(1)]
            return f"{name} ({cls})"
    for n in range(line, 0, -1):
        m = re.match(r"\s*# (.+?): (\S+)", linecache.getline(fname, n))
        if m:
            return f"{m.group(1)} ({m.group(2)})"
        if linecache.getline(fname, n).lstrip().startswith("def "):
            break
    return ""
