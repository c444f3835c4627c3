"""Typed errors. The library raises these and never exits; the CLI maps them to exit codes."""
from __future__ import annotations

import contextlib
import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes of the ``kconv`` command."""

    OK = 0
    MISMATCH = 1  # verify: outputs differ beyond tolerance
    BAD_INPUT = 2  # usage error, unreadable or damaged input
    UNSUPPORTED = 3  # the model uses layers or options kconv cannot convert
    INTERNAL = 4  # a bug in kconv (unexpected exception)


class KconvError(Exception):
    """Base class: every error kconv raises on purpose."""

    exit_code = ExitCode.BAD_INPUT

    def in_file(self, path) -> "KconvError":
        """Name the model file in the message (once): 'FILE: problem'. Returns self."""
        path = str(path)
        text = str(self)
        if path and not text.startswith(path) and not getattr(self, "path", None):
            self.args = (f"{path}: {text}",)
            if hasattr(self, "path"):
                self.path = path
        return self

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class ModelFileError(KconvError):
    """The model file cannot be read: wrong format, damaged, or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(KconvError):
    """A layer config is missing a key or has a value kconv does not understand."""

    def __init__(self, layer: str, problem: str):
        self.layer = layer
        self.problem = problem
        super().__init__(f"layer {layer!r}: {problem}")


class WeightMismatchError(KconvError):
    """Stored weights do not match what the layer declarations expect: missing, unexpected, or of the
    wrong shape. ``problems`` lists them all (one string each); the message shows the first 20."""

    SHOWN = 20

    def __init__(self, problems: list[str], path=None):
        self.problems = list(problems)
        self.path = str(path) if path is not None else None
        shown = "; ".join(self.problems[: self.SHOWN])
        if len(self.problems) > self.SHOWN:
            shown += f"; ... and {len(self.problems) - self.SHOWN} more"
        n = len(self.problems)
        head = f"{self.path}: " if self.path else ""
        super().__init__(f"{head}{n} weight problem(s): {shown}" if self.path else shown)


class OutputError(KconvError):
    """The output cannot be written where asked (not writable, or it would touch files kconv did not write)."""


class KconvWarning(UserWarning):
    """Something suspicious but not fatal; the CLI prints it as one 'kconv: warning:' line."""


class NonFiniteWeightWarning(KconvWarning):
    """A weight holds NaN or Inf values."""


class UnsupportedError(KconvError):
    """Layers (or options of layers) that kconv cannot convert, collected over the whole model.

    ``by_class`` maps a Keras class name to a list of ``(layer name, reason)``.
    """

    exit_code = ExitCode.UNSUPPORTED

    def __init__(self, by_class: dict[str, list[tuple[str, str]]]):
        self.by_class = by_class
        n = sum(len(v) for v in by_class.values())
        parts = []
        for cls, items in sorted(by_class.items()):
            names = ", ".join(f"{name} ({why})" if why else name for name, why in items)
            parts.append(f"{cls}: {names}")
        hint = ""
        if any(why in ("unknown layer class", "no converter yet") and (cls == "Lambda" or why == "unknown layer class")
               for cls, items in by_class.items() for _, why in items):
            hint = "; to convert them: kconv scaffold MODEL -o my_layers.py, fill it in, pass --extension my_layers.py"
        super().__init__(f"{n} unsupported layer(s): " + "; ".join(parts) + hint)



@contextlib.contextmanager
def cli_warnings():
    """While a ``kconv`` command runs: each KconvWarning is printed once as one
    ``kconv: warning: ...`` line on stderr; other warnings keep Python's handling."""
    import sys
    import warnings

    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if isinstance(category, type) and issubclass(category, KconvWarning):
                try:
                    (file or sys.stderr).write(f"kconv: warning: {message}\n")
                except (OSError, ValueError):
                    pass
                return
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("default", KconvWarning)
        yield
