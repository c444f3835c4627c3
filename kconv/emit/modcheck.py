"""The import check of ``kconv convert``: the emitted model.py is imported, ``Model()`` is built and
its state dict (keys, shapes, dtypes) is what the weights file must match.

Only torch and the standard library here, no kconv import: the file also runs on its own as a
helper process (``python modcheck.py``, see :mod:`kconv.emit.checker`) that imports torch while the
converting process reads and writes the weights with numpy. The module is built on the meta device
(no memory, no random initialisation; a module that cannot be built there is built on the CPU).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys


def import_path(path, name: str | None = None):
    """Import a model.py by path, writing no ``__pycache__`` next to it (it would land in the output
    directory as a file kconv did not list, and a later conversion there would refuse it)."""
    name = name or "kconv_emitted_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = saved
    return mod


def state_spec(model_py: str) -> dict:
    """{state-dict key: [shape, dtype name]} of ``Model()`` from ``model_py``."""
    import torch

    name = "kconv_checked_" + hashlib.sha1(str(model_py).encode()).hexdigest()[:12]
    try:
        mod = import_path(model_py, name)
    finally:
        sys.modules.pop(name, None)
    try:
        with torch.device("meta"):
            net = mod.Model()
    except Exception:  # noqa: BLE001 - e.g. an extension's module that computes on values in __init__
        net = mod.Model()
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in net.state_dict().items()}


def serve(stdin=None, stdout=None):
    """The helper process: import torch now, then answer one JSON line per request line
    ``{"model_py": path}`` with ``{"spec": ...}`` or ``{"error": "..."}`` until stdin closes."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    try:
        import torch  # noqa: F401  (the point of starting early)

        failure = None
    except BaseException as e:  # noqa: BLE001 - reported for each request instead
        failure = f"torch cannot be imported ({type(e).__name__}: {e})"
    for line in stdin:
        try:
            request = json.loads(line)
            if failure:
                raise RuntimeError(failure)
            answer = {"spec": state_spec(request["model_py"])}
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the converting process
            if isinstance(e, KeyboardInterrupt):
                return
            answer = {"error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
