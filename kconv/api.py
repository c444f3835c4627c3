"""The Python API: ``kconv.load``, ``kconv.convert``, ``kconv.load_converted``."""
from __future__ import annotations

from pathlib import Path

from .errors import KconvError
from .ir import Model
from .load import load


def convert(src, out_dir, fmt: str = "safetensors", channels_first: bool = False, config=None,
            force: bool = False, backend_of_writer=None,
            by_name: bool = False, blocks: bool = False, optimize: bool = False) -> Path:
    """Convert a Keras model file (or a loaded :class:`kconv.ir.Model`) into ``out_dir``.

    An existing ``out_dir`` must be empty or a previous kconv output; ``force`` lets kconv replace its
    own files next to files it did not write (those are never touched). ``backend_of_writer``
    ('theano' or 'tensorflow') is required for Keras 1 files with convolutions (see README *Old files*).
    ``blocks``: layers that share a block name prefix (``conv2_block1_*``) become nested submodules, one
    class per structure (README *Blocks*); the default is flat.
    ``optimize``: the inference-only output of ``kconv convert --optimize`` (README *Fast inference on CPU*)."""
    from .emit import checker, convert as _convert

    if fmt != "pt":
        checker.start()  # torch is imported by a helper process while the model is read (kconv.emit.checker)
    model = src if isinstance(src, Model) else load(src, config=config, backend_of_writer=backend_of_writer,
                                                    by_name=by_name)
    try:
        return _convert(model, out_dir, fmt=fmt, channels_first=channels_first, force=force,
                        blocks=blocks, optimize=optimize)
    except KconvError as e:  # one line naming the file and the problem (issue 6)
        raise e.in_file(model.source) from e.__cause__


def load_converted(out_dir, device: str = "cpu"):
    from .emit import load_converted as _load

    return _load(out_dir, device=device)
