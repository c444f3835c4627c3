"""Progress of long work, reported by the library through one observer and shown by the CLI.

The library never prints: it calls :func:`task` around long steps (reading and transforming weights,
Keras's load and run in verify, per-layer tracing). By default nothing is shown; the ``kconv``
command installs :class:`RichReporter` when stderr is a terminal (and not ``--quiet``), so stdout
never changes. ``KCONV_PROGRESS=1`` forces it on (tests), ``=0`` off.
"""
from __future__ import annotations

import contextlib
import os
import sys

_reporter = None


@contextlib.contextmanager
def task(description: str, total: int | None = None):
    """A step of long work; yields ``advance(n=1)``. A no-op unless a reporter is installed."""
    if _reporter is None:
        yield lambda n=1: None
        return
    with _reporter.task(description, total) as advance:
        yield advance


class RichReporter:
    """rich progress bars on stderr, removed when each step ends (transient). rich is imported at the
    first step: a command with none (``kconv inspect``) does not pay for it (about 50 ms)."""

    def __init__(self, file=None):
        self.file = file
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.file or sys.stderr,
                                    force_terminal=os.environ.get("KCONV_PROGRESS") == "1")
        return self._console

    @contextlib.contextmanager
    def task(self, description: str, total: int | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            tid = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(tid, n)


@contextlib.contextmanager
def showing(enabled: bool):
    """Install a :class:`RichReporter` for the duration (the CLI's switch)."""
    global _reporter
    forced = os.environ.get("KCONV_PROGRESS")
    on = enabled and (forced == "1" or (forced != "0" and sys.stderr.isatty()))
    previous = _reporter
    _reporter = RichReporter() if on else None
    try:
        yield
    finally:
        _reporter = previous
