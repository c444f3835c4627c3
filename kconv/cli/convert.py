"""``kconv convert MODEL... -o DIR``: standalone PyTorch model.py + weights + manifest."""
from __future__ import annotations

from pathlib import Path

import click

from ..api import convert as _convert
from ..errors import KconvError, OutputError, UnsupportedError
from . import main
from .extensions import extension_option, keras_objects_option
from .verify import emit_result, tolerance_options


@main.command("convert")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Output directory (with several MODELs: one subdirectory per file stem).")
@extension_option
@keras_objects_option
@click.option("--format", "fmt", type=click.Choice(["safetensors", "pt"]), default="safetensors", show_default=True,
              help="Weights file format.")
@click.option("--channels-first", is_flag=True,
              help="Inputs and outputs of rank >= 3 are NCHW-style (channels first) instead of Keras's layout.")
@click.option("--blocks", is_flag=True,
              help="Layers sharing a block name prefix (conv2_block1_*, block_3_*, stage2_*) become nested "
                   "submodules, one class per distinct structure; state-dict keys follow the nesting.")
@click.option("--optimize", is_flag=True,
              help="Inference-only output: BatchNormalization folded into the convolution/dense layer before it, "
                   "dropout and noise layers dropped (no train mode; other state-dict keys).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Architecture JSON for a weights-only file (legacy HDF5 or Keras 3 layout .weights.h5).")
@click.option("--by-name", "by_name", is_flag=True,
              help="With --config and a legacy HDF5 weights file: pair the file's layers with the model's by name "
                   "(Keras's load_weights(by_name=True)) instead of in order (its default).")
@click.option("--backend-of-writer", "backend_of_writer", type=click.Choice(["theano", "tensorflow"]),
              help="The Keras backend that wrote the file, when it is not recorded (Keras 1) or recorded wrongly: "
                   "'theano' flips convolution kernels and uses Theano's 'same' padding.")
@click.option("--force", is_flag=True,
              help="Replace kconv's own files in DIR even if other files are there or they were edited; "
                   "files kconv did not write are never touched.")
@click.option("--verify", "do_verify", is_flag=True,
              help="After converting, run `kconv verify` on each result (needs Keras; exit 1 on a mismatch).")
@click.option("--per-layer", is_flag=True, help="With --verify: compare every layer output.")
@tolerance_options
def convert_cmd(models, out, fmt, channels_first, blocks, optimize, config, by_name, backend_of_writer, force,
                do_verify, per_layer, atol, rtol, seed, batch_size, dims, device, allow_tf32):
    """Convert Keras model files to standalone PyTorch modules.

    Writes DIR/model.py (class Model, imports only torch), DIR/model.safetensors (or model.pt)
    and DIR/kconv.json (each Keras weight -> torch key and transform). Nothing is written for a
    model that fails; with several MODELs the others are still converted and the exit code is
    the worst one. With --verify each converted model is checked against Keras (as `kconv verify`);
    a mismatch exits 1 but leaves the output in place.
    """
    from ..verify.errors import KerasUnavailableError, MismatchError  # here: `kconv inspect` need not import verify

    if do_verify:
        from ..verify import parse_dims

        dims = parse_dims(dims)
    out = Path(out)
    several = len(models) > 1
    targets = {}
    for m in models:  # refuse before writing anything: two inputs must never share an output directory
        target = out / Path(m).stem if several else out
        if target in targets:
            raise OutputError(f"{targets[target]} and {m} would both be written to {target} (same file stem); "
                              "convert them in separate runs with different -o")
        targets[target] = m
    worst = 0
    unsupported: dict = {}
    for target, m in targets.items():
        try:
            _convert(m, target, fmt=fmt, channels_first=channels_first, config=config, force=force,
                     backend_of_writer=backend_of_writer, by_name=by_name, blocks=blocks, optimize=optimize)
            click.echo(f"{m} -> {target}", err=True)
            if do_verify:
                from ..verify import verify

                try:
                    result = verify(m, target, seed=seed, batch_size=batch_size, dims=dims, atol=atol, rtol=rtol,
                                    per_layer=per_layer, device=device, config=config, by_name=by_name,
                                    allow_tf32=allow_tf32)
                except KerasUnavailableError as e:  # convert has no --reference: point to verify's
                    raise KerasUnavailableError(str(e).replace(
                        "pass --reference FILE.npz",
                        f"run `kconv verify {m} {target} --reference FILE.npz` (the conversion is kept)")) from None
                emit_result(result)
                if not result.passed:
                    raise MismatchError(f"{target} does not match {m}")
        except UnsupportedError as e:
            if not several:
                raise
            for cls, items in e.by_class.items():
                unsupported.setdefault(cls, []).extend((f"{Path(m).name}:{n}", w) for n, w in items)
            worst = max(worst, int(e.exit_code))
        except KconvError as e:
            if not several:
                raise
            click.echo(f"kconv: error: {e}", err=True)
            worst = max(worst, int(e.exit_code))
    if unsupported:
        click.echo(f"kconv: error: {UnsupportedError(unsupported)}", err=True)
    if worst:
        raise SystemExit(worst)
