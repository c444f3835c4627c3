"""``kconv verify MODEL DIR``: run Keras and the converted model on the same inputs and compare."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import main

#: Options shared by ``kconv verify`` and ``kconv convert --verify``.
TOLERANCE_OPTIONS = [
    click.option("--atol", type=float, default=1e-4, show_default=True,
                 help="Absolute tolerance: an element agrees when |torch - keras| <= atol + rtol * |keras|."),
    click.option("--rtol", type=float, default=1e-4, show_default=True, help="Relative tolerance (see --atol)."),
    click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the generated inputs."),
    click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True, help="Batch size of the generated inputs."),
    click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
                 help="Size of an unknown input axis: INPUT:AXIS=SIZE (input layer name, Keras axis, batch = 0), "
                      "AXIS=SIZE (every input) or seq=SIZE (axis 1). Default 16. Repeatable."),
    click.option("--device", default="cpu", show_default=True, help="torch device for the converted model (cuda)."),
]


def tolerance_options(fn):
    for opt in reversed(TOLERANCE_OPTIONS):
        fn = opt(fn)
    return fn


def emit_result(result, as_json: bool = False, report=None):
    """Print a result (JSON, rich when interactive, plain text otherwise) and write the HTML report."""
    from ..verify import report as rep

    if report:
        Path(report).write_text(rep.html_report(result))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console

        rep.rich_print(result, Console())
    else:
        click.echo(rep.text(result))
    if report and not as_json:
        click.echo(f"report written to {report}", err=True)


@main.command("verify")
@click.argument("model", type=click.Path(exists=True, dir_okay=True))
@click.argument("converted", type=click.Path(exists=True, file_okay=False))
@tolerance_options
@click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False),
              help="Inputs from an .npz file: keys input_0, input_1, ... or the input layer names.")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False),
              help="Inputs and expected outputs (keys input_*, output_*) computed elsewhere: Keras is not run.")
@click.option("--per-layer", is_flag=True, help="Compare every layer output and name the first that diverges.")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write an HTML report (table and chart).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON (schema_version 1).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Architecture JSON for a weights-only HDF5 file (kconv's side; Keras must load MODEL itself).")
@click.option("--mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="train: one step in training mode on both sides; compares outputs (BatchNormalization with "
                   "batch statistics) and the updated moving statistics. Deterministic models only.")
def verify_cmd(model, converted, atol, rtol, seed, batch_size, dims, device, inputs_file, reference, per_layer,
               report, as_json, config, mode):
    """Check that DIR (from `kconv convert`) computes what the Keras MODEL computes.

    Keras (loaded with safe_mode=True, run with training=False) is the reference. Prints per output
    the max abs and max rel error. Exit codes: 0 all agree; 1 some output (or, with --per-layer,
    some layer) differs beyond tolerance; 2 unusable input (Keras cannot load MODEL: use --reference).
    """
    from ..verify import MismatchError, parse_dims, verify

    result = verify(model, converted, inputs_file=inputs_file, reference=reference, seed=seed,
                    batch_size=batch_size, dims=parse_dims(dims), atol=atol, rtol=rtol, per_layer=per_layer,
                    device=device, config=config, mode=mode)
    emit_result(result, as_json=as_json, report=report)
    if not result.passed:
        d = result.first_divergence
        raise MismatchError(f"{converted} does not match {model}"
                            + (f"; first diverging layer: {d.name} ({d.class_name})" if d else ""))
