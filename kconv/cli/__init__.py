"""The ``kconv`` command: one module per subcommand, one handler mapping errors to exit codes."""
from __future__ import annotations

import os
import sys

import click

from .. import __version__, progress
from ..errors import ExitCode, KconvError, cli_warnings


class KconvGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's standalone mode, except that usage errors are one ``kconv: error:`` line (exit 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "kconv"
            click.echo(f"kconv: error: {e.format_message()} (see '{where} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("kconv: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def parse_args(self, ctx, args):
        # --traceback is accepted anywhere before a "--", also after the subcommand
        args = list(args)
        end = args.index("--") if "--" in args else len(args)
        for flag in ("--traceback", "--quiet", "-q"):
            if flag in args[:end]:
                args = [flag] + [a for i, a in enumerate(args) if not (a == flag and i < end)]
                end = args.index("--") if "--" in args else len(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            quiet = bool(ctx.params.get("quiet"))
            # KconvWarning (NaN/Inf weights...) as one 'kconv: warning:' line; progress on stderr
            with cli_warnings(), progress.showing(not quiet):
                return super().invoke(ctx)
        except KconvError as e:
            _maybe_traceback(ctx)
            click.echo(f"kconv: error: {e}", err=True)
            ctx.exit(int(e.exit_code))
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # `kconv inspect ... | head`: the reader went away, not an error
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("kconv: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # one handler for the unexpected: a bug in kconv
            _maybe_traceback(ctx)
            click.echo(f"kconv: internal error: {type(e).__name__}: {e} (rerun with --traceback and report it)",
                       err=True)
            ctx.exit(int(ExitCode.INTERNAL))


def _maybe_traceback(ctx):
    """With --traceback the full traceback goes to stderr; the exit code stays the documented one."""
    if ctx.obj and ctx.obj.get("traceback"):
        import traceback

        traceback.print_exc()


def _print_versions(ctx, _param, value):
    """kconv's version and its dependencies', read from the installed metadata (nothing is imported)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    click.echo(f"kconv {__version__}")
    for dist in ("torch", "numpy", "h5py", "safetensors", "click", "rich", "keras", "tensorflow-cpu", "tensorflow",
                 "tf-keras"):
        try:
            click.echo(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            if dist in ("torch", "numpy", "h5py", "keras"):
                click.echo(f"{dist} not installed")
    click.echo(f"python {sys.version.split()[0]}")
    ctx.exit(0)


@click.group(cls=KconvGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_versions,
              help="Print the versions of kconv and of the libraries it uses, then exit.")
@click.option("--traceback", is_flag=True, help="Show the full Python traceback on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display on stderr (errors and warnings still show).")
@click.pass_context
def main(ctx, traceback, quiet):
    """Inspect Keras model files and convert them to PyTorch.

    \b
    Exit codes: 0 ok; 1 verification mismatch; 2 unreadable input or usage error;
    3 unsupported layers; 4 internal error.
    """
    ctx.ensure_object(dict)
    ctx.obj["traceback"] = traceback
    ctx.obj["quiet"] = quiet


#: Set by a command that leaves the interpreter's exit nothing to do (no helper process to wait for,
#: no file to finish): :func:`entry` may then skip the teardown.
nothing_at_exit = False
#: True while :func:`entry` runs the command of a process that ends with it: what a command makes
#: may live until then. ``kconv inspect`` then lets no cyclic garbage collection walk it, and leaves
#: its model and report in :data:`left_to_exit` (the process's end frees them at once, where freeing
#: them object by object when the command returns took 10 ms for ResNet50: 320 HDF5 datasets closed).
process_ends = False
left_to_exit: list = []


def entry(prog_name: str = "kconv"):
    """The ``kconv`` console script and ``python -m kconv``: :func:`main`, and after a command that
    sets :data:`nothing_at_exit` (``kconv inspect``) and succeeded, stdout and stderr flushed and the
    process ended without the interpreter's teardown (freeing every module and object: about 50 ms
    of a 0.5 s ``kconv inspect``). In-process callers use :func:`main`, which returns to them."""
    import gc

    global nothing_at_exit, process_ends
    nothing_at_exit = False  # the command run now says
    gc.freeze()  # what the imports made lives to the end: the collector need not walk it again and again
    collecting = gc.isenabled()
    process_ends = True
    try:
        main(prog_name=prog_name)
    except SystemExit as e:
        if nothing_at_exit and e.code in (0, None):
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # a closed pipe...: the ordinary exit reports it as it always did
                raise e from None
            os._exit(0)
        raise
    finally:  # reached where the process goes on (an error, or an in-process caller)
        process_ends = False
        left_to_exit.clear()
        if collecting:
            gc.enable()


from . import inspect as _inspect  # noqa: E402,F401  (registers the subcommand)
from . import layers as _layers  # noqa: E402,F401
from . import convert as _convert  # noqa: E402,F401
from . import verify as _verify  # noqa: E402,F401
from . import extensions as _extensions  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
