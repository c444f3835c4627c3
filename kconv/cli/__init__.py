"""The ``kconv`` command: one module per subcommand, one handler mapping errors to exit codes."""
from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import ExitCode, KconvError, cli_warnings


class KconvGroup(click.Group):
    def invoke(self, ctx):
        try:
            with cli_warnings():  # KconvWarning (NaN/Inf weights...) as one 'kconv: warning:' line
                return super().invoke(ctx)
        except KconvError as e:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
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
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            click.echo(f"kconv: internal error: {type(e).__name__}: {e} (rerun with --traceback and report it)",
                       err=True)
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=KconvGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kconv")
@click.option("--traceback", is_flag=True, help="Show the full Python traceback on errors.")
@click.pass_context
def main(ctx, traceback):
    """Inspect Keras model files and convert them to PyTorch.

    \b
    Exit codes: 0 ok; 1 verification mismatch; 2 unreadable input or usage error;
    3 unsupported layers; 4 internal error.
    """
    ctx.ensure_object(dict)
    ctx.obj["traceback"] = traceback


from . import inspect as _inspect  # noqa: E402,F401  (registers the subcommand)
from . import layers as _layers  # noqa: E402,F401
from . import convert as _convert  # noqa: E402,F401
from . import verify as _verify  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
