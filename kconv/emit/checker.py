"""Runs the import check (:mod:`kconv.emit.modcheck`) where it costs least.

``import torch`` takes about 2 s, half of converting a ResNet50, and the weights themselves need no
torch (numpy transforms, :mod:`kconv.emit.stwriter`). So a process that has not imported torch yet
(the ``kconv`` command) starts one helper process at the beginning of ``convert``; it imports torch
while this process loads the Keras file and writes the weights, then builds the emitted ``Model``
and answers with its state dict's keys, shapes and dtypes. A process that already has torch (a
notebook, the tests, ``--format pt``) checks in process. The helper is reused for each conversion
of the process; it is ended at exit, and ends by itself when its stdin closes (this process died).
"""
from __future__ import annotations

import atexit
import json
import subprocess
import sys
from pathlib import Path

from . import modcheck

_helper: subprocess.Popen | None = None
_unread = 0  # answers of the helper to conversions that failed before reading them (read and dropped)


def start():
    """Start the helper now, so that torch is imported while the model is read (a no-op when this
    process has torch already, or a helper is running)."""
    global _helper
    if "torch" in sys.modules or not sys.executable:
        return
    if _helper is not None and _helper.poll() is None:
        return
    code = "import sys; sys.path[:] = sys.argv[2:]; import runpy; runpy.run_path(sys.argv[1], run_name='__main__')"
    try:
        _helper = subprocess.Popen(
            [sys.executable, "-I", "-c", code, modcheck.__file__, *[p for p in sys.path if p]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)  # a Ctrl-C reaches kconv, which ends the helper by closing its stdin
    except OSError:
        _helper = None


def _stop():
    global _helper, _unread
    proc, _helper, _unread = _helper, None, 0
    if proc is None:
        return
    # it holds nothing to save: ended at once rather than left to unload torch (a tenth of a second)
    proc.kill()
    try:
        proc.stdin.close()
        proc.wait(timeout=5)
    except Exception:  # noqa: BLE001 - at exit
        pass


atexit.register(_stop)


class Pending:
    """The state spec of one model.py, asked for now, read with :meth:`result`."""

    def __init__(self, model_py: Path):
        self.model_py = str(model_py)
        self.proc = _helper if ("torch" not in sys.modules and _helper is not None
                                and _helper.poll() is None) else None
        self._answer = None
        if self.proc is not None:
            try:
                self.proc.stdin.write(json.dumps({"model_py": self.model_py}) + "\n")
                self.proc.stdin.flush()
            except OSError:
                self.proc = None
        if self.proc is None:  # in process (torch is here already, or no helper could run)
            self._answer = _in_process(self.model_py)

    def result(self) -> dict:
        """{key: (shape tuple, dtype name)}; raises RuntimeError if model.py cannot be imported or built."""
        global _unread
        if self._answer is None:
            try:
                while _unread and self.proc is _helper:  # answers come in order: skip the abandoned ones
                    self.proc.stdout.readline()
                    _unread -= 1
                line = self.proc.stdout.readline()
            except OSError:
                line = ""
            if not line:  # the helper could not run (or died): check here instead
                _stop()
                line = json.dumps(_in_process(self.model_py))
            self._answer = json.loads(line)
        if "error" in self._answer:
            raise RuntimeError(f"the emitted model.py cannot be imported or built: {self._answer['error']}")
        return {k: (tuple(s), d) for k, (s, d) in self._answer["spec"].items()}

    def discard(self):
        """The conversion failed before reading the answer: the next conversion skips it (the
        helper is kept: starting another costs an ``import torch``)."""
        global _unread
        if self._answer is None and self.proc is not None and self.proc is _helper:
            _unread += 1
            self._answer = {"error": "discarded"}


def _in_process(model_py: str) -> dict:
    try:
        return {"spec": modcheck.state_spec(model_py)}
    except Exception as e:  # noqa: BLE001 - the same report as the helper's
        return {"error": f"{type(e).__name__}: {e}"}


def request(model_py: Path) -> Pending:
    return Pending(model_py)
