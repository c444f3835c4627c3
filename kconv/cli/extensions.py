"""``--extension`` / ``--keras-objects`` (user code named on the command line) and ``kconv scaffold``."""
from __future__ import annotations

import click

from . import main


def _activate(ctx, _param, names):
    """Run the extensions (and the kconv.extensions entry points) for the duration of the command."""
    from .. import extend

    if ctx.resilient_parsing:
        return names
    ctx.with_resource(extend.active(names))  # an ExtensionError is reported by the kconv group (exit 2)
    return names


def extension_option(fn):
    return click.option(
        "--extension", "extensions", multiple=True, metavar="FILE_OR_MODULE", expose_value=False,
        callback=_activate,
        help="Converters for custom layers and Lambda layers (a .py file or a module name; repeatable; see README "
             "'Custom layers'). Installed packages' kconv.extensions entry points are loaded too.")(fn)


def _keras_objects(ctx, _param, names):
    if ctx.resilient_parsing or not names:
        return names
    from ..verify import keras_side

    ctx.with_resource(keras_side.custom_objects(names))
    return names


def keras_objects_option(fn):
    return click.option(
        "--keras-objects", "keras_objects", multiple=True, metavar="FILE_OR_MODULE", expose_value=False,
        callback=_keras_objects,
        help="Your Keras-side custom classes and functions, so Keras can load MODEL: a .py file or module that "
             "registers them (keras.saving.register_keras_serializable) or defines a custom_objects dict. "
             "Repeatable.")(fn)


@main.command("scaffold")
@click.argument("model", type=click.Path(exists=True, dir_okay=True))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The extension file to write (never overwritten: an existing file is refused).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Architecture JSON for a weights-only file (as convert --config).")
@extension_option
def scaffold_cmd(model, out, config):
    """Write a ready-to-fill kconv extension for every unknown layer class and Lambda of MODEL.

    For each: the class name, its config, the weights the file stores (names, shapes, dtypes,
    guessed roles), the input/output shapes kconv infers, and a torch skeleton with TODOs. Fill in
    forward (and the output shape), then `kconv convert MODEL -o DIR --extension FILE`.
    """
    from ..load import load
    from ..scaffold import write

    ir = load(model, config=config)
    classes, functions = write(ir, out, model)
    if classes or functions:
        click.echo(f"{out}: to fill in: {classes} custom layer class(es), {functions} Lambda function(s)", err=True)
    else:
        click.echo(f"nothing to fill in: kconv converts every layer of {model} ({out} not written)", err=True)
