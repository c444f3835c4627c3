"""Typed errors. The library raises these and never exits; the CLI maps them to exit codes."""
from __future__ import annotations

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
    """Stored weights do not match what the layer declaration expects."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


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
        super().__init__(f"{n} unsupported layer(s): " + "; ".join(parts))
