"""Errors of ``kconv verify``: unusable inputs (exit 2) and a verification mismatch (exit 1)."""
from __future__ import annotations

from ..errors import ExitCode, KconvError


class VerifyInputError(KconvError):
    """An input file, option or reference that verify cannot use (exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class KerasUnavailableError(KconvError):
    """Keras is not installed, or cannot load the model file (exit 2; ``--reference`` is the way out)."""

    exit_code = ExitCode.BAD_INPUT


class MismatchError(KconvError):
    """The converted model does not compute what Keras computes (exit 1)."""

    exit_code = ExitCode.MISMATCH
