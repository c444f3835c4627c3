"""``kconv verify MODEL DIR``: run Keras and the converted model on the same inputs and compare."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import main
from .extensions import extension_option, keras_objects_option

#: Options shared by ``kconv verify`` and ``kconv convert --verify``.
TOLERANCE_OPTIONS = [
    click.option("--atol", type=float, default=None,
                 help="Absolute tolerance: an element agrees when |torch - keras| <= atol + rtol * |keras|. "
                      "[default: 1e-4; 5e-3 with --allow-tf32]"),
    click.option("--rtol", type=float, default=None,
                 help="Relative tolerance (see --atol). [default: 1e-4; 5e-3 with --allow-tf32]"),
    click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
                 help="Seed of the generated inputs."),
    click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True,
                 help="Batch size of the generated inputs."),
    click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
                 help="Size of an unknown input axis: INPUT:AXIS=SIZE (input layer name, Keras axis, batch = 0), "
                      "AXIS=SIZE (every input) or seq=SIZE (axis 1). Default 16. Repeatable."),
    click.option("--device", default="cpu", show_default=True, help="torch device for the converted model (cuda)."),
    click.option("--allow-tf32", is_flag=True,
                 help="On CUDA, let matmuls and cuDNN convolutions use TF32 (torch's cuDNN default) instead of "
                      "full float32; tolerances default to 5e-3."),
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
@click.argument("pairs", nargs=-1, type=click.Path(exists=True, dir_okay=True), metavar="[MODEL DIR]...")
@extension_option
@keras_objects_option
@click.option("--all", "root", type=click.Path(exists=True, file_okay=False),
              help="Verify every kconv output directory under ROOT against the model file its kconv.json "
                   "records (instead of MODEL DIR pairs).")
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
@click.option("--by-name", "by_name", is_flag=True,
              help="With --config: the weights file's layers were paired by name (as convert --by-name).")
@click.option("--mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="train: one step in training mode on both sides; compares outputs (BatchNormalization with "
                   "batch statistics), the updated moving statistics, the gradients of every trainable "
                   "weight and the weights after one SGD step. Deterministic models only.")
def verify_cmd(pairs, root, atol, rtol, seed, batch_size, dims, device, allow_tf32, inputs_file, reference,
               per_layer, report, as_json, config, by_name, mode):
    """Check that DIR (from `kconv convert`) computes what the Keras MODEL computes.

    Keras (loaded with safe_mode=True, run with training=False) is the reference. Prints per output
    the max abs and max rel error. Several MODEL DIR pairs, or --all ROOT, are verified in one run
    (Keras is imported once) with a summary table; the exit code is the worst. Exit codes: 0 all
    agree; 1 some output (or, with --per-layer, some layer) differs beyond tolerance; 2 unusable
    input (Keras cannot load MODEL: use --reference).
    """
    from ..verify import MismatchError, VerifyInputError, parse_dims, verify

    jobs = _jobs(pairs, root)
    kwargs = dict(inputs_file=inputs_file, reference=reference, seed=seed, batch_size=batch_size,
                  dims=parse_dims(dims), atol=atol, rtol=rtol, per_layer=per_layer, device=device, config=config,
                  mode=mode, by_name=by_name, allow_tf32=allow_tf32)
    if len(jobs) > 1:
        for opt, value in (("--inputs", inputs_file), ("--reference", reference), ("--report", report),
                           ("--config", config)):
            if value:
                raise VerifyInputError(f"{opt} belongs to one model: give one MODEL DIR pair with it")
        return _verify_many(jobs, kwargs, as_json)
    model, converted = jobs[0]
    result = verify(model, converted, **kwargs)
    emit_result(result, as_json=as_json, report=report)
    if not result.passed:
        d = result.first_divergence
        raise MismatchError(f"{converted} does not match {model}"
                            + (f"; first diverging layer: {d.name} ({d.class_name})" if d else ""))


def _jobs(pairs, root) -> list:
    """[(model file, converted dir)] from MODEL DIR pairs or from the manifests under ``root``."""
    from ..verify import VerifyInputError

    if root:
        if pairs:
            raise VerifyInputError("give either MODEL DIR pairs or --all ROOT, not both")
        jobs = []
        for man in sorted(Path(root).rglob("kconv.json")):
            try:
                src = json.loads(man.read_text()).get("source_path")
            except (OSError, ValueError) as e:
                raise VerifyInputError(f"{man}: unreadable manifest ({e})") from None
            if not src:
                raise VerifyInputError(f"{man}: does not record where its source file is (written by an older "
                                       f"kconv); verify it as MODEL {man.parent}")
            rel = os.path.relpath(src)
            jobs.append((src if rel.startswith("..") else rel, str(man.parent)))
        if not jobs:
            raise VerifyInputError(f"{root}: no kconv output directory (kconv.json) under it")
        return jobs
    if not pairs or len(pairs) % 2:
        raise VerifyInputError("give MODEL DIR pairs (a Keras model file and its kconv output directory), "
                               "or --all ROOT")
    for _m, d in zip(pairs[::2], pairs[1::2]):
        if not Path(d).is_dir():
            raise VerifyInputError(f"{d}: not a directory; arguments are MODEL DIR pairs")
    return list(zip(pairs[::2], pairs[1::2]))


def _verify_many(jobs, kwargs, as_json):
    """Each pair in turn (one process, Keras imported once), then one summary table; worst exit code."""
    from ..errors import KconvError
    from ..verify import verify

    rows, results, worst = [], [], 0
    for model, converted in jobs:
        try:
            result = verify(model, converted, **kwargs)
        except KconvError as e:
            click.echo(f"kconv: error: {e}", err=True)
            code = int(e.exit_code)
            rows.append((model, converted, f"error (exit {code})", ""))
            results.append({"model": model, "converted": converted, "error": str(e), "exit_code": code})
            worst = max(worst, code)
            continue
        if not as_json:
            emit_result(result)
            click.echo("")
        worst_err = max((c.max_abs_err for c in result.outputs), default=0.0)
        rows.append((model, converted, "ok" if result.passed else "DIFFERS", f"{worst_err:.3g}"))
        results.append(result.to_json())
        if not result.passed:
            worst = max(worst, 1)
    if as_json:
        from ..verify import SCHEMA_VERSION

        click.echo(json.dumps({"schema_version": SCHEMA_VERSION, "passed": worst == 0, "results": results},
                              indent=2))
    else:
        n_ok = sum(r[2] == "ok" for r in rows)
        click.echo(f"verified {len(rows)} model(s): {n_ok} agree, {len(rows) - n_ok} do not")
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("model", "converted", "result"))]
        head = ("model", "converted", "result", "max abs err")
        for r in [head, *rows]:
            click.echo("  ".join(str(x).ljust(w) for x, w in zip(r[:3], widths)) + "  " + r[3])
    if worst:
        raise SystemExit(worst)
