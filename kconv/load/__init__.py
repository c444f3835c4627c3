"""Read a Keras model file into the model description (kconv.ir) without tensorflow, keras or torch."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from ..errors import ConfigError, KconvError, ModelFileError
from ..ir import Model
from . import shapes as _shapes
from .config import build_model
from .weights import attach_keras3, attach_legacy

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
MAX_CONFIG_BYTES = 64 * 1024 * 1024  # config.json larger than this is refused (documented in README)


def sniff(path: Path) -> str:
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise ModelFileError(path, "a directory, but not a TF SavedModel (no saved_model.pb)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelFileError(path, e.strerror or str(e)) from None
    if head.startswith(HDF5_SIGNATURE):
        return "h5"
    if head.startswith(ZIP_SIGNATURE):
        return "keras"
    if not head:
        raise ModelFileError(path, "empty file")
    raise ModelFileError(path, "not a Keras model file (neither HDF5 nor a .keras zip archive)")


def load(path, config: str | os.PathLike | None = None) -> Model:
    """Load a Keras model file (``.keras``, ``.h5``/``.hdf5``) into a :class:`kconv.ir.Model`.

    Weight tensors stay in the file until ``Weight.read()``; the file is kept open for that.
    """
    path = Path(path)
    kind = sniff(path)
    try:
        if kind == "h5":
            model = _load_h5(path, config)
        elif kind == "keras":
            model = _load_keras(path)
        else:
            raise ModelFileError(path, "TF SavedModel directories are not supported yet (see issue 7)")
    except KconvError as e:
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError(path, str(e)) from e
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"damaged or unexpected content ({type(e).__name__}: {e})") from e
    model.source = str(path)
    model.format = kind
    _shapes.infer(model)
    return model


def _json(raw, path, what):
    if isinstance(raw, bytes):
        raw = raw.decode("utf8")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(path, f"{what} is not valid JSON ({e.msg} at char {e.pos})") from None


def _load_h5(path: Path, config_path) -> Model:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelFileError(path, f"cannot open as HDF5 ({e})") from None
    if config_path is not None:
        cfg = _json(Path(config_path).read_bytes(), config_path, "architecture JSON")
    elif "model_config" in f.attrs:
        cfg = _json(f.attrs["model_config"], path, "model_config attribute")
    else:
        raise ModelFileError(path, "no model_config attribute: a weights-only file; pass the architecture "
                                   "with --config model.json")
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise ModelFileError(path, "model_config is not a Keras model config")
    model = build_model(cfg)
    wgroup = f["model_weights"] if "model_weights" in f else f
    attach_legacy(model, wgroup, str(path))
    model.keras_version = _attr(f, wgroup, "keras_version")
    model.backend = _attr(f, wgroup, "backend")
    model._file = f  # keeps the file open for lazy reads
    return model


def _attr(f, g, key):
    for obj in (f, g):
        if key in obj.attrs:
            v = obj.attrs[key]
            return v.decode("utf8") if isinstance(v, bytes) else str(v)
    return ""


class _Slice:
    """A read-only file object over bytes [start, start+size) of a file.

    zipfile's own member stream re-reads from the start on every backward seek (seconds for a
    100 MB member read by h5py); a stored member is a plain byte range, so read it as one.
    """

    def __init__(self, path, start: int, size: int):
        self._f = open(path, "rb")
        self._start, self._size, self._pos = start, size, 0

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n=-1):
        if n is None or n < 0:
            n = self._size - self._pos
        n = max(0, min(n, self._size - self._pos))
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self):
        self._f.close()


def _member_slice(path: Path, info: zipfile.ZipInfo) -> _Slice:
    import struct

    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) < 30 or header[:4] != ZIP_SIGNATURE:
        raise ModelFileError(path, f"damaged zip entry for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > path.stat().st_size:
        raise ModelFileError(path, f"{info.filename} extends past the end of the archive (truncated file?)")
    return _Slice(path, start, info.file_size)


def _load_keras(path: Path) -> Model:
    import h5py

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(path, f"damaged .keras archive ({e})") from None
    names = {i.filename: i for i in zf.infolist()}
    if "config.json" not in names:
        raise ModelFileError(path, "no config.json in the archive (not a Keras 3 .keras file)")
    info = names["config.json"]
    if info.file_size > MAX_CONFIG_BYTES:
        raise ModelFileError(path, f"config.json is {info.file_size} bytes, over the {MAX_CONFIG_BYTES} limit")
    cfg = _json(zf.read("config.json"), path, "config.json")
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise ModelFileError(path, "config.json is not a Keras model config")
    meta = {}
    if "metadata.json" in names and names["metadata.json"].file_size < 1 << 20:
        meta = _json(zf.read("metadata.json"), path, "metadata.json")
    model = build_model(cfg)
    if "model.weights.h5" not in names:
        raise ModelFileError(path, "no model.weights.h5 in the archive")
    winfo = names["model.weights.h5"]
    if winfo.compress_type == zipfile.ZIP_STORED:
        fobj = _member_slice(path, winfo)  # h5py reads the stored member in place
    else:
        import io

        fobj = io.BytesIO(zf.read("model.weights.h5"))
    try:
        f = h5py.File(fobj, "r")
    except OSError as e:
        raise ModelFileError(path, f"model.weights.h5 is not readable HDF5 ({e})") from None
    attach_keras3(model, f)
    model.keras_version = str(meta.get("keras_version", ""))
    model.backend = str(meta.get("backend", ""))  # .keras metadata usually does not record it
    model._file = (zf, fobj, f)
    return model
